"""Retention: delete records older than the period, after a signed checkpoint at the cut.

The checkpoint (kind ``prune``) names the last deleted record's hash, so verification starts
from it: the first kept record must follow it. Pruning and appending lock the same head row,
so a prune never interleaves with a batch being chained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.checkpoint import PRUNE, Checkpoint, SigningKey, store_checkpoint
from gateway.audit.store import audit_customer, audit_head, audit_record

DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: int
    checkpoint: Checkpoint | None  # None when nothing was old enough


async def prune(
    engine: AsyncEngine, key: SigningKey, retention_days: float, now_us: int | None = None
) -> PruneResult:
    cut_us = (now_us if now_us is not None else int(time.time() * 1_000_000)) - int(
        retention_days * DAY_US
    )
    async with engine.begin() as conn:
        await conn.execute(
            update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq)
        )
        # Records are appended in time order, so the cut is the last seq older than it.
        cut_seq = (
            await conn.execute(
                select(func.max(audit_record.c.seq)).where(audit_record.c.time_us < cut_us)
            )
        ).scalar()
        if cut_seq is None:
            return PruneResult(0, None)
        cut_hash = (
            await conn.execute(select(audit_record.c.hash).where(audit_record.c.seq == cut_seq))
        ).scalar_one()
        checkpoint = key.sign(PRUNE, int(cut_seq), cut_hash, int(time.time() * 1_000_000))
        await store_checkpoint(conn, checkpoint)
        await conn.execute(delete(audit_customer).where(audit_customer.c.seq <= cut_seq))
        deleted = (
            await conn.execute(delete(audit_record).where(audit_record.c.seq <= cut_seq))
        ).rowcount
    return PruneResult(int(deleted or 0), checkpoint)
