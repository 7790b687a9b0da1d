"""The campaigns' EventHandler (marketing/events.py): decide a batch, and nothing more.

``handle`` returns once the batch's decisions are committed (offers RESERVED for the sends), so
the dispatcher may then mark the events handled. It starts no delivery: the delivery pump
(marketing/pump.py) starts a workflow for every RESERVED offer whose delivery has not started,
and ``handle`` only wakes the pump of its own process when the commit reserved sends. Handed
the same events again (at least once: a crash between the commit and the marking), it decides
nothing twice: the offers exist (DUPLICATE), and a reserved one is the pump's either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from marketing.decide import Decider, Decision
from marketing.events import BusinessEvent


class CampaignHandler:
    """EventHandler: campaigns and guards; the sends it reserves go to the delivery pump."""

    def __init__(self, decider: Decider, reserved: Callable[[], None] = lambda: None) -> None:
        self.decider = decider
        #: Called after a commit that reserved sends (the pump's wake-up).
        self.reserved = reserved

    async def handle(self, events: Sequence[BusinessEvent]) -> None:
        await self.handle_and_report(events)

    async def handle_and_report(self, events: Sequence[BusinessEvent]) -> list[Decision]:
        decisions = await self.decider.decide(events)
        if any(
            d.outcome == "RESERVED" or (d.outcome == "DUPLICATE" and d.existing_state == "RESERVED")
            for d in decisions
        ):
            self.reserved()
        return decisions
