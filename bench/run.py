"""The benchmark: the real gateway over the real simulators on loopback, bounded and self-stopping.

Run with `make bench` (or `python -m bench --help`). Figures on a shared 2-core machine are
noisy: what to read are the ratios, each measured in one run with the phases interleaved
(A, B, A, B) so that drift hits both sides alike.

Throughput rows are driven by wrk when it is installed (a separate C process; Debian package
`wrk`), else by the Python generator in `bench/load.py`, which shares the cores with what it
measures. Latency-overhead rows are sequential (one client), where the generator's own cost
does not distort what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml

from bench import cpu, wrk
from bench import workflows as bench_workflows
from bench.churn import churn_row
from bench.floor import floor_operation
from bench.load import LoadResult, graphql_operation, run_load
from bench.peer.figures import parse_scenarios
from bench.report import table
from gateway.policy_store import DEFAULT_POLICY_FILE
from simulators.dataset import CustomerBundle, generate, has_certificate_typo
from simulators.seed import seed_dataset
from tests.harness import (
    REPO,
    SimulatorUrls,
    gateway_env,
    issue_key,
    running_gateway,
    running_simulators,
)

QUERY_360 = """query($id: ID!) { customer(id: $id) {
  id profile { name certificateNumber starLevel segment }
  subscriptions { msisdn status offering { name } usage { dataUsedMb dataAllowanceMb } }
  billingAccounts { id balance { amount { amount } }
    bills(first: 3) { items { amountDue { amount } } } }
  tickets(first: 5) { id status description }
} }"""
#: The 360 query with the insight fields (tags, value tier, RFM, lifecycle, churn risk).
QUERY_360_INSIGHT = QUERY_360.replace(
    "  tickets(first: 5)",
    "  insight { tags valueTier rfm { segment } lifecycleStage churnRisk { score level reasons } }"
    "\n  tickets(first: 5)",
)
PAGE = """query($first: Int!) { customers(first: $first) {
  nodes { id profile { name starLevel } subscriptions { msisdn }
    billingAccounts { balance { amount { amount } } } tickets(first: 3) { id } }
  pageInfo { endCursor } } }"""
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"
SYSTEMS = ("boss", "billing", "care")
#: Latencies the issue calls realistic for the legacy systems, per call (min, max ms).
REALISTIC_LATENCY_MS = {"boss": [30, 80], "billing": [10, 40], "care": [10, 30]}
#: The targets of the resilience-and-caching issue, against the peer's measured figures.
PEER_RPS, PEER_P99_MS = 345.0, 55.0


@dataclass(frozen=True)
class Gateway:
    name: str
    url: str
    key: str
    purpose: str = "service"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key, "X-Purpose": self.purpose}


def sample_bundles(customers: int, seed: int, size: int) -> list[CustomerBundle]:
    """Customers the load cycles over, without those with a planted identity conflict.

    Those answer with a (correct) coded error and would count as failed requests.
    """
    rng = random.Random(seed)
    picked = (rng.randrange(customers) for _ in range(size))
    return [generate(seed, i) for i in picked if not has_certificate_typo(seed, i)]


def active_msisdns(bundles: list[CustomerBundle]) -> list[str]:
    return [
        next(s.msisdn for s in b.subscribers if s.status != "D")
        for b in bundles
        if any(s.status != "D" for s in b.subscribers)
    ]


class Bench:
    """The measuring side: one HTTP session, the simulators' counters, the load drivers."""

    def __init__(self, args: argparse.Namespace, sims: SimulatorUrls) -> None:
        self.args = args
        self.sims = sims
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
        )

    async def close(self) -> None:
        await self.session.close()

    async def post(self, gateway: Gateway, body: dict) -> dict:
        async with self.session.post(gateway.url, json=body, headers=gateway.headers) as answer:
            return await answer.json()

    async def resolve_ids(self, gateway: Gateway, msisdns: list[str]) -> list[str]:
        semaphore = asyncio.Semaphore(8)

        async def one(msisdn: str) -> str | None:
            async with semaphore:
                body = await self.post(gateway, {"query": FIND, "variables": {"m": msisdn}})
            found = (body.get("data") or {}).get("customerByMsisdn")
            return found["id"] if found else None

        return [i for i in await asyncio.gather(*(one(m) for m in msisdns)) if i]

    async def calls(self, sims: SimulatorUrls | None = None) -> dict[str, int]:
        sims = sims or self.sims
        totals = {}
        for system in SYSTEMS:
            async with self.session.get(f"{sims.of(system)}/_sim/stats") as answer:
                totals[system] = (await answer.json())["total"]
        return totals

    async def ready(self, gateway: Gateway, timeout_s: float = 30.0) -> None:
        """Wait until the gateway reports every backend up (its circuits closed again)."""
        readyz = gateway.url.removesuffix("/graphql") + "/readyz"
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            async with self.session.get(readyz) as answer:
                if answer.status == 200:
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{gateway.name} did not become ready again")

    async def control(self, system: str, body: dict) -> None:
        async with self.session.post(f"{self.sims.of(system)}/_sim/control", json=body) as answer:
            answer.raise_for_status()

    async def counted(
        self, measure: Callable[[], Awaitable[dict]], sims: SimulatorUrls | None = None
    ) -> dict:
        """A measurement with the backend calls it caused, per operation."""
        before = await self.calls(sims)
        row = await measure()
        after = await self.calls(sims)
        done = max(1, row["requests"])
        row["calls_per_op"] = {k: round((after[k] - before[k]) / done, 2) for k in after}
        return row

    async def throughput(self, gateway: Gateway, bodies: list[dict]) -> dict:
        """Closed-loop load, bounded in time and requests, with the gateway's CPU per request."""
        pids = cpu.listening_pids(gateway.url)
        before = cpu.cpu_seconds(pids)
        row = await self._load(gateway, bodies)
        after = cpu.cpu_seconds(pids)
        if pids and before is not None and after is not None and row["requests"]:
            row["gateway_cpu_ms_per_op"] = round((after - before) * 1000 / row["requests"], 3)
        return row

    async def _load(self, gateway: Gateway, bodies: list[dict]) -> dict:
        args = self.args
        if wrk.available() and not args.python_load:
            return await asyncio.to_thread(
                wrk.run_wrk,
                gateway.url,
                gateway.headers,
                bodies,
                connections=args.concurrency,
                duration_s=args.duration,
                max_requests=args.max_requests,
            )
        operation = graphql_operation(
            self.session, gateway.url, gateway.headers, lambda n: bodies[n % len(bodies)]
        )
        result = await run_load(
            operation,
            concurrency=args.concurrency,
            duration_s=args.duration,
            max_requests=args.max_requests,
        )
        return result.summary()

    async def sequential(self, operation: Callable[[int], Awaitable[bool]]) -> LoadResult:
        """One client, one request at a time: latency without queueing."""
        return await run_load(
            operation,
            concurrency=1,
            duration_s=self.args.sequential_duration,
            max_requests=self.args.sequential_requests,
        )

    def query(self, gateway: Gateway, bodies: list[dict]) -> Callable[[int], Awaitable[bool]]:
        return graphql_operation(
            self.session, gateway.url, gateway.headers, lambda n: bodies[n % len(bodies)]
        )


def bodies_360(ids: list[str]) -> list[dict]:
    return [{"query": QUERY_360, "variables": {"id": i}} for i in ids]


def partial_360(bench: Bench, gateway: Gateway, bodies: list[dict]) -> Callable:
    """The 360 query where one backend is down: a success is the other systems' fields."""

    async def operation(number: int) -> bool:
        answer = await bench.post(gateway, bodies[number % len(bodies)])
        customer = (answer.get("data") or {}).get("customer") or {}
        return bool(customer.get("profile")) and customer.get("tickets") is not None

    return operation


async def page_scale(bench: Bench, gateway: Gateway, sizes: list[int]) -> list[dict]:
    """Latency and backend calls per page as the page grows (known customers)."""
    rows = []
    for size in sizes:
        body = {"query": PAGE, "variables": {"first": size}}
        await bench.post(gateway, body)  # resolve the page's identities first
        operation = bench.query(gateway, [body])
        row = await bench.counted(lambda op=operation: _repeated(op))
        rows.append({"page_size": size, **row})
    return rows


async def _summary(running: Awaitable[LoadResult]) -> dict:
    return (await running).summary()


async def _repeated(operation: Callable[[int], Awaitable[bool]], times: int = 5) -> dict:
    """A few sequential runs of one operation (for rows about calls and growth, not load)."""
    return await _summary(run_load(operation, concurrency=1, duration_s=30, max_requests=times))


async def measure_main(bench: Bench, gateways: dict[str, Gateway], bundles: list) -> dict:
    args = bench.args
    msisdns = active_msisdns(bundles)
    bodies = {
        name: bodies_360(await bench.resolve_ids(gw, msisdns)) for name, gw in gateways.items()
    }
    on, cached = gateways["policies-on"], gateways["cache-on"]
    floor = floor_operation(bench.session, bench.sims, bundles)

    # Warm the cache-on gateway (every worker) before it is measured.
    await bench.throughput(cached, bodies["cache-on"])

    # Throughput: interleaved rounds, so drift hits each side alike.
    phases: dict[str, list[dict]] = {name: [] for name in gateways}
    for _round in range(args.rounds):
        for name, gateway in gateways.items():
            phases[name].append(
                await bench.counted(lambda g=gateway, b=bodies[name]: bench.throughput(g, b))
            )
    throughput = {name: merge_rows(rows) for name, rows in phases.items()}

    # What the insight fields cost: the 360 query with and without them on one gateway, both
    # under the marketing purpose (the one the bundled policy lets insight out for, so the
    # fields are computed, not withheld), in interleaved rounds; read from CPU per request.
    marketing = dataclasses.replace(on, purpose="marketing")
    plain = bodies["policies-on"]
    with_insight = [{**body, "query": QUERY_360_INSIGHT} for body in plain]
    insight_phases: dict[str, list[dict]] = {"without": [], "with": []}
    for _round in range(args.rounds):
        for side, sent in (("without", plain), ("with", with_insight)):
            insight_phases[side].append(
                await bench.counted(lambda b=sent: bench.throughput(marketing, b))
            )
    insight = {side: merge_rows(rows) for side, rows in insight_phases.items()}

    # Latency overhead, sequential: the floor against the gateway, cold and warm.
    sequential = {}
    for name, operation in (
        ("floor", floor),
        ("policies-on", bench.query(on, bodies["policies-on"])),
        ("cache-on", bench.query(cached, bodies["cache-on"])),
        ("floor", floor),
        ("policies-on", bench.query(on, bodies["policies-on"])),
        ("cache-on", bench.query(cached, bodies["cache-on"])),
    ):
        sequential.setdefault(name, []).append(await bench.sequential(operation))
    overhead = {name: combine(results).summary() for name, results in sequential.items()}

    page_body = [{"query": PAGE, "variables": {"first": 50}}]
    await bench.post(on, page_body[0])
    page_50 = await bench.counted(lambda: bench.throughput(on, page_body))
    written = gateways["roles-handwritten"]
    await bench.post(written, page_body[0])
    page_50_written = await bench.counted(lambda: bench.throughput(written, page_body))

    # One backend down: the other systems' fields, sequential, against the same query up.
    normal = await bench.sequential(partial_360(bench, on, bodies["policies-on"]))
    await bench.control("billing", {"down": True})
    try:
        await bench.sequential(partial_360(bench, on, bodies["policies-on"][:20]))  # open it
        down = await bench.sequential(partial_360(bench, on, bodies["policies-on"]))
    finally:
        await bench.control("billing", {"down": False})
        await bench.ready(on)
        # /readyz reached one worker; the others close their own circuits on the first call
        # after the cool-down (5 s by default).
        await asyncio.sleep(6)
        await run_load(
            bench.query(on, bodies["policies-on"]), concurrency=10, duration_s=10, max_requests=60
        )

    # Realistic backend latencies.
    for system, latency in REALISTIC_LATENCY_MS.items():
        await bench.control(system, {"latency_ms": latency})
    try:
        realistic = await bench.counted(lambda: bench.throughput(on, bodies["policies-on"]))
        realistic_cached = await bench.counted(lambda: bench.throughput(cached, bodies["cache-on"]))
        realistic_floor = await bench.sequential(floor)
    finally:
        for system in SYSTEMS:
            await bench.control(system, {"latency_ms": None})

    scale = await page_scale(bench, on, args.page_sizes)
    return {
        "throughput": throughput,
        "sequential": overhead,
        "page_50": page_50,
        "page_50_handwritten_billing": page_50_written,
        "billing_down": {"normal": normal.summary(), "down": down.summary()},
        "realistic": {
            "360, cache off": realistic,
            "360, cache on": realistic_cached,
            "floor, sequential": realistic_floor.summary(),
        },
        "page_scale": scale,
        "insight": insight,
    }


async def measure_dataset(bench: Bench, sims: SimulatorUrls, gateway: Gateway, bundles) -> dict:
    """How the 360 query and a page of 50 behave on a dataset of another size."""
    ids = await bench.resolve_ids(gateway, active_msisdns(bundles))
    query = bench.query(gateway, bodies_360(ids))
    row_360 = await bench.counted(lambda: _summary(bench.sequential(query)), sims)
    page = {"query": PAGE, "variables": {"first": 50}}
    await bench.post(gateway, page)
    row_page = await bench.counted(lambda: _repeated(bench.query(gateway, [page])), sims)
    return {"360, sequential": row_360, "page of 50, sequential": row_page}


def merge_rows(rows: list[dict]) -> dict:
    """Rounds of one scenario as one row (requests summed, latencies averaged)."""
    total = sum(r["requests"] for r in rows)
    merged = {
        "requests": total,
        "errors": sum(r["errors"] for r in rows),
        "throughput_rps": round(sum(r["throughput_rps"] for r in rows) / len(rows), 1),
    }
    for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"):
        merged[key] = round(sum(r[key] * r["requests"] for r in rows) / max(1, total), 2)
    if all("gateway_cpu_ms_per_op" in r for r in rows):
        merged["gateway_cpu_ms_per_op"] = round(
            sum(r["gateway_cpu_ms_per_op"] * r["requests"] for r in rows) / max(1, total), 3
        )
    merged["calls_per_op"] = {
        k: round(sum(r["calls_per_op"][k] * r["requests"] for r in rows) / max(1, total), 2)
        for k in SYSTEMS
    }
    return merged


def combine(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        sum(r.requests for r in results),
        sum(r.errors for r in results),
        sum(r.elapsed_s for r in results),
        [x for r in results for x in r.latencies_ms],
    )


def seeded(customers: int, seed: int) -> Path:
    data_dir = REPO / "bench" / ".data" / f"{customers}-{seed}"
    seed_dataset(data_dir, customers, seed, progress=None)
    return data_dir


def bench_policy(state: Path) -> Path:
    """The bundled policy without the agent channel's rate limit (600 a minute), which would
    turn the load into 429s; written into `state`."""
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["channels"]["agent"].pop("rate_limit_per_minute", None)
    policy_file = state / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
    return policy_file


@contextmanager
def started_gateways(
    args: argparse.Namespace, sims: SimulatorUrls, state: Path, kinds: tuple[str, ...]
) -> Iterator[dict[str, Gateway]]:
    policy_file = bench_policy(state)
    # name -> (policy enforcement, read cache, audit log, what plays the billing role)
    settings = {
        "policies-on": ("true", "false", "true", "declared"),
        "policies-off": ("false", "false", "true", "declared"),
        "audit-off": ("true", "false", "false", "declared"),
        "cache-on": ("true", "true", "true", "declared"),
        # The hand-written adapters the declared role files replaced, for the side-by-side
        # cost of the generic engine (kept until the comparison is recorded).
        "roles-handwritten": ("true", "false", "true", "handwritten"),
    }
    with ExitStack() as stack:
        gateways = {}
        for name in kinds:
            # A folder per gateway: its hub database, the workflow engine's database beside
            # it and its workers' executor slots are its own.
            (state / name).mkdir()
            env = gateway_env(
                sims,
                f"sqlite+aiosqlite:///{state}/{name}/hub.db",
                SWITCHBOARD_POLICY_FILE=str(policy_file),
                SWITCHBOARD_WORKERS=str(args.workers),
                SWITCHBOARD_POLICY_ENFORCEMENT=settings[name][0],
                SWITCHBOARD_CACHE__ENABLED=settings[name][1],
                SWITCHBOARD_AUDIT__ENABLED=settings[name][2],
                SWITCHBOARD_ROLE_ENGINE=settings[name][3],
                SWITCHBOARD_AUDIT__STATE_DIR=str(state / f"{name}-audit"),
            )
            key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
            url = stack.enter_context(running_gateway(env, state / f"{name}.log"))
            gateways[name] = Gateway(name, f"{url}/graphql", key)
        yield gateways


def run(args: argparse.Namespace) -> dict:
    bundles = sample_bundles(args.customers, args.seed, args.sample)
    main_data = seeded(args.customers, args.seed)
    others = [n for n in args.dataset_sizes if n != args.customers]
    other_data = {n: seeded(n, args.seed) for n in others}
    datasets: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder)
        with (
            running_simulators(main_data) as sims,
            started_gateways(
                args,
                sims,
                state,
                ("policies-on", "policies-off", "audit-off", "cache-on", "roles-handwritten"),
            ) as gateways,
        ):
            measured, datasets[args.customers] = asyncio.run(
                measure_main_and_dataset(args, sims, gateways, bundles)
            )
        for size, data_dir in other_data.items():
            sized = state / f"{size}"
            sized.mkdir()
            with (
                running_simulators(data_dir) as sims,
                started_gateways(args, sims, sized, ("policies-on",)) as gateways,
            ):
                sample = sample_bundles(size, args.seed, args.sample)
                datasets[size] = asyncio.run(
                    measure_dataset_only(args, sims, gateways["policies-on"], sample)
                )
    workflows = plan_change_rows(args)
    measured["churn_model"] = churn_row()
    measured["peer"] = peer_rows(args, main_data)
    return report(args, bundles, measured, datasets, workflows)


def peer_rows(args: argparse.Namespace, data_dir: Path) -> dict:
    """Side by side with the peer (bench/peer) on the main dataset, last, with the load
    settings of the rest; {"skipped": why} without node, npm or wrk, or with --no-peer."""
    if args.no_peer:
        print("side by side with the peer: skipped (--no-peer)")
        return {"skipped": "--no-peer"}
    from bench.peer import run as peer  # bench.peer builds on this module

    options = peer.Options(
        scenarios=peer.parse_scenarios(args.peer_scenarios),
        rounds=args.rounds,
        duration_s=args.duration,
        concurrency=args.concurrency,
        max_requests=args.max_requests,
        customers=args.customers,
        seed=args.seed,
        sample=args.sample,
        compare=args.peer_compare,
        peer_cache_max=args.peer_cache_max,
    )
    try:
        return peer.run(options, data_dir)
    except Exception as error:  # the peer's failure must not lose the rest of the run
        print(f"side by side with the peer: failed: {error}")
        return {"failed": f"{type(error).__name__}: {error}"[:2000]}


def plan_change_rows(args: argparse.Namespace) -> list[dict]:
    """Plan-change workflows per second (the mutation scenario), SQLite and PostgreSQL."""
    if args.workflows <= 0:
        return []
    backends = ["sqlite"]
    if postgres_reachable():
        backends.append("postgres")
    else:
        print("PostgreSQL not reachable on 127.0.0.1:5432: the workflow row runs on SQLite only")
    return bench_workflows.run(args.workflows, args.workflow_concurrency, tuple(backends))


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


async def measure_main_and_dataset(
    args: argparse.Namespace, sims: SimulatorUrls, gateways: dict[str, Gateway], bundles: list
) -> tuple[dict, dict]:
    bench = Bench(args, sims)
    try:
        measured = await measure_main(bench, gateways, bundles)
        dataset = await measure_dataset(bench, sims, gateways["policies-on"], bundles)
    finally:
        await bench.close()
    return measured, dataset


async def measure_dataset_only(
    args: argparse.Namespace, sims: SimulatorUrls, gateway: Gateway, bundles: list
) -> dict:
    bench = Bench(args, sims)
    try:
        return await measure_dataset(bench, sims, gateway, bundles)
    finally:
        await bench.close()


def report(
    args: argparse.Namespace, bundles: list, measured: dict, datasets: dict, workflows: list
) -> dict:
    throughput, sequential = measured["throughput"], measured["sequential"]
    on, off, unaudited, cached = (
        throughput[k] for k in ("policies-on", "policies-off", "audit-off", "cache-on")
    )
    floor_p50 = sequential["floor"]["p50_ms"]
    down = measured["billing_down"]
    page_50_calls = next(r for r in measured["page_scale"] if r["page_size"] == 50)["calls_per_op"]
    targets = {
        "360 throughput, cache off (target >= 2x peer = 690 req/s)": [
            on["throughput_rps"],
            on["throughput_rps"] >= 2 * PEER_RPS,
        ],
        "360 throughput, cache on (target >= 690 req/s)": [
            cached["throughput_rps"],
            cached["throughput_rps"] >= 2 * PEER_RPS,
        ],
        "360 p99 ms, cache off (target <= 55)": [on["p99_ms"], on["p99_ms"] <= PEER_P99_MS],
        "360 p99 ms, cache on (target <= 55)": [cached["p99_ms"], cached["p99_ms"] <= PEER_P99_MS],
        "warm 360 p50 over the floor, ms (target < 3)": [
            round(sequential["cache-on"]["p50_ms"] - floor_p50, 2),
            sequential["cache-on"]["p50_ms"] - floor_p50 < 3,
        ],
        "page of 50, calls per backend (target <= 2)": [
            max(page_50_calls.values()),
            max(page_50_calls.values()) <= 2,
        ],
        "billing down: p50 over normal, ms (target <= 10)": [
            round(down["down"]["p50_ms"] - down["normal"]["p50_ms"], 2),
            down["down"]["p50_ms"] - down["normal"]["p50_ms"] <= 10,
        ],
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "dataset": {"customers": args.customers, "seed": args.seed, "sampled": len(bundles)},
        "load": {
            "generator": "wrk" if wrk.available() and not args.python_load else "python",
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "seconds_per_phase": args.duration,
            "gateway_workers": args.workers,
        },
        "scenarios": {
            "360, policies on, cache off": on,
            "360, policies off, cache off": off,
            "360, audit log off, cache off": unaudited,
            "360, policies on, cache on (warm)": cached,
            "page of 50, cache off": measured["page_50"],
            "360, roles by the hand-written adapters, cache off": throughput["roles-handwritten"],
            "page of 50, roles by the hand-written adapters, cache off": measured[
                "page_50_handwritten_billing"
            ],
            "360, realistic backend latency, cache off": measured["realistic"]["360, cache off"],
            "360, realistic backend latency, cache on": measured["realistic"]["360, cache on"],
            "360, marketing purpose, cache off": measured["insight"]["without"],
            "360 with insight, marketing purpose, cache off": measured["insight"]["with"],
        },
        "sequential": {
            "floor: the 6 backend calls, direct and concurrent": sequential["floor"],
            "360, cache off": sequential["policies-on"],
            "360, cache on (warm)": sequential["cache-on"],
            "360 with billing up (BOSS and care fields)": down["normal"],
            "360 with billing down (BOSS and care fields)": down["down"],
            "floor with realistic backend latency": measured["realistic"]["floor, sequential"],
        },
        "page_scale": measured["page_scale"],
        "datasets": {str(k): v for k, v in sorted(datasets.items())},
        "workflows": workflows,
        "churn_model": measured["churn_model"],
        "peer": measured["peer"],
        "ratios": {
            "policies on/off, p50 latency": round(on["p50_ms"] / off["p50_ms"], 3),
            "policies on/off, throughput": round(on["throughput_rps"] / off["throughput_rps"], 3),
            "audit log on/off, p50 latency": round(on["p50_ms"] / unaudited["p50_ms"], 3),
            "audit log on/off, throughput": round(
                on["throughput_rps"] / unaudited["throughput_rps"], 3
            ),
            **cpu_ratios(on, off, unaudited, cached),
            **role_engine_ratios(on, throughput["roles-handwritten"]),
            **insight_ratios(measured["insight"]["with"], measured["insight"]["without"]),
            "cache on/off, p50 latency": round(cached["p50_ms"] / on["p50_ms"], 3),
            "cache on/off, throughput": round(cached["throughput_rps"] / on["throughput_rps"], 3),
            "gateway/floor, sequential p50 (cache off)": round(
                sequential["policies-on"]["p50_ms"] / floor_p50, 2
            ),
            "gateway/floor, sequential p50 (cache on)": round(
                sequential["cache-on"]["p50_ms"] / floor_p50, 2
            ),
        },
        "targets": targets,
    }


def cpu_ratios(on: dict, off: dict, unaudited: dict, cached: dict) -> dict[str, float]:
    """On/off ratios of the gateway's CPU per request (steadier than throughput)."""
    key = "gateway_cpu_ms_per_op"
    if not all(key in row for row in (on, off, unaudited, cached)):
        return {}
    return {
        "policies on/off, gateway CPU per request": round(on[key] / off[key], 3),
        "audit log on/off, gateway CPU per request": round(on[key] / unaudited[key], 3),
        "cache on/off, gateway CPU per request": round(cached[key] / on[key], 3),
    }


def _ab_ratios(label: str, a: dict, b: dict) -> dict[str, float]:
    """Side A over side B of one interleaved run: throughput, and gateway CPU per request
    where both sides measured it."""
    key = "gateway_cpu_ms_per_op"
    ratios = {f"{label}, throughput (360)": round(a["throughput_rps"] / b["throughput_rps"], 3)}
    if key in a and key in b:
        ratios[f"{label}, gateway CPU per request (360)"] = round(a[key] / b[key], 3)
    return ratios


def insight_ratios(with_insight: dict, without: dict) -> dict[str, float]:
    """The 360 query with the insight fields against without, one gateway, interleaved."""
    return _ab_ratios("insight fields with/without", with_insight, without)


def role_engine_ratios(declared: dict, written: dict) -> dict[str, float]:
    """The declared role files (BOSS, billing, care) against the hand-written adapters, one
    run, interleaved."""
    return _ab_ratios("declared roles/hand-written adapters", declared, written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--dataset-sizes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[10_000, 100_000, 1_000_000],
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sample", type=int, default=300, help="customers the load cycles over")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per side")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per phase")
    parser.add_argument("--sequential-duration", type=float, default=4.0)
    parser.add_argument("--sequential-requests", type=int, default=300)
    parser.add_argument("--python-load", action="store_true", help="never use wrk")
    parser.add_argument("--workflows", type=int, default=100, help="plan changes per backend")
    parser.add_argument("--workflow-concurrency", type=int, default=20)
    parser.add_argument(
        "--page-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1, 10, 50, 200]
    )
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "latest.json"))
    parser.add_argument(
        "--no-peer", action="store_true", help="skip the side-by-side with the peer (bench/peer)"
    )
    from bench.peer.run import add_arguments

    add_arguments(parser, prefix="peer-")
    args = parser.parse_args(argv)
    try:  # a typo fails now, not after the rest of the run
        parse_scenarios(args.peer_scenarios)
    except ValueError as error:
        parser.error(str(error))
    result = run(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(table(result))
    print(f"\n(results in {args.output})")
    return 0
