"""The campaigns' EventHandler (marketing/events.py): decide a batch, then start its sends.

``handle`` returns only when every decision is committed and every send it reserved has its
delivery workflow recorded by DBOS, so the dispatcher may then mark the events handled. Handed
the same events again (at least once), it decides nothing twice: the offers exist, and a
reserved one whose delivery may not have started is started again under the same workflow id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from adapters.identity_store import IdentityStore
from marketing.campaigns import CampaignBook, render_message
from marketing.decide import Decider, Decision
from marketing.events import BusinessEvent
from marketing.offer_store import MarketingStore, OfferRow

StartDelivery = Callable[[dict[str, Any]], Awaitable[None]]


class CampaignHandler:
    """EventHandler: campaigns, guards and durable delivery."""

    def __init__(
        self,
        decider: Decider,
        store: MarketingStore,
        identities: IdentityStore,
        start_delivery: StartDelivery,
    ) -> None:
        self.decider = decider
        self.store = store
        self.identities = identities
        self.start_delivery = start_delivery

    async def handle(self, events: Sequence[BusinessEvent]) -> None:
        await self.handle_and_report(events)

    async def handle_and_report(self, events: Sequence[BusinessEvent]) -> list[Decision]:
        decisions = await self.decider.decide(events)
        due = [
            d
            for d in decisions
            if d.outcome == "RESERVED"
            or (d.outcome == "DUPLICATE" and d.existing_state == "RESERVED")
        ]
        if due:
            await self._deliver(self.decider.book(), events, due)
        return decisions

    async def _deliver(
        self, book: CampaignBook, events: Sequence[BusinessEvent], due: Sequence[Decision]
    ) -> None:
        by_id = {e.event_id: e for e in events}
        identities = await self.identities.by_hub_ids(sorted({d.customer_id for d in due}))
        stored: dict[str, OfferRow | None] = {}
        for decision in due:
            if decision.outcome == "DUPLICATE":
                # The offer was decided before (maybe from another event): its own row says
                # which channel it reserved.
                stored[decision.offer_id] = await self.store.offer(decision.offer_id)
        for decision in due:
            campaign = book.by_id(decision.campaign)
            identity = identities.get(decision.customer_id)
            event = by_id.get(decision.event_id)
            channel = decision.channel
            if decision.outcome == "DUPLICATE":
                row = stored.get(decision.offer_id)
                channel = row.channel if row else None
            if campaign is None or identity is None or event is None or channel is None:
                continue
            await self.start_delivery(
                {
                    "offer_id": decision.offer_id,
                    "campaign": campaign.id,
                    "customer_id": decision.customer_id,
                    "customer_no": identity.customer_no,
                    "channel": channel,
                    "purpose": campaign.purpose,
                    "offer_ref": campaign.offer.ref,
                    "msisdn": event.subscriber,
                    "text": render_message(campaign, event.payload),
                }
            )
