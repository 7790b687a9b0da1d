"""The batching writer: requests hand in records, one task appends them in group commits.

Durability guarantee (docs/audit.md): a request's response is sent only after the transaction
holding its record has committed. Requests arriving while a batch commits wait for the next
one, so many requests share one commit and the cost per request stays small. SQLite runs in
WAL with synchronous=NORMAL: a commit survives the process being killed (not a power cut);
PostgreSQL commits are durable by its own settings.

Appending locks the single head row first, so several workers or replicas sharing one
database extend one chain, never two.

One bad record must not fail its batch: every record is fitted to its columns' types and
lengths when it is handed in (``record.fitted``), and a batch whose commit still fails on its
data is rolled back whole and its records committed again one by one, in their order, so that
only the one the database refuses fails (each chains onto the head as committed so far, so the
chain stays whole). A failure of the database itself (locked, unreachable, disk) fails the
batch at once: retrying each record against it would only multiply the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SqlInterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.record import GENESIS_HASH, AuditRecord, chain_hash, fitted
from gateway.audit.store import audit_customer, audit_head, audit_record, record_row
from telemetry.metrics import AUDIT_BATCHES

log = logging.getLogger("switchboard.audit")

#: The length of each text column of a record (what ``fitted`` cuts text to).
COLUMN_LENGTHS = {
    c.name: c.type.length
    for c in audit_record.columns
    if isinstance(c.type, String) and c.type.length is not None
}
#: Errors that say the database is not working, whatever the records: no retry one by one.
DATABASE_DOWN = (
    sqlite3.OperationalError,
    OperationalError,
    SqlInterfaceError,
    OSError,
    TimeoutError,
)
#: What a database says about one record's data (the record's fault, not the database's).
RECORD_REFUSED = (IntegrityError, DataError, sqlite3.IntegrityError, sqlite3.DataError)
#: SQLSTATE classes about the data (22 data exception, 23 integrity constraint violation).
RECORD_SQLSTATE_CLASSES = ("22", "23")


def database_down(error: BaseException) -> bool:
    """Whether a failed commit says the database itself is not working.

    asyncpg's errors reach SQLAlchemy mostly as a bare DBAPIError (a database not accepting
    connections, 55000, as well as a NUL byte in a text, 22021), so a DBAPIError is judged by
    its SQLSTATE: data and integrity classes are the record's fault, anything else (or none)
    is the database's."""
    if isinstance(error, RECORD_REFUSED):
        return False
    if isinstance(error, DATABASE_DOWN):
        return True
    if isinstance(error, DBAPIError):
        sqlstate = getattr(error.orig, "sqlstate", None)
        return not (isinstance(sqlstate, str) and sqlstate[:2] in RECORD_SQLSTATE_CLASSES)
    return False


@dataclass(frozen=True, slots=True)
class WriterHealth:
    """What /readyz reads of the writer (gateway/readiness.py)."""

    running: bool
    pending: int  # records waiting for a commit
    last_commit_ok: bool | None  # the last batch's outcome; None before the first
    since_success_s: float | None  # since the last committed batch
    committing_for_s: float | None  # the batch being committed now, for how long


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


def _chained(
    head_seq: int, head_hash: str, records: list[AuditRecord]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int], str]:
    """The rows of a batch chained onto the head: records, customer rows, seqs, new head."""
    seq, prev = head_seq, head_hash
    rows: list[dict[str, Any]] = []
    customers: list[dict[str, Any]] = []
    seqs: list[int] = []
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
    # The no-op update takes the row lock (PostgreSQL) / write lock (SQLite) and reads the
    # head in the same statement, so no other writer can chain onto the same head meanwhile.
    head = (
        await conn.execute(
            update(audit_head)
            .where(audit_head.c.id == 1)
            .values(seq=audit_head.c.seq)
            .returning(audit_head.c.seq, audit_head.c.hash)
        )
    ).one()
    rows, customers, seqs, last = _chained(int(head.seq), head.hash, records)
    await conn.execute(insert(audit_record), rows)
    if customers:
        await conn.execute(insert(audit_customer), customers)
    await conn.execute(
        update(audit_head).where(audit_head.c.id == 1).values(seq=seqs[-1], hash=last)
    )
    return seqs


def _locked(error: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the write lock."""
    return (
        isinstance(error, sqlite3.OperationalError)
        and getattr(error, "sqlite_errorcode", None) is not None
        and error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    )


class SqliteLocked(Exception):
    """The inline appender found the write lock taken: nothing was written, commit elsewhere."""


class SqliteAppender:
    """Appends batches on a plain sqlite3 connection.

    Through SQLAlchemy and aiosqlite a commit cost ~0.9 ms per request in the gateway, mostly
    per-statement overhead and thread hops. Here a batch is BEGIN IMMEDIATE (the write lock,
    taken before the head is read), one SELECT, two executemany, one UPDATE and COMMIT, with
    the hub's pragmas (gateway/database.py).

    ``inline``: the appender the event loop calls itself. It never waits for the lock (a
    busy timeout of 0: ``SqliteLocked`` instead, with nothing written, and the writer hands
    the batch to its thread, which waits) and never checkpoints the WAL on commit (that is
    an fsync: the writer asks its thread for a passive checkpoint instead, ``checkpoint``).
    Otherwise it is the thread's, which waits up to 15 s for the lock.
    """

    _COLUMNS = tuple(c.name for c in audit_record.columns)
    _INSERT = (
        f"INSERT INTO audit_record ({', '.join(_COLUMNS)}) "  # noqa: S608 -- fixed names
        f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
    )

    def __init__(self, path: str, *, inline: bool = False) -> None:
        self._path = path
        self._inline = inline
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            pragmas = ["journal_mode=WAL", "synchronous=NORMAL"]
            if self._inline:
                pragmas += ["busy_timeout=0", "wal_autocheckpoint=0"]
            else:
                pragmas += ["busy_timeout=15000"]
            conn = sqlite3.connect(
                self._path, timeout=0 if self._inline else 15, isolation_level=None
            )
            for pragma in pragmas:
                conn.execute(f"PRAGMA {pragma}")
            self._conn = conn
        return self._conn

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database, without blocking any writer."""
        self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def append(self, records: list[AuditRecord]) -> list[int]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            head_seq, head_hash = conn.execute(
                "SELECT seq, hash FROM audit_head WHERE id = 1"
            ).fetchone()
            rows, customers, seqs, last = _chained(int(head_seq), head_hash, records)
            conn.executemany(self._INSERT, [tuple(r[c] for c in self._COLUMNS) for r in rows])
            if customers:
                conn.executemany(
                    "INSERT INTO audit_customer (customer_hash, seq) VALUES (?, ?)",
                    [(c["customer_hash"], c["seq"]) for c in customers],
                )
            conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seqs[-1], last))
            conn.execute("COMMIT")
        except BaseException as error:
            self.close()  # what was not committed is rolled back; a fresh connection next time
            if self._inline and _locked(error):
                raise SqliteLocked from None
            raise
        return seqs

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class AuditWriter:
    """SQLite: each batch is committed on the event loop itself when the write lock is free,
    on the writer's thread only when it is not. A hop to the thread and back cost more CPU
    than it saved and held each response ~4-5 ms under load, waiting for the GIL (which the
    thread needs between SQLite's calls anyway); on the loop a batch blocks it for its own
    cost only, ~50 us a record chaining included (a WAL append without fsync)."""

    def __init__(
        self, engine: AsyncEngine, *, max_batch: int = 256, wal_checkpoint_every_s: float = 1.0
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        # How often the WAL the inline appender grows is checkpointed (passive, on the thread).
        self._wal_checkpoint_every_s = wal_checkpoint_every_s
        self._queue: asyncio.Queue[tuple[AuditRecord, asyncio.Future[int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # SQLite: each batch is committed on the loop (``_inline``) or in one hop to a thread
        # of the writer's own (its sqlite3 connection lives there); PostgreSQL: through the
        # async engine.
        self._sqlite: SqliteAppender | None = None
        self._inline: SqliteAppender | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._checkpointed_at = 0.0
        self._checkpoint: asyncio.Future[None] | None = None
        # For readiness: the last batch's outcome and when (monotonic seconds).
        self._last_ok: bool | None = None
        self._last_success: float | None = None
        self._committing_since: float | None = None

    def health(self) -> WriterHealth:
        now = time.monotonic()
        return WriterHealth(
            running=self._task is not None and not self._task.done(),
            pending=self._queue.qsize(),
            last_commit_ok=self._last_ok,
            since_success_s=None if self._last_success is None else now - self._last_success,
            committing_for_s=(
                None if self._committing_since is None else now - self._committing_since
            ),
        )

    async def start(self) -> None:
        await ensure_head(self._engine)
        if self._engine.dialect.name == "sqlite" and self._engine.url.database not in (
            None,
            "",
            ":memory:",
        ):
            self._sqlite = SqliteAppender(str(self._engine.url.database))
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
            self._inline = SqliteAppender(str(self._engine.url.database), inline=True)
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
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        if self._inline is not None:
            self._inline.close()
        if self._thread is not None and self._sqlite is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite.close)
            self._thread.shutdown(wait=True)
            self._thread = None

    async def append(self, record: AuditRecord) -> int:
        """Queue a record and wait until it is committed; its sequence number."""
        if self._task is None or self._task.done():
            raise AuditUnavailable("the audit writer is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fitted(record, COLUMN_LENGTHS), future))
        return await future

    async def _run(self) -> None:
        while True:
            await self._commit_next()

    async def _commit(self, records: list[AuditRecord]) -> list[int]:
        if self._inline is not None and self._thread is not None and self._sqlite is not None:
            loop = asyncio.get_running_loop()
            try:
                seqs = self._inline.append(records)
            except SqliteLocked:
                pass  # another worker (or connection) is writing: wait on the thread
            else:
                AUDIT_BATCHES.labels("loop").inc()
                self._checkpoint_now_and_then(loop)
                return seqs
            AUDIT_BATCHES.labels("thread").inc()
            return await loop.run_in_executor(self._thread, self._sqlite.append, records)
        AUDIT_BATCHES.labels("engine").inc()
        async with self._engine.begin() as conn:
            return await append_batch(conn, records)

    def _checkpoint_now_and_then(self, loop: asyncio.AbstractEventLoop) -> None:
        """The inline connection never checkpoints on commit: a passive checkpoint on the
        thread at most every ``wal_checkpoint_every_s`` keeps the WAL from growing without
        bound."""
        now = time.monotonic()
        if now - self._checkpointed_at < self._wal_checkpoint_every_s:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        assert self._thread is not None and self._sqlite is not None
        self._checkpointed_at = now
        self._checkpoint = loop.run_in_executor(self._thread, self._sqlite.checkpoint)
        self._checkpoint.add_done_callback(_checkpoint_done)

    async def _commit_next(self) -> None:
        batch = [await self._queue.get()]
        # One pass of the loop first: every request ready in it hands its record in and joins
        # this commit (about twice the records per commit under load, for a pass's latency).
        await asyncio.sleep(0)
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self._committing_since = time.monotonic()
        try:
            seqs = await self._commit([record for record, _ in batch])
        except Exception as error:
            if database_down(error):
                self._last_ok = False
                log.error("audit batch of %d not committed: %s", len(batch), type(error).__name__)
                _fail(batch)
            elif len(batch) == 1:
                log.error("audit record not committed: %s", type(error).__name__)
                _fail(batch)
            else:
                # Something in the data: find which record, committing them one by one.
                log.warning(
                    "audit batch of %d not committed (%s): committing its records one by one",
                    len(batch),
                    type(error).__name__,
                )
                await self._commit_one_by_one(batch)
        else:
            self._last_ok, self._last_success = True, time.monotonic()
            for (_, future), seq in zip(batch, seqs, strict=True):
                if not future.done():
                    future.set_result(seq)
        finally:
            self._committing_since = None
        for _ in batch:
            self._queue.task_done()

    async def _commit_one_by_one(
        self, batch: list[tuple[AuditRecord, asyncio.Future[int]]]
    ) -> None:
        for position, (record, future) in enumerate(batch):
            try:
                (seq,) = await self._commit([record])
            except Exception as error:
                if database_down(error):
                    self._last_ok = False
                    log.error("audit records not committed: %s", type(error).__name__)
                    _fail(batch[position:])
                    return
                # The record's type and request id only: its fields may hold what a caller sent.
                log.error(
                    "audit record refused by the database (%s): request_id=%s",
                    type(error).__name__,
                    record.request_id,
                )
                _fail([(record, future)])
            else:
                if not future.done():
                    future.set_result(seq)


def _checkpoint_done(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        # Only the WAL's size is at stake: the next one (or any other connection) retries.
        log.warning("audit WAL checkpoint failed: %s", type(done.exception()).__name__)


def _fail(entries: list[tuple[AuditRecord, asyncio.Future[int]]]) -> None:
    for _, future in entries:
        if not future.done():
            future.set_exception(AuditUnavailable("the audit log could not be written"))
