"""The gateway signs checkpoints itself: every N records, or once the oldest record no
checkpoint covers is M seconds old (``audit.checkpoint_every_records`` / ``_every_s``).

Checkpoints made only when someone runs the CLI leave a forged tail undetectable for as long
as nobody does. Each gateway process polls (``audit.checkpoint_poll_s``); one that finds a
checkpoint due takes the chain's head lock (the row every append locks), looks again under
it and only then signs and stores: with any number of workers or replicas on one database,
one checkpoint is written per due point, never two. It signs only a chain that verifies
from the latest trustworthy checkpoint (``verify_incremental``: at most about N records to
hash, off the event loop). The checkpoint then goes, as one line,
to the checkpoint file outside the database (``gateway/audit/checkpoint_file.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit import checkpoint_file
from gateway.audit.checkpoint import PUBLISHED, Checkpoint, SigningKey, store_checkpoint
from gateway.audit.store import audit_checkpoint, audit_head, audit_record
from gateway.audit.verify import verify_incremental

log = logging.getLogger("switchboard.audit")


class CheckpointScheduler:
    def __init__(
        self,
        engine: AsyncEngine,
        key: SigningKey,
        *,
        file: Path,
        every_records: int,
        every_s: float,
        poll_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._key = key
        self._file = file
        self._every_records = every_records
        self._every_us = int(every_s * 1_000_000)
        self._poll_s = poll_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._refused_at: int | None = None  # the head last refused (logged once per head)
        self._retry_at = 0.0  # after a refusal, verify again only checkpoint_every_s later

    async def _due(self, conn: AsyncConnection, head_seq: int) -> bool:
        covered = (await conn.execute(select(func.max(audit_checkpoint.c.seq)))).scalar()
        covered = int(covered or 0)
        if head_seq <= covered:
            return False
        if head_seq - covered >= self._every_records:
            return True
        oldest = (
            await conn.execute(
                select(audit_record.c.time_us)
                .where(audit_record.c.seq > covered)
                .order_by(audit_record.c.seq)
                .limit(1)
            )
        ).scalar()
        return oldest is not None and self._now_us() - int(oldest) >= self._every_us

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    async def publish_if_due(self) -> Checkpoint | None:
        """Sign, store and file a checkpoint of the head if one is due; it, else None.

        The records since the latest trustworthy checkpoint are verified first: a checkpoint
        vouches for everything before it, so a record edited (or a tail forged) since the
        last one must not be signed into the chain. If they do not verify, nothing is signed
        (and the error is logged) until someone has looked.
        """
        async with self._engine.connect() as conn:  # a look without locks, every poll
            head = (await conn.execute(select(audit_head.c.seq))).scalar()
            if head is None or not await self._due(conn, int(head)):
                return None
        if time.monotonic() < self._retry_at:
            return None  # it did not verify a moment ago: do not re-hash it every poll
        report = await verify_incremental(self._engine, self._key.public_key)
        if not report.ok:
            self._retry_at = time.monotonic() + self._every_us / 1_000_000
            if self._refused_at != report.last_seq:
                self._refused_at = report.last_seq
                first = report.findings[0]
                log.error(
                    "audit checkpoint not signed: the log does not verify since the %s "
                    "(%d finding(s), first: %s at seq %d); run `switchboard audit verify`",
                    report.anchor,
                    len(report.findings),
                    first.kind,
                    first.seq,
                )
            return None
        if report.last_seq is None or report.head_hash is None:
            return None
        seq, head_hash = report.last_seq, report.head_hash
        async with self._engine.begin() as conn:
            locked = (
                await conn.execute(
                    update(audit_head)
                    .where(audit_head.c.id == 1)
                    .values(seq=audit_head.c.seq)
                    .returning(audit_head.c.seq, audit_head.c.hash)
                )
            ).one()
            if not await self._due(conn, int(locked.seq)):
                return None  # another process signed it meanwhile
            stored = (
                await conn.execute(select(audit_record.c.hash).where(audit_record.c.seq == seq))
            ).scalar()
            if stored != head_hash:
                return None  # changed since it was verified: the next poll looks again
            # The head as verified (records appended since are covered by the next one).
            checkpoint = self._key.sign(PUBLISHED, seq, head_hash, self._now_us())
            await store_checkpoint(conn, checkpoint)
        await asyncio.to_thread(checkpoint_file.append, self._file, checkpoint)
        log.info("audit checkpoint signed at seq %d", checkpoint.seq)
        return checkpoint

    async def _run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._poll_s)
                return
            try:
                await self.publish_if_due()
            except Exception as error:  # the next poll tries again
                log.error("audit checkpoint not signed: %s", type(error).__name__)

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(self._stopping), name="audit-checkpoints")

    async def stop(self) -> None:
        """Stop after the poll under way, if any: never cancelled inside its transaction
        (a cancelled SQLite transaction could keep the write lock)."""
        if self._task is None:
            return
        self._stopping.set()
        await self._task
        self._task = None
