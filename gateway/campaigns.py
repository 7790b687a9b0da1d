"""Wires the campaigns from settings: the campaigns file, the decider, delivery, the handler.

Importing ``marketing.delivery`` here registers the delivery workflow with DBOS before the
engine launches. The gateway's lifespan installs the handler (marketing/wiring.py) after the
workflow engine is up: the handler starts delivery workflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.identity_store import IdentityStore
from gateway.settings import CampaignSettings
from marketing import delivery
from marketing.audience import FactsSource
from marketing.campaigns import DEFAULT_CAMPAIGNS, CampaignBook, load_campaigns
from marketing.decide import Decider, GuardContext
from marketing.handler import CampaignHandler
from marketing.offer_store import MarketingStore
from marketing.services import MarketingServices


@dataclass(frozen=True, slots=True)
class CampaignWiring:
    services: MarketingServices
    handler: CampaignHandler
    consent_default: bool

    def start(self) -> None:
        delivery.install(delivery.DeliveryRuntime(self.services.store, self.consent_default))

    def stop(self) -> None:
        delivery.install(None)


def campaigns_file(settings: CampaignSettings) -> Path:
    return settings.rules_file or DEFAULT_CAMPAIGNS


def build_campaigns(
    settings: CampaignSettings,
    engine: AsyncEngine,
    identities: IdentityStore,
    facts: FactsSource | None = None,
) -> CampaignWiring | None:
    """None when campaigns are off. A bad campaigns file stops the start (DeclarationInvalid
    names file and line)."""
    if not settings.enabled:
        return None
    book: CampaignBook = load_campaigns(campaigns_file(settings))
    context = GuardContext(settings.default_timezone, settings.consent_default_granted)
    store = MarketingStore(engine)
    decider = Decider(engine, lambda: book, context, facts)
    handler = CampaignHandler(decider, store, identities, delivery.start_delivery)
    return CampaignWiring(
        services=MarketingServices(store=store, book=lambda: book, context=context),
        handler=handler,
        consent_default=settings.consent_default_granted,
    )
