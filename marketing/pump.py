"""The delivery pump: starts the delivery workflow of each RESERVED offer, apart from deciding.

The campaigns' handler (marketing/handler.py) commits its decisions and returns, so the
dispatcher marks the events handled without waiting for a single workflow start. One pump per
hub process (beside its dispatcher) then loops:

1. **Claim** up to ``batch_size`` offers that are RESERVED and whose delivery has not started
   (``delivery_started_at`` NULL), or whose claim is older than ``restart_after_s``, oldest
   first: one UPDATE ... RETURNING that sets ``delivery_started_at``. On PostgreSQL the inner
   SELECT takes ``FOR UPDATE SKIP LOCKED``, so the pumps of several workers and replicas never
   take the same rows nor wait for each other; SQLite serialises writers, so the one statement
   is enough there (the same pattern as ``EventStore.claim``).
2. **Build** each order from the offer row, the event that made it (``hub_event``: the line it
   names and the payload the text is rendered from), the crosswalk (the BOSS customer number)
   and the campaign.
3. **Start** one ``campaign_deliveries`` workflow for the batch (marketing/delivery.py), its
   id derived from the batch's offer ids; at most ``max_in_flight`` deliveries (offers) run
   at once in the process (from the start until DBOS's task for the batch ends), and a round
   claims no more than there is room for.

**Crash safety.** Starting an offer's delivery again is always safe: DBOS records one workflow
per id, and a second start of the same batch runs nothing (it hands back the first). A pump
that dies between its claim and its start leaves offers RESERVED and claimed; once
``restart_after_s`` has passed any pump claims them again and starts them. The same re-claim
touches an offer whose delivery is still running (or ended in error, leaving it RESERVED):
the same batch again is a no-op start; offers claimed into another batch are sent again with
the same idempotency key (their offer id), which the care system answers with the first
message, and their outcome moves only a RESERVED offer. A start that raises (the database
away) gives its claims back at once.

**Promptly.** The handler wakes the pump of its own process after a commit that reserved
sends; the poll (``poll_s``) is the fallback: offers reserved by another process whose pump is
off or dead, and offers reserved before a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.identity_store import IdentityStore
from marketing.campaigns import CampaignBook, render_message
from marketing.offer_store import MarketingStore, OfferRow, hub_offer, now, offer_row
from marketing.store import hub_event

log = logging.getLogger("switchboard.marketing")

#: Starts the delivery of a claimed batch (one workflow); may answer DBOS's handle, whose
#: ``task`` (a workflow running in this process) tells the pump when the deliveries end.
StartDelivery = Callable[[list[dict[str, Any]]], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class PumpConfig:
    batch_size: int = 100
    poll_s: float = 1.0
    restart_after_s: float = 60.0
    #: Deliveries running at once in this process (started, not ended).
    max_in_flight: int = 16
    #: Deliveries running at once while this process's intake or decisions are busy (see
    #: ``DeliveryPump.yield_to``): the burst is stored and decided first, its sends drain
    #: after at ``max_in_flight``.
    busy_max_in_flight: int = 1


@dataclass(frozen=True, slots=True)
class PumpRound:
    claimed: int = 0
    started: int = 0
    #: Offers that cannot be delivered any more (moved to FAILED with a code).
    failed: int = 0
    #: Starts that raised (their claims given back).
    errors: int = 0
    #: As many claimed as there was room for: more may be due.
    full: bool = False


class DeliveryPump:
    def __init__(
        self,
        engine: AsyncEngine,
        book: Callable[[], CampaignBook],
        identities: IdentityStore,
        start_delivery: StartDelivery,
        config: PumpConfig,
    ) -> None:
        self._engine = engine
        self._store = MarketingStore(engine)
        self._book = book
        self._identities = identities
        self._start_delivery = start_delivery
        self._config = config
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_flight = 0
        self._freed = asyncio.Event()
        self._busy: Callable[[], float] = lambda: 0.0
        self.started = 0

    def wake(self) -> None:
        """Offers were reserved (committed): look now rather than at the next poll."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def yield_to(self, busy: Callable[[], float]) -> None:
        """``busy()``: for how many more seconds this process's intake and decisions count as
        busy (0: idle). While busy, at most ``busy_max_in_flight`` deliveries run: they share
        the event loop with the webhook and the decider (measured: the deliveries' CPU, ~5 ms
        each, held arrival-to-decision to a third of the intake's rate). The offers wait
        RESERVED, durably and counted against the caps, and drain when the burst ends."""
        self._busy = busy

    def _limit(self) -> int:
        if self._busy() > 0:
            return min(self._config.busy_max_in_flight, self._config.max_in_flight)
        return self._config.max_in_flight

    async def claim(self, limit: int | None = None) -> list[OfferRow]:
        """Up to ``limit`` (``batch_size``) RESERVED offers due a start, oldest first, now
        claimed."""
        at = now()
        due = (
            hub_offer.c.state == "RESERVED",
            or_(
                hub_offer.c.delivery_started_at.is_(None),
                hub_offer.c.delivery_started_at
                < at - dt.timedelta(seconds=self._config.restart_after_s),
            ),
        )
        # A CTE, not ``id IN (subquery)``: with the subquery inline, PostgreSQL claimed 30
        # offers for a limit of 25 (measured; the planner may evaluate a SKIP LOCKED subquery
        # more than once, each time past the rows already taken). A CTE with FOR UPDATE is
        # evaluated once.
        free = (
            select(hub_offer.c.id)
            .where(*due)
            .order_by(hub_offer.c.created_at, hub_offer.c.id)
            .limit(limit or self._config.batch_size)
            .with_for_update(skip_locked=True)
            .cte("free")
        )
        statement = (
            update(hub_offer)
            # ``due`` again: on PostgreSQL a row another pump claimed and committed meanwhile
            # is re-checked against it after the lock, and left alone.
            .where(hub_offer.c.id.in_(select(free.c.id)), *due)
            .values(delivery_started_at=at)
            .returning(*hub_offer.c)
        )
        async with self._engine.begin() as conn:
            rows = (await conn.execute(statement)).all()
        return sorted((offer_row(r) for r in rows), key=lambda o: (o.created_at, o.id))

    async def run_once(self) -> PumpRound:
        """Claim one batch (no more than there is room for in flight) and start it."""
        room = min(self._config.batch_size, self._limit() - self._in_flight)
        if room <= 0:
            return PumpRound(full=True)
        offers = await self.claim(room)
        if not offers:
            return PumpRound()
        orders, gone = await self._orders(offers)
        for offer_id, code in gone:
            # Nothing left to send it with: say so rather than keep it RESERVED for ever.
            log.warning("offer %s not delivered: %s", offer_id, code)
            await self._store.move(
                offer_id, "FAILED", only_from=("RESERVED",), merge={"code": code}
            )
        started = 0
        refused: list[str] = []
        if orders:
            try:
                await self._start(orders)
                started = len(orders)
            except Exception as error:
                refused = [o["offer_id"] for o in orders]
                log.error("%d delivery starts failed: %s", len(refused), type(error).__name__)
                with contextlib.suppress(Exception):  # else the claims end after restart_after_s
                    await self._release(refused)
            # Cancelled: raised on, the claims are re-taken after restart_after_s.
        self.started += started
        return PumpRound(len(offers), started, len(gone), len(refused), len(offers) == room)

    async def _start(self, orders: list[dict[str, Any]]) -> None:
        # Counted from before the start, one per offer: the deliveries in flight never exceed
        # the bound, so a burst's workflows do not crowd the intake and the decisions off the
        # event loop (they share it); the offers wait RESERVED, durably, instead.
        count = len(orders)
        self._in_flight += count
        try:
            handle = await self._start_delivery(orders)
        except BaseException:
            self._ended(count)
            raise
        running = getattr(handle, "task", None)
        if isinstance(running, asyncio.Future) and not running.done():
            running.add_done_callback(lambda _: self._ended(count))
        else:  # ended already, or runs elsewhere (a repeated start): not ours to pace
            self._ended(count)

    def _ended(self, count: int) -> None:
        self._in_flight -= count
        self._freed.set()

    async def _release(self, offer_ids: Sequence[str]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(hub_offer)
                .where(hub_offer.c.id.in_(list(offer_ids)), hub_offer.c.state == "RESERVED")
                .values(delivery_started_at=None)
            )

    async def _orders(
        self, offers: Sequence[OfferRow]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """The delivery orders of ``offers``, and (offer id, code) of those that have none."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(hub_event.c.event_id, hub_event.c.subscriber, hub_event.c.payload).where(
                    hub_event.c.event_id.in_(sorted({o.event_id for o in offers}))
                )
            )
            events = {r.event_id: r for r in rows}
        identities = await self._identities.by_hub_ids(sorted({o.customer_id for o in offers}))
        book = self._book()
        orders: list[dict[str, Any]] = []
        gone: list[tuple[str, str]] = []
        for offer in offers:
            campaign = book.by_id(offer.campaign)
            identity = identities.get(offer.customer_id)
            event = events.get(offer.event_id)
            if campaign is None:
                gone.append((offer.id, "CAMPAIGN_GONE"))  # not in the campaigns file any more
            elif event is None:
                gone.append((offer.id, "EVENT_GONE"))  # pruned (events.retention_days)
            elif identity is None or offer.channel is None:
                gone.append((offer.id, "NO_CUSTOMER"))
            else:
                orders.append(
                    {
                        "offer_id": offer.id,
                        "campaign": campaign.id,
                        "customer_id": offer.customer_id,
                        "customer_no": identity.customer_no,
                        "channel": offer.channel,
                        "purpose": campaign.purpose,
                        "offer_ref": campaign.offer.ref,
                        "msisdn": event.subscriber,
                        "text": render_message(campaign, event.payload),
                    }
                )
        return orders, gone

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before the claim: a wake during the round means look again
            self._freed.clear()
            try:
                full = (await self.run_once()).full
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: try again at the next poll
                log.error("delivery pump failed: %s", type(error).__name__)
                full = False
            if self._stopping:
                break
            if full and self._in_flight < self._limit():
                continue  # more may be due, and there is room
            # Full: until a delivery ends or the busy spell is over; else until woken. The
            # poll either way.
            event = self._freed if full else self._wake
            timeout = self._config.poll_s
            if full and (busy := self._busy()) > 0:
                timeout = min(timeout, busy)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="delivery-pump")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let the round under way finish (up to ``grace_s``), then stop. A round cut short
        leaves claims that are only started again after ``restart_after_s``."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._stopping = False
