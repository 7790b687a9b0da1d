"""The hub's own record of its requests: state, history, notifications and client keys.

DBOS keeps the workflows' checkpoints in its system database; these tables keep what channels
read (a request's state and history, the notifications a customer's channel is sent) in the
hub's database, so resolvers answer from them without touching a running workflow.

Every write a workflow step makes here is idempotent (a unique key per request and step), so a
step that runs again after a crash records nothing twice. Nothing personal goes in: states,
codes, amounts, system record ids and the channel names, never names, numbers or free text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = MetaData()

hub_request = Table(
    "hub_request",
    metadata,
    Column("id", String(80), primary_key=True),  # also the DBOS workflow id
    Column("kind", String(32), nullable=False),  # complaint, plan_change, handoff
    Column("customer_id", String(32), nullable=False),  # hub id cus_...
    Column("channel", String(32), nullable=False),  # where it was started
    Column("started_by", String(64), nullable=False),  # credential id
    Column("state", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # OPEN, WAITING, DONE, COMPENSATED, REJECTED
    Column("waiting_for", String(40)),  # e.g. AGENT, FEEDBACK, STORE_ID_CHECK
    Column("detail", Text, nullable=False, default="{}"),  # JSON: ids, codes, amounts
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_hub_request_customer", hub_request.c.customer_id, hub_request.c.status)

hub_request_event = Table(
    "hub_request_event",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(80), nullable=False),
    Column("customer_id", String(32), nullable=False),
    Column("event_key", String(80), nullable=False),  # step name: one event per step
    Column("state", String(40), nullable=False),
    Column("channel", String(32), nullable=False),  # channel of the actor
    Column("actor", String(64), nullable=False),  # credential id, or "hub" for the workflow
    Column("detail", Text, nullable=False, default="{}"),
    Column("at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("request_id", "event_key", name="uq_request_event_key"),
)
Index("ix_hub_request_event_customer", hub_request_event.c.customer_id, hub_request_event.c.seq)

hub_notification = Table(
    "hub_notification",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(80), nullable=False),
    Column("customer_id", String(32), nullable=False),
    Column("notice_key", String(80), nullable=False),
    Column("channel", String(32), nullable=False),  # the channel it goes to
    Column("kind", String(40), nullable=False),
    Column("detail", Text, nullable=False, default="{}"),
    Column("at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("request_id", "notice_key", name="uq_notification_key"),
)

mutation_key = Table(
    "mutation_key",
    metadata,
    Column("caller", String(64), primary_key=True),
    Column("idem_key", String(128), primary_key=True),
    Column("mutation", String(40), nullable=False),
    Column("input_hash", String(64), nullable=False),
    Column("request_id", String(80), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


def input_hash(mutation: str, payload: Mapping[str, Any]) -> str:
    """A stable digest of a mutation's input: same input, same digest."""
    text = json.dumps({"m": mutation, "p": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def workflow_id(kind: str, caller: str, key: str) -> str:
    """The request (and workflow) id for a caller's idempotency key: same pair, same id."""
    digest = hashlib.sha256(f"{caller}\x00{key}".encode()).hexdigest()[:24]
    return f"{kind}-{digest}"


class KeyReused(Exception):
    """The caller used this idempotency key before, with another input."""


@dataclass(frozen=True, slots=True)
class RequestRow:
    id: str
    kind: str
    customer_id: str
    channel: str
    started_by: str
    state: str
    status: str
    waiting_for: str | None
    detail: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    request_id: str
    customer_id: str
    state: str
    channel: str
    actor: str
    detail: dict[str, Any]
    at: datetime


def _request(row: Any) -> RequestRow:
    return RequestRow(
        id=row.id,
        kind=row.kind,
        customer_id=row.customer_id,
        channel=row.channel,
        started_by=row.started_by,
        state=row.state,
        status=row.status,
        waiting_for=row.waiting_for,
        detail=json.loads(row.detail or "{}"),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _event(row: Any) -> EventRow:
    return EventRow(
        seq=row.seq,
        request_id=row.request_id,
        customer_id=row.customer_id,
        state=row.state,
        channel=row.channel,
        actor=row.actor,
        detail=json.loads(row.detail or "{}"),
        at=row.at,
    )


OPEN_STATUSES = ("OPEN", "WAITING")


class RequestStore:
    """Reads and idempotent writes of the request tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim_key(
        self, caller: str, key: str, mutation: str, digest: str, request_id: str
    ) -> str:
        """The request id a (caller, key) stands for; recorded now if new.

        Raises KeyReused when the key was used before with another input (or mutation).
        """
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(mutation_key).where(
                        mutation_key.c.caller == caller, mutation_key.c.idem_key == key
                    )
                )
            ).first()
            if row is None:
                try:
                    await conn.execute(
                        mutation_key.insert().values(
                            caller=caller,
                            idem_key=key,
                            mutation=mutation,
                            input_hash=digest,
                            request_id=request_id,
                            created_at=_now(),
                        )
                    )
                    return request_id
                except IntegrityError:
                    pass  # a concurrent call with the same key won: read what it recorded
        if row is None:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(mutation_key).where(
                            mutation_key.c.caller == caller, mutation_key.c.idem_key == key
                        )
                    )
                ).one()
        if row.mutation != mutation or row.input_hash != digest:
            raise KeyReused(key)
        return str(row.request_id)

    async def has_key(self, caller: str, key: str, mutation: str, digest: str) -> bool:
        """Whether this caller already used this key for this very input."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(mutation_key).where(
                        mutation_key.c.caller == caller, mutation_key.c.idem_key == key
                    )
                )
            ).first()
        return row is not None and row.mutation == mutation and row.input_hash == digest

    async def create_request(
        self,
        request_id: str,
        *,
        kind: str,
        customer_id: str,
        channel: str,
        started_by: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a new request (state RECEIVED); a repeat of the same id changes nothing."""
        now = _now()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    hub_request.insert().values(
                        id=request_id,
                        kind=kind,
                        customer_id=customer_id,
                        channel=channel,
                        started_by=started_by,
                        state="RECEIVED",
                        status="OPEN",
                        waiting_for=None,
                        detail=json.dumps(dict(detail or {})),
                        created_at=now,
                        updated_at=now,
                    )
                )
                await conn.execute(
                    hub_request_event.insert().values(
                        request_id=request_id,
                        customer_id=customer_id,
                        event_key="received",
                        state="RECEIVED",
                        channel=channel,
                        actor=started_by,
                        detail="{}",
                        at=now,
                    )
                )
        except IntegrityError:
            pass

    async def transition(
        self,
        request_id: str,
        event_key: str,
        state: str,
        *,
        status: str = "OPEN",
        waiting_for: str | None = None,
        channel: str = "hub",
        actor: str = "hub",
        detail: Mapping[str, Any] | None = None,
        merge: Mapping[str, Any] | None = None,
    ) -> None:
        """Move a request to ``state`` and record it once in its history (keyed by step)."""
        now = _now()
        async with self._engine.begin() as conn:
            current = (
                await conn.execute(select(hub_request).where(hub_request.c.id == request_id))
            ).one()
            exists = (
                await conn.execute(
                    select(hub_request_event.c.seq).where(
                        hub_request_event.c.request_id == request_id,
                        hub_request_event.c.event_key == event_key,
                    )
                )
            ).first()
            if exists is not None:
                return  # this step ran before (a repeat after a crash): recorded already
            values: dict[str, Any] = {
                "state": state,
                "status": status,
                "waiting_for": waiting_for,
                "updated_at": now,
            }
            if merge:
                values["detail"] = json.dumps({**json.loads(current.detail or "{}"), **merge})
            await conn.execute(
                update(hub_request).where(hub_request.c.id == request_id).values(**values)
            )
            await conn.execute(
                hub_request_event.insert().values(
                    request_id=request_id,
                    customer_id=current.customer_id,
                    event_key=event_key,
                    state=state,
                    channel=channel,
                    actor=actor,
                    detail=json.dumps(dict(detail or {})),
                    at=now,
                )
            )

    async def notify(
        self,
        request_id: str,
        notice_key: str,
        *,
        channel: str,
        kind: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """A durable notification for a channel (delivered through subscriptions), once."""
        async with self._engine.begin() as conn:
            current = (
                await conn.execute(
                    select(hub_request.c.customer_id).where(hub_request.c.id == request_id)
                )
            ).one()
            exists = (
                await conn.execute(
                    select(hub_notification.c.seq).where(
                        hub_notification.c.request_id == request_id,
                        hub_notification.c.notice_key == notice_key,
                    )
                )
            ).first()
            if exists is not None:
                return
            await conn.execute(
                hub_notification.insert().values(
                    request_id=request_id,
                    customer_id=current.customer_id,
                    notice_key=notice_key,
                    channel=channel,
                    kind=kind,
                    detail=json.dumps(dict(detail or {})),
                    at=_now(),
                )
            )

    async def get(self, request_id: str) -> RequestRow | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(hub_request).where(hub_request.c.id == request_id))
            ).first()
        return _request(row) if row else None

    async def history(self, request_id: str) -> list[EventRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(hub_request_event)
                .where(hub_request_event.c.request_id == request_id)
                .order_by(hub_request_event.c.seq)
            )
            return [_event(r) for r in rows]

    async def open_requests(self, customer_id: str) -> list[RequestRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(hub_request)
                .where(
                    hub_request.c.customer_id == customer_id,
                    hub_request.c.status.in_(OPEN_STATUSES),
                )
                .order_by(hub_request.c.created_at)
            )
            return [_request(r) for r in rows]

    async def notifications(self, request_id: str) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(hub_notification)
                .where(hub_notification.c.request_id == request_id)
                .order_by(hub_notification.c.seq)
            )
            return [
                {
                    "channel": r.channel,
                    "kind": r.kind,
                    "detail": json.loads(r.detail or "{}"),
                    "at": r.at,
                }
                for r in rows
            ]

    async def events_after(
        self,
        after_seq: int,
        *,
        request_ids: Sequence[str] = (),
        customer_id: str | None = None,
        limit: int = 100,
    ) -> list[EventRow]:
        """History events newer than ``after_seq`` of some requests or of one customer."""
        query = select(hub_request_event).where(hub_request_event.c.seq > after_seq)
        if customer_id is not None:
            query = query.where(hub_request_event.c.customer_id == customer_id)
        if request_ids:
            query = query.where(hub_request_event.c.request_id.in_(list(request_ids)))
        query = query.order_by(hub_request_event.c.seq).limit(limit)
        async with self._engine.connect() as conn:
            return [_event(r) for r in await conn.execute(query)]

    async def notifications_after(
        self, after_seq: int, *, channel: str, customer_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Notifications to a channel newer than ``after_seq`` (of one customer, if named)."""
        query = select(hub_notification).where(
            hub_notification.c.seq > after_seq, hub_notification.c.channel == channel
        )
        if customer_id is not None:
            query = query.where(hub_notification.c.customer_id == customer_id)
        query = query.order_by(hub_notification.c.seq).limit(limit)
        async with self._engine.connect() as conn:
            return [
                {
                    "seq": r.seq,
                    "request_id": r.request_id,
                    "customer_id": r.customer_id,
                    "channel": r.channel,
                    "kind": r.kind,
                    "detail": json.loads(r.detail or "{}"),
                    "at": r.at,
                }
                for r in await conn.execute(query)
            ]

    async def last_notification_seq(self) -> int:
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(
                    select(hub_notification.c.seq).order_by(hub_notification.c.seq.desc()).limit(1)
                )
            ).scalar()
        return int(value or 0)

    async def last_seq(self) -> int:
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(
                    select(hub_request_event.c.seq)
                    .order_by(hub_request_event.c.seq.desc())
                    .limit(1)
                )
            ).scalar()
        return int(value or 0)
