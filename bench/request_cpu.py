"""CPU per 360 request through the hub's whole ASGI app, in one process, path by path.

    .venv/bin/python -m bench.request_cpu [--customers 10000] [--requests 400] [--rounds 5]

Each path is the hub built with other settings and served in this process (httpx's ASGI
transport: no uvicorn, no sockets between the caller and the hub), over the real simulators
on loopback, uvloop, ``--concurrency`` requests in flight (so the access log's group commits
hold several records, as under load). The paths run in turn, ``--requests`` each, for
``--rounds`` rounds (interleaved, so the machine's drift hits them alike); the table gives
each path's median CPU time per request (``time.process_time``: this process and all its
threads, the access log's included; not the simulators'), less what the hubs spend idle
(measured before the rounds: all of them run on this one loop). The caller's side (httpx) is
in every row alike, so read the differences between rows:

- ``answer hit``: the whole answer kept (the cache on, as the demo runs);
- ``records cached``: the answer cache off, every record in the record cache: the graph
  executed over them, with no backend call;
- ``records cached, no access log``: the same with ``audit.enabled = false``;
- ``cache off``: every record from the backends (five calls a request).

Why: a profile of the event loop under load (py-spy) cannot place a request's CPU reliably
here (sampled stacks of deep coroutine chains come back truncated, and the access log's
SQLite work runs without the GIL); CPU per request by path can. docs/benchmark.md ("Where a
request's CPU goes, path by path") keeps a run. Bounded: rounds x paths x requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.peer.run import FIND, QUERY_OURS, Options, sampled_customers
from bench.report import median_table
from bench.run import bench_policy, seeded
from gateway.app import create_app
from gateway.settings import CacheTtlSettings, load_settings
from tests.harness import SimulatorUrls, migrate_database, running_simulators, starlette_of

#: With the cache on, every record and answer outlives the run: a round of the other paths
#: takes longer than the default TTLs (5 s for an answer, 30 s for a balance).
KEPT = {
    "enabled": True,
    "ttl_s": dict.fromkeys(CacheTtlSettings.model_fields, 3600.0),
    "answers": {"ttl_s": 3600.0},
}
#: Each path: the settings it changes.
PATHS: dict[str, dict[str, Any]] = {
    "answer hit": {"cache": KEPT},
    "records cached": {"cache": {**KEPT, "answers": {"enabled": False}}},
    "records cached, no access log": {
        "cache": {**KEPT, "answers": {"enabled": False}},
        "audit": {"enabled": False},
    },
    "cache off": {"cache": {"enabled": False}},
}


@contextlib.asynccontextmanager
async def _served(
    sims: SimulatorUrls, state: Path, changes: dict[str, Any]
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """One hub with its own database, started (its lifespan), a client and an agent's headers.
    ``state`` exists (made before the loop runs)."""
    database_url = f"sqlite+aiosqlite:///{state}/hub.db"
    migrate_database(database_url)
    settings = load_settings(
        database_url=database_url,
        policy_file=str(bench_policy(state)),  # no per-minute limit on the agent channel
        boss={"base_url": sims.boss},
        billing={"base_url": sims.billing},
        care={"base_url": sims.care},
        system_urls={"loyalty-north": sims.loyalty_north, "loyalty-south": sims.loyalty_south},
        workflows={"enabled": False},  # DBOS is one per process; no workflow is read here
        audit={"state_dir": str(state), **changes.get("audit", {})},
        cache=changes.get("cache", {}),
    )
    app = create_app(settings)
    starlette = starlette_of(app)
    async with starlette.router.lifespan_context(starlette):
        issued = await starlette.state.keys.issue(subject="bench", role="agent", channel="agent")
        headers = {"X-Api-Key": issued.key, "X-Purpose": "service"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=60
        ) as client:
            yield client, headers


async def _ids(client: httpx.AsyncClient, headers: dict[str, str], msisdns: list[str]) -> list[str]:
    ids = []
    for msisdn in msisdns:
        answer = await client.post(
            "/graphql", json={"query": FIND, "variables": {"m": msisdn}}, headers=headers
        )
        found = (answer.json().get("data") or {}).get("customerByMsisdn")
        if found:
            ids.append(found["id"])
    return ids


async def _requests(
    client: httpx.AsyncClient, headers: dict[str, str], ids: list[str], count: int, width: int
) -> None:
    """``count`` 360 requests, ``width`` in flight; any answer that is not whole fails."""
    queue = iter(range(count))

    async def caller() -> None:
        for n in queue:
            body = {"query": QUERY_OURS, "variables": {"id": ids[n % len(ids)]}}
            answer = await client.post("/graphql", json=body, headers=headers)
            if answer.status_code != 200 or "errors" in answer.json():
                raise RuntimeError(f"a 360 request failed: {answer.status_code}")

    await asyncio.gather(*(caller() for _ in range(width)))


async def _fields(client: httpx.AsyncClient, headers: dict[str, str], hub_id: str) -> int:
    """How many fields one customer's 360 answer holds (every key of every object in it)."""
    body = {"query": QUERY_OURS, "variables": {"id": hub_id}}
    answer = (await client.post("/graphql", json=body, headers=headers)).json()

    def count(value: Any) -> int:
        if isinstance(value, dict):
            return sum(1 + count(item) for item in value.values())
        if isinstance(value, list):
            return sum(count(item) for item in value)
        return 0

    return count(answer["data"])


async def measure(
    sims: SimulatorUrls, state: Path, msisdns: list[str], requests: int, rounds: int, width: int
) -> dict[str, list[float]]:
    """Microseconds of CPU per request, per path, one figure per round."""
    async with contextlib.AsyncExitStack() as stack:
        hubs = {}
        for number, (name, changes) in enumerate(PATHS.items()):
            client, headers = await stack.enter_async_context(
                _served(sims, state / f"hub-{number}", changes)
            )
            ids = await _ids(client, headers, msisdns)
            await _requests(client, headers, ids, 2 * len(ids), width)  # warm: caches, pools
            hubs[name] = (client, headers, ids)
        client, headers, ids = next(iter(hubs.values()))
        fields = [await _fields(client, headers, hub_id) for hub_id in ids[:20]]
        print(f"a 360 answer holds {statistics.mean(fields):.0f} fields (mean of {len(fields)})")
        idle = await _idle_cpu_rate()
        figures: dict[str, list[float]] = {name: [] for name in hubs}
        for _ in range(rounds):
            for name, (client, headers, ids) in hubs.items():
                before, started = time.process_time(), time.monotonic()
                await _requests(client, headers, ids, requests, width)
                spent = time.process_time() - before - idle * (time.monotonic() - started)
                figures[name].append(spent / requests * 1e6)
        return figures


async def _idle_cpu_rate(seconds: float = 3.0) -> float:
    """CPU seconds per second the started hubs spend with no request (their background loops:
    pollers, the checkpoint scheduler), taken off every path's figure: all the hubs run on
    this one loop whichever path is measured."""
    before, started = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return (time.process_time() - before) / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cpu", description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sample", type=int, default=100, help="customers the requests cycle")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 10_000 or not 1 <= args.rounds <= 20:
        parser.error("--requests must be 1-10000 and --rounds 1-20")
    if not 1 <= args.concurrency <= 64 or not 1 <= args.sample <= 1_000:
        parser.error("--concurrency must be 1-64 and --sample 1-1000")
    data = seeded(args.customers, args.seed)
    sample = Options(scenarios=[], customers=args.customers, seed=args.seed, sample=args.sample)
    msisdns = [msisdn for _, msisdn in sampled_customers(sample)]
    with tempfile.TemporaryDirectory() as folder, running_simulators(data) as sims:
        for number in range(len(PATHS)):
            (Path(folder) / f"hub-{number}").mkdir()
        figures = uvloop.run(
            measure(sims, Path(folder), msisdns, args.requests, args.rounds, args.concurrency)
        )
    print(
        median_table("path (one 360 request, in process)", "CPU us per request", figures, digits=0)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
