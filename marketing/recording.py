"""A real, trivial EventHandler: records one decision row per event (tests, the benchmark).

Installed with ``events.handler = "record"`` until a real handler (the campaigns) is. It is
idempotent per event, as the contract asks: a batch handed twice (after a crash) inserts
nothing the second time, and ``times_handed`` counts how often each event was handed, so a
test can tell "handed once" from "handed twice, recorded once".
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, DateTime, Integer, String, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from marketing.events import BusinessEvent
from marketing.store import insert_new, metadata, utcnow

event_decision = Table(
    "event_decision",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("event_type", String(40), nullable=False),
    Column("customer_id", String(32)),
    Column("decision", String(32), nullable=False),
    Column("worker", String(96), nullable=False),
    Column("times_handed", Integer, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)


class RecordingHandler:
    def __init__(self, engine: AsyncEngine, worker: str) -> None:
        self._engine = engine
        self._worker = worker
        self._insert = insert_new(event_decision, engine.dialect.name, "event_id")

    async def handle(self, events: Sequence[BusinessEvent]) -> None:
        if not events:
            return
        now = utcnow()
        rows = [
            {
                "event_id": e.event_id,
                "event_type": e.event_type,
                "customer_id": e.customer_id,
                # The decision a real handler would take; here: was the customer known.
                "decision": "known_customer" if e.customer_id else "unknown_customer",
                "worker": self._worker,
                "times_handed": 1,
                "decided_at": now,
            }
            for e in events
        ]
        async with self._engine.begin() as conn:
            inserted = {r.event_id for r in await conn.execute(self._insert, rows)}
            again = [e.event_id for e in events if e.event_id not in inserted]
            if again:
                await conn.execute(
                    update(event_decision)
                    .where(event_decision.c.event_id.in_(again))
                    .values(times_handed=event_decision.c.times_handed + 1)
                )


async def decisions(engine: AsyncEngine) -> dict[str, int]:
    """times_handed per event id (tests)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(event_decision.c.event_id, event_decision.c.times_handed))
        return {r.event_id: r.times_handed for r in rows}


async def decision_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(event_decision))).scalar() or 0
        )
