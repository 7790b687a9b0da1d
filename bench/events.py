"""Business events per second, from arrival to stored-and-handed, on SQLite and PostgreSQL.

    python -m bench.events [--events 5000] [--concurrency 64] [--backends sqlite,postgres]

The real gateway over the real simulators on loopback, with the recording handler installed
(``events.handler = "record"``: one ``event_decision`` row per event, a real write). A load
generator plays the BOSS event hub: ``--events`` signed TMF notifications (roaming started,
each for a line of the dataset, customer keys from the dataset) POSTed to
``/events/boss`` with ``--concurrency`` in flight. Two figures per backend, from one run:

- ``stored_per_s``: events acknowledged (2xx: committed) per second of sending;
- ``handled_per_s``: events per second from the first POST until the last event's decision
  row exists (read from the database, not through the gateway).

Bounded: a fixed number of events, and a deadline on the wait for the handler.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

from bench.workflows import _postgres_database, _sqlite_database
from gateway.database import create_engine
from marketing.recording import event_decision
from simulators.dataset import generate
from simulators.seed import seed_dataset
from tests.harness import gateway_env, running_simulators, start_gateway, stop

SEED = 9191
CUSTOMERS = 400
SECRET = "bench-events-" + uuid.uuid4().hex
HANDLE_DEADLINE_S = 120.0


def _notifications(count: int) -> list[bytes]:
    lines = [
        (b.customer.customer_no, s[2]) for b in map(lambda i: generate(SEED, i), range(CUSTOMERS))
        for s in b.subscribers
    ]  # fmt: skip
    return [
        json.dumps(
            {
                "eventId": uuid.uuid4().hex,
                "eventTime": "2026-12-02T10:00:00+08:00",
                "eventType": "RoamingStartedEvent",
                "event": {
                    "customer": {"customerNo": lines[i % len(lines)][0]},
                    "subscriber": {"msisdn": lines[i % len(lines)][1]},
                    "roaming": {"country": "JP"},
                },
            }
        ).encode()
        for i in range(count)
    ]


def _headers(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Hub-Timestamp": ts,
        "X-Hub-Signature-256": f"sha256={digest}",
    }


async def _drive(url: str, database_url: str, count: int, concurrency: int) -> dict[str, Any]:
    bodies = _notifications(count)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(
                    f"{url}/events/boss", data=body, headers=_headers(body)
                ) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        sent = time.perf_counter() - started
    engine = create_engine(database_url)
    try:
        deadline = time.monotonic() + HANDLE_DEADLINE_S
        handled = 0
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                handled = int(
                    (await conn.execute(select(func.count()).select_from(event_decision))).scalar()
                    or 0
                )
            if handled >= count:
                break
            await asyncio.sleep(0.02)
        finished = time.perf_counter() - started
    finally:
        await engine.dispose()
    return {
        "events": count,
        "concurrency": concurrency,
        "statuses": statuses,
        "stored_per_s": round(statuses.get(201, 0) / sent, 1),
        "handled": handled,
        "handled_per_s": round(handled / finished, 1),
        "seconds": round(finished, 2),
    }


def run(count: int, concurrency: int, backends: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        state = Path(tmp)
        seed_dataset(state / "data", CUSTOMERS, SEED)
        with running_simulators(state / "data") as sims:
            for backend in backends:
                databases = (
                    _sqlite_database(state / backend)
                    if backend == "sqlite"
                    else _postgres_database()
                )
                (state / backend).mkdir(exist_ok=True)
                with databases as database_url:
                    env = gateway_env(
                        sims,
                        database_url,
                        SWITCHBOARD_EVENTS__HANDLER="record",
                        SWITCHBOARD_EVENTS__REGISTER_CALLBACKS="false",
                        SWITCHBOARD_EVENTS_BOSS_SECRET=SECRET,
                        SWITCHBOARD_WORKFLOWS__ENABLED="false",
                        SWITCHBOARD_AUDIT__ENABLED="false",
                    )
                    # A loaded machine starts a gateway slowly: a generous start deadline.
                    url, process = start_gateway(env, state / f"{backend}.log", timeout_s=180)
                    try:
                        row = asyncio.run(_drive(url, database_url, count, concurrency))
                    finally:
                        stop(process)
                    rows.append({"scenario": "events", "backend": backend, **row})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)
    for row in run(args.events, args.concurrency, tuple(args.backends.split(","))):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
