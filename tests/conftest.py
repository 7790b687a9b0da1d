"""Shared fixtures: one seeded dataset, the real simulators and the real gateway.

Scaled-mode tests need PostgreSQL (127.0.0.1:5432). Without it they skip with the reason, on a
developer's machine; with SWITCHBOARD_REQUIRE_SERVICES=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.database import create_engine
from gateway.migrate import upgrade
from gateway.policy_store import DEFAULT_POLICY_FILE
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

HUB_SEED = 4242
HUB_CUSTOMERS = 400
POSTGRES_ADMIN_URL = os.environ.get(
    "SWITCHBOARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_SERVICES = os.environ.get("SWITCHBOARD_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def hub_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hubdata")
    seed_dataset(path, HUB_CUSTOMERS, HUB_SEED)
    return path


@pytest.fixture(scope="session")
def sims(hub_data_dir: Path) -> Iterator[SimulatorUrls]:
    with running_simulators(hub_data_dir) as urls:
        yield urls


@pytest.fixture(scope="session")
def sim_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


class SimControl:
    """Tells the simulators how to misbehave, and reads what they served."""

    def __init__(self, sims: SimulatorUrls, client: httpx.Client) -> None:
        self.sims = sims
        self.client = client

    def set(self, system: str, **state: object) -> None:
        self.client.post(f"{self.sims.of(system)}/_sim/control", json=state).raise_for_status()

    def reset(self) -> None:
        for system in ("boss", "billing", "care"):
            self.client.post(f"{self.sims.of(system)}/_sim/reset").raise_for_status()

    def calls(self, system: str) -> dict[str, int]:
        response = self.client.get(f"{self.sims.of(system)}/_sim/stats")
        return response.json()["calls"]

    def total(self, system: str) -> int:
        return sum(self.calls(system).values())


@pytest.fixture
def control(sims: SimulatorUrls, sim_client: httpx.Client) -> Iterator[SimControl]:
    ctl = SimControl(sims, sim_client)
    ctl.reset()
    yield ctl
    ctl.reset()


@dataclass(frozen=True)
class Gateway:
    url: str
    keys: dict[str, str]
    database_path: Path
    policy_file: Path

    def query(
        self,
        document: str,
        variables: dict | None = None,
        *,
        channel: str = "agent",
        purpose: str | None = "service",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return post_graphql(
            self.url, self.keys[channel], document, variables, purpose=purpose, headers=headers
        )


@pytest.fixture(scope="session")
def gateway(sims: SimulatorUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("hubstate")
    database = state / "hub.db"
    policy_file = state / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY_FILE.read_text())
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{database}",
        # Short timeouts keep failure tests quick; retries stay on to be exercised.
        SWITCHBOARD_BILLING__TIMEOUT_S="1.0",
        SWITCHBOARD_CARE__TIMEOUT_S="1.0",
        SWITCHBOARD_BOSS__TIMEOUT_S="1.0",
        # These tests inject failures per request and count backend calls: no read-through
        # cache in between (tests/test_cache.py runs a gateway with it on).
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_GRAPHQL__GRAPHIQL="true",
        SWITCHBOARD_POLICY_FILE=str(policy_file),
        SWITCHBOARD_POLICY_RELOAD_INTERVAL_S="0.2",
    )
    keys = {
        channel: issue_key(env, channel=channel, role=role, scopes=("customer:read",))
        for channel, role in (
            ("agent", "agent"),
            ("app", "customer"),
            ("store", "clerk"),
            ("partner", "partner"),
            ("ivr", "ivr"),
            ("web", "customer"),
        )
    }
    with running_gateway(env, state / "gateway.log") as url:
        yield Gateway(url=url, keys=keys, database_path=database, policy_file=policy_file)


@pytest.fixture(scope="session")
def customers() -> list[CustomerBundle]:
    return [generate(HUB_SEED, i) for i in range(HUB_CUSTOMERS)]


@pytest.fixture(scope="session")
def typo_customer(customers: list[CustomerBundle]) -> CustomerBundle:
    """A customer whose billing account carries a mistyped ID-card number."""
    return next(c for c in customers if has_certificate_typo(HUB_SEED, c.customer.index))


def _run_aside(coroutine_factory) -> object:
    """Run a coroutine to completion on a loop of its own (callers may be inside a loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_factory())).result()


def _postgres_unavailable_reason() -> str | None:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
        await conn.close()

    try:
        _run_aside(probe)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {type(error).__name__}"
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_database_url(request, tmp_path: Path) -> str:
    """The hub's database on SQLite (a file per test) and on this session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("postgres_url")


async def migrated_engine(url: str) -> AsyncEngine:
    """An engine on ``url``, its database migrated to head (what `switchboard migrate` does)."""
    engine = create_engine(url)
    await upgrade(engine)
    return engine


async def engine_with_empty_tables(url: str, metadata: MetaData) -> AsyncEngine:
    """An engine on ``url`` migrated to head, ``metadata``'s tables emptied (the PostgreSQL
    database is shared by the whole session: each test starts from a clean slate)."""
    engine = create_engine(url)
    await upgrade(engine)
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())
    return engine


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the local PostgreSQL, dropped afterwards; skip (or, in CI, fail)
    with the reason when the server is not there."""
    import asyncpg

    reason = _postgres_unavailable_reason()
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (SWITCHBOARD_REQUIRE_SERVICES=1: CI must not skip)")
        pytest.skip(reason)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run_aside(lambda: admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        _run_aside(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL for this test session, dropped afterwards."""
    with fresh_postgres_database("switchboard_test") as url:
        yield url


REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _redis_unavailable_reason() -> str | None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (OSError, redis.RedisError) as error:
        return f"Redis not reachable at {REDIS_URL}: {type(error).__name__}"
    finally:
        client.close()
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The local Redis (scaled mode); tests keep to a key namespace of their own."""
    reason = _redis_unavailable_reason()
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (SWITCHBOARD_REQUIRE_SERVICES=1: CI must not skip)")
        pytest.skip(reason)
    return REDIS_URL
