"""Switchboard against the closest peer (GraphQL Mesh + Hive Gateway), side by side on the same
simulators, the same customers and the same 360 answer. `python -m bench.peer --help`.

Per scenario (processes per gateway 1|2 x cache off|on) both gateways are started and warmed,
then measured interleaved: peer, ours, peer, ours, ... (`--rounds` each). Every run is wrk with
`-d` (bounded time) and a request budget (bounded count). Per run: req/s, p50, p99, answers that
are not 200 or carry errors, the gateway's process tree's CPU seconds (utime + stime from /proc)
per request and its RSS, the simulators' CPU per request, and the backend calls per request
(the simulators' /_sim/stats). Before the first scenario, both answers for `--compare`
customers are normalised and compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import cpu, wrk
from bench.peer import mesh
from bench.peer.figures import (
    PEER_CACHE_MAX,
    SYSTEMS,
    Scenario,
    equivalence,
    goals,
    page_equivalence,
    parse_scenarios,
    scenario_summary,
)
from bench.report import peer_table
from bench.run import bench_policy, sample_bundles, seeded
from tests.harness import (
    REPO,
    SimulatorUrls,
    free_ports,
    gateway_env,
    issue_key,
    running_simulators,
    start_gateway,
)

#: Switchboard's side of the 360 answer, field for field what the peer's query asks.
QUERY_OURS = """query($id: ID!) { customer(id: $id) {
  id
  profile { customerNo name certificateNumber starLevel segment }
  subscriptions { msisdn status arpu offering { id name } }
  billingAccounts { id state paymentMethod
    balance { amount { amount currency } overdue { amount } } }
  tickets(first: 5) { id type status description createdAt }
} }"""
QUERY_PEER = (mesh.HERE / "query-peer.graphql").read_text()
#: A page of customers, field for field what the peer's page query asks (the peer's tickets
#: are its newest 5, set in mesh.config.ts).
QUERY_OURS_PAGE = """query($first: Int!) { customers(first: $first) {
  nodes { id profile { customerNo name starLevel } subscriptions { msisdn }
    billingAccounts { balance { amount { amount } } } tickets(first: 5) { id } }
  pageInfo { endCursor } } }"""
QUERY_PEER_PAGE = (mesh.HERE / "query-peer-page.graphql").read_text()
PAGE_SIZE = 50
DEFAULT_SCENARIOS = "1:off,2:off,1:on,2:on,2:off:page"
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id profile { customerNo } } }"
OURS_HEADERS = {"X-Purpose": "service"}


@dataclass(frozen=True)
class Options:
    scenarios: list[Scenario]
    rounds: int = 3
    duration_s: float = 10.0
    warmup_s: float = 4.0
    concurrency: int = 10
    max_requests: int = 200_000
    customers: int = 100_000
    seed: int = 42
    sample: int = 200
    compare: int = 50
    peer_cache_max: int | None = PEER_CACHE_MAX
    peer_cache_ttl_ms: int = 30_000


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def sampled_customers(options: Options) -> list[tuple[str, str]]:
    """(customer number, an active MSISDN) of the customers the load cycles over."""
    out = []
    for bundle in sample_bundles(options.customers, options.seed, options.sample):
        lines = [s.msisdn for s in bundle.subscribers if s.status != "D"]
        if lines:
            out.append((bundle.customer.customer_no, lines[0]))
    return out


def sim_calls(client: httpx.Client, sims: SimulatorUrls) -> dict[str, int]:
    return {s: client.get(f"{sims.of(s)}/_sim/stats").json()["total"] for s in SYSTEMS}


@dataclass
class Side:
    name: str
    url: str
    headers: dict[str, str]
    bodies: list[dict]
    process: subprocess.Popen


def measured_run(
    client: httpx.Client, side: Side, sims: SimulatorUrls, sims_pids: list[int], options: Options
) -> dict[str, Any]:
    """One bounded wrk run against one gateway, with what it cost the gateway and backends."""
    pids = cpu.tree_pids(side.process.pid)
    gw0, sims0, calls0 = cpu.cpu_seconds(pids), cpu.cpu_seconds(sims_pids), sim_calls(client, sims)
    row: dict[str, Any] = dict(
        wrk.run_wrk(
            side.url,
            side.headers,
            side.bodies,
            connections=options.concurrency,
            duration_s=options.duration_s,
            max_requests=options.max_requests,
            threads=2,
        )
    )
    gw1, sims1, calls1 = cpu.cpu_seconds(pids), cpu.cpu_seconds(sims_pids), sim_calls(client, sims)
    done = max(1, int(row["requests"]))
    row["gw"] = side.name
    row["load_1m"] = _loadavg()[0]  # the machine is shared: what else ran shows here
    row["gateway_processes"] = len(pids)
    row["gateway_rss_mb"] = round(cpu.rss_mb(pids), 1)
    if gw0 is not None and gw1 is not None:
        row["gateway_cpu_ms_per_op"] = round((gw1 - gw0) * 1000 / done, 3)
    if sims_pids and sims0 is not None and sims1 is not None:
        row["sims_cpu_ms_per_op"] = round((sims1 - sims0) * 1000 / done, 3)
    row["calls_per_op"] = {s: round((calls1[s] - calls0[s]) / done, 3) for s in SYSTEMS}
    log(
        f"  {side.name:4s} {row['throughput_rps']:8.1f} req/s  p50 {row['p50_ms']:7.2f}"
        f"  p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}"
        f"  CPU {row.get('gateway_cpu_ms_per_op', float('nan')):.2f} ms/req"
        f"  RSS {row['gateway_rss_mb']:.0f} MB  calls {row['calls_per_op']}"
    )
    return row


def ours_env(
    sims: SimulatorUrls,
    state: Path,
    scenario: Scenario | None = None,
    answer_ttl_s: float | None = None,
) -> dict[str, str]:
    """Switchboard's settings for a scenario. With the cache on, its answers are kept as long
    as the peer keeps its responses (``answer_ttl_s``, the peer's TTL), so both caches hold an
    answer equally long; Switchboard's still ends at the first write (docs/architecture.md)."""
    extra = {
        "SWITCHBOARD_POLICY_FILE": str(state / "policy.yaml"),
        "SWITCHBOARD_AUDIT__STATE_DIR": str(state / "audit"),
    }
    if scenario is not None:
        extra["SWITCHBOARD_WORKERS"] = str(scenario.processes)
        extra["SWITCHBOARD_CACHE__ENABLED"] = "true" if scenario.cache else "false"
        if scenario.cache and answer_ttl_s is not None:
            extra["SWITCHBOARD_CACHE__ANSWERS__TTL_S"] = str(answer_ttl_s)
    return gateway_env(sims, f"sqlite+aiosqlite:///{state}/hub.db", **extra)


def wait_ready(client: httpx.Client, base: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base} did not become ready")


def resolve_ids(
    client: httpx.Client, url: str, key: str, customers: list[tuple[str, str]]
) -> dict[str, str]:
    """customer number -> Switchboard's customer id (fills the hub's crosswalk on first use)."""
    ids = {}
    for number, msisdn in customers:
        answer = client.post(
            url,
            json={"query": FIND, "variables": {"m": msisdn}},
            headers={"X-Api-Key": key, **OURS_HEADERS},
        ).json()
        found = (answer.get("data") or {}).get("customerByMsisdn")
        if found and found["profile"]["customerNo"] == number:
            ids[number] = found["id"]
    return ids


@contextmanager
def both_gateways(
    sims: SimulatorUrls, state: Path, supergraph: Path, scenario: Scenario, options: Options
) -> Iterator[tuple[str, subprocess.Popen, str, subprocess.Popen]]:
    """Ours and the peer for one scenario: (ours base URL, its process, peer URL, its process)."""
    ours_base, ours = start_gateway(
        ours_env(sims, state, scenario, answer_ttl_s=options.peer_cache_ttl_ms / 1000),
        state / f"ours-{scenario.processes}-{scenario.cache}.log",
    )
    try:
        (port,) = free_ports(1)
        peer = mesh.start(
            sims,
            processes=scenario.processes,
            cache=scenario.cache,
            port=port,
            supergraph=supergraph,
            cache_max=options.peer_cache_max,
            cache_ttl_ms=options.peer_cache_ttl_ms,
            log=state / f"peer-{scenario.processes}-{scenario.cache}.log",
        )
        try:
            yield ours_base, ours, f"http://127.0.0.1:{port}/graphql", peer
        finally:
            mesh.stop_tree(peer)
    finally:
        mesh.stop_tree(ours)


def compare_answers(
    client: httpx.Client, ours_url: str, key: str, peer_url: str, ids: dict[str, str], n: int
) -> dict[str, Any]:
    def triples() -> Iterator[tuple[str, dict, dict]]:
        for number, hub_id in list(ids.items())[:n]:
            ours = client.post(
                ours_url,
                json={"query": QUERY_OURS, "variables": {"id": hub_id}},
                headers={"X-Api-Key": key, **OURS_HEADERS},
            ).json()
            peer = client.post(
                peer_url, json={"query": QUERY_PEER, "variables": {"no": number}}
            ).json()
            yield number, ours, peer

    return equivalence(triples())


def run_scenario(
    client: httpx.Client,
    sims: SimulatorUrls,
    state: Path,
    supergraph: Path,
    key: str,
    customers: list[tuple[str, str]],
    scenario: Scenario,
    options: Options,
    result: dict[str, Any],
) -> dict[str, Any]:
    log(f"== {scenario.title}")
    sims_pids = cpu.listening_pids(sims.boss)
    with both_gateways(sims, state, supergraph, scenario, options) as (base, ours, peer_url, peer):
        wait_ready(client, base)
        ours_url = f"{base}/graphql"
        ours_headers = {"X-Api-Key": key, **OURS_HEADERS}
        if scenario.page:
            ours_bodies = [{"query": QUERY_OURS_PAGE, "variables": {"first": PAGE_SIZE}}]
            peer_bodies = [{"query": QUERY_PEER_PAGE, "variables": {"n": PAGE_SIZE}}]
            if "page_equivalence" not in result:
                # (also resolves the page's identities on our side before it is measured)
                result["page_equivalence"] = page_equivalence(
                    client.post(ours_url, json=ours_bodies[0], headers=ours_headers).json(),
                    client.post(peer_url, json=peer_bodies[0]).json(),
                )
                log("page equivalence:", json.dumps(result["page_equivalence"])[:400])
        else:
            ids = resolve_ids(client, ours_url, key, customers)
            numbers = [number for number, _ in customers if number in ids]
            if "equivalence" not in result:
                result["equivalence"] = compare_answers(
                    client, ours_url, key, peer_url, ids, options.compare
                )
                log("equivalence:", json.dumps(result["equivalence"], ensure_ascii=False)[:400])
            ours_bodies = [{"query": QUERY_OURS, "variables": {"id": ids[n]}} for n in numbers]
            peer_bodies = [{"query": QUERY_PEER, "variables": {"no": n}} for n in numbers]
        sides = [
            Side("peer", peer_url, {}, peer_bodies, peer),
            Side("ours", ours_url, ours_headers, ours_bodies, ours),
        ]
        # Warm-up (JIT, pools; with the cache on, every customer once or more): not measured.
        warmup = options.warmup_s * (1.5 if scenario.cache else 1)
        for side in sides:
            wrk.run_wrk(
                side.url,
                side.headers,
                side.bodies,
                connections=options.concurrency,
                duration_s=warmup,
                max_requests=options.max_requests,
                threads=2,
            )
        runs = []
        for number in range(options.rounds):
            for side in sides:
                row = measured_run(client, side, sims, sims_pids, options)
                runs.append({"round": number, **row})
    return scenario_summary(runs)


def run(options: Options, data_dir: Path | None = None) -> dict[str, Any]:
    """The whole comparison; {"skipped": reason} when the peer cannot run here."""
    reason = mesh.prepare()
    if reason:
        log(f"peer scenario skipped: {reason}")
        return {"skipped": reason}
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load": {
            "generator": "wrk -t2",
            "concurrency": options.concurrency,
            "rounds": options.rounds,
            "seconds_per_run": options.duration_s,
        },
        "peer_cache_max": options.peer_cache_max,
        "peer_cache_ttl_ms": options.peer_cache_ttl_ms,
        "dataset": {"customers": options.customers, "seed": options.seed},
        "load_average_start": _loadavg(),
        "scenarios": {},
    }
    data = data_dir or seeded(options.customers, options.seed)
    customers = sampled_customers(options)
    result["dataset"]["sampled"] = len(customers)
    with (
        tempfile.TemporaryDirectory() as folder,
        running_simulators(data) as sims,
        httpx.Client(timeout=60) as client,
    ):
        state = Path(folder)
        supergraph = state / "supergraph.graphql"
        mesh.compose(sims, supergraph, state / "compose.log")
        bench_policy(state)
        key = issue_key(
            ours_env(sims, state), channel="agent", role="agent", scopes=("customer:read",)
        )
        for scenario in options.scenarios:
            result["scenarios"][scenario.name] = run_scenario(
                client, sims, state, supergraph, key, customers, scenario, options, result
            )
    result["load_average_end"] = _loadavg()
    result["goals"] = [
        [g.name, g.value, g.met] for g in goals(result["scenarios"], options.peer_cache_max)
    ]
    return result


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def _cache_max(text: str) -> int | None:
    return None if text == "default" else int(text)


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The comparison's options (with `prefix`, as `python -m bench` takes them)."""
    parser.add_argument(
        f"--{prefix}scenarios",
        default=DEFAULT_SCENARIOS,
        help="PROCESSES:on|off[:page] per gateway, comma-separated: cache on or off, the 360 "
        f"query or a page of {PAGE_SIZE} (default {DEFAULT_SCENARIOS})",
    )
    parser.add_argument(
        "--peer-cache-max",
        type=_cache_max,
        default=PEER_CACHE_MAX,
        help="entries of the peer's cache store with the cache on ('default': its own store)",
    )
    parser.add_argument(f"--{prefix}compare", type=int, default=50, help="customers compared")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds (x1.5 cache on)")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--max-requests", type=int, default=200_000, help="per run")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sample", type=int, default=200, help="customers the load cycles over")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "peer.json"))
    args = parser.parse_args(argv)
    try:
        scenarios = parse_scenarios(args.scenarios)
    except ValueError as error:
        parser.error(str(error))
    options = Options(
        scenarios=scenarios,
        rounds=args.rounds,
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        max_requests=args.max_requests,
        customers=args.customers,
        seed=args.seed,
        sample=args.sample,
        compare=args.compare,
        peer_cache_max=args.peer_cache_max,
    )
    result = run(options)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(peer_table(result))
    print(f"\n(results in {args.output})")
    return 0
