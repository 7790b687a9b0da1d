"""The hub's event table, ``hub_event``: stored once, claimed by one dispatcher, marked handled.

- **Once.** ``event_id`` is unique; a batch is inserted with ON CONFLICT DO NOTHING and
  RETURNING, so the caller learns which events were new and which were replays, in the same
  statement that stores them.
- **Claims with a lease**, on SQLite and PostgreSQL alike: a dispatcher takes up to N
  unhandled rows whose lease is free by writing a fresh claim token and ``claimed_until`` in
  one UPDATE. On PostgreSQL the inner SELECT takes ``FOR UPDATE SKIP LOCKED``, so replicas
  claiming at once never wait for each other nor take the same rows; SQLite serialises
  writers, so the one statement is enough there. A dispatcher that dies holding a claim loses
  it when the lease ends and the rows are handed again (at least once).
- **Handled** only by the claim's owner (its token), after its handler returned.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from marketing.events import BusinessEvent

metadata = MetaData()

hub_event = Table(
    "hub_event",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("event_type", String(40), nullable=False),
    Column("source", String(32), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("customer_id", String(32)),
    Column("subscriber", String(20)),
    Column("payload", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("handled_at", DateTime(timezone=True)),
    Column("claim_token", String(32)),
    Column("claimed_until", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, default=0),
    Index("ix_hub_event_handled_at", "handled_at"),
)
# What dispatchers scan: the unhandled rows, oldest first.
Index(
    "ix_hub_event_unhandled",
    hub_event.c.seq,
    postgresql_where=hub_event.c.handled_at.is_(None),
    sqlite_where=hub_event.c.handled_at.is_(None),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands datetimes back without their offset; every one stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class Claim:
    token: str
    events: tuple[BusinessEvent, ...]
    seqs: tuple[int, ...]


def _event(row: Any) -> BusinessEvent:
    return BusinessEvent(
        event_id=row.event_id,
        event_type=row.event_type,
        source=row.source,
        occurred_at=_aware(row.occurred_at),
        customer_id=row.customer_id,
        subscriber=row.subscriber,
        payload=row.payload,
    )


def insert_new(table: Table, dialect: str, key: str) -> Any:
    """``INSERT ... ON CONFLICT (key) DO NOTHING RETURNING key``, to be executed with a list
    of rows.

    Built once and executed with the rows as parameters (executemany): SQLAlchemy's
    "insertmanyvalues" sends them as multi-row INSERTs of one cached statement. Building a
    ``.values(rows)`` statement per batch instead compiled a new statement every time (11-16 %
    of the gateway's CPU under the events benchmark) and, on PostgreSQL, made asyncpg prepare
    a new statement per batch size.
    """
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])


class EventStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._insert = insert_new(hub_event, self._dialect, "event_id")

    async def store(self, events: Sequence[BusinessEvent]) -> set[str]:
        """Store the events not stored yet, in one transaction; the ids that were new.

        Returns after the commit: an id in the answer is durable.
        """
        if not events:
            return set()
        now = utcnow()
        rows = [
            {
                "event_id": e.event_id,
                "event_type": e.event_type,
                "source": e.source,
                "occurred_at": _utc(e.occurred_at),
                "customer_id": e.customer_id,
                "subscriber": e.subscriber,
                "payload": dict(e.payload),
                "received_at": now,
                "attempts": 0,
            }
            for e in events
        ]
        async with self._engine.begin() as conn:
            result = await conn.execute(self._insert, rows)
            return {r.event_id for r in result}

    async def claim(self, worker: str, limit: int, lease_s: float) -> Claim:
        """Up to ``limit`` unhandled events whose lease is free, oldest first, now ours."""
        now = utcnow()
        token = uuid.uuid4().hex
        free = (
            select(hub_event.c.seq)
            .where(
                hub_event.c.handled_at.is_(None),
                or_(hub_event.c.claimed_until.is_(None), hub_event.c.claimed_until < now),
            )
            .order_by(hub_event.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(hub_event)
            .where(hub_event.c.seq.in_(free.scalar_subquery()))
            .values(
                claim_token=token,
                claimed_until=now + dt.timedelta(seconds=lease_s),
                attempts=hub_event.c.attempts + 1,
            )
            .returning(*hub_event.c)
        )
        async with self._engine.begin() as conn:
            rows = sorted((await conn.execute(statement)).all(), key=lambda r: r.seq)
        del worker  # the token is the claim; the worker only names it in logs
        return Claim(token, tuple(_event(r) for r in rows), tuple(r.seq for r in rows))

    async def mark_handled(self, claim: Claim) -> int:
        """Mark a claim's events handled; how many were still ours (a lease may have ended)."""
        if not claim.seqs:
            return 0
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(hub_event)
                .where(hub_event.c.seq.in_(claim.seqs), hub_event.c.claim_token == claim.token)
                .values(handled_at=utcnow(), claim_token=None, claimed_until=None)
            )
            return int(result.rowcount or 0)

    async def release(self, claim: Claim, retry_after_s: float) -> None:
        """Give a claim back after its handler failed: handed again after ``retry_after_s``."""
        if not claim.seqs:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                update(hub_event)
                .where(hub_event.c.seq.in_(claim.seqs), hub_event.c.claim_token == claim.token)
                .values(
                    claim_token=None,
                    claimed_until=utcnow() + dt.timedelta(seconds=retry_after_s),
                )
            )

    async def prune(self, older_than: dt.datetime) -> int:
        """Delete events handled before ``older_than``; how many."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(hub_event).where(hub_event.c.handled_at < _utc(older_than))
            )
            return int(result.rowcount or 0)

    async def counts(self) -> Mapping[str, int]:
        """Stored and unhandled events (for /metrics and tests): numbers only."""
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(hub_event))).scalar()
            unhandled = (
                await conn.execute(
                    select(func.count())
                    .select_from(hub_event)
                    .where(hub_event.c.handled_at.is_(None))
                )
            ).scalar()
        return {"stored": int(total or 0), "unhandled": int(unhandled or 0)}
