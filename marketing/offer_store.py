"""The hub's marketing tables: offers, consents, contact counters and contact reservations.

- ``hub_offer``: at most one offer per (campaign, customer), unique; its state says what
  became of it (CONTROL, SUPPRESSED + the guard, RESERVED, SENT, AVAILABLE, ACCEPTED, FAILED).
- ``hub_consent``: per customer, channel and purpose, granted or withdrawn, by whom and where.
- ``hub_contact_count``: contacts per customer, scope (a channel, or ``overall``) and period
  (``d:<local date>``, ``w:<ISO week>``). Counters change only in the transaction that
  reserves a send (``hub_contact``), with the counter rows locked first: caps are exact.
- ``hub_contact``: one row per reserved send (the offer), what it counted against.

No personal data: hub customer ids, campaign ids, channel names, codes and system record ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = MetaData()

hub_offer = Table(
    "hub_offer",
    metadata,
    Column("id", String(40), primary_key=True),  # offer-<24 hex>, also the delivery workflow id
    Column("campaign", String(48), nullable=False),
    Column("customer_id", String(32), nullable=False),
    Column("event_id", String(200), nullable=False),  # the event that made it
    Column("event_type", String(40), nullable=False),
    Column("offer_ref", String(64), nullable=False),  # offering:<id> or pack:<name>
    Column("channel", String(8)),  # the channel chosen (sms, app, nbo); None when none was
    Column("state", String(16), nullable=False),
    Column("guard", String(24)),  # the guard that refused (SUPPRESSED), else None
    Column("detail", Text, nullable=False, default="{}"),  # JSON: ids, codes
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # When a delivery pump (marketing/pump.py) last claimed a RESERVED offer to start its
    # delivery workflow; None: not started yet. Meaningless once the offer left RESERVED.
    Column("delivery_started_at", DateTime(timezone=True)),
    UniqueConstraint("campaign", "customer_id", name="uq_offer_campaign_customer"),
)
Index("ix_hub_offer_customer", hub_offer.c.customer_id, hub_offer.c.state)
# What the pumps scan: the offers still RESERVED (a few; SENT, SUPPRESSED... are most).
Index(
    "ix_hub_offer_reserved",
    hub_offer.c.created_at,
    postgresql_where=hub_offer.c.state == "RESERVED",
    sqlite_where=hub_offer.c.state == "RESERVED",
)

hub_consent = Table(
    "hub_consent",
    metadata,
    Column("customer_id", String(32), primary_key=True),
    Column("channel", String(8), primary_key=True),  # sms, app, nbo
    Column("purpose", String(32), primary_key=True),  # e.g. marketing
    Column("granted", Boolean, nullable=False),
    Column("changed_in", String(32), nullable=False),  # the channel the change came from
    Column("changed_by", String(64), nullable=False),  # credential id
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

hub_contact_count = Table(
    "hub_contact_count",
    metadata,
    Column("customer_id", String(32), primary_key=True),
    Column("scope", String(8), primary_key=True),  # sms, app or overall
    Column("period", String(16), primary_key=True),  # d:2026-12-02, w:2026-W49
    Column("contacts", Integer, nullable=False),
)

hub_contact = Table(
    "hub_contact",
    metadata,
    Column("offer_id", String(40), primary_key=True),
    Column("customer_id", String(32), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("day", String(16), nullable=False),
    Column("week", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

#: Offer states a customer still holds (shown as next best offers, accepted from).
OPEN_STATES = ("SENT", "AVAILABLE")


def now() -> datetime:
    return datetime.now(UTC)


def offer_id(campaign: str, customer_id: str) -> str:
    """The offer (and delivery workflow) id: one per campaign and customer, whoever decides."""
    digest = hashlib.sha256(f"{campaign}\x00{customer_id}".encode()).hexdigest()[:24]
    return f"offer-{digest}"


@dataclass(frozen=True, slots=True)
class OfferRow:
    id: str
    campaign: str
    customer_id: str
    event_id: str
    event_type: str
    offer_ref: str
    channel: str | None
    state: str
    guard: str | None
    detail: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    delivery_started_at: datetime | None = None


def offer_row(row: Any) -> OfferRow:
    return OfferRow(
        id=row.id,
        campaign=row.campaign,
        customer_id=row.customer_id,
        event_id=row.event_id,
        event_type=row.event_type,
        offer_ref=row.offer_ref,
        channel=row.channel,
        state=row.state,
        guard=row.guard,
        detail=json.loads(row.detail or "{}"),
        created_at=row.created_at,
        updated_at=row.updated_at,
        delivery_started_at=row.delivery_started_at,
    )


class MarketingStore:
    """Reads and idempotent writes of the marketing tables (the decision's own transaction is
    in marketing/decide.py)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def offer(self, offer_id: str) -> OfferRow | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(hub_offer).where(hub_offer.c.id == offer_id))).first()
        return offer_row(row) if row else None

    async def offers_of(
        self, customer_id: str, states: Sequence[str] = OPEN_STATES
    ) -> list[OfferRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(hub_offer)
                .where(hub_offer.c.customer_id == customer_id, hub_offer.c.state.in_(states))
                .order_by(hub_offer.c.created_at.desc())
            )
            return [offer_row(r) for r in rows]

    async def offers_of_campaign(self, campaign: str) -> list[OfferRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(hub_offer).where(hub_offer.c.campaign == campaign))
            return [offer_row(r) for r in rows]

    async def move(
        self,
        offer_id: str,
        state: str,
        *,
        only_from: Sequence[str],
        guard: str | None = None,
        merge: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move an offer to ``state`` if it is in one of ``only_from`` (a repeat is a no-op)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(select(hub_offer.c.detail).where(hub_offer.c.id == offer_id))
            ).first()
            if row is None:
                return False
            values: dict[str, Any] = {"state": state, "updated_at": now()}
            if guard is not None:
                values["guard"] = guard
            if merge:
                values["detail"] = json.dumps({**json.loads(row.detail or "{}"), **merge})
            result = await conn.execute(
                update(hub_offer)
                .where(hub_offer.c.id == offer_id, hub_offer.c.state.in_(list(only_from)))
                .values(**values)
            )
            return bool(result.rowcount)

    async def move_many(
        self,
        moves: Sequence[tuple[str, str, str | None, Mapping[str, Any]]],
        *,
        only_from: Sequence[str],
    ) -> int:
        """``move`` for many offers in one transaction: (offer id, state, guard, merge) each;
        how many moved (a repeat is a no-op, offer by offer)."""
        if not moves:
            return 0
        moved = 0
        async with self.engine.begin() as conn:
            ids = sorted({m[0] for m in moves})
            details = {
                r.id: r.detail
                for r in await conn.execute(
                    select(hub_offer.c.id, hub_offer.c.detail).where(hub_offer.c.id.in_(ids))
                )
            }
            at = now()
            for offer_id, state, guard, merge in moves:
                if offer_id not in details:
                    continue
                values: dict[str, Any] = {"state": state, "updated_at": at}
                if guard is not None:
                    values["guard"] = guard
                if merge:
                    values["detail"] = json.dumps(
                        {**json.loads(details[offer_id] or "{}"), **merge}
                    )
                result = await conn.execute(
                    update(hub_offer)
                    .where(hub_offer.c.id == offer_id, hub_offer.c.state.in_(list(only_from)))
                    .values(**values)
                )
                moved += int(result.rowcount or 0)
        return moved

    async def pending_deliveries(self, limit: int = 1000) -> list[OfferRow]:
        """Offers reserved for a send whose delivery has not finished (for recovery)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(hub_offer).where(hub_offer.c.state == "RESERVED").limit(limit)
            )
            return [offer_row(r) for r in rows]

    # --- consent --------------------------------------------------------------------------

    async def consents(self, customer_ids: Sequence[str]) -> dict[tuple[str, str, str], bool]:
        """(customer, channel, purpose) -> granted, for the rows stored."""
        if not customer_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(hub_consent).where(hub_consent.c.customer_id.in_(list(customer_ids)))
            )
            return {(r.customer_id, r.channel, r.purpose): bool(r.granted) for r in rows}

    async def set_consent(
        self,
        customer_id: str,
        channel: str,
        purpose: str,
        granted: bool,
        *,
        changed_in: str,
        changed_by: str,
    ) -> None:
        values = {
            "granted": granted,
            "changed_in": changed_in,
            "changed_by": changed_by,
            "updated_at": now(),
        }
        async with self.engine.begin() as conn:
            # Insert-or-keep, then update: two changes racing on a new row both land (the
            # later one wins), none is dropped by the unique key.
            await conn.execute(
                insert_ignoring(conn.dialect.name, hub_consent).values(
                    customer_id=customer_id, channel=channel, purpose=purpose, **values
                )
            )
            await conn.execute(
                update(hub_consent)
                .where(
                    hub_consent.c.customer_id == customer_id,
                    hub_consent.c.channel == channel,
                    hub_consent.c.purpose == purpose,
                )
                .values(**values)
            )

    async def contacts(self, customer_id: str) -> dict[tuple[str, str], int]:
        """(scope, period) -> contacts, for one customer (explain, tests)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(hub_contact_count).where(hub_contact_count.c.customer_id == customer_id)
            )
            return {(r.scope, r.period): int(r.contacts) for r in rows}


def insert_ignoring(dialect: str, table: Table) -> Any:
    """INSERT that leaves an existing row (same key) alone, on SQLite and PostgreSQL."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()
