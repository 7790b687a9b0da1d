"""The benchmark: the real gateway over the real simulators on loopback, bounded and self-stopping.

Run with `make bench` (or `python -m bench --help`). Figures on a shared 2-core machine are
noisy: what to read are the ratios, each measured in one run with the phases interleaved
(A, B, A, B) so that drift hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Awaitable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from adapters.billing import ACCOUNTS, BALANCES, BILLS
from adapters.care import TICKETS
from bench.load import LoadResult, graphql_operation, run_load
from gateway.policy_store import DEFAULT_POLICY_FILE
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
PAGE = """query($first: Int!) { customers(first: $first) {
  nodes { id profile { name starLevel } subscriptions { msisdn }
    billingAccounts { balance { amount { amount } } } tickets(first: 3) { id } }
  pageInfo { endCursor } } }"""
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"


def combine(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        sum(r.requests for r in results),
        sum(r.errors for r in results),
        sum(r.elapsed_s for r in results),
        [x for r in results for x in r.latencies_ms],
    )


async def resolve_ids(client: httpx.AsyncClient, url: str, msisdns: list[str]) -> list[str]:
    semaphore = asyncio.Semaphore(8)

    async def one(msisdn: str) -> str | None:
        async with semaphore:
            body = (await client.post(url, json={"query": FIND, "variables": {"m": msisdn}})).json()
        found = (body.get("data") or {}).get("customerByMsisdn")
        return found["id"] if found else None

    return [i for i in await asyncio.gather(*(one(m) for m in msisdns)) if i]


SOAP = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:b="http://boss.simulator.switchboard/crm/v1"><soapenv:Body><b:{op}RequestMsg>'
    "<b:RequestHeader><b:Version>1.0</b:Version><b:BusinessCode>{op}</b:BusinessCode>"
    "<b:MessageSeq>bench</b:MessageSeq><b:LoginSystemCode>BENCH</b:LoginSystemCode>"
    "</b:RequestHeader><b:{op}Request><b:CustomerNo>{no}</b:CustomerNo></b:{op}Request>"
    "</b:{op}RequestMsg></soapenv:Body></soapenv:Envelope>"
)


def floor_operation(clients: dict[str, httpx.AsyncClient], sims, bundles: list) -> object:
    """The same six backend calls as the 360 query, all at once, from a plain client.

    One pooled client per backend, as the gateway has: httpx's pool slows down sharply with
    many connections in one pool (measured: 367 req/s at 10 connections, 103 at 60).
    """
    boss = f"{sims.boss}/boss/services/BossService"
    billing, care = clients["billing"], clients["care"]

    def soap(op: str, customer_no: str) -> Awaitable[httpx.Response]:
        return clients["boss"].post(
            boss,
            content=SOAP.format(op=op, no=customer_no),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": op},
        )

    async def operation(number: int) -> bool:
        bundle = bundles[number % len(bundles)]
        account, party = bundle.account.id, bundle.party.id
        answers = await asyncio.gather(
            soap("QueryCustomer", bundle.customer.customer_no),
            soap("QuerySubscribers", bundle.customer.customer_no),
            billing.get(f"{sims.billing}{ACCOUNTS}", params={"id": account}),
            billing.get(f"{sims.billing}{BALANCES}", params={"billingAccount.id": account}),
            billing.get(
                f"{sims.billing}{BILLS}", params={"billingAccount.id": account, "limit": 3}
            ),
            care.get(f"{sims.care}{TICKETS}", params={"relatedParty.id": party}),
        )
        for answer in answers[2:]:
            answer.json()
        return all(a.status_code == 200 for a in answers)

    return operation


async def backend_calls(client: httpx.AsyncClient, sims) -> dict[str, int]:
    return {
        name: (await client.get(f"{sims.of(name)}/_sim/stats")).json()["total"]
        for name in ("boss", "billing", "care")
    }


async def page_scale(client: httpx.AsyncClient, url: str, sims, sizes: list[int]) -> list[dict]:
    """Latency and backend calls per page as the page grows (known customers)."""
    rows = []
    for size in sizes:
        variables = {"first": size}
        await client.post(url, json={"query": PAGE, "variables": variables})  # resolve first
        before = await backend_calls(client, sims)
        started = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            response = await client.post(url, json={"query": PAGE, "variables": variables})
            response.raise_for_status()
        elapsed_ms = (time.perf_counter() - started) * 1000 / repeats
        after = await backend_calls(client, sims)
        rows.append(
            {
                "page_size": size,
                "mean_ms": round(elapsed_ms, 1),
                "backend_calls_per_page": {k: (after[k] - before[k]) / repeats for k in after},
            }
        )
    return rows


async def measure(args: argparse.Namespace, sims, gateways: dict, bundles: list) -> dict:
    msisdns = [
        next(s.msisdn for s in b.subscribers if s.status != "D")
        for b in bundles
        if any(s.status != "D" for s in b.subscribers)
    ]
    clients = {
        name: httpx.AsyncClient(
            headers={"X-Api-Key": key, "X-Purpose": "service"},
            limits=httpx.Limits(max_connections=args.concurrency),
            timeout=30,
        )
        for name, (url, key) in gateways.items()
    }
    pool = args.concurrency * 2
    plain = {
        system: httpx.AsyncClient(
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool), timeout=30
        )
        for system in ("boss", "billing", "care")
    }
    try:
        ids = {
            name: await resolve_ids(clients[name], gateways[name][0], msisdns) for name in gateways
        }
        operations = {
            name: graphql_operation(
                clients[name],
                gateways[name][0],
                lambda n, h=ids[name]: {"query": QUERY_360, "variables": {"id": h[n % len(h)]}},
            )
            for name in gateways
        }
        operations["floor"] = floor_operation(plain, sims, bundles)
        phases: dict[str, list[LoadResult]] = {name: [] for name in operations}
        for _round in range(args.rounds):
            for name, operation in operations.items():
                phases[name].append(
                    await run_load(
                        operation,
                        concurrency=args.concurrency,
                        duration_s=args.duration,
                        max_requests=args.max_requests,
                    )
                )
        results = {name: combine(found) for name, found in phases.items()}
        scale = await page_scale(
            clients["policies-on"], gateways["policies-on"][0], sims, args.page_sizes
        )
    finally:
        for client in (*clients.values(), *plain.values()):
            await client.aclose()
    return {"load": results, "page_scale": scale}


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
    bundles = [generate(args.seed, i) for i in sample]
    with ExitStack() as stack:
        sims = stack.enter_context(running_simulators(data_dir))
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        # The agent channel's rate limit (600 a minute) would turn the load into 429s: the
        # benchmark runs the bundled policy without it.
        policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
        policy["channels"]["agent"].pop("rate_limit_per_minute", None)
        policy_file = state / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
        gateways: dict[str, tuple[str, str]] = {}
        for name, enforce, cache, audit in (
            ("policies-on", "true", "false", "true"),
            # Right after its reference, so both sides of the audit ratio see the same drift.
            ("audit-off", "true", "false", "false"),
            ("policies-off", "false", "false", "true"),
            ("cache-on", "true", "true", "true"),
        ):
            env = gateway_env(
                sims,
                f"sqlite+aiosqlite:///{state}/{name}.db",
                SWITCHBOARD_POLICY_ENFORCEMENT=enforce,
                SWITCHBOARD_CACHE__ENABLED=cache,
                SWITCHBOARD_AUDIT__ENABLED=audit,
                SWITCHBOARD_AUDIT__STATE_DIR=str(state / "audit-keys"),
                SWITCHBOARD_POLICY_FILE=str(policy_file),
            )
            key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
            url = stack.enter_context(running_gateway(env, state / f"{name}.log"))
            gateways[name] = (f"{url}/graphql", key)
        measured = asyncio.run(measure(args, sims, gateways, bundles))

    on, off, cached, unaudited, floor = (
        measured["load"][k]
        for k in ("policies-on", "policies-off", "cache-on", "audit-off", "floor")
    )
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "dataset": {"customers": args.customers, "seed": args.seed, "sampled": len(bundles)},
        "load": {
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "seconds_per_phase": args.duration,
        },
        "scenarios": {
            "360, policies on": on.summary(),
            "360, policies off": off.summary(),
            "360, policies on, cache on (warm)": cached.summary(),
            "360, policies on, audit log off": unaudited.summary(),
            "floor: the same 6 backend calls, direct and concurrent": floor.summary(),
        },
        "page_scale": measured["page_scale"],
        "ratios": {
            "policies on/off, p50 latency": round(on.percentile(50) / off.percentile(50), 3),
            "policies on/off, throughput": round(on.throughput / off.throughput, 3),
            "cache on/off, p50 latency": round(cached.percentile(50) / on.percentile(50), 3),
            "cache on/off, throughput": round(cached.throughput / on.throughput, 3),
            "audit log on/off, p50 latency": round(on.percentile(50) / unaudited.percentile(50), 3),
            "audit log on/off, throughput": round(on.throughput / unaudited.throughput, 3),
            "gateway/floor, p50 latency": round(on.percentile(50) / floor.percentile(50), 2),
            "gateway p50 minus floor p50, ms (cache off)": round(
                on.percentile(50) - floor.percentile(50), 1
            ),
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
    lines += ["", "| page size | ms per page | BOSS calls | billing calls | care calls |"]
    lines.append("|---|---|---|---|---|")
    for row in result["page_scale"]:
        calls = row["backend_calls_per_page"]
        lines.append(
            f"| {row['page_size']} | {row['mean_ms']} | {calls['boss']:g} | "
            f"{calls['billing']:g} | {calls['care']:g} |"
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
    parser.add_argument(
        "--page-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1, 10, 50, 200]
    )
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    result = run(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(table(result))
    print(f"\n(results in {args.output})")
    return 0
