"""Checkpoints on a real database (SQLite file and PostgreSQL): the full walk checks the
checkpoint table, kept checkpoints find deleted rows, only a trusted key is trusted, the
gateway's own schedule (one checkpoint per due point with two writers) and its file; and
the refusal counter's bounds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, select, text, update

from gateway.audit import checkpoint_file
from gateway.audit.checkpoint import SigningKey, signature_valid
from gateway.audit.record import AuditRecord, chain_hash
from gateway.audit.refusals import OVERFLOW_SOURCE, RefusalCounter
from gateway.audit.scheduler import CheckpointScheduler
from gateway.audit.service import AuditLog
from gateway.audit.store import audit_checkpoint, audit_customer, audit_head, audit_record
from gateway.database import create_engine
from gateway.migrate import upgrade
from gateway.settings import AuditSettings
from tests.conftest import migrated_engine
from tests.test_audit_chain import T0, execute, kinds, record, row


def settings(tmp_path: Path, **extra: object) -> AuditSettings:
    values: dict = dict(
        state_dir=tmp_path / "keys",
        customer_key="k" * 32,
        max_batch=4,
        scheduled_checkpoints=False,
    )
    values.update(extra)
    return AuditSettings(**values)


async def _open(url: str, tmp_path: Path, count: int = 10, **extra: object) -> AuditLog:
    audit = AuditLog(await migrated_engine(url), settings(tmp_path, **extra))
    await audit.start(schedule_checkpoints=True)
    await asyncio.gather(*(audit.append(record(i)) for i in range(1, count + 1)))
    return audit


@pytest.fixture
async def audit(hub_database_url: str, tmp_path: Path):
    log = await _open(hub_database_url, tmp_path)
    try:
        yield log
    finally:
        await log.stop()
        async with log.engine.begin() as conn:  # postgres: one database per session
            for table in (audit_customer, audit_record, audit_checkpoint, audit_head):
                await conn.execute(delete(table))
        await log.engine.dispose()


def write_public_key(path: Path, public: Ed25519PublicKey) -> Path:
    path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


# The full walk and the checkpoint table.


async def test_the_full_walk_checks_every_checkpoint_row(audit: AuditLog):
    await audit.publish_checkpoint()  # seq 10
    await audit.append(record(11))
    await audit.publish_checkpoint()  # seq 11
    report = await audit.verify()
    assert report.ok, report.findings
    assert report.checkpoints_checked == 2
    # Someone edits a checkpoint row's head hash: its signature no longer holds.
    await execute(
        audit,
        update(audit_checkpoint).where(audit_checkpoint.c.seq == 10).values(head_hash="ab" * 32),
    )
    report = await audit.verify()
    assert kinds(report) == [("forged_checkpoint", 10)]
    assert "checkpoint at seq 10 (the table)" in report.findings[0].detail


async def test_a_checkpoint_row_moved_to_another_seq_is_found(audit: AuditLog):
    await audit.publish_checkpoint()
    await execute(audit, update(audit_checkpoint).values(seq=5))  # seq is signed
    assert kinds(await audit.verify()) == [("forged_checkpoint", 5)]


async def test_deleted_checkpoint_rows_are_found_against_the_checkpoint_file(
    audit: AuditLog, tmp_path: Path
):
    first = await audit.publish_checkpoint()
    await audit.append(record(11))
    await audit.publish_checkpoint()
    kept = audit.kept_checkpoints()  # the hub's checkpoint file: both, one line each
    assert [k.checkpoint.seq for k in kept if k.checkpoint] == [10, 11]
    assert (await audit.verify(kept=kept)).ok
    await execute(audit, delete(audit_checkpoint))
    assert (await audit.verify()).ok  # the table alone cannot tell it ever had them ...
    report = await audit.verify(kept=audit.kept_checkpoints())
    assert kinds(report) == [("checkpoint_deleted", 10), ("checkpoint_deleted", 11)]
    assert str(audit.checkpoint_file) in report.findings[0].detail
    # ... nor the table's rows deleted but one: the auditor's own copy of the first.
    saved = tmp_path / "saved.json"
    saved.write_text(first.to_json(audit.signing_key.public_key))
    from gateway.audit.checkpoint import Checkpoint

    report = await audit.verify(Checkpoint.from_json(saved.read_text()))
    assert kinds(report) == [("checkpoint_deleted", 10)]
    assert "the checkpoint you kept" in report.findings[0].detail


async def test_a_line_of_the_checkpoint_file_that_is_no_checkpoint_is_a_finding(
    audit: AuditLog,
):
    await audit.publish_checkpoint()
    with audit.checkpoint_file.open("a") as out:
        out.write('{"kind": "published", "seq": "ten"}\n')
    report = await audit.verify(kept=audit.kept_checkpoints())
    assert kinds(report) == [("forged_checkpoint", 0)]
    assert "line 2 is not a checkpoint" in report.findings[0].detail


async def test_a_forged_tail_is_found_against_the_scheduled_checkpoints(
    audit: AuditLog,
):
    # The gateway's schedule signed the head at seq 10 (and filed it). A forger then
    # rewrites record 9 and 10, re-hashed and linked, fixes the head, and deletes the
    # checkpoint rows so that nothing in the database disagrees.
    scheduler = CheckpointScheduler(
        audit.engine,
        audit.signing_key,
        file=audit.checkpoint_file,
        every_records=10,
        every_s=3600,
        poll_s=1,
    )
    assert (await scheduler.publish_if_due()).seq == 10
    prev = (await row(audit, 8)).hash
    for seq in (9, 10):
        forged = record(seq, subject="forger")
        digest = chain_hash(prev, forged)
        await execute(
            audit,
            update(audit_record)
            .where(audit_record.c.seq == seq)
            .values(subject="forger", prev_hash=prev, hash=digest),
        )
        prev = digest
    await execute(audit, update(audit_head).values(hash=prev), delete(audit_checkpoint))
    assert (await audit.verify()).ok  # consistent: the database alone cannot tell
    report = await audit.verify(kept=audit.kept_checkpoints())
    assert sorted(kinds(report)) == [("checkpoint_deleted", 10), ("rewritten", 10)]


# Trust: only a key the auditor supplies or the operator pins.


async def test_checkpoints_re_signed_with_another_key_fail_against_the_trusted_key(
    audit: AuditLog, tmp_path: Path
):
    genuine = await audit.publish_checkpoint()
    trusted = write_public_key(tmp_path / "kept.pub", audit.signing_key.public_key)
    # The attacker rewrites record 10, replaces the hub's key files with their own and
    # re-signs the checkpoint row with it.
    old = await row(audit, 10)
    changed = record(10, subject="someone-else")
    new_hash = chain_hash(old.prev_hash, changed)
    await execute(
        audit,
        update(audit_record)
        .where(audit_record.c.seq == 10)
        .values(subject="someone-else", hash=new_hash),
        update(audit_head).values(hash=new_hash),
    )
    audit.signing_key.private_path.unlink()
    audit.signing_key.public_path.unlink()
    attacker = SigningKey(audit.signing_key.private_path)
    resigned = attacker.sign("published", 10, new_hash, genuine.time_us)
    await execute(
        audit,
        update(audit_checkpoint).values(
            head_hash=new_hash, key_id=resigned.key_id, signature=resigned.signature
        ),
    )
    hub = AuditLog(audit.engine, audit.settings)  # what a fresh `audit verify` would load
    untrusted = await hub.verify()
    assert untrusted.ok and not untrusted.key_trusted  # passes, but says it proves little
    assert "not a trusted key" in untrusted.key_source
    supplied = await hub.verify(key=hub.verifying_key(trusted))
    assert kinds(supplied) == [("forged_checkpoint", 10)] and supplied.key_trusted
    assert "names another key" in supplied.findings[0].detail
    pinned = AuditLog(
        audit.engine, audit.settings.model_copy(update={"trusted_public_key_file": trusted})
    )
    for report in (await pinned.verify(), await pinned.verify_latest()):
        assert report.key_trusted and ("forged_checkpoint", 10) in kinds(report)


async def test_a_checkpoint_file_line_carrying_its_own_key_is_checked_with_ours(
    audit: AuditLog, tmp_path: Path
):
    await audit.publish_checkpoint()
    other = SigningKey(tmp_path / "other.key")
    forged = other.sign("published", 10, (await row(audit, 10)).hash, T0)
    line = json.loads(forged.to_json(other.public_key))  # public_key inside: ignored
    with audit.checkpoint_file.open("a") as out:
        out.write(json.dumps(line) + "\n")
    report = await audit.verify(kept=audit.kept_checkpoints())
    assert [f.kind for f in report.findings] == ["forged_checkpoint"]


# The gateway's own schedule.


async def test_the_schedule_signs_after_n_records_or_m_seconds(audit: AuditLog):
    now = [T0 / 1_000_000 + 100]  # record 1 is 100 s old, record 10 is 91 s old
    scheduler = CheckpointScheduler(
        audit.engine,
        audit.signing_key,
        file=audit.checkpoint_file,
        every_records=20,
        every_s=120,
        poll_s=1,
        clock=lambda: now[0],
    )
    assert await scheduler.publish_if_due() is None  # 10 records, oldest 100 s: not yet
    now[0] += 25
    first = await scheduler.publish_if_due()  # oldest uncovered now 125 s old
    assert first is not None and first.seq == 10
    assert signature_valid(first, audit.signing_key.public_key)
    assert await scheduler.publish_if_due() is None  # nothing new
    await asyncio.gather(*(audit.append(record(i)) for i in range(11, 31)))
    second = await scheduler.publish_if_due()  # 20 new records: due at once
    assert second is not None and second.seq == 30
    lines = checkpoint_file.read(audit.checkpoint_file)
    assert [k.checkpoint for k in lines] == [first, second]
    report = await audit.verify(kept=lines)
    assert report.ok and report.checkpoints_checked == 2


async def test_two_processes_sign_one_checkpoint_per_due_point(
    audit: AuditLog, hub_database_url: str
):
    other = AuditLog(create_engine(hub_database_url), audit.settings)
    try:
        schedulers = [
            CheckpointScheduler(
                log.engine,
                log.signing_key,
                file=log.checkpoint_file,
                every_records=5,
                every_s=3600,
                poll_s=1,
            )
            for log in (audit, other)
        ]
        for round_ in range(3):
            signed = await asyncio.gather(*(s.publish_if_due() for s in schedulers))
            assert len([c for c in signed if c is not None]) == 1, signed
            await asyncio.gather(*(audit.append(record(100 + round_ * 10 + i)) for i in range(5)))
    finally:
        await other.engine.dispose()
    async with audit.engine.connect() as conn:
        seqs = [r.seq for r in await conn.execute(select(audit_checkpoint.c.seq))]
    assert sorted(seqs) == [10, 15, 20]
    assert len(checkpoint_file.read(audit.checkpoint_file)) == 3
    assert (await audit.verify(kept=audit.kept_checkpoints())).ok


async def test_the_gateway_schedule_runs_in_the_background(hub_database_url: str, tmp_path):
    log = await _open(
        hub_database_url,
        tmp_path,
        count=0,
        scheduled_checkpoints=True,
        checkpoint_every_records=3,
        checkpoint_poll_s=0.05,
    )
    try:
        await asyncio.gather(*(log.append(record(i)) for i in range(1, 4)))
        for _ in range(100):
            if log.checkpoint_file.exists():
                break
            await asyncio.sleep(0.05)
        (line,) = checkpoint_file.read(log.checkpoint_file)
        assert line.checkpoint is not None and line.checkpoint.seq == 3
    finally:
        await log.stop()
        async with log.engine.begin() as conn:
            for table in (audit_customer, audit_record, audit_checkpoint, audit_head):
                await conn.execute(delete(table))
        await log.engine.dispose()


# An older log gains the new columns; its records keep their hashes.


#: What revisions after 0001 (the previous release's schema) create.
LATER_TABLES = (
    "event_decision", "hub_event", "hub_consent", "hub_contact", "hub_contact_count", "hub_offer",
)  # fmt: skip


async def test_an_older_log_gains_the_new_columns_and_still_verifies(audit: AuditLog):
    """A log from before the three nullable columns and before migrations (no
    alembic_version): `switchboard migrate` (revision 0001 adopting it) adds them, its rows
    and hashes unchanged."""
    await audit.stop()
    for name in ("source", "refused_count", "window_end_us"):
        await execute(audit, text(f"ALTER TABLE audit_record DROP COLUMN {name}"))
    # The previous release had none of the later revisions' tables either.
    for table in LATER_TABLES:
        await execute(audit, text(f"DROP TABLE {table}"))
    await execute(audit, text("DROP TABLE alembic_version"))
    await upgrade(audit.engine)
    reopened = AuditLog(audit.engine, audit.settings)
    await reopened.start()
    try:
        await reopened.append(record(11, source="ab" * 32, refused_count=7, window_end_us=T0))
        report = await reopened.verify()
        assert report.ok and report.checked == 11
        stored = await row(reopened, 11)
        assert (stored.source, stored.refused_count) == ("ab" * 32, 7)
    finally:
        await reopened.stop()
    await audit.start()  # the fixture stops it again


# The refusal counter's bounds (the gateway test drives it through real requests).


def refusal(time_us: int, who: str, code: str = "RATE_LIMITED") -> AuditRecord:
    return AuditRecord(
        time_us=time_us, request_id="r", outcome="refused", code=code, credential_id=who
    )


def test_one_aggregate_per_caller_and_window_and_bounded_memory():
    counter = RefusalCounter(
        codes=frozenset({"RATE_LIMITED"}), window_s=10, individual=2, max_callers=3
    )
    second = 1_000_000
    decisions = [counter.counts(refusal(T0 + i * 1000, "k1")) for i in range(100)]
    assert decisions[:2] == [False, False] and all(decisions[2:])
    assert not counter.counts(refusal(T0, "k1", code="BAD_PURPOSE"))  # not a counted code
    assert counter.due(T0 + 5 * second) == []  # the window is still open
    # The next refusal after the window closes it: one aggregate, 98 counted.
    assert not counter.counts(refusal(T0 + 11 * second, "k1"))
    (aggregate,) = counter.due(T0 + 11 * second)
    assert (aggregate.refused_count, aggregate.credential_id, aggregate.code) == (
        98,
        "k1",
        "RATE_LIMITED",
    )
    assert (aggregate.time_us, aggregate.window_end_us) == (T0, T0 + 10 * second)
    # Thousands of callers: three windows of their own, the rest share an overflow window.
    for n in range(5000):
        counter.counts(refusal(T0 + 12 * second, f"caller-{n}"))
    assert counter.tracked == 4  # k1, caller-0, caller-1 and the overflow window
    aggregates = counter.due(T0 + 30 * second, all_windows=True)
    (overflow,) = aggregates  # the tracked callers were refused once each: no aggregate
    assert overflow.source == OVERFLOW_SOURCE and overflow.credential_id is None
    assert overflow.refused_count == 4998 - 2  # the overflow window's first two individually


async def test_the_schedule_does_not_sign_a_chain_edited_since_the_last_checkpoint(
    audit: AuditLog,
):
    scheduler = CheckpointScheduler(
        audit.engine,
        audit.signing_key,
        file=audit.checkpoint_file,
        every_records=5,
        every_s=3600,
        poll_s=1,
    )
    assert (await scheduler.publish_if_due()).seq == 10
    await asyncio.gather(*(audit.append(record(i)) for i in range(11, 16)))
    # Record 12 is edited before the next checkpoint is due: signing now would vouch for
    # the edit, so the schedule refuses (a rewrite consistent in every hash since the last
    # checkpoint cannot be told from genuine records by anyone: that window is what
    # checkpoint_every_records / _every_s bound).
    await execute(
        audit, update(audit_record).where(audit_record.c.seq == 12).values(purpose="other")
    )
    assert kinds(await audit.verify()) == [("edited", 12)]
    assert await scheduler.publish_if_due() is None
    async with audit.engine.connect() as conn:
        assert [r.seq for r in await conn.execute(select(audit_checkpoint.c.seq))] == [10]
