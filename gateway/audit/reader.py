"""The auditor's searches over the log: by customer, principal, role, channel, operation,
purpose, request id, time, outcome and code.

Newest first, paged by sequence number (``after`` is the last seq of the previous page), so
every page is a range scan on one of the store's indexes however large the log is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.record import CustomerHasher
from gateway.audit.store import audit_customer, audit_record, record_of
from schema.audit_reader import AuditEntry, AuditPage, AuditSearch, VerificationReport


def search_query(search: AuditSearch, hasher: CustomerHasher) -> Select[Any]:
    """The filter as SQL (without order and limit)."""
    query = select(audit_record)
    if search.customer_id is not None:
        query = query.join(audit_customer, audit_customer.c.seq == audit_record.c.seq).where(
            audit_customer.c.customer_hash == hasher(search.customer_id)
        )
    if search.principal is not None:
        query = query.where(audit_record.c.subject == search.principal)
    if search.channel is not None:
        query = query.where(audit_record.c.channel == search.channel)
    if search.time_from_us is not None:
        query = query.where(audit_record.c.time_us >= search.time_from_us)
    if search.time_to_us is not None:
        query = query.where(audit_record.c.time_us < search.time_to_us)
    if search.outcome is not None:
        query = query.where(audit_record.c.outcome == search.outcome)
    if search.clear_only:
        query = query.where(audit_record.c.has_clear.is_(True))
    # Without an index of their own: a rare value scans the log backwards from the newest
    # record (combine it with a time window or a principal on large logs).
    for column, value in (
        (audit_record.c.role, search.role),
        (audit_record.c.operation_name, search.operation),
        (audit_record.c.code, search.code),
        (audit_record.c.purpose, search.purpose),
        (audit_record.c.request_id, search.request_id),
    ):
        if value is not None:
            query = query.where(column == value)
    return query


def entry_of(row: Any) -> AuditEntry:
    record = record_of(row)
    return AuditEntry(seq=row.seq, hash=row.hash, **_fields(record.as_dict()))


def _fields(data: dict[str, Any]) -> dict[str, Any]:
    data["customers"] = tuple(data["customers"])
    data["backends"] = tuple(data["backends"])
    return data


class AuditLogReader:
    """Implements schema.audit_reader.AuditReader over the audit tables."""

    def __init__(
        self,
        engine: AsyncEngine,
        hasher: CustomerHasher,
        verify: Callable[[bool], Awaitable[VerificationReport]],
        max_search_page: int,
    ) -> None:
        self._engine = engine
        self._hasher = hasher
        self._verify = verify
        self.max_search_page = max_search_page

    async def search(self, search: AuditSearch, first: int, after_seq: int | None) -> AuditPage:
        query = search_query(search, self._hasher)
        if after_seq is not None:
            query = query.where(audit_record.c.seq < after_seq)
        query = query.order_by(audit_record.c.seq.desc()).limit(first + 1)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return AuditPage(entries=[entry_of(r) for r in rows[:first]], has_next=len(rows) > first)

    async def iterate(
        self, search: AuditSearch, batch: int = 5000, up_to_seq: int | None = None
    ) -> AsyncIterator[AuditEntry]:
        """Every matching record, oldest first (exports); ``up_to_seq``: none after it (an
        export is the log as it stood when it was asked for)."""
        after = 0
        while True:
            query = search_query(search, self._hasher).where(audit_record.c.seq > after)
            if up_to_seq is not None:
                query = query.where(audit_record.c.seq <= up_to_seq)
            query = query.order_by(audit_record.c.seq).limit(batch)
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                yield entry_of(row)
            if len(rows) < batch:
                return
            after = rows[-1].seq

    async def count(self, search: AuditSearch, up_to_seq: int | None = None) -> int:
        query = search_query(search, self._hasher).with_only_columns(func.count())
        if up_to_seq is not None:
            query = query.where(audit_record.c.seq <= up_to_seq)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def last_seq(self) -> int:
        """The newest record's seq (0: an empty log)."""
        query = select(func.max(audit_record.c.seq))
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one() or 0)

    async def verify(self, full: bool = False) -> VerificationReport:
        return await self._verify(full)
