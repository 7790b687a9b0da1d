"""The audit log's cost per request, sequential A/B: the same 360 query sent alternately to a
gateway with the log on and one with it off (order flipped each time), so that the machine's
drift hits both alike. Complements `make bench` (concurrent, phases of seconds), whose
figures on a shared machine move more than the effect measured here.

    .venv/bin/python -m bench.audit_ab [--customers 20000] [--rounds 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.run import QUERY_360
from simulators.dataset import generate
from simulators.seed import seed_dataset
from tests.harness import gateway_env, issue_key, running_gateway, running_simulators

REPO = Path(__file__).resolve().parents[1]
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    data = REPO / "bench" / ".data" / f"{args.customers}-{args.seed}"
    seed_dataset(data, args.customers, args.seed, progress=None)
    bundles = [generate(args.seed, i) for i in range(5, 60)]
    msisdns = [
        next(s.msisdn for s in b.subscribers if s.status != "D")
        for b in bundles
        if any(s.status != "D" for s in b.subscribers)
    ]
    with ExitStack() as stack:
        sims = stack.enter_context(running_simulators(data))
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        clients: dict[str, httpx.Client] = {}
        for name, audit in (("on", "true"), ("off", "false")):
            env = gateway_env(
                sims,
                f"sqlite+aiosqlite:///{state}/{name}.db",
                SWITCHBOARD_AUDIT__ENABLED=audit,
                SWITCHBOARD_AUDIT__STATE_DIR=str(state / "keys"),
                SWITCHBOARD_CACHE__ENABLED="false",
            )
            key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
            url = stack.enter_context(running_gateway(env, state / f"{name}.log"))
            clients[name] = stack.enter_context(
                httpx.Client(
                    base_url=url, headers={"X-Api-Key": key, "X-Purpose": "service"}, timeout=30
                )
            )
        ids = {
            name: [
                client.post("/graphql", json={"query": FIND, "variables": {"m": m}}).json()["data"][
                    "customerByMsisdn"
                ]["id"]
                for m in msisdns
            ]
            for name, client in clients.items()
        }
        latencies: dict[str, list[float]] = {"on": [], "off": []}
        for round_ in range(args.rounds):
            for i in range(len(msisdns)):
                for name in ("on", "off") if (round_ + i) % 2 else ("off", "on"):
                    started = time.perf_counter()
                    response = clients[name].post(
                        "/graphql", json={"query": QUERY_360, "variables": {"id": ids[name][i]}}
                    )
                    latencies[name].append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
    on, off = (statistics.median(latencies[k]) for k in ("on", "off"))
    print(f"requests per side: {len(latencies['on'])}")
    print(
        f"median ms: audit on {on:.2f}, off {off:.2f}; on/off {on / off:.3f} (+{on - off:.2f} ms)"
    )


if __name__ == "__main__":
    main()
