"""The hub's schema comes from alembic migrations (gateway/migrate.py, gateway/migrations/).

- the metadata and the head revision agree (a table added without a revision fails here);
- a database the previous release made, with rows in it, is upgraded by `switchboard migrate`
  and the gateway then serves those rows (SQLite and PostgreSQL);
- two `switchboard migrate` at once on a fresh PostgreSQL database both succeed;
- the gateway (and `keys create`) refuse an unmigrated database with one line, unless
  ``database.migrate_on_start`` lets `serve` migrate first.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from adapters.identity_store import IdentityStore
from gateway.audit.service import AuditLog
from gateway.auth import ApiKeyStore
from gateway.database import create_engine
from gateway.migrate import current_revision, head_revision, hub_metadata, upgrade
from gateway.settings import AuditSettings
from orchestration.store import RequestStore, workflow_id
from simulators.dataset import CustomerBundle
from tests.audit_support import CUSTOMER_KEY
from tests.conftest import fresh_postgres_database
from tests.harness import (
    REPO,
    SWITCHBOARD,
    SimulatorUrls,
    gateway_env,
    post_graphql,
    start_gateway,
    stop,
)
from tests.test_audit_chain import record

BASELINE = REPO / "gateway" / "migrations" / "versions" / "0001_previous_release.py"
NOT_MIGRATED = (
    "switchboard: hub database is at revision none, this release needs {head}: "
    "run `switchboard migrate`"
)


def _baseline() -> ModuleType:
    """Revision 0001's module: its frozen tables are the previous release's schema."""
    spec = importlib.util.spec_from_file_location("baseline_0001", BASELINE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SWITCHBOARD, *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


async def test_the_head_revision_makes_exactly_the_tables_of_the_metadata(hub_database_url):
    """A table, column or index added to the metadata without a revision fails here."""
    engine = create_engine(hub_database_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), hub_metadata()
                )
            )
        assert differences == []
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def _previous_release_with_rows(url: str, state: Path, customer_no: str) -> dict[str, str]:
    """The tables as the previous release's create_all made them (no alembic_version), and
    rows written by the hub's own code: a crosswalk entry, API keys, a request and audit
    records."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_baseline().frozen.create_all)
        hub_id = (await IdentityStore(engine).ensure_customers([customer_no]))[customer_no]
        keys = ApiKeyStore(engine)
        agent = await keys.issue(subject="old-agent", role="agent", channel="agent")
        auditor = await keys.issue(subject="old-auditor", role="auditor", channel="audit")
        request_id = workflow_id("complaint", agent.key_id, "legacy-0001")
        await RequestStore(engine).create_request(
            request_id,
            kind="complaint",
            customer_id=hub_id,
            channel="agent",
            started_by=agent.key_id,
        )
        audit = AuditLog(engine, AuditSettings(state_dir=state / "keys", customer_key=CUSTOMER_KEY))
        await audit.start()
        try:
            for i in range(1, 4):
                await audit.append(record(i, request_id=f"legacy-{i}"))
        finally:
            await audit.stop()
        async with engine.connect() as conn:
            assert "alembic_version" not in await conn.run_sync(
                lambda sync: inspect(sync).get_table_names()
            )
        return {
            "hub_id": hub_id,
            "agent": agent.key,
            "auditor": auditor.key,
            "request_id": request_id,
        }
    finally:
        await engine.dispose()


def _upgrade_and_serve(
    url: str, state: Path, sims: SimulatorUrls, customer: CustomerBundle
) -> None:
    made = asyncio.run(_previous_release_with_rows(url, state, customer.customer.customer_no))
    env = gateway_env(
        sims,
        url,
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(state / "keys"),
        SWITCHBOARD_AUDIT__CUSTOMER_KEY=CUSTOMER_KEY,
        SWITCHBOARD_WORKFLOWS__EXECUTOR_ID=f"mig-{state.name[-8:]}",
    )
    check = _run("migrate", "--check", env=env)
    assert check.returncode == 1
    assert check.stderr.strip() == (
        f"switchboard migrate: hub database is at revision none, this release needs "
        f"{head_revision()}: run `switchboard migrate`"
    )
    done = _run("migrate", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"hub database migrated: none -> {head_revision()}"
    assert _run("migrate", "--check", env=env).returncode == 0
    url_, process = start_gateway(env, state / "gateway.log", migrate=False, timeout_s=180)
    try:
        served = post_graphql(
            url_,
            made["agent"],  # a key issued before the upgrade still authenticates
            "query($id: ID!, $r: ID!) { customer(id: $id) { id profile { customerNo } }"
            " request(id: $r) { id state } }",
            {"id": made["hub_id"], "r": made["request_id"]},
        )
        assert served.status_code == 200, served.text
        data = served.json()["data"]
        # The crosswalk's hub id still names the same customer, and the request is there.
        assert served.json().get("errors") is None, served.json()
        assert data["customer"]["profile"]["customerNo"] == customer.customer.customer_no
        assert data["request"] == {"id": made["request_id"], "state": "RECEIVED"}
        audited = post_graphql(
            url_,
            made["auditor"],
            "{ auditLog(first: 50) { nodes { requestId } } auditVerification(full: true) "
            "{ ok checked } }",
            purpose=None,
        )
        assert audited.status_code == 200, audited.text
        answer = audited.json()["data"]
        ids = [n["requestId"] for n in answer["auditLog"]["nodes"]]
        assert {"legacy-1", "legacy-2", "legacy-3"} <= set(ids)
        # The old records and the new ones are one chain.
        assert answer["auditVerification"]["ok"] and answer["auditVerification"]["checked"] > 3
    finally:
        stop(process)


def test_a_previous_release_database_with_rows_upgrades_on_sqlite(sims, tmp_path: Path, customers):
    _upgrade_and_serve(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", tmp_path, sims, customers[5])


@pytest.mark.postgres
def test_a_previous_release_database_with_rows_upgrades_on_postgres(
    sims, tmp_path: Path, customers
):
    with fresh_postgres_database("switchboard_upgrade") as url:
        _upgrade_and_serve(url, tmp_path, sims, customers[6])


async def test_an_older_audit_log_gets_its_later_columns_and_keeps_its_rows(tmp_path: Path):
    """An audit_record from before its three nullable columns (what add_missing_columns
    used to patch at start-up) is brought to revision 0001 with its rows."""
    from sqlalchemy import text

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_baseline().frozen.create_all)
            for column in ("source", "refused_count", "window_end_us"):
                await conn.execute(text(f"ALTER TABLE audit_record DROP COLUMN {column}"))
            await conn.execute(text("DROP INDEX ix_audit_checkpoint_seq"))
            await conn.execute(
                text(
                    "INSERT INTO audit_record (seq, time_us, request_id, outcome, customers, "
                    "disclosed, has_clear, backends, latency_us, prev_hash, hash) VALUES "
                    "(1, 1, 'old', 'answered', '[]', '{}', 0, '[]', 5, 'p', 'h')"
                )
            )
        await upgrade(engine)
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), hub_metadata())
            )
            rows = (await conn.execute(text("SELECT request_id, source FROM audit_record"))).all()
        assert differences == []
        assert [tuple(r) for r in rows] == [("old", None)]
    finally:
        await engine.dispose()


@pytest.mark.postgres
def test_two_migrations_at_once_on_a_fresh_postgres_database_both_succeed(tmp_path: Path):
    with fresh_postgres_database("switchboard_race") as url:
        env = gateway_env(SimulatorUrls("", "", ""), url)
        processes = [
            subprocess.Popen(
                [*SWITCHBOARD, "migrate", "--database-url", url],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=120) for p in processes]
        assert [p.returncode for p in processes] == [0, 0], outputs
        said = sorted(out.strip() for out, _ in outputs)
        head = head_revision()
        assert said == sorted(
            [f"hub database migrated: none -> {head}", f"hub database already at head ({head})"]
        )
        check = _run("migrate", "--check", "--database-url", url, env=env)
        assert (check.returncode, check.stdout.strip()) == (0, f"hub database at head ({head})")


def test_the_gateway_refuses_an_unmigrated_database_with_one_line(sims, tmp_path: Path):
    env = gateway_env(sims, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    expected = NOT_MIGRATED.format(head=head_revision())
    served = _run("serve", "--port", "0", env=env)
    assert served.returncode == 1
    assert served.stderr.strip() == expected
    keys = _run(
        "keys", "create", "--subject", "s", "--role", "agent", "--channel", "agent", env=env
    )
    assert (keys.returncode, keys.stderr.strip()) == (1, expected)
    audit = _run("audit", "verify", env=env)
    assert (audit.returncode, audit.stderr.strip()) == (1, expected)
    # Nothing was created on the way.
    assert _run("migrate", "--check", env=env).returncode == 1


@pytest.mark.parametrize("way", ["environment", "toml"])
def test_serve_migrates_first_when_migrate_on_start_is_set(sims, tmp_path: Path, way: str):
    env = gateway_env(sims, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    if way == "environment":
        env["SWITCHBOARD_DATABASE__MIGRATE_ON_START"] = "true"
    else:
        config = tmp_path / "switchboard.toml"
        config.write_text("[database]\nmigrate_on_start = true\n")
        env["SWITCHBOARD_CONFIG"] = str(config)
    url, process = start_gateway(env, tmp_path / "gateway.log", migrate=False, timeout_s=180)
    try:
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert f"hub database migrated: none -> {head_revision()}" in (
            (tmp_path / "gateway.log").read_text()
        )
    finally:
        stop(process)
    assert _run("migrate", "--check", env=env).returncode == 0


def test_the_migration_lock_timeout_reaches_the_code(tmp_path: Path, monkeypatch):
    from gateway.settings import load_settings

    for variable in list(__import__("os").environ):
        if variable.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(variable)
    config = tmp_path / "switchboard.toml"
    config.write_text("[database]\nmigrate_lock_timeout_s = 7.5\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    assert load_settings().database.migrate_lock_timeout_s == 7.5
    monkeypatch.setenv("SWITCHBOARD_DATABASE__MIGRATE_LOCK_TIMEOUT_S", "9")
    assert load_settings().database.migrate_lock_timeout_s == 9
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")
    monkeypatch.delenv("SWITCHBOARD_DATABASE__MIGRATE_LOCK_TIMEOUT_S")
    assert load_settings().database.migrate_lock_timeout_s == 120.0


async def test_a_sqlite_migration_waits_for_the_lock_at_most_its_timeout(tmp_path: Path):
    from gateway.database import LockTimeout, ddl_lock

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        async with ddl_lock(engine):  # another migration holds it
            with pytest.raises(LockTimeout):
                await upgrade(engine, lock_timeout_s=0.2)
        assert await current_revision(engine) is None
        assert (await upgrade(engine)).after == head_revision()
    finally:
        await engine.dispose()
