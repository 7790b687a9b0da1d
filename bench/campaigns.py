"""Campaign decisions per second, on SQLite and on PostgreSQL, caps checked exactly.

    python -m bench.campaigns [--events 5000] [--customers 1000] [--batch 256]
                              [--deciders 2] [--backends sqlite,postgres]

What is timed: stored events handed to the campaigns' decider in batches (as the events
dispatcher hands them) until every one is decided: campaigns matched, control group, consent,
complaint, quiet hours and caps checked, and the reservation (offer row, counters, contact row)
committed. ``--deciders`` run at once on engines of their own, as two gateway workers would,
over the same customers, so the counter rows are contended. The bundled campaigns file, with
quiet hours off (the figure must not depend on the hour it is run at). Delivery (the DBOS
workflows and the SMS) is not in the figure: it runs after the decision, one workflow per send
(bench.workflows measures the engine).

Afterwards the run checks what it measured: no customer over any cap, one offer per
campaign and customer. Rows are printed as JSON lines. Bounded: ``--events`` at most 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gateway.database import create_engine
from gateway.migrate import upgrade
from marketing.campaigns import CampaignBook, load_campaigns
from marketing.decide import Decider, GuardContext
from marketing.events import BusinessEvent
from marketing.offer_store import hub_contact, hub_contact_count, hub_offer

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
KINDS = (
    ("usage.threshold_crossed", {"percent": 85}),
    ("roaming.started", {}),
    ("bill.issued", {}),
    ("bill.overdue", {"days_overdue": 40}),
    ("payment.received", {}),
    ("line.resumed", {"days_off": 120}),
    ("ticket.resolved", {}),
    ("line.suspended", {}),
)


def _events(count: int, customers: int) -> list[BusinessEvent]:
    at = datetime.now(UTC)
    return [
        BusinessEvent(
            event_id=f"bench:{i}",
            event_type=KINDS[(i // customers) % len(KINDS)][0],
            source="bench",
            occurred_at=at,
            # Every customer in turn, then each again with the next kind of event.
            customer_id=f"cus_{i % customers:020x}",
            subscriber=None,
            payload=KINDS[(i // customers) % len(KINDS)][1],
        )
        for i in range(count)
    ]


def _book() -> CampaignBook:
    book = load_campaigns()
    return dataclasses.replace(
        book, guards=dataclasses.replace(book.guards, quiet_start=None, quiet_end=None)
    )


async def _postgres_database() -> tuple[str, Any]:
    import asyncpg

    name = f"bench_campaigns_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(POSTGRES_ADMIN, timeout=3)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN, timeout=3)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", drop


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    drop = None
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'hub.db'}"
        else:
            url, drop = await _postgres_database()
        engines = [create_engine(url) for _ in range(args.deciders)]
        try:
            await upgrade(engines[0])
            book = _book()
            context = GuardContext("Asia/Shanghai", True)
            deciders = [Decider(e, lambda: book, context) for e in engines]
            events = _events(args.events, args.customers)
            batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
            queue: asyncio.Queue[list[BusinessEvent]] = asyncio.Queue()
            for batch in batches:
                queue.put_nowait(batch)
            decided = 0

            async def work(decider: Decider) -> None:
                nonlocal decided
                while not queue.empty():
                    batch = queue.get_nowait()
                    # Awaited first: `decided += len(await ...)` reads `decided` before the
                    # await and loses the other decider's additions meanwhile.
                    made = await decider.decide(batch)
                    decided += len(made)

            started = time.perf_counter()
            await asyncio.gather(*(work(d) for d in deciders))
            elapsed = time.perf_counter() - started
            checks = await _check(engines[0], book)
        finally:
            for engine in engines:
                await engine.dispose()
            if drop is not None:
                await drop()
    return {
        "bench": "campaign_decisions",
        "backend": backend,
        "events": args.events,
        "customers": args.customers,
        "batch": args.batch,
        "deciders": args.deciders,
        "decisions": decided,
        "seconds": round(elapsed, 3),
        "events_per_s": round(args.events / elapsed, 1),
        **checks,
    }


async def _check(engine: Any, book: CampaignBook) -> dict[str, Any]:
    """What was measured held: counters equal to contacts, none above a cap."""
    async with engine.connect() as conn:
        offers = (await conn.execute(select(func.count()).select_from(hub_offer))).scalar()
        contacts = (await conn.execute(select(func.count()).select_from(hub_contact))).scalar()
        rows = (await conn.execute(select(hub_contact_count))).all()
    over = 0
    for row in rows:
        period = "day" if row.period.startswith("d:") else "week"
        cap = book.guards.caps.get(period, {}).get(row.scope)
        if cap is not None and row.contacts > cap:
            over += 1
    counted = sum(r.contacts for r in rows if r.scope == "overall" and r.period.startswith("d:"))
    if over or counted != contacts:
        raise AssertionError(f"caps not exact: {over} counters over a cap, {counted} != {contacts}")
    return {"offers": offers, "contacts": contacts, "counters_over_cap": over}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.campaigns")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--deciders", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)
    if not 1 <= args.events <= 100_000 or not 1 <= args.deciders <= 8:
        parser.error("--events must be 1-100000 and --deciders 1-8")
    for backend in args.backends.split(","):
        print(json.dumps(asyncio.run(run_backend(backend.strip(), args))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
