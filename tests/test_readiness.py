"""/readyz tells the truth about the hub's own dependencies (gateway/readiness.py).

For real: a PostgreSQL-backed gateway whose database stops taking connections is not ready
(503 naming the hub database) while requests get 503 AUDIT_UNAVAILABLE, and is ready again
once the database is back; Redis unreachable only degrades it (200).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from gateway.audit.service import AuditLog
from gateway.readiness import Dependency, audit_check, check_all, hub_dependencies
from gateway.settings import AuditSettings, load_settings
from tests.audit_support import CUSTOMER_KEY
from tests.conftest import POSTGRES_ADMIN_URL, fresh_postgres_database, migrated_engine
from tests.harness import free_ports, gateway_env, issue_key, post_graphql, start_gateway, stop

FIND = "{ offerings { id } }"


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _wait_for(url: str, status: int, within_s: float = 90.0) -> httpx.Response:
    deadline = time.monotonic() + within_s
    while True:
        ready = httpx.get(f"{url}/readyz", timeout=30)
        if ready.status_code == status or time.monotonic() > deadline:
            return ready
        time.sleep(0.5)


@pytest.mark.postgres
def test_the_hub_database_unreachable_takes_the_replica_out_of_rotation(sims, tmp_path: Path):
    with fresh_postgres_database("switchboard_ready") as url:
        name = url.rsplit("/", 1)[1]
        env = gateway_env(
            sims,
            url,
            SWITCHBOARD_CACHE__ENABLED="false",
            SWITCHBOARD_AUDIT__STATE_DIR=str(tmp_path / "keys"),
            SWITCHBOARD_AUDIT__CUSTOMER_KEY=CUSTOMER_KEY,
            SWITCHBOARD_WORKFLOWS__EXECUTOR_ID=f"ready-{name[-6:]}",
        )
        key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
        base, process = start_gateway(env, tmp_path / "gateway.log", timeout_s=180)
        try:
            ready = _wait_for(base, 200)
            assert ready.status_code == 200, ready.text
            own = ready.json()["dependencies"]
            assert {n: (d["status"], d["required"]) for n, d in own.items()} == {
                "hub_database": ("up", True),
                "audit": ("up", True),
                "workflows": ("up", True),
            }
            assert post_graphql(base, key, FIND).status_code == 200
            asyncio.run(_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            try:
                asyncio.run(
                    _admin(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    )
                )
                down = _wait_for(base, 503)
                assert down.status_code == 503, down.text
                report = down.json()
                assert report["status"] == "unavailable"
                assert "hub_database" in report["down"]
                assert report["dependencies"]["hub_database"]["status"] == "down"
                refused = post_graphql(base, key, FIND)
                assert refused.status_code == 503
                assert refused.json()["errors"][0]["extensions"]["code"] == "AUDIT_UNAVAILABLE"
                # Its record could not be committed: the access-log writer is not ready either.
                after = httpx.get(f"{base}/readyz", timeout=30).json()
                assert after["dependencies"]["audit"]["status"] == "down"
                assert {"hub_database", "audit"} <= set(after["down"])
            finally:
                asyncio.run(_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            back = _wait_for(base, 200)
            assert back.status_code == 200, back.text
            assert post_graphql(base, key, FIND).status_code == 200
        finally:
            stop(process)


def test_redis_unreachable_only_degrades_the_replica(sims, tmp_path: Path):
    (closed,) = free_ports(1)  # nothing listens there
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        SWITCHBOARD_CACHE__BACKEND="redis",
        SWITCHBOARD_CACHE__REDIS_URL=f"redis://127.0.0.1:{closed}/0",
    )
    key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
    base, process = start_gateway(env, tmp_path / "gateway.log", timeout_s=180)
    try:
        ready = httpx.get(f"{base}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        report = ready.json()
        assert report["status"] == "degraded" and report["down"] == []
        assert "cache" in report["degraded"]
        cache = report["dependencies"]["cache"]
        assert (cache["status"], cache["required"]) == ("down", False)
        assert report["dependencies"]["hub_database"]["status"] == "up"
        # Reads fall back to the backends.
        assert post_graphql(base, key, FIND).status_code == 200
    finally:
        stop(process)


async def test_a_hanging_check_is_cut_at_its_timeout_and_the_others_still_answer():
    async def hangs() -> None:
        await asyncio.sleep(30)

    async def answers() -> dict[str, int]:
        return {"figure": 1}

    reports = await check_all(
        [Dependency("slow", hangs, True, 0.2), Dependency("fine", answers, False, 1.0)]
    )
    assert reports["slow"]["status"] == "down"
    assert reports["slow"]["reason"] == "no answer within 0.2 s"
    assert reports["fine"] == {**reports["fine"], "status": "up", "figure": 1, "required": False}


async def test_the_audit_check_says_down_when_its_writer_is_not_running(tmp_path: Path):
    engine = await migrated_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    audit = AuditLog(engine, AuditSettings(state_dir=tmp_path / "keys", customer_key="k" * 32))
    try:
        check = Dependency("audit", audit_check(audit, 1.0), True, 1.0)
        before = (await check_all([check]))["audit"]
        assert (before["status"], before["reason"]) == ("down", "the audit writer is not running")
        await audit.start()
        running = (await check_all([check]))["audit"]
        assert running["status"] == "up" and running["last_commit"] == "none yet"
    finally:
        await audit.stop()
        await engine.dispose()


@pytest.mark.parametrize("way", ["environment", "toml"])
async def test_readiness_settings_reach_the_checks(tmp_path: Path, monkeypatch, way: str):
    for variable in list(__import__("os").environ):
        if variable.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")
    if way == "environment":
        monkeypatch.setenv("SWITCHBOARD_READINESS__CACHE__REQUIRED", "true")
        monkeypatch.setenv("SWITCHBOARD_READINESS__CACHE__TIMEOUT_S", "0.3")
        monkeypatch.setenv("SWITCHBOARD_READINESS__HUB_DATABASE__REQUIRED", "false")
        monkeypatch.setenv("SWITCHBOARD_READINESS__BACKEND_TIMEOUT_S", "1.5")
    else:
        config = tmp_path / "switchboard.toml"
        config.write_text(
            "[readiness]\nbackend_timeout_s = 1.5\n"
            "[readiness.cache]\nrequired = true\ntimeout_s = 0.3\n"
            "[readiness.hub_database]\nrequired = false\n"
        )
        monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    settings = load_settings(cache={"backend": "redis"})
    assert settings.readiness.backend_timeout_s == 1.5
    engine = await migrated_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    found = hub_dependencies(
        settings, engine, audit=None, workflows_launched=None, workflows_database_url=None
    )
    try:
        by_name = {d.name: d for d in found.dependencies}
        assert set(by_name) == {"hub_database", "cache"}  # what is not configured: not checked
        assert (by_name["cache"].required, by_name["cache"].timeout_s) == (True, 0.3)
        assert by_name["hub_database"].required is False
    finally:
        await found.close()
        await engine.dispose()
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")
    for variable in list(__import__("os").environ):
        if variable.startswith("SWITCHBOARD_READINESS"):
            monkeypatch.delenv(variable)
    readiness = load_settings().readiness
    assert (readiness.cache.required, readiness.hub_database.required) == (False, True)
    assert readiness.backend_timeout_s == 3.0
