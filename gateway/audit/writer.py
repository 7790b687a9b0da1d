"""The batching writer: requests hand in records, one task appends them in group commits.

Durability guarantee (docs/audit.md): a request's response is sent only after the transaction
holding its record has committed. Requests arriving while a batch commits wait for the next
one, so many requests share one commit and the cost per request stays small. SQLite runs in
WAL with synchronous=NORMAL: a commit survives the process being killed (not a power cut);
PostgreSQL commits are durable by its own settings.

Appending locks the single head row first, so several workers or replicas sharing one
database extend one chain, never two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, Engine, event, insert, select, update
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from gateway.audit.record import GENESIS_HASH, AuditRecord, chain_hash
from gateway.audit.store import audit_customer, audit_head, audit_record, record_row

log = logging.getLogger("switchboard.audit")


class AuditUnavailable(Exception):
    """The record could not be made durable: the request must not be answered as if it were."""


async def ensure_head(engine: AsyncEngine) -> None:
    """Create the head row once (idempotent; workers may race at start-up)."""
    async with engine.connect() as conn:
        if (await conn.execute(select(audit_head.c.id))).first() is not None:
            return
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS_HASH))
    except IntegrityError:
        log.debug("audit head created by another worker")


def _lock_head() -> Any:
    # The no-op update takes the write lock (SQLite) / row lock (PostgreSQL) and reads the
    # head in the same statement, so no other writer can chain onto the same head meanwhile.
    return (
        update(audit_head)
        .where(audit_head.c.id == 1)
        .values(seq=audit_head.c.seq)
        .returning(audit_head.c.seq, audit_head.c.hash)
    )


def _chained(
    head_seq: int, head_hash: str, records: list[AuditRecord]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int], str]:
    """The rows of a batch chained onto the head: records, customer rows, seqs, new head."""
    seq, prev = head_seq, head_hash
    rows, customers, seqs = [], [], []
    for record in records:
        seq += 1
        digest = chain_hash(prev, record)
        rows.append(record_row(seq, record, prev, digest))
        customers.extend({"customer_hash": c, "seq": seq} for c in record.customers)
        seqs.append(seq)
        prev = digest
    return rows, customers, seqs, prev


async def append_batch(conn: AsyncConnection, records: list[AuditRecord]) -> list[int]:
    """Chain and insert records inside the caller's transaction; their sequence numbers."""
    head = (await conn.execute(_lock_head())).one()
    rows, customers, seqs, last = _chained(int(head.seq), head.hash, records)
    await conn.execute(insert(audit_record), rows)
    if customers:
        await conn.execute(insert(audit_customer), customers)
    await conn.execute(
        update(audit_head).where(audit_head.c.id == 1).values(seq=seqs[-1], hash=last)
    )
    return seqs


def append_batch_sync(conn: Connection, records: list[AuditRecord]) -> list[int]:
    """The same on a synchronous connection (SQLite, in the writer's own thread)."""
    head = conn.execute(_lock_head()).one()
    rows, customers, seqs, last = _chained(int(head.seq), head.hash, records)
    conn.execute(insert(audit_record), rows)
    if customers:
        conn.execute(insert(audit_customer), customers)
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seqs[-1], hash=last))
    return seqs


def _sync_sqlite_engine(engine: AsyncEngine) -> Engine:
    """A synchronous engine on the same SQLite file, with the hub's pragmas (gateway/database)."""
    sync = create_sync_engine(
        engine.url.set(drivername="sqlite"), connect_args={"timeout": 15}, poolclass=NullPool
    )

    @event.listens_for(sync, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=15000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    return sync


class AuditWriter:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 256) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[AuditRecord, asyncio.Future[int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # SQLite: the whole batch (lock, chain, insert, commit) runs in one thread of its own
        # with a plain sqlite3 connection: one hop off the event loop per batch instead of one
        # per statement, which under load is what request latency feels.
        self._sync: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._sync_conn: Connection | None = None

    async def start(self) -> None:
        await ensure_head(self._engine)
        if self._engine.dialect.name == "sqlite":
            self._sync = _sync_sqlite_engine(self._engine)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Let the task commit everything queued, then stop it (never mid-commit)."""
        if self._task is None:
            return
        if not self._task.done():
            await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_sync)
            self._thread.shutdown(wait=True)
            self._thread = None

    async def append(self, record: AuditRecord) -> int:
        """Queue a record and wait until it is committed; its sequence number."""
        if self._task is None or self._task.done():
            raise AuditUnavailable("the audit writer is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        return await future

    def _commit_sync(self, records: list[AuditRecord]) -> list[int]:
        assert self._sync is not None
        if self._sync_conn is None:  # opened in, and only used by, the writer's thread
            self._sync_conn = self._sync.connect()
        conn = self._sync_conn
        try:
            with conn.begin():
                return append_batch_sync(conn, records)
        except Exception:
            self._close_sync()  # a fresh connection for the next batch
            raise

    def _close_sync(self) -> None:
        if self._sync_conn is not None:  # NullPool: closing it closes the sqlite3 connection
            self._sync_conn.close()
            self._sync_conn = None

    async def _run(self) -> None:
        while True:
            await self._commit_next()

    async def _commit_next(self) -> None:
        batch = [await self._queue.get()]
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        records = [record for record, _ in batch]
        try:
            if self._thread is not None:
                loop = asyncio.get_running_loop()
                seqs = await loop.run_in_executor(self._thread, self._commit_sync, records)
            else:
                async with self._engine.begin() as conn:
                    seqs = await append_batch(conn, records)
        except Exception as error:
            log.error("audit batch of %d not committed: %s", len(batch), type(error).__name__)
            for _, future in batch:
                if not future.done():
                    future.set_exception(AuditUnavailable("the audit log could not be written"))
        else:
            for (_, future), seq in zip(batch, seqs, strict=True):
                if not future.done():
                    future.set_result(seq)
        for _ in batch:
            self._queue.task_done()
