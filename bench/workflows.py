"""Plan-change workflows per second, on SQLite and on PostgreSQL.

    python -m bench.workflows [--workflows 100] [--concurrency 20] [--backends sqlite,postgres]

The real gateway (DBOS inside) over the real simulators on loopback: ``--workflows`` plan
changes, each for another customer, are submitted through ``changePlan`` with
``--concurrency`` in flight; the clock stops when every request has reached a final state in
the hub's table (read from the database, not through the gateway, so that watching costs the
gateway nothing). Each workflow is 5 legacy calls and ~11 durable steps. Rows are returned by
``run`` and printed as JSON lines.

The plan changes go through the app channel, as a customer's would: the app acts only for the
customer it verified (``rows: verified_customer``, an OTP required for ``changePlan``), so each
customer first obtains an OTP verification the way the tests do (startOtp, the code read off
the care simulator's outbox, confirmOtp) and every ``changePlan`` carries its customer's
``X-Verification``. That set-up, and the crosswalk lookups (done with an agent key: the app may
look a customer up only once verified), are not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select

from gateway.database import create_engine
from gateway.policy_store import DEFAULT_POLICY_FILE
from orchestration.store import hub_request
from simulators.dataset import CustomerBundle, generate, has_certificate_typo
from simulators.seed import seed_dataset
from tests.harness import (
    SimulatorUrls,
    gateway_env,
    issue_key,
    post_graphql,
    running_gateway,
    running_simulators,
)
from tests.verification_helpers import otp_token

SEED = 9090
CUSTOMERS = 400
ADMIN_URL = os.environ.get(
    "SWITCHBOARD_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CHANGE_PLAN = """mutation($input: ChangePlanInput!) { changePlan(input: $input) { id } }"""
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"
FINAL = ("DONE", "COMPENSATED", "REJECTED")


def _lines(count: int) -> list[tuple[CustomerBundle, str, str]]:
    """(customer, msisdn, target offering) of ``count`` customers whose systems agree, one
    line each."""
    found: list[tuple[CustomerBundle, str, str]] = []
    for index in range(CUSTOMERS):
        bundle = generate(SEED, index)
        account = bundle.account
        if has_certificate_typo(SEED, index) or account.overdue_cents or account.arrears:
            continue
        if bundle.party.id_card != bundle.customer.cert_no or account.state != "active":
            continue
        line = next(
            (
                s
                for s in bundle.subscribers
                if s.status == "A" and s.msisdn in account.service_numbers
            ),
            None,
        )
        if line is not None:
            offering = "OF0007" if line.offering_id != "OF0007" else "OF0006"
            found.append((bundle, line.msisdn, offering))
        if len(found) == count:
            return found
    raise SystemExit(f"only {len(found)} suitable customers; ask for fewer workflows")


@contextmanager
def _sqlite_database(state: Path) -> Iterator[str]:
    yield f"sqlite+aiosqlite:///{state / 'hub.db'}"


@contextmanager
def _postgres_database() -> Iterator[str]:
    import asyncpg

    name = f"switchboard_bench_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class _Gateway:
    """What tests/verification_helpers.py needs of a gateway: ``query`` with a channel's key."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys

    def query(
        self,
        document: str,
        variables: dict | None = None,
        *,
        channel: str = "agent",
        purpose: str | None = "service",
    ) -> httpx.Response:
        return post_graphql(
            self.url, self.keys[channel], document, variables, purpose=purpose, timeout=60
        )


def _customers(
    gateway: _Gateway, sims: SimulatorUrls, lines: list[tuple[CustomerBundle, str, str]]
) -> list[tuple[str, str]]:
    """(hub id, the app's OTP verification) per customer. Not timed: the crosswalk learns each
    customer once (through the agent key), and each customer verifies in the app once."""
    found = []
    for bundle, msisdn, _ in lines:
        answer = gateway.query(FIND, {"m": msisdn}, channel="agent").json()
        customer_id = answer["data"]["customerByMsisdn"]["id"]
        found.append((customer_id, otp_token(gateway, sims, bundle, customer_id, "app")))
    return found


async def _drive(
    url: str,
    key: str,
    database_url: str,
    lines: list[tuple[CustomerBundle, str, str]],
    customers: list[tuple[str, str]],
    concurrency: int,
) -> dict[str, Any]:
    headers = {"X-Api-Key": key, "X-Purpose": "service"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        slots = asyncio.Semaphore(concurrency)

        async def submit(customer: tuple[str, str], msisdn: str, offering: str) -> str:
            customer_id, verification = customer
            async with slots:
                variables = {
                    "input": {
                        "customerId": customer_id,
                        "msisdn": msisdn,
                        "offeringId": offering,
                        "idempotencyKey": f"bench-{uuid.uuid4().hex[:20]}",
                    }
                }
                answer = (
                    await client.post(
                        "/graphql",
                        json={"query": CHANGE_PLAN, "variables": variables},
                        headers={"X-Verification": verification},
                    )
                ).json()
                if "errors" in answer:
                    raise SystemExit(f"changePlan refused: {answer['errors'][0]}")
                return str(answer["data"]["changePlan"]["id"])

        engine = create_engine(database_url)
        started = time.perf_counter()
        ids = await asyncio.gather(
            *(submit(c, m, o) for c, (_, m, o) in zip(customers, lines, strict=True))
        )
        submitted = time.perf_counter() - started
        try:
            while True:
                async with engine.connect() as conn:
                    rows = (
                        await conn.execute(
                            select(hub_request.c.state, hub_request.c.status).where(
                                hub_request.c.id.in_(ids)
                            )
                        )
                    ).all()
                if sum(1 for r in rows if r.status in FINAL) == len(ids):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            await engine.dispose()
    return {
        "workflows": len(ids),
        "concurrency": concurrency,
        "submit_s": round(submitted, 2),
        "seconds": round(elapsed, 2),
        "workflows_per_s": round(len(ids) / elapsed, 1),
        "confirmed": sum(1 for r in rows if r.state == "CONFIRMED"),
        "not_confirmed": sum(1 for r in rows if r.state != "CONFIRMED"),
    }


def _one_backend(
    backend: str,
    sims: SimulatorUrls,
    state: Path,
    lines: list[tuple[CustomerBundle, str, str]],
    concurrency: int,
) -> dict[str, Any]:
    database = _sqlite_database(state) if backend == "sqlite" else _postgres_database()
    with database as database_url:
        # The app's rate limit (per credential per minute) would measure the limiter: the
        # benchmark runs the bundled policy without it.
        policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
        policy["channels"]["app"].pop("rate_limit_per_minute", None)
        policy["channels"]["agent"].pop("rate_limit_per_minute", None)  # the untimed lookups
        policy_file = state / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
        env = gateway_env(
            sims,
            database_url,
            SWITCHBOARD_POLICY_FILE=str(policy_file),
            # A shared 2-core machine: the default 2 s would measure queueing, not workflows.
            SWITCHBOARD_BOSS__TIMEOUT_S="10",
            SWITCHBOARD_BILLING__TIMEOUT_S="10",
            SWITCHBOARD_CARE__TIMEOUT_S="10",
            SWITCHBOARD_WORKFLOWS__EXECUTOR_ID=f"bench-{backend}",
        )
        keys = {
            "app": issue_key(env, channel="app", role="customer", scopes=("customer:read",)),
            "agent": issue_key(env, channel="agent", role="agent", scopes=("customer:read",)),
        }
        with running_gateway(env, state / f"gateway-{backend}.log") as url:
            customers = _customers(_Gateway(url, keys), sims, lines)
            row = asyncio.run(_drive(url, keys["app"], database_url, lines, customers, concurrency))
    return {"row": "plan_change_workflows", "backend": backend, **row}


def run(
    workflows: int = 100, concurrency: int = 20, backends: tuple[str, ...] = ("sqlite", "postgres")
) -> list[dict[str, Any]]:
    """One row per backend: plan-change workflows per second end to end."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-wf-") as tmp:
        base = Path(tmp)
        for backend in backends:
            # Fresh simulators per backend: each run moves the same lines once.
            data_dir = base / f"sim-{backend}"
            data_dir.mkdir()
            seed_dataset(data_dir, CUSTOMERS, SEED)
            state = base / f"hub-{backend}"
            state.mkdir()
            with running_simulators(data_dir) as sims:
                rows.append(_one_backend(backend, sims, state, _lines(workflows), concurrency))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workflows", description=__doc__)
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    for row in run(args.workflows, args.concurrency, backends):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
