"""The benchmark: the real gateway over the real simulators on loopback, bounded and self-stopping.

Run with `make bench` (or `python -m bench --help`). Figures on a shared 2-core machine are
noisy: what to read are the ratios, each measured in one run with the phases interleaved
(A, B, A, B) so that drift hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.load import LoadResult, run_load
from simulators.dataset import generate, has_certificate_typo
from simulators.seed import seed_dataset
from tests.harness import REPO, gateway_env, issue_key, running_gateway, running_simulators

QUERY_360 = """query($id: ID!) { customer(id: $id) {
  id profile { name certificateNumber starLevel segment }
  subscriptions { msisdn status offering { name } usage { dataUsedMb dataAllowanceMb } }
  billingAccounts { id balance { amount { amount } }
    bills(first: 3) { items { amountDue { amount } } } }
  tickets(first: 5) { id status description }
} }"""
PAGE_50 = """query($after: String) { customers(first: 50, after: $after) {
  nodes { id profile { name starLevel } subscriptions { msisdn }
    billingAccounts { balance { amount { amount } } } }
  pageInfo { endCursor } } }"""
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"


def combine(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        sum(r.requests for r in results),
        sum(r.errors for r in results),
        sum(r.elapsed_s for r in results),
        [x for r in results for x in r.latencies_ms],
    )


async def resolve_ids(url: str, key: str, msisdns: list[str]) -> list[str]:
    headers = {"X-Api-Key": key, "X-Purpose": "service"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        semaphore = asyncio.Semaphore(8)

        async def one(msisdn: str) -> str | None:
            async with semaphore:
                body = (
                    await client.post(url, json={"query": FIND, "variables": {"m": msisdn}})
                ).json()
            found = (body.get("data") or {}).get("customerByMsisdn")
            return found["id"] if found else None

        return [i for i in await asyncio.gather(*(one(m) for m in msisdns)) if i]


def backend_calls(client: httpx.Client, sims) -> dict[str, int]:
    return {
        name: client.get(f"{sims.of(name)}/_sim/stats").json()["total"]
        for name in ("boss", "billing", "care")
    }


def run(args: argparse.Namespace) -> dict:
    data_dir = REPO / "bench" / ".data" / f"{args.customers}-{args.seed}"
    seed_dataset(data_dir, args.customers, args.seed, progress=None)
    rng = random.Random(args.seed)
    # Customers with a planted identity conflict answer with a (correct) coded error: they
    # would count as failed requests, so the load cycles over the others.
    sample = [
        i
        for i in (rng.randrange(args.customers) for _ in range(args.sample))
        if not has_certificate_typo(args.seed, i)
    ]
    msisdns = [
        next((s.msisdn for s in generate(args.seed, i).subscribers if s.status != "D"), None)
        for i in sample
    ]
    msisdns = [m for m in msisdns if m]
    with ExitStack() as stack:
        sims = stack.enter_context(running_simulators(data_dir))
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        gateways: dict[str, tuple[str, str]] = {}
        for name, enforce in (("policies-on", "true"), ("policies-off", "false")):
            env = gateway_env(
                sims,
                f"sqlite+aiosqlite:///{state}/{name}.db",
                SWITCHBOARD_POLICY_ENFORCEMENT=enforce,
            )
            key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
            url = stack.enter_context(running_gateway(env, state / f"{name}.log"))
            gateways[name] = (f"{url}/graphql", key)

        ids = {
            name: asyncio.run(resolve_ids(url, key, msisdns))
            for name, (url, key) in gateways.items()
        }
        phases: dict[str, list[LoadResult]] = {name: [] for name in gateways}
        for _round in range(args.rounds):
            for name, (url, key) in gateways.items():
                hub_ids = ids[name]
                phases[name].append(
                    asyncio.run(
                        run_load(
                            url,
                            {"X-Api-Key": key, "X-Purpose": "service"},
                            lambda n, h=hub_ids: {
                                "query": QUERY_360,
                                "variables": {"id": h[n % len(h)]},
                            },
                            concurrency=args.concurrency,
                            duration_s=args.duration,
                            max_requests=args.max_requests,
                        )
                    )
                )
        on, off = combine(phases["policies-on"]), combine(phases["policies-off"])

        # A page of 50 customers: backend calls per page, on known customers.
        url, key = gateways["policies-on"]
        with httpx.Client(headers={"X-Api-Key": key, "X-Purpose": "service"}, timeout=60) as client:
            client.post(url, json={"query": PAGE_50, "variables": {}})  # first sight: resolve
            before = backend_calls(client, sims)
            started = time.perf_counter()
            pages = 5
            for _ in range(pages):
                client.post(url, json={"query": PAGE_50, "variables": {}}).raise_for_status()
            page_ms = (time.perf_counter() - started) * 1000 / pages
            after = backend_calls(client, sims)
        calls_per_page = {k: (after[k] - before[k]) / pages for k in after}

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
        },
        "dataset": {"customers": args.customers, "seed": args.seed, "sampled": len(msisdns)},
        "load": {
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "seconds_per_phase": args.duration,
        },
        "scenarios": {
            "360, policies on": on.summary(),
            "360, policies off": off.summary(),
            "page of 50 (known customers)": {
                "mean_ms": round(page_ms, 1),
                "backend_calls_per_page": calls_per_page,
            },
        },
        "ratios": {
            "policies on/off, p50 latency": round(on.percentile(50) / off.percentile(50), 3),
            "policies on/off, throughput": round(on.throughput / off.throughput, 3),
        },
    }


def table(result: dict) -> str:
    lines = [
        "| scenario | req/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result["scenarios"].items():
        if "throughput_rps" in s:
            lines.append(
                f"| {name} | {s['throughput_rps']} | {s['p50_ms']} | {s['p95_ms']} | "
                f"{s['p99_ms']} | {s['errors']} |"
            )
    page = result["scenarios"]["page of 50 (known customers)"]
    lines.append("")
    lines.append(
        f"Page of 50 known customers: {page['mean_ms']} ms per page, backend calls per page: "
        + ", ".join(f"{k} {v:g}" for k, v in page["backend_calls_per_page"].items())
    )
    lines.append("")
    for name, value in result["ratios"].items():
        lines.append(f"- {name}: **{value}**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sample", type=int, default=300, help="customers the load cycles over")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per side")
    parser.add_argument("--max-requests", type=int, default=20_000, help="per phase")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    result = run(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(table(result))
    print(f"\n(results in {args.output})")
    return 0
