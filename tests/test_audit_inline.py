"""The SQLite access log commits on the event loop while the write lock is free, and on the
writer's thread, waiting, when another connection holds it (gateway/audit/writer.py): nothing
is lost or chained twice either way, the loop is never blocked by a lock, and the WAL the loop's
connection grows is checkpointed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.audit import writer as audit_writer
from gateway.audit.service import AuditLog
from tests.conftest import migrated_engine
from tests.test_audit_batches import assert_verifies, record, settings, started_log, stored


def batches(where: str) -> float:
    return REGISTRY.get_sample_value("switchboard_audit_batches_total", {"committed": where}) or 0


async def test_a_free_lock_means_the_batch_commits_on_the_loop(tmp_path: Path):
    database = tmp_path / "hub.db"
    audit = await started_log(database, tmp_path)
    loop0, thread0 = batches("loop"), batches("thread")
    try:
        seqs = await asyncio.gather(*(audit.append(record(i)) for i in range(40)))
    finally:
        await audit.stop()
        await audit.engine.dispose()
    assert sorted(seqs) == list(range(1, 41))
    assert batches("loop") > loop0
    assert batches("thread") == thread0
    assert len(stored(database)) == 40
    assert_verifies(database, tmp_path)


async def test_a_taken_lock_sends_the_batch_to_the_thread_and_the_loop_runs_on(tmp_path: Path):
    database = tmp_path / "hub.db"
    audit = await started_log(database, tmp_path)
    holder = sqlite3.connect(database, isolation_level=None)
    thread0 = batches("thread")
    try:
        await audit.append(record(0))
        holder.execute("BEGIN IMMEDIATE")  # another worker in the middle of its own commit
        waiting = asyncio.create_task(audit.append(record(1)))
        ticks = 0
        for _ in range(20):  # the loop keeps serving while the record waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not waiting.done()
        assert batches("thread") == thread0 + 1
        holder.execute("COMMIT")
        assert await asyncio.wait_for(waiting, 10) == 2
        # The lock is free again: the next batch is the loop's once more.
        loop_before = batches("loop")
        assert await audit.append(record(2)) == 3
        assert batches("loop") == loop_before + 1
    finally:
        holder.close()
        await audit.stop()
        await audit.engine.dispose()
    assert sorted(seq for seq, *_ in stored(database).values()) == [1, 2, 3]
    assert_verifies(database, tmp_path)


async def test_two_writers_on_one_file_extend_one_chain(tmp_path: Path):
    """Two workers of one replica share the embedded database: each commits inline when it
    can and waits on its thread when the other holds the lock; the chain stays one."""
    database = tmp_path / "hub.db"
    first = await started_log(database, tmp_path)
    other_seqs: list[int] = []

    def other_worker() -> None:
        async def run() -> None:
            engine = await migrated_engine(f"sqlite+aiosqlite:///{database}")
            audit = AuditLog(engine, settings(tmp_path))
            await audit.start()
            try:
                for start in range(1000, 1300, 20):
                    other_seqs.extend(
                        await asyncio.gather(
                            *(audit.append(record(i)) for i in range(start, start + 20))
                        )
                    )
            finally:
                await audit.stop()
                await engine.dispose()

        asyncio.run(run())

    worker = threading.Thread(target=other_worker)
    worker.start()
    try:
        mine: list[int] = []
        for start in range(0, 300, 20):
            mine.extend(
                await asyncio.gather(*(first.append(record(i)) for i in range(start, start + 20)))
            )
        await asyncio.get_running_loop().run_in_executor(None, worker.join, 60)
    finally:
        await first.stop()
        await first.engine.dispose()
    assert not worker.is_alive()
    assert sorted(mine + other_seqs) == list(range(1, 601))
    assert len(stored(database)) == 600
    assert_verifies(database, tmp_path)


async def test_the_loops_wal_is_checkpointed_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    checkpoints: list[str] = []
    real = audit_writer.SqliteAppender.checkpoint

    def noted(self: audit_writer.SqliteAppender) -> None:
        checkpoints.append(threading.current_thread().name)
        real(self)

    monkeypatch.setattr(audit_writer.SqliteAppender, "checkpoint", noted)
    database = tmp_path / "hub.db"
    # A checkpoint asked for after every batch (audit.wal_checkpoint_every_s).
    often = settings(tmp_path).model_copy(update={"wal_checkpoint_every_s": 1e-6})
    audit = AuditLog(await migrated_engine(f"sqlite+aiosqlite:///{database}"), often)
    await audit.start()
    try:
        for i in range(5):
            await audit.append(record(i))
            await asyncio.sleep(0.05)
    finally:
        await audit.stop()
        await audit.engine.dispose()
    assert checkpoints, "no checkpoint was asked for"
    # On the writer's thread, never the loop (a checkpoint writes the database file).
    assert all(name.startswith("audit-writer") for name in checkpoints)
    assert_verifies(database, tmp_path)
