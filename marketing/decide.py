"""From stored events to decisions: match the campaigns, apply the guards, reserve the sends.

One batch of events is decided in one transaction of the hub's database:

1. The contact counters of every customer in the batch are created if missing and locked,
   in one global order (customer, scope, period): two workers deciding for the same customer
   queue behind each other, never deadlock, and read each other's committed counts. On SQLite
   the first statement is a write, so the transaction holds the database's write lock from
   its start (SQLite has one writer at a time).
2. Offers already made (one per campaign and customer), consents and complaints are read.
3. Each (event, campaign) that matches is decided in order, counting in memory what this
   batch already reserved: the control group gets a CONTROL row and no contact; otherwise the
   campaign's channels are tried in order, and the first one no guard refuses is reserved
   (its counters go up in this same transaction, and a ``hub_contact`` row is written). If
   every channel is refused, the offer is SUPPRESSED with the first channel's guard.
4. Commit: the decision is durable before anything is sent or the events are marked handled.

Guards, in the order they are checked: ``consent`` (withdrawn for this channel and purpose),
``complaint`` (an open complaint request, or one within the cool-down), ``quiet_hours`` (sms and
app, the customer's local time), ``cap_<day|week>_<channel|overall>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketing.audience import Facts, FactsSource, in_control_group, match_event
from marketing.campaigns import CONTACT_CHANNELS, PERIODS, Campaign, CampaignBook, Guards
from marketing.events import BusinessEvent
from marketing.offer_store import (
    hub_consent,
    hub_contact,
    hub_contact_count,
    hub_offer,
    insert_ignoring,
    now,
    offer_id,
)
from orchestration.store import OPEN_STATUSES, hub_request

log = logging.getLogger("switchboard.marketing")

SCOPES = ("overall", *CONTACT_CHANNELS)
#: A batch whose transaction lost to a concurrent one (deadlock, serialization) is retried.
RETRIES = 5


def period_keys(local: datetime) -> dict[str, str]:
    """The calendar periods a contact at this local time counts in."""
    year, week, _ = local.isocalendar()
    return {"day": f"d:{local.date().isoformat()}", "week": f"w:{year}-W{week:02d}"}


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of one (event, campaign) that matched."""

    event_id: str
    campaign: str
    customer_id: str
    offer_id: str
    #: CONTROL, SUPPRESSED, RESERVED (a send to make), AVAILABLE (nbo), or DUPLICATE.
    outcome: str
    channel: str | None = None
    guard: str | None = None
    #: For DUPLICATE: the state of the offer made before (RESERVED: its send is still due).
    existing_state: str | None = None
    refusals: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Batch:
    counts: dict[tuple[str, str, str], int]
    offers: dict[tuple[str, str], str]  # (campaign, customer) -> state
    consents: dict[tuple[str, str, str], bool]
    complaints: set[str]


class GuardContext:
    """What the guards need to know besides the database: time, zones, consent default."""

    def __init__(
        self,
        default_timezone: str = "Asia/Shanghai",
        consent_default: bool = True,
        clock: Callable[[], datetime] = now,
        timezone_of: Callable[[str], ZoneInfo | None] | None = None,
    ) -> None:
        self.zone = ZoneInfo(default_timezone)
        self.consent_default = consent_default
        self.clock = clock
        self._timezone_of = timezone_of

    def local_time(self, customer_id: str) -> datetime:
        """Now in the customer's time zone (their data's, else the region default)."""
        zone = (self._timezone_of(customer_id) if self._timezone_of else None) or self.zone
        return self.clock().astimezone(zone)


def refusal(
    guards: Guards,
    context: GuardContext,
    batch: _Batch,
    campaign: Campaign,
    customer_id: str,
    channel: str,
    periods: Mapping[str, str],
    local: datetime,
) -> str | None:
    """The guard that refuses this channel for this customer now, or None."""
    granted = batch.consents.get((customer_id, channel, campaign.purpose))
    if not (context.consent_default if granted is None else granted):
        return "consent"
    if customer_id in batch.complaints:
        return "complaint"
    if channel not in CONTACT_CHANNELS:
        return None  # the agent console's next best offer contacts no one by itself
    if guards.in_quiet_hours(local.time()):
        return "quiet_hours"
    for period in PERIODS:
        caps = guards.caps.get(period, {})
        for scope in (channel, "overall"):
            cap = caps.get(scope)
            if (
                cap is not None
                and batch.counts.get((customer_id, scope, periods[period]), 0) >= cap
            ):
                return f"cap_{period}_{scope}"
    return None


class Decider:
    """Decides batches of events against the campaigns of a book, exactly under concurrency."""

    def __init__(
        self,
        engine: AsyncEngine,
        book: Callable[[], CampaignBook],
        context: GuardContext,
        facts: FactsSource | None = None,
    ) -> None:
        self.engine = engine
        self.book = book
        self.context = context
        self.facts = facts

    async def decide(self, events: Sequence[BusinessEvent]) -> list[Decision]:
        book = self.book()
        candidates = await self._candidates(book, events)
        if not candidates:
            return []
        for attempt in range(1, RETRIES + 1):
            try:
                async with self.engine.begin() as conn:
                    return await self._decide(conn, book, candidates)
            except DBAPIError as error:
                # A deadlock or serialization failure: the transaction changed nothing.
                if attempt == RETRIES or not _retryable(error):
                    raise
                log.warning("decision batch retried after %s", type(error.orig).__name__)
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def _candidates(
        self, book: CampaignBook, events: Sequence[BusinessEvent]
    ) -> list[tuple[BusinessEvent, Campaign]]:
        relevant = [
            (event, campaign)
            for event in events
            if event.customer_id
            for campaign in book.for_event(event.event_type)
        ]
        facts: Mapping[str, Facts] = {}
        needing = sorted({e.customer_id for e, c in relevant if c.needs_insight and e.customer_id})
        if needing and self.facts is not None:
            facts = await self.facts.facts(needing)
        found: list[tuple[BusinessEvent, Campaign]] = []
        seen: set[tuple[str, str]] = set()
        for event, campaign in relevant:
            customer = event.customer_id or ""
            today = self.context.local_time(customer).date()
            if not match_event(campaign, event, facts.get(customer), today).matched:
                continue
            if (campaign.id, customer) in seen:
                continue  # one offer per campaign and customer: the batch's first event wins
            seen.add((campaign.id, customer))
            found.append((event, campaign))
        return found

    async def _decide(
        self,
        conn: AsyncConnection,
        book: CampaignBook,
        candidates: Sequence[tuple[BusinessEvent, Campaign]],
    ) -> list[Decision]:
        customers = sorted({e.customer_id or "" for e, _ in candidates})
        local = {c: self.context.local_time(c) for c in customers}
        periods = {c: period_keys(local[c]) for c in customers}
        batch = await self._lock_and_read(conn, book, customers, periods, candidates)
        decisions: list[Decision] = []
        offers: list[dict[str, Any]] = []
        contacts: list[dict[str, Any]] = []
        changed: set[tuple[str, str, str]] = set()
        at = now()
        for event, campaign in candidates:
            customer = event.customer_id or ""
            oid = offer_id(campaign.id, customer)
            existing = batch.offers.get((campaign.id, customer))
            if existing is not None:
                decisions.append(
                    Decision(
                        event.event_id,
                        campaign.id,
                        customer,
                        oid,
                        "DUPLICATE",
                        existing_state=existing,
                    )
                )
                continue
            row = {
                "id": oid,
                "campaign": campaign.id,
                "customer_id": customer,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "offer_ref": campaign.offer.ref,
                "channel": None,
                "guard": None,
                "detail": "{}",
                "created_at": at,
                "updated_at": at,
            }
            if in_control_group(campaign, customer):
                decision = Decision(event.event_id, campaign.id, customer, oid, "CONTROL")
            else:
                decision = self._choose(
                    book.guards, batch, campaign, event, oid, periods[customer], local[customer]
                )
                if decision.outcome in ("RESERVED", "AVAILABLE") and decision.channel in (
                    CONTACT_CHANNELS
                ):
                    channel = decision.channel or ""
                    for period in PERIODS:
                        for scope in (channel, "overall"):
                            key = (customer, scope, periods[customer][period])
                            batch.counts[key] = batch.counts.get(key, 0) + 1
                            changed.add(key)
                    contacts.append(
                        {
                            "offer_id": oid,
                            "customer_id": customer,
                            "channel": channel,
                            "day": periods[customer]["day"],
                            "week": periods[customer]["week"],
                            "at": at,
                        }
                    )
                row["channel"] = decision.channel
                row["guard"] = decision.guard
                if decision.refusals:
                    row["detail"] = json.dumps({"refusals": dict(decision.refusals)})
            row["state"] = decision.outcome
            batch.offers[(campaign.id, customer)] = decision.outcome
            offers.append(row)
            decisions.append(decision)
        if offers:
            await conn.execute(insert_ignoring(conn.dialect.name, hub_offer), offers)
        if contacts:
            await conn.execute(hub_contact.insert(), contacts)
        if changed:
            await conn.execute(
                update(hub_contact_count)
                .where(
                    hub_contact_count.c.customer_id == _bind("k_customer"),
                    hub_contact_count.c.scope == _bind("k_scope"),
                    hub_contact_count.c.period == _bind("k_period"),
                )
                .values(contacts=_bind("k_contacts")),
                [
                    {
                        "k_customer": c,
                        "k_scope": s,
                        "k_period": p,
                        "k_contacts": batch.counts[(c, s, p)],
                    }
                    for c, s, p in sorted(changed)
                ],
            )
        return decisions

    def _choose(
        self,
        guards: Guards,
        batch: _Batch,
        campaign: Campaign,
        event: BusinessEvent,
        oid: str,
        periods: Mapping[str, str],
        local: datetime,
    ) -> Decision:
        customer = event.customer_id or ""
        refusals: dict[str, str] = {}
        for channel in campaign.channels:
            guard = refusal(
                guards, self.context, batch, campaign, customer, channel, periods, local
            )
            if guard is None:
                outcome = "AVAILABLE" if channel == "nbo" else "RESERVED"
                return Decision(
                    event.event_id,
                    campaign.id,
                    customer,
                    oid,
                    outcome,
                    channel=channel,
                    refusals=refusals,
                )
            refusals[channel] = guard
        first = refusals[campaign.channels[0]]
        return Decision(
            event.event_id, campaign.id, customer, oid, "SUPPRESSED", guard=first, refusals=refusals
        )

    async def _lock_and_read(
        self,
        conn: AsyncConnection,
        book: CampaignBook,
        customers: Sequence[str],
        periods: Mapping[str, Mapping[str, str]],
        candidates: Sequence[tuple[BusinessEvent, Campaign]],
        lock: bool = True,
    ) -> _Batch:
        """Lock the counters (``lock``; explain reads without) and read what the guards need."""
        keys = sorted(
            (c, scope, periods[c][period])
            for c in customers
            for scope in SCOPES
            for period in PERIODS
        )
        # First a write: on SQLite it takes the write lock for the whole transaction; on
        # PostgreSQL new counter rows exist before they are locked.
        if lock:
            await conn.execute(
                insert_ignoring(conn.dialect.name, hub_contact_count),
                [{"customer_id": c, "scope": s, "period": p, "contacts": 0} for c, s, p in keys],
            )
        period_values = sorted({p for c in customers for p in periods[c].values()})
        query = (
            select(hub_contact_count)
            .where(
                hub_contact_count.c.customer_id.in_(list(customers)),
                hub_contact_count.c.period.in_(period_values),
            )
            .order_by(
                hub_contact_count.c.customer_id,
                hub_contact_count.c.scope,
                hub_contact_count.c.period,
            )
        )
        counted = await conn.execute(query.with_for_update() if lock else query)
        counts = {(r.customer_id, r.scope, r.period): int(r.contacts) for r in counted}
        campaigns = sorted({c.id for _, c in candidates})
        made = await conn.execute(
            select(hub_offer.c.campaign, hub_offer.c.customer_id, hub_offer.c.state).where(
                hub_offer.c.customer_id.in_(list(customers)),
                hub_offer.c.campaign.in_(campaigns),
            )
        )
        offers = {(r.campaign, r.customer_id): r.state for r in made}
        consented = await conn.execute(
            select(hub_consent).where(hub_consent.c.customer_id.in_(list(customers)))
        )
        consents = {(r.customer_id, r.channel, r.purpose): bool(r.granted) for r in consented}
        cutoff = self.context.clock() - timedelta(days=book.guards.complaint_cooldown_days)
        complained = await conn.execute(
            select(hub_request.c.customer_id).where(
                hub_request.c.kind == "complaint",
                hub_request.c.customer_id.in_(list(customers)),
                or_(hub_request.c.status.in_(OPEN_STATUSES), hub_request.c.updated_at >= cutoff),
            )
        )
        complaints = {r.customer_id for r in complained}
        return _Batch(counts, offers, consents, complaints)


def _bind(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name)


def _retryable(error: DBAPIError) -> bool:
    text = type(error.orig).__name__ + str(error.orig)
    return any(
        word in text
        for word in (
            "Deadlock",
            "deadlock",
            "SerializationFailure",
            "could not serialize",
            "database is locked",
        )
    )
