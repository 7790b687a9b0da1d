"""CPU per backend call, layer by layer: where a cache-off request's time goes outside the graph.

    .venv/bin/python -m bench.layers [--customers 10000] [--calls 400] [--rounds 5]

One process, the real simulators on loopback, uvloop, one call at a time. Each layer is the
one before it plus what wraps it, from aiohttp alone out to the role's read the schema's
loaders make; the difference between two rows is what that layer costs. The layers run in
turn, ``--calls`` each, for ``--rounds`` rounds (interleaved, so the machine's drift hits them
alike), and the table gives each one's median CPU time per call (``time.process_time``: this
process only, not the simulators').

Why CPU per call: a cache-off 360 request makes five backend calls, and a profile of the
gateway under load is flat (no function above a tenth of the samples), so the only way to see
what the layers cost is to peel them one by one. Bounded: rounds x layers x calls, one at a
time. docs/benchmark.md ("Where a cache-off request's CPU goes") keeps a run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from adapters.billing import BALANCES
from adapters.declared.values import fill_template
from adapters.request_share import open_request_share
from bench.floor import SOAP
from bench.report import median_table
from bench.run import sample_bundles, seeded
from gateway.backends import build_backends
from gateway.database import create_engine
from gateway.settings import load_settings
from tests.harness import SimulatorUrls, running_simulators

Layer = Callable[[int], Awaitable[Any]]


def _layers(
    sims: SimulatorUrls, backends: Any, session: aiohttp.ClientSession, customers: int, seed: int
) -> dict[str, Layer]:
    """Each layer as a call of the i-th sampled customer, innermost first."""
    bundles = sample_bundles(customers, seed, 200)
    accounts = [b.account.id for b in bundles]
    numbers = [b.customer.customer_no for b in bundles]
    billing, boss = backends.billing, backends.customer_system
    bill = billing.system
    bill_instance = bill.instances[bill.sole_instance]
    balances = bill.spec.operations[billing._op("balances")]
    crm = boss.system
    crm_instance = crm.instances[crm.sole_instance]
    customers_op = crm.spec.operations[boss._op("customers")]

    def account(i: int) -> str:
        return accounts[i % len(accounts)]

    def number(i: int) -> str:
        return numbers[i % len(numbers)]

    def keys(key: str) -> dict[str, Any]:
        return {"$keys": [key], "$key": key}

    async def bare_get(i: int) -> bytes:
        url = f"{sims.billing}{BALANCES}"
        async with session.get(url, params={"billingAccount.id": account(i)}) as answer:
            return await answer.read()

    async def bare_post(i: int) -> bytes:
        async with session.post(
            f"{sims.boss}/boss/services/BossService",
            data=SOAP.format(op="QueryCustomer", no=number(i)),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "QueryCustomer"},
        ) as answer:
            return await answer.read()

    engine = bill_instance.engine
    return {
        "REST: aiohttp alone": bare_get,
        "REST: BackendPool.send": lambda i: engine._http.send(
            "GET",
            str(balances.path),
            params={"billingAccount.id": account(i)},
            headers=engine._headers,
        ),
        "REST: the engine's call": lambda i: engine.call(balances, keys(account(i))),
        "REST: through the guard": lambda i: bill_instance.policy.read(
            balances.name, bill._call, bill_instance, balances, keys(account(i))
        ),
        "REST: records extracted": lambda i: bill._records(bill_instance, balances, [account(i)]),
        "REST: the role's read": lambda i: billing.get_balances([account(i)]),
        "SOAP: aiohttp alone": bare_post,
        "SOAP: the engine's call": lambda i: crm_instance.engine.call(
            customers_op, fill_template(customers_op.request or {}, keys(number(i)))
        ),
        "SOAP: records extracted": lambda i: crm._records(crm_instance, customers_op, [number(i)]),
        "SOAP: the role's read": lambda i: boss.get_customers([number(i)]),
    }


async def measure(
    sims: SimulatorUrls, state: Path, customers: int, seed: int, calls: int, rounds: int
) -> dict[str, list[float]]:
    """Microseconds of CPU per call, per layer, one figure per round."""
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{state}/hub.db",
        boss={"base_url": sims.boss},
        billing={"base_url": sims.billing},
        care={"base_url": sims.care},
        system_urls={"loyalty-north": sims.loyalty_north, "loyalty-south": sims.loyalty_south},
        cache={"enabled": False},
    )
    engine = create_engine(settings.database_url)
    backends = build_backends(settings, engine).backends
    started = (backends.customer_system, backends.billing, backends.care)
    for backend in started:
        await backend.start()
    session = aiohttp.ClientSession()
    try:
        layers = _layers(sims, backends, session, customers, seed)
        open_request_share()  # as a request's calls have one
        for layer in layers.values():  # warm: pools, WSDL-prepared envelopes
            for i in range(20):
                await layer(i)
        figures: dict[str, list[float]] = {name: [] for name in layers}
        for _ in range(rounds):
            for name, layer in layers.items():
                before = time.process_time()
                for i in range(calls):
                    await layer(i)
                figures[name].append((time.process_time() - before) / calls * 1e6)
        return figures
    finally:
        await session.close()
        for backend in started:
            await backend.close()
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 10_000 or not 1 <= args.rounds <= 20:
        parser.error("--calls must be 1-10000 and --rounds 1-20")
    data = seeded(args.customers, args.seed)
    with tempfile.TemporaryDirectory() as folder, running_simulators(data) as sims:
        figures = uvloop.run(
            measure(sims, Path(folder), args.customers, args.seed, args.calls, args.rounds)
        )
    print(median_table("layer (each wraps the one above)", "CPU us per call", figures, digits=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
