"""One bad record cannot fail its group commit: the others in its batch are committed, the bad
one is fitted to its columns or, if the database still refuses it, fails alone; the chain then
verifies with the CLI, as an auditor would check it."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.audit.record import AuditRecord
from gateway.audit.service import AuditLog
from gateway.audit.writer import AuditUnavailable
from gateway.settings import AuditSettings
from tests.audit_support import CUSTOMER_KEY
from tests.conftest import migrated_engine
from tests.harness import REPO, SWITCHBOARD

T0 = 1_700_000_000_000_000


def record(i: int, **extra: object) -> AuditRecord:
    values: dict = dict(
        time_us=T0 + i,
        request_id=f"req-{i}",
        outcome="ok",
        subject="subject",
        role="agent",
        channel="agent",
        credential_id="abcd1234",
        purpose="service",
        operation_type="query",
        operation_name="Q",
        document_sha256="00" * 32,
        customers=(f"{i:064x}",),
        disclosed={"Customer.profile.name": "masked"},
        policy_version="v1",
        backends=("boss",),
        latency_us=1000,
    )
    values.update(extra)
    return AuditRecord(**values)


def settings(tmp_path: Path) -> AuditSettings:
    return AuditSettings(state_dir=tmp_path / "keys", customer_key=CUSTOMER_KEY, max_batch=256)


def cli_verify(database: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "SWITCHBOARD_CONFIG": "/nonexistent/switchboard.toml",
        "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "SWITCHBOARD_AUDIT__STATE_DIR": str(tmp_path / "keys"),
        "SWITCHBOARD_AUDIT__CUSTOMER_KEY": CUSTOMER_KEY,
    }
    return subprocess.run(
        [*SWITCHBOARD, "audit", "verify", "--quiet"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_verifies(database: Path, tmp_path: Path) -> None:
    """The chain verifies with the CLI, as an auditor would check it."""
    verified = cli_verify(database, tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit log ok" in verified.stdout


def stored(database: Path) -> dict[str, tuple]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT request_id, seq, operation_name, subject, latency_us FROM audit_record"
        )
        return {r[0]: r[1:] for r in rows}


async def started_log(database: Path, tmp_path: Path) -> AuditLog:
    audit = AuditLog(await migrated_engine(f"sqlite+aiosqlite:///{database}"), settings(tmp_path))
    await audit.start()
    return audit


async def test_bad_fields_are_fitted_and_the_whole_batch_commits(tmp_path: Path):
    database = tmp_path / "hub.db"
    audit = await started_log(database, tmp_path)
    try:
        await audit.append(record(0))
        bad = record(
            5,
            # What a request once put in: an object where the operation's name goes...
            operation_name={"name": "x", "msisdn": "13800000000"},
            # ...text longer than its column, NUL and a lone surrogate, a number as text.
            subject="s" * 500,
            partner="nul\x00byte",
            purpose="\ud800",
            latency_us="12",
            customers=("ab" * 32, 7),
        )
        # Handed in together: one group commit holds them all.
        seqs = await asyncio.gather(
            *(audit.append(bad if i == 5 else record(i)) for i in range(1, 10))
        )
    finally:
        await audit.stop()
        await audit.engine.dispose()
    assert sorted(seqs) == list(range(2, 11))
    rows = stored(database)
    assert len(rows) == 10
    _, operation_name, subject, latency = rows["req-5"]
    # Nothing of the object is recorded (it could hold personal data); text is cut to fit.
    assert operation_name is None
    assert subject == "s" * 128
    assert latency == 0
    assert_verifies(database, tmp_path)


async def test_a_record_the_database_refuses_fails_alone(tmp_path: Path):
    database = tmp_path / "hub.db"
    audit = await started_log(database, tmp_path)
    try:
        # The database refuses one record, the way a constraint would (a real SQLite trigger).
        async with audit.engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_record "
                    "WHEN NEW.request_id = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        await audit.append(record(0))
        outcomes = await asyncio.gather(
            *(
                audit.append(record(i, request_id="poison") if i == 4 else record(i))
                for i in range(1, 9)
            ),
            return_exceptions=True,
        )
        # The writer is still serving after it.
        after = await audit.append(record(100))
    finally:
        await audit.stop()
        await audit.engine.dispose()
    assert isinstance(outcomes[3], AuditUnavailable)
    good = [o for i, o in enumerate(outcomes) if i != 3]
    assert all(isinstance(o, int) for o in good), outcomes
    # In the order they were handed in, chained without a gap.
    assert good == list(range(2, 9))
    assert after == 9
    rows = stored(database)
    assert "poison" not in rows and len(rows) == 9
    assert_verifies(database, tmp_path)


@pytest.mark.parametrize("outcome", ["ok", "bogus"])
def test_fitting_keeps_a_good_record_as_it_is_and_mends_a_bad_one(outcome: str):
    from gateway.audit.record import fitted
    from gateway.audit.writer import COLUMN_LENGTHS

    good = record(1, outcome=outcome)
    fit = fitted(good, COLUMN_LENGTHS)
    if outcome == "ok":
        assert fit is good
    else:
        assert fit.outcome == "error"


def test_fitting_keeps_text_that_fits_whatever_its_script():
    from gateway.audit.record import fitted
    from gateway.audit.writer import COLUMN_LENGTHS

    fine = record(1, operation_name="查询客户", subject="agent-ø" * 18)  # 126 characters
    fit = fitted(fine, COLUMN_LENGTHS)
    assert fit == fine
    cut = fitted(record(1, operation_name="查" * 200), COLUMN_LENGTHS)
    assert cut.operation_name == "查" * 128


@pytest.mark.postgres
async def test_postgres_errors_are_told_apart_database_down_from_a_refused_record():
    """asyncpg's errors mostly reach SQLAlchemy as bare DBAPIErrors: the writer tells a database
    that refuses connections (readiness must see it down) from one record's bad data by
    SQLSTATE, on a real server."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from gateway.audit.writer import database_down
    from tests.conftest import POSTGRES_ADMIN_URL, fresh_postgres_database

    with fresh_postgres_database("switchboard_audit_down") as url:
        name = url.rsplit("/", 1)[1]
        engine = create_async_engine(url)
        admin = create_async_engine(
            POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://"),
            isolation_level="AUTOCOMMIT",
        )
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE t (v text)"))
            with pytest.raises(Exception) as refused:
                async with engine.begin() as conn:
                    await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": "nul\x00byte"})
            assert not database_down(refused.value), type(refused.value)
            await engine.dispose()
            async with admin.connect() as conn:
                await conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            with pytest.raises(Exception) as down:
                async with engine.begin() as conn:
                    await conn.execute(text("SELECT 1"))
            assert database_down(down.value), type(down.value)
        finally:
            await engine.dispose()
            async with admin.connect() as conn:
                await conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            await admin.dispose()
