"""What the graph reaches of marketing: the campaigns in force, the tables, the guards' context.

The schema reads offers and consents and changes them through this one object (the gateway
builds it), as it reaches workflows through ``orchestration.service.Workflows``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from marketing.campaigns import CampaignBook
from marketing.decide import GuardContext
from marketing.offer_store import MarketingStore


@dataclass(frozen=True, slots=True)
class MarketingServices:
    store: MarketingStore
    book: Callable[[], CampaignBook]
    context: GuardContext
