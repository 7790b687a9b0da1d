"""The audit chain on a real database (SQLite file and PostgreSQL): append, tamper, verify.

Each kind of tampering is done the way someone with database access would do it (plain SQL
on the tables), and the verifier must name its kind and where it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text, update

from gateway.audit.checkpoint import Checkpoint, signature_valid
from gateway.audit.record import AuditRecord, chain_hash
from gateway.audit.retention import DAY_US, prune
from gateway.audit.service import AuditLog
from gateway.audit.store import audit_checkpoint, audit_customer, audit_head, audit_record
from gateway.database import create_engine
from gateway.settings import AuditSettings
from tests.conftest import migrated_engine

T0 = 1_700_000_000_000_000


def record(i: int, **extra: object) -> AuditRecord:
    values: dict = dict(
        time_us=T0 + i * 1_000_000,
        request_id=f"req-{i}",
        outcome="ok",
        subject=f"subject-{i % 3}",
        role="agent",
        channel="agent",
        credential_id="abcd1234",
        purpose="service",
        operation_type="query",
        operation_name="Q",
        document_sha256="00" * 32,
        customers=(f"{i:064x}",),
        disclosed={"Customer.profile.name": "clear" if i % 2 else "masked"},
        policy_version="v1",
        backends=("boss",),
        latency_us=1000 + i,
    )
    values.update(extra)
    return AuditRecord(**values)


async def make_log(url: str, tmp_path: Path, count: int = 10) -> AuditLog:
    engine = await migrated_engine(url)
    audit = AuditLog(
        engine, AuditSettings(state_dir=tmp_path / "keys", customer_key="k" * 32, max_batch=4)
    )
    await audit.start()
    # Concurrent appends share commits; every caller still gets its own seq.
    seqs = await asyncio.gather(*(audit.append(record(i)) for i in range(1, count + 1)))
    assert sorted(seqs) == list(range(1, count + 1))
    return audit


@pytest.fixture
async def audit(hub_database_url: str, tmp_path: Path):
    log = await make_log(hub_database_url, tmp_path)
    try:
        yield log
    finally:
        await log.stop()
        async with log.engine.begin() as conn:  # postgres: one database per session
            for table in (audit_customer, audit_record):
                await conn.execute(delete(table))
            await conn.execute(text("DELETE FROM audit_checkpoint"))
            await conn.execute(delete(audit_head))
        await log.engine.dispose()


async def execute(audit: AuditLog, *statements) -> None:
    async with audit.engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)


async def row(audit: AuditLog, seq: int):
    async with audit.engine.connect() as conn:
        return (await conn.execute(select(audit_record).where(audit_record.c.seq == seq))).one()


def kinds(report) -> list[tuple[str, int]]:
    return [(f.kind, f.seq) for f in report.findings]


async def test_an_untouched_chain_verifies(audit: AuditLog):
    report = await audit.verify()
    assert report.ok, report.findings
    assert (report.checked, report.first_seq, report.last_seq) == (10, 1, 10)
    assert report.anchor == "genesis"


async def test_each_record_names_the_hash_of_the_one_before(audit: AuditLog):
    first, second = await row(audit, 1), await row(audit, 2)
    assert second.prev_hash == first.hash
    assert first.prev_hash == "0" * 64


async def test_an_edited_record_is_found(audit: AuditLog):
    await execute(
        audit,
        update(audit_record).where(audit_record.c.seq == 4).values(purpose="fraud_investigation"),
    )
    report = await audit.verify()
    assert kinds(report) == [("edited", 4)]


async def test_a_deleted_record_is_found(audit: AuditLog):
    await execute(audit, delete(audit_record).where(audit_record.c.seq == 5))
    report = await audit.verify()
    assert kinds(report) == [("deleted", 5)]
    assert "seq 5 missing" in report.findings[0].detail


async def test_deleting_the_oldest_records_is_found(audit: AuditLog):
    await execute(audit, delete(audit_record).where(audit_record.c.seq <= 2))
    assert kinds(await audit.verify()) == [("deleted", 1)]


async def test_reordered_records_are_found(audit: AuditLog):
    # Swap the positions of records 5 and 6 (the rows keep their content and hashes).
    await execute(
        audit,
        update(audit_record).where(audit_record.c.seq == 5).values(seq=1000),
        update(audit_record).where(audit_record.c.seq == 6).values(seq=5),
        update(audit_record).where(audit_record.c.seq == 1000).values(seq=6),
    )
    report = await audit.verify()
    assert not report.ok
    assert {kind for kind, _ in kinds(report)} == {"reordered"}
    assert ("reordered", 5) in kinds(report)


async def test_an_inserted_record_is_found_even_when_hashed_and_linked(audit: AuditLog):
    # Make room at seq 7 and insert a forged record chained onto seq 6, as a forger would.
    for seq in range(10, 6, -1):
        await execute(
            audit, update(audit_record).where(audit_record.c.seq == seq).values(seq=seq + 1)
        )
    before = await row(audit, 6)
    forged = record(99, subject="forger")
    values = {
        **forged.as_dict(),
        "customers": json.dumps(list(forged.customers)),
        "disclosed": json.dumps(forged.disclosed),
        "backends": json.dumps(list(forged.backends)),
        "has_clear": True,
        "seq": 7,
        "prev_hash": before.hash,
        "hash": chain_hash(before.hash, forged),
    }
    await execute(audit, insert(audit_record).values(**values))
    report = await audit.verify()
    assert kinds(report) == [("inserted", 7)]


async def test_a_row_reads_back_as_the_record_it_was_by_position_as_by_name(audit: AuditLog):
    """``record_of`` reads a row by position (what verification re-hashes every record with):
    the same record ``AuditRecord.from_dict`` makes of the row's columns by name, for rows of
    every shape, aggregates and non-ASCII text included."""
    from gateway.audit.store import _json_column, record_of

    odd = [
        record(11, code="RATE_LIMITED", outcome="refused", source="ab" * 32, refused_count=7,
               window_end_us=T0 + 99, subject=None, role=None, channel=None, credential_id=None),
        record(12, operation_name="Kundenübersicht", disclosed={}, customers=(), backends=()),
        record(13, partner="p-1", code="INTERNAL_ERROR", outcome="error", latency_us=0),
    ]  # fmt: skip
    for one in odd:
        await audit.append(one)
    async with audit.engine.connect() as conn:
        rows = (await conn.execute(select(audit_record).order_by(audit_record.c.seq))).all()
    assert len(rows) == 13
    for stored in rows:
        mapping = dict(stored._mapping)
        for name in ("customers", "disclosed", "backends"):
            mapping[name] = _json_column(mapping[name])
        assert record_of(stored) == AuditRecord.from_dict(mapping)
        assert chain_hash(stored.prev_hash, record_of(stored)) == stored.hash
    assert [record_of(r) for r in rows[-3:]] == odd
    with pytest.raises(ValueError, match="whole audit_record row"):
        record_of(rows[0][:5])


TAMPERING = {
    "edited at a batch's first row": lambda: [
        update(audit_record).where(audit_record.c.seq == 5).values(purpose="fraud")
    ],
    "deleted across a batch's end": lambda: [
        delete(audit_record).where(audit_record.c.seq.in_([4, 5]))
    ],
    "reordered across a chunk's end": lambda: [
        update(audit_record).where(audit_record.c.seq == 3).values(seq=1000),
        update(audit_record).where(audit_record.c.seq == 4).values(seq=3),
        update(audit_record).where(audit_record.c.seq == 1000).values(seq=4),
    ],
}


@pytest.mark.parametrize("tampering", TAMPERING)
async def test_findings_do_not_depend_on_how_the_walk_is_cut(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch, tampering: str
):
    """The walk reads BATCH records a query and re-hashes CHECK_CHUNK at a time: tampering
    at their edges is found exactly as in one piece."""
    from gateway.audit import verify

    await execute(audit, *TAMPERING[tampering]())
    whole = kinds(await audit.verify())
    assert whole
    monkeypatch.setattr(verify, "BATCH", 4)  # batches 1-4, 5-8, 9-10
    monkeypatch.setattr(verify, "CHECK_CHUNK", 3)  # chunks 1-3, 4 / 5-7, 8 / ...
    assert kinds(await audit.verify()) == whole
    report = await verify.verify_incremental(audit.engine, audit.signing_key.public_key)
    assert kinds(report) == whole


async def test_the_walk_gives_the_loop_a_turn_after_every_chunk(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
):
    """A gateway verifies before each checkpoint while it serves: no step of the walk
    re-hashes more than CHECK_CHUNK records, and other tasks run between steps."""
    from gateway.audit import verify

    await asyncio.gather(*(audit.append(record(i)) for i in range(11, 231)))  # 230 records
    checked = verify._check_batch
    steps: list[tuple[int, int]] = []  # (records re-hashed, other task's turns so far)
    turns = 0

    def noted(walk, rows, *args):
        steps.append((len(rows), turns))
        return checked(walk, rows, *args)

    async def other_task() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    monkeypatch.setattr(verify, "_check_batch", noted)
    monkeypatch.setattr(verify, "BATCH", 120)
    monkeypatch.setattr(verify, "CHECK_CHUNK", 50)
    ticking = asyncio.create_task(other_task())
    try:
        report = await audit.verify()
    finally:
        ticking.cancel()
    assert report.ok and report.checked == 230, report.findings
    assert sum(size for size, _ in steps) == 230
    assert max(size for size, _ in steps) <= 50
    # Between any two steps, the other task ran.
    assert all(later > earlier for (_, earlier), (_, later) in itertools.pairwise(steps))


async def test_records_appended_while_it_verifies_are_not_a_cut_tail(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
):
    """A gateway under load appends while the chain is walked: the records committed after
    the walk's last batch (and the head moved with them) are not a truncated tail, for the
    full walk and the incremental one the checkpoint scheduler signs after."""
    from gateway.audit import verify

    walk = verify._walk
    appended = iter(range(11, 100))

    async def walk_then_append(*args: object, **kwargs: object) -> None:
        await walk(*args, **kwargs)
        # What the writer commits meanwhile: records and the head, in one transaction.
        await asyncio.gather(*(audit.append(record(next(appended))) for _ in range(3)))

    monkeypatch.setattr(verify, "_walk", walk_then_append)
    full = await audit.verify()
    assert full.ok, full.findings
    incremental = await verify.verify_incremental(audit.engine, audit.signing_key.public_key)
    assert incremental.ok, incremental.findings
    monkeypatch.undo()
    # Walked again with nothing appended meanwhile, all 16 records are there.
    again = await audit.verify()
    assert again.ok and again.last_seq == 16, again.findings


async def test_a_truncated_tail_is_found_against_a_saved_checkpoint(
    audit: AuditLog, tmp_path: Path
):
    saved = tmp_path / "checkpoint.json"
    checkpoint = await audit.publish_checkpoint()
    saved.write_text(checkpoint.to_json(audit.signing_key.public_key))
    assert checkpoint.seq == 10
    # Cut the tail and put the head back, so that the database looks consistent.
    last_kept = await row(audit, 7)
    await execute(
        audit,
        delete(audit_record).where(audit_record.c.seq > 7),
        update(audit_head).values(seq=7, hash=last_kept.hash),
    )
    # The chain alone cannot see a cut tail; the checkpoint table's copy of the checkpoint ...
    assert kinds(await audit.verify()) == [("truncated", 8)]
    report = await audit.verify(Checkpoint.from_json(saved.read_text()))
    assert kinds(report) == [("truncated", 8)]  # ... and the checkpoint the auditor kept do
    assert "checkpoint covers seq 10" in report.findings[0].detail
    # Deleting the table's copy as well hides nothing from the auditor's.
    await execute(audit, delete(audit_checkpoint))
    report = await audit.verify(Checkpoint.from_json(saved.read_text()))
    assert kinds(report) == [("truncated", 8), ("checkpoint_deleted", 10)]


async def test_a_rewritten_log_does_not_match_the_checkpoint(audit: AuditLog):
    checkpoint = await audit.publish_checkpoint()
    # Rewrite record 10 and re-hash it: the chain is consistent again, the checkpoint is not.
    old = await row(audit, 10)
    changed = record(10, subject="someone-else")
    await execute(
        audit,
        update(audit_record)
        .where(audit_record.c.seq == 10)
        .values(subject="someone-else", hash=chain_hash(old.prev_hash, changed)),
        update(audit_head).values(hash=chain_hash(old.prev_hash, changed)),
    )
    # The checkpoint table's copy no longer matches either (it used to go unnoticed).
    assert kinds(await audit.verify()) == [("checkpoint_mismatch", 10)]
    assert kinds(await audit.verify(checkpoint)) == [("rewritten", 10)]


async def test_checkpoints_verify_with_the_public_key_alone(audit: AuditLog):
    checkpoint = await audit.publish_checkpoint()
    public = audit.signing_key.public_key
    assert signature_valid(checkpoint, public)
    forged = dataclasses.replace(checkpoint, seq=checkpoint.seq + 1)
    assert not signature_valid(forged, public)
    assert audit.signing_key.public_path.exists()
    assert oct(audit.signing_key.private_path.stat().st_mode & 0o777) == "0o600"


async def test_pruning_keeps_the_chain_verifiable_from_its_checkpoint(audit: AuditLog):
    # Records 1..10 are one second apart; a cut after record 6.
    now = T0 + 6 * 1_000_000 + DAY_US + 500_000
    result = await prune(audit.engine, audit.signing_key, retention_days=1, now_us=now)
    assert result.deleted == 6
    assert result.checkpoint is not None and result.checkpoint.seq == 6
    report = await audit.verify()
    assert report.ok, report.findings
    assert (report.first_seq, report.checked) == (7, 4)
    assert report.anchor == "prune checkpoint at seq 6"
    # Appending after a prune continues the chain.
    await audit.append(record(11))
    assert (await audit.verify()).ok
    # And deleting the first kept record is still found.
    await execute(audit, delete(audit_record).where(audit_record.c.seq == 7))
    assert kinds(await audit.verify()) == [("deleted", 7)]


async def test_a_prune_while_it_verifies_is_not_tampering(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
):
    """`audit prune` beside a serving hub: its records go between the anchor's choice (the
    genesis here) and the walk, which then starts at a gap retention made. The log is
    verified again from the new prune checkpoint; real tampering is still found."""
    from gateway.audit import verify

    walk = verify._walk
    pruned: list[int] = []

    async def prune_then_walk(*args: object, **kwargs: object) -> None:
        if not pruned:
            now = T0 + 6 * 1_000_000 + DAY_US + 500_000  # the cut after record 6
            result = await prune(audit.engine, audit.signing_key, retention_days=1, now_us=now)
            pruned.append(result.deleted)
        await walk(*args, **kwargs)

    monkeypatch.setattr(verify, "_walk", prune_then_walk)
    report = await audit.verify()
    assert pruned == [6]
    assert report.ok, report.findings
    assert report.anchor == "prune checkpoint at seq 6"
    assert (report.first_seq, report.last_seq) == (7, 10)
    monkeypatch.undo()
    # Without a prune, a gap is still a finding (no second walk hides it).
    await execute(audit, delete(audit_record).where(audit_record.c.seq == 8))
    assert kinds(await audit.verify()) == [("deleted", 8)]


async def test_search_by_customer_principal_time_and_clear_only(audit: AuditLog):
    reader = audit.reader
    from schema.audit_reader import AuditSearch

    # The log holds keyed hashes: searching hashes the id the same way.
    await execute(
        audit,
        insert(audit_customer).values(customer_hash=audit.hasher("cus_x"), seq=3),
    )
    page = await reader.search(AuditSearch(customer_id="cus_x"), 10, None)
    assert [e.seq for e in page.entries] == [3]
    page = await reader.search(AuditSearch(principal="subject-1"), 2, None)
    assert [e.seq for e in page.entries] == [10, 7] and page.has_next
    page = await reader.search(AuditSearch(principal="subject-1"), 2, 7)
    assert [e.seq for e in page.entries] == [4, 1] and not page.has_next
    window = AuditSearch(time_from_us=T0 + 3_000_000, time_to_us=T0 + 5_000_000)
    assert [e.seq for e in (await reader.search(window, 10, None)).entries] == [4, 3]
    clear = await reader.search(AuditSearch(clear_only=True), 10, None)
    assert [e.seq for e in clear.entries] == [9, 7, 5, 3, 1]
    assert await reader.count(AuditSearch(principal="subject-1")) == 4


async def test_a_subscription_is_recorded_through_the_websocket_hook(audit: AuditLog):
    import time
    from types import SimpleNamespace

    from gateway.audit.middleware import record_subscription
    from gateway.policy_store import DEFAULT_POLICY_FILE
    from policies.disclosure import Disclosure
    from policies.loader import load_policy
    from policies.model import Level
    from policies.principal import Principal
    from schema.build import build_schema, operation_names

    policy, _ = load_policy(DEFAULT_POLICY_FILE, operation_names(build_schema(0)))
    principal = Principal(subject="app-1", role="customer", channel="app", credential_id="k1")
    disclosure = Disclosure(policy, principal, "service")
    disclosure.record("customerUpdates.profile.name", Level.MASKED)
    # The fields the websocket path's RequestContext carries (schema/context.py).
    context = SimpleNamespace(
        request_id="ws-1",
        principal=principal,
        disclosure=disclosure,
        customers_touched={"cus_1"},
        backends_called={"boss"},
        operation_type="subscription",
        operation_name="Updates",
        document_sha256="ab" * 32,
    )
    seq = await record_subscription(audit, context, started_us=T0, started_perf=time.perf_counter())
    stored = await row(audit, seq)
    assert (stored.operation_type, stored.outcome, stored.subject) == (
        "subscription",
        "ok",
        "app-1",
    )
    assert json.loads(stored.customers) == [audit.hasher("cus_1")]
    assert (await audit.verify()).ok


async def test_two_hub_processes_extend_one_chain(audit: AuditLog, hub_database_url: str, tmp_path):
    # A second writer on its own engine, as a second worker or replica would have.
    other = AuditLog(
        create_engine(hub_database_url),
        AuditSettings(state_dir=tmp_path / "keys", customer_key="k" * 32, max_batch=3),
    )
    await other.start()
    try:
        seqs = await asyncio.gather(
            *(audit.append(record(100 + i)) for i in range(20)),
            *(other.append(record(200 + i)) for i in range(20)),
        )
    finally:
        await other.stop()
        await other.engine.dispose()
    assert sorted(seqs) == list(range(11, 51))
    report = await audit.verify()
    assert report.ok, report.findings
    assert report.checked == 50


async def test_no_answer_goes_out_when_its_record_cannot_be_written(tmp_path: Path):
    import httpx
    from starlette.responses import JSONResponse

    from gateway.audit.middleware import AuditTrail

    async def answer(scope, receive, send) -> None:
        scope["switchboard.request_id"] = "r-1"
        await JSONResponse({"data": {"secret": "a customer's data"}})(scope, receive, send)

    engine = await migrated_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    # The writer is not started: nothing can be made durable.
    log = AuditLog(engine, AuditSettings(state_dir=tmp_path / "keys", customer_key="k" * 32))
    transport = httpx.ASGITransport(app=AuditTrail(answer, log))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            response = await client.post("/graphql", json={"query": "{ x }"})
    finally:
        await engine.dispose()
    assert response.status_code == 503
    assert response.json()["errors"][0]["extensions"]["code"] == "AUDIT_UNAVAILABLE"
    assert "secret" not in response.text


# Incremental verification: from the latest trustworthy checkpoint in the table to the head.


async def test_incremental_verification_starts_at_the_latest_checkpoint(audit: AuditLog):
    await audit.publish_checkpoint()  # at seq 10
    for i in (11, 12, 13):
        await audit.append(record(i))
    checkpoint = await audit.publish_checkpoint()  # at seq 13
    for i in (14, 15):
        await audit.append(record(i))
    report = await audit.verify_latest()
    assert report.ok, report.findings
    assert not report.full
    assert (report.start_kind, report.start_seq, report.start_time_us) == (
        "published",
        13,
        checkpoint.time_us,
    )
    assert (report.checked, report.first_seq, report.last_seq) == (2, 14, 15)
    full = await audit.verify_latest(full=True)
    assert full.ok and full.full and full.checked == 15


async def test_a_checkpoint_at_the_head_walks_nothing(audit: AuditLog):
    checkpoint = await audit.publish_checkpoint()
    report = await audit.verify_latest()
    assert report.ok, report.findings
    assert (report.checked, report.start_seq, report.last_seq) == (0, 10, 10)
    assert report.head_hash == checkpoint.head_hash


async def test_tampering_after_the_checkpoint_is_found_incrementally(audit: AuditLog):
    await audit.publish_checkpoint()  # at seq 10
    for i in range(11, 16):
        await audit.append(record(i))
    await execute(
        audit, update(audit_record).where(audit_record.c.seq == 13).values(purpose="other")
    )
    report = await audit.verify_latest()
    assert kinds(report) == [("edited", 13)]
    assert report.start_seq == 10 and report.checked == 5
    # Deleting the first record after the checkpoint: the next one no longer chains onto it.
    await execute(audit, delete(audit_record).where(audit_record.c.seq == 11))
    assert ("deleted", 11) in kinds(await audit.verify_latest())


async def test_tampering_before_the_checkpoint_needs_the_full_verification(audit: AuditLog):
    await audit.publish_checkpoint()  # at seq 10
    await audit.append(record(11))
    await execute(
        audit, update(audit_record).where(audit_record.c.seq == 4).values(purpose="other")
    )
    incremental = await audit.verify_latest()
    assert incremental.ok and incremental.checked == 1  # trusted the checkpoint, walked 11
    assert kinds(await audit.verify_latest(full=True)) == [("edited", 4)]
    assert kinds(await audit.verify()) == [("edited", 4)]  # the CLI's default


async def test_a_forged_checkpoint_is_reported_and_not_trusted(audit: AuditLog):
    genuine = await audit.publish_checkpoint()  # at seq 10
    for i in range(11, 14):
        await audit.append(record(i))
    # Someone with database access rewrites record 12 (re-hashing it and the rest so that the
    # chain is consistent) and plants a checkpoint at the head to make the walk skip it.
    rows = [await row(audit, seq) for seq in (11, 12, 13)]
    prev = rows[0].hash
    for seq in (12, 13):
        changed = record(seq, subject="someone-else")
        new_hash = chain_hash(prev, changed)
        await execute(
            audit,
            update(audit_record)
            .where(audit_record.c.seq == seq)
            .values(subject="someone-else", prev_hash=prev, hash=new_hash),
        )
        prev = new_hash
    await execute(audit, update(audit_head).values(hash=prev))
    forged = dataclasses.replace(genuine, seq=13, head_hash=prev, time_us=genuine.time_us + 1)
    await execute(audit, insert(audit_checkpoint).values(**dataclasses.asdict(forged)))
    report = await audit.verify_latest()
    assert kinds(report) == [("forged_checkpoint", 13)]
    assert "checkpoint table" in report.findings[0].detail
    assert report.start_seq == 10 and report.checked == 3  # fell back to the genuine one
    assert not report.ok


async def test_a_checkpoint_whose_head_hash_is_not_in_the_log_is_reported(audit: AuditLog):
    checkpoint = await audit.publish_checkpoint()  # at seq 10
    await audit.append(record(11))
    # The checkpoint's signature is genuine, but the record at its seq was rewritten and
    # re-hashed (and the next one relinked): its head hash no longer matches, so the
    # verification may not start from it and says so.
    old = await row(audit, 10)
    changed = record(10, subject="someone-else")
    new_hash = chain_hash(old.prev_hash, changed)
    await execute(
        audit,
        update(audit_record)
        .where(audit_record.c.seq == 10)
        .values(subject="someone-else", hash=new_hash),
        update(audit_record).where(audit_record.c.seq == 11).values(prev_hash=new_hash),
    )
    report = await audit.verify_latest()
    assert ("checkpoint_mismatch", 10) in kinds(report)
    assert report.start_seq is None and report.anchor == "genesis"  # not trusted
    assert checkpoint.seq == 10 and not report.ok
