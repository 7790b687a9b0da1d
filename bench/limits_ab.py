"""What the operation limits cost: the same load against gateways with them on and off.

The limits (schema/operation_limits.py: tokens before parsing, then depth, aliases, root
fields and the estimated backend calls of schema/cost.py) run on every operation. This runs
the 360 query, closed loop, against two gateways that differ only in
``graphql.operation_limits`` (the off side leaves the extension out of the schema: a setting
for this measurement only), with the read cache off and on (warm: where the gateway does the
least work per request, so the limits' share is largest). Phases are interleaved
(on, off, off, on, ...) so that the machine's drift hits both sides alike, and the figure to
read is the gateway's CPU per request (bench/cpu.py), on/off.

    .venv/bin/python -m bench.limits_ab [--customers 10000] [--rounds 4] [--duration 4]

Bounded: rounds x 4 phases x duration seconds of load, each phase also capped in requests.

On a shared 2-core machine the gateway figures move by a few percent between runs, more than
the limits cost. So the run also measures the extension alone, in this process: the same
strawberry execution with and without ``OperationLimitsRule`` (plus the document caches the
gateway has), on a stub schema whose resolvers do nothing, in interleaved blocks of CPU time.
The difference is the limits' whole cost per operation, hooks included, with the figures and
token counts served from their caches as they are for a repeated document.
(``--in-process-only`` runs just that part, in a few seconds.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import types
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import strawberry
import yaml
from strawberry.extensions import ParserCache, ValidationCache

from bench import wrk
from bench.run import Bench, Gateway, active_msisdns, bodies_360, sample_bundles, seeded
from gateway.policy_store import DEFAULT_POLICY_FILE
from policies.model import OperationLimits
from schema.operation_limits import DocumentMeasures, OperationLimitsRule
from tests.harness import REPO, gateway_env, issue_key, running_gateway, running_simulators

#: name -> (operation limits, read cache)
SIDES = {
    "limits on, cache off": ("true", "false"),
    "limits off, cache off": ("false", "false"),
    "limits on, cache on": ("true", "true"),
    "limits off, cache on": ("false", "true"),
}


def start_gateways(
    args: argparse.Namespace, stack: ExitStack, sims, state: Path
) -> dict[str, Gateway]:
    # As in bench/run.py: the agent channel's rate limit would turn the load into 429s.
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["channels"]["agent"].pop("rate_limit_per_minute", None)
    policy_file = state / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
    gateways = {}
    for number, (name, (limits, cache)) in enumerate(SIDES.items()):
        folder = state / f"gw{number}"
        folder.mkdir()
        env = gateway_env(
            sims,
            f"sqlite+aiosqlite:///{folder}/hub.db",
            SWITCHBOARD_POLICY_FILE=str(policy_file),
            SWITCHBOARD_WORKERS=str(args.workers),
            SWITCHBOARD_GRAPHQL__OPERATION_LIMITS=limits,
            SWITCHBOARD_CACHE__ENABLED=cache,
            SWITCHBOARD_AUDIT__STATE_DIR=str(folder / "audit"),
        )
        key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
        url = stack.enter_context(running_gateway(env, folder / "gateway.log"))
        gateways[name] = Gateway(name, f"{url}/graphql", key)
    return gateways


async def measure(args: argparse.Namespace, sims, gateways: dict[str, Gateway], bundles) -> dict:
    bench = Bench(args, sims)
    try:
        msisdns = active_msisdns(bundles)
        bodies = {
            name: bodies_360(await bench.resolve_ids(gw, msisdns)) for name, gw in gateways.items()
        }
        # One unmeasured phase each: connections open, caches warm, documents parsed.
        for name, gateway in gateways.items():
            await bench.throughput(gateway, bodies[name])
        totals = {name: {"requests": 0, "errors": 0, "cpu_s": 0.0} for name in gateways}
        pairs = [("limits on, cache off", "limits off, cache off")]
        pairs.append(("limits on, cache on", "limits off, cache on"))
        for round_ in range(args.rounds):
            for on, off in pairs:
                # ABBA: each side goes first in every other round.
                for name in (on, off) if round_ % 2 == 0 else (off, on):
                    row = await bench.throughput(gateways[name], bodies[name])
                    if "gateway_cpu_ms_per_op" not in row:
                        raise RuntimeError("the gateway's CPU time cannot be read (needs ss)")
                    totals[name]["requests"] += row["requests"]
                    totals[name]["errors"] += row["errors"]
                    totals[name]["cpu_s"] += row["gateway_cpu_ms_per_op"] * row["requests"] / 1000
    finally:
        await bench.close()
    rows = {
        name: {
            "requests": t["requests"],
            "errors": t["errors"],
            "gateway_cpu_ms_per_op": round(t["cpu_s"] * 1000 / max(1, t["requests"]), 4),
        }
        for name, t in totals.items()
    }
    ratios = {
        f"limits on/off, gateway CPU per request ({cache})": round(
            rows[f"limits on, {cache}"]["gateway_cpu_ms_per_op"]
            / rows[f"limits off, {cache}"]["gateway_cpu_ms_per_op"],
            3,
        )
        for cache in ("cache off", "cache on")
    }
    return {"rows": rows, "ratios": ratios}


@strawberry.type
class _StubQuery:
    @strawberry.field
    def line(self, id: str) -> int:
        return len(id)


#: Three aliased fields and a variable, like a small real operation.
_STUB_DOCUMENT = "query($id: String!) { a: line(id: $id) b: line(id: $id) c: line(id: $id) }"


def _stub_context() -> types.SimpleNamespace:
    """What the extension reads of a request context: an enforced policy and a channel."""
    policy = types.SimpleNamespace(limits_for=lambda channel: OperationLimits())
    return types.SimpleNamespace(
        disclosure=types.SimpleNamespace(enforced=True, policy=policy),
        principal=types.SimpleNamespace(channel="agent", credential_id="bench"),
        backends=types.SimpleNamespace(max_page_size=200),
    )


def in_process_cost(blocks: int = 10, per_block: int = 2000) -> dict:
    """CPU microseconds per operation with the limits and without, interleaved blocks."""
    caches = [lambda: ParserCache(maxsize=100), lambda: ValidationCache(maxsize=100)]
    limits = partial(OperationLimitsRule, measures=DocumentMeasures())
    schemas = {
        "on": strawberry.Schema(query=_StubQuery, extensions=[limits, *caches]),
        "off": strawberry.Schema(query=_StubQuery, extensions=caches),
    }
    context = _stub_context()

    async def block(schema: strawberry.Schema, count: int) -> float:
        started = time.process_time()
        for number in range(count):
            # A new string per operation, as each request body brings its own.
            document = "".join((_STUB_DOCUMENT[:6], _STUB_DOCUMENT[6:]))
            result = await schema.execute(
                document, variable_values={"id": f"c{number}"}, context_value=context
            )
            if result.errors:
                raise RuntimeError(f"the stub operation failed: {result.errors}")
        return (time.process_time() - started) / count * 1e6

    async def measure() -> dict[str, list[float]]:
        for schema in schemas.values():
            await block(schema, 500)  # caches warm
        found: dict[str, list[float]] = {"on": [], "off": []}
        for number in range(blocks):
            for name in ("on", "off") if number % 2 else ("off", "on"):
                found[name].append(await block(schemas[name], per_block))
        return found

    found = asyncio.run(measure())
    on, off = (statistics.median(found[k]) for k in ("on", "off"))
    return {
        "us_per_op_on": round(on, 1),
        "us_per_op_off": round(off, 1),
        "limits_us_per_op": round(on - off, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits_ab", description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sample", type=int, default=100, help="customers the load cycles over")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per side")
    parser.add_argument("--max-requests", type=int, default=20_000, help="per phase")
    parser.add_argument("--python-load", action="store_true", help="never use wrk")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "limits_ab.json"))
    parser.add_argument("--in-process-only", action="store_true", help="no gateways, no load")
    args = parser.parse_args(argv)
    alone = in_process_cost()
    print(
        f"the extension alone, in process: {alone['limits_us_per_op']} us CPU per operation "
        f"({alone['us_per_op_on']} with, {alone['us_per_op_off']} without)"
    )
    if args.in_process_only:
        return 0
    bundles = sample_bundles(args.customers, args.seed, args.sample)
    data = seeded(args.customers, args.seed)
    with ExitStack() as stack:
        sims = stack.enter_context(running_simulators(data))
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        gateways = start_gateways(args, stack, sims, state)
        result = asyncio.run(measure(args, sims, gateways, bundles))
    result["in_process"] = alone
    for row in result["rows"].values():
        row["limits_share_of_cpu"] = round(
            alone["limits_us_per_op"] / 1000 / row["gateway_cpu_ms_per_op"], 4
        )
    result["load"] = {
        "generator": "wrk" if wrk.available() and not args.python_load else "python",
        "customers": args.customers,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "seconds_per_phase": args.duration,
        "gateway_workers": args.workers,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    for name, row in result["rows"].items():
        print(
            f"{name}: {row['requests']} requests, {row['errors']} errors, "
            f"{row['gateway_cpu_ms_per_op']} ms gateway CPU per request"
        )
    for name, value in result["ratios"].items():
        print(f"{name}: {value}")
    print(f"(results in {args.output})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
