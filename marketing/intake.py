"""Taking events in: verify, read, resolve the customer, store once, then acknowledge.

``Intake.receive`` serves the webhook listener (``POST /events/<source>``): the signature is
checked before the body is parsed, the notification is mapped by its source's declaration,
and the answer is given only once the event is committed (or found already stored: a replay
is acknowledged and stores nothing). ``Intake.take`` serves brokers (NATS), whose messages
need no signature.

Storing goes through ``GroupWriter``: concurrent notifications wait together for one
transaction (customer lookups in one query per system, one INSERT for the batch), as the
audit log's writer does; each caller is answered after that commit. Under load this is the
difference between one fsync per event and one per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from marketing.customers import CustomerRef, CustomerResolver
from marketing.events import BusinessEvent
from marketing.mapping import MappedEvent, NotificationInvalid, map_notification
from marketing.signing import SignatureRefused, verify
from marketing.sources import EventSources, EventSourceSpec
from marketing.store import EventStore

log = logging.getLogger("switchboard.events")


class StoreUnavailable(RuntimeError):
    """The event could not be committed: not acknowledged, the sender retries."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """The listener's answer: HTTP status, a stable code, a message with no event data."""

    status: int
    code: str
    message: str


@dataclass
class _Pending:
    source: EventSourceSpec
    mapped: MappedEvent
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupWriter:
    """Commits concurrent events together; each ``submit`` returns after its commit."""

    def __init__(self, store: EventStore, resolver: CustomerResolver, max_batch: int) -> None:
        self._store = store
        self._resolver = resolver
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="events-intake-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():  # never committed: the senders are told to retry
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(StoreUnavailable("the hub is stopping"))

    async def submit(self, source: EventSourceSpec, mapped: MappedEvent) -> bool:
        """True if the event was new and is now stored; False if it was stored before."""
        if self._task is None:
            raise StoreUnavailable("the event intake is not running")
        pending = _Pending(source, mapped)
        self._queue.put_nowait(pending)
        return await asyncio.shield(pending.done)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                new = await self._commit(batch)
            except asyncio.CancelledError:
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(StoreUnavailable("the hub is stopping"))
                raise
            except Exception as error:
                if len(batch) > 1 and about_the_data(error):
                    # One event the database refuses must not fail the others it was grouped
                    # with (their senders would retry into the same group again and again):
                    # each is committed on its own, and only the refused one is answered 503.
                    await self._one_by_one(batch)
                    continue
                # The kind only: the message may quote event data.
                log.error("storing %d events failed: %s", len(batch), type(error).__name__)
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(StoreUnavailable("the event store failed"))
                continue
            _answer(batch, new)

    async def _one_by_one(self, batch: list[_Pending]) -> None:
        for pending in batch:
            try:
                new = await self._commit([pending])
            except asyncio.CancelledError:
                for rest in batch:
                    if not rest.done.done():
                        rest.done.set_exception(StoreUnavailable("the hub is stopping"))
                raise
            except Exception as error:
                log.error("storing an event failed: %s", type(error).__name__)
                if not pending.done.done():
                    pending.done.set_exception(StoreUnavailable("the event store failed"))
                continue
            _answer([pending], new)

    async def _commit(self, batch: list[_Pending]) -> set[str]:
        refs = {id(p): _ref(p) for p in batch}
        customers = await self._resolver.resolve(refs.values())
        unique: dict[str, BusinessEvent] = {}
        for pending in batch:
            m = pending.mapped
            event_id = _event_id(pending)
            unique.setdefault(
                event_id,
                BusinessEvent(
                    event_id=event_id,
                    event_type=m.event_type,
                    source=pending.source.name,
                    occurred_at=m.occurred_at,
                    customer_id=customers.get(refs[id(pending)]),
                    subscriber=m.subscriber,
                    payload=m.payload,
                ),
            )
        return await self._store.store(list(unique.values()))


def _answer(batch: list[_Pending], new: set[str]) -> None:
    """Each caller's answer after the commit: new (the first of its id), or a replay."""
    seen: set[str] = set()
    for pending in batch:
        event_id = _event_id(pending)
        first = event_id in new and event_id not in seen
        seen.add(event_id)
        if not pending.done.done():
            pending.done.set_result(first)


def about_the_data(error: BaseException) -> bool:
    """Whether a failed commit is some row's fault rather than the database's.

    Integrity and data errors, and asyncpg's bare DBAPIErrors whose SQLSTATE is of the data
    (22) or integrity (23) class (a NUL byte in a text is 22021), as the audit log's writer
    judges them (gateway/audit/writer.py). Anything else, a database down included, fails the
    whole group at once: retrying each event alone would only wait N times for it.
    """
    if isinstance(error, IntegrityError | DataError | sqlite3.IntegrityError | sqlite3.DataError):
        return True
    if isinstance(error, DBAPIError):
        sqlstate = getattr(error.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")
    return False


def _event_id(pending: _Pending) -> str:
    return f"{pending.source.name}:{pending.mapped.system_event_id}"


def _ref(pending: _Pending) -> CustomerRef:
    customer = pending.source.mapping.customer
    return CustomerRef(
        key_system=customer.key if customer is not None else None,
        key=pending.mapped.customer_key,
        subscriber=pending.mapped.subscriber,
    )


class Intake:
    def __init__(
        self,
        sources: EventSources,
        secrets: Mapping[str, bytes],
        writer: GroupWriter,
        *,
        tolerance_s: float,
        max_depth: int = 32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sources = sources
        self._secrets = secrets
        self._writer = writer
        self._tolerance_s = tolerance_s
        self._max_depth = max_depth
        self._clock = clock

    async def receive(self, source_name: str, headers: Mapping[str, str], body: bytes) -> Receipt:
        """A webhook notification (headers lower-cased); the answer to give the sender."""
        source = self._sources.get(source_name)
        if source is None or source.webhook is None:
            return Receipt(404, "EVENT_SOURCE_UNKNOWN", "No webhook event source by this name.")
        secret = self._secrets.get(source.name)
        if secret is None:
            return Receipt(
                401, "SIGNATURE_UNCONFIGURED", "This source's shared secret is not configured."
            )
        try:
            verify(
                secret,
                headers.get(source.webhook.timestamp_header.lower()),
                headers.get(source.webhook.signature_header.lower()),
                body,
                self._clock(),
                self._tolerance_s,
            )
        except SignatureRefused as refused:
            log.warning("event refused: source=%s code=%s", source.name, refused.code)
            return Receipt(401, refused.code, refused.message)
        try:
            document = parse_json(body, self._max_depth)
        except NotificationInvalid as invalid:
            return Receipt(400, invalid.code, invalid.message)
        return await self._take(source, document)

    async def take(self, source: EventSourceSpec, body: bytes) -> Receipt:
        """A broker message (no signature: the broker authenticated its publisher)."""
        try:
            document = parse_json(body, self._max_depth)
        except NotificationInvalid as invalid:
            return Receipt(400, invalid.code, invalid.message)
        return await self._take(source, document)

    async def _take(self, source: EventSourceSpec, document: object) -> Receipt:
        try:
            mapped = map_notification(source.mapping, document)
        except NotificationInvalid as invalid:
            log.warning("event refused: source=%s code=%s", source.name, invalid.code)
            return Receipt(400, invalid.code, invalid.message)
        try:
            new = await self._writer.submit(source, mapped)
        except StoreUnavailable as error:
            return Receipt(503, "EVENT_STORE_UNAVAILABLE", f"Not stored ({error}); retry.")
        if new:
            return Receipt(201, "STORED", "Stored.")
        return Receipt(200, "DUPLICATE", "Already stored; nothing changed.")


def parse_json(body: bytes, max_depth: int) -> object:
    """The body as JSON, refused when it is not JSON or nests deeper than ``max_depth``."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        # No deeper than its brackets, counted in C: the byte scan below (Python, per byte:
        # 3 % of the gateway's CPU under the events bench) only for bodies that might be.
        return _loads(body)
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:  # measured before parsing: json.loads recurses
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > max_depth:
                raise NotificationInvalid("EVENT_INVALID", "The JSON nests too deep.")
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return _loads(body)


def _loads(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise NotificationInvalid("EVENT_INVALID", "The body is not JSON.") from None
