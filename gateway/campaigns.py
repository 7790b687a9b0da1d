"""Wires the campaigns from settings: the campaigns file, the decider, the handler, the pump.

Importing ``marketing.delivery`` here registers the delivery workflow with DBOS before the
engine launches. The gateway's lifespan starts the campaigns (the delivery runtime and the
pump, which starts workflows) after the workflow engine is up, and installs the handler
(marketing/wiring.py), which only decides and wakes the pump.
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
from marketing.dispatcher import Dispatcher
from marketing.handler import CampaignHandler
from marketing.offer_store import MarketingStore
from marketing.pump import DeliveryPump, PumpConfig
from marketing.services import MarketingServices


@dataclass(frozen=True, slots=True)
class CampaignWiring:
    services: MarketingServices
    handler: CampaignHandler
    pump: DeliveryPump | None
    consent_default: bool
    busy_window_s: float = 0.5

    def start(self) -> None:
        delivery.install(delivery.DeliveryRuntime(self.services.store, self.consent_default))
        if self.pump is not None:
            self.pump.start()

    def yield_to(self, dispatcher: Dispatcher) -> None:
        """The pump runs fewer deliveries while this process's intake and dispatcher are busy
        (``delivery_busy_window_s`` after the last event stored or batch handed)."""
        window = self.busy_window_s
        if self.pump is not None and window > 0:
            self.pump.yield_to(lambda: dispatcher.busy_for(window))

    async def stop_pump(self) -> None:
        """Before the workflow engine shuts down: no start after it."""
        if self.pump is not None:
            await self.pump.stop()

    def stop(self) -> None:
        delivery.install(None)


def campaigns_file(settings: CampaignSettings) -> Path:
    return settings.rules_file or DEFAULT_CAMPAIGNS


def pump_config(settings: CampaignSettings) -> PumpConfig:
    return PumpConfig(
        batch_size=settings.delivery_batch_size,
        max_in_flight=settings.delivery_max_in_flight,
        busy_max_in_flight=settings.delivery_busy_max_in_flight,
        poll_s=settings.delivery_poll_s,
        restart_after_s=settings.delivery_restart_after_s,
    )


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
    pump = (
        DeliveryPump(
            engine, lambda: book, identities, delivery.start_deliveries, pump_config(settings)
        )
        if settings.delivery_pump
        else None
    )
    handler = CampaignHandler(decider, pump.wake if pump is not None else lambda: None)
    return CampaignWiring(
        services=MarketingServices(store=store, book=lambda: book, context=context),
        handler=handler,
        pump=pump,
        consent_default=settings.consent_default_granted,
        busy_window_s=settings.delivery_busy_window_s,
    )
