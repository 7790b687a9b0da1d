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

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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


async def append_batch(conn: AsyncConnection, records: list[AuditRecord]) -> list[int]:
    """Chain and insert records inside the caller's transaction; their sequence numbers."""
    # The no-op update takes the write lock (SQLite) / row lock (PostgreSQL) before the head
    # is read, so no other writer can chain onto the same head meanwhile.
    await conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq))
    head = (await conn.execute(select(audit_head.c.seq, audit_head.c.hash))).one()
    seq, prev = int(head.seq), head.hash
    rows, customers, seqs = [], [], []
    for record in records:
        seq += 1
        digest = chain_hash(prev, record)
        rows.append(record_row(seq, record, prev, digest))
        customers.extend({"customer_hash": c, "seq": seq} for c in record.customers)
        seqs.append(seq)
        prev = digest
    await conn.execute(insert(audit_record), rows)
    if customers:
        await conn.execute(insert(audit_customer), customers)
    await conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev))
    return seqs


class AuditWriter:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 256) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[AuditRecord, asyncio.Future[int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_head(self._engine)
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

    async def append(self, record: AuditRecord) -> int:
        """Queue a record and wait until it is committed; its sequence number."""
        if self._task is None or self._task.done():
            raise AuditUnavailable("the audit writer is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        return await future

    async def _run(self) -> None:
        while True:
            await self._commit_next()

    async def _commit_next(self) -> None:
        batch = [await self._queue.get()]
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        try:
            async with self._engine.begin() as conn:
                seqs = await append_batch(conn, [record for record, _ in batch])
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
