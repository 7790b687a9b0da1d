"""A read-through cache in front of the adapters: aiocache in memory, or Redis in scaled mode.

``CachedCustomerSystem``, ``CachedBillingSystem`` and ``CachedCareSystem`` implement the same
protocols as the adapters they wrap (``adapters.contract``), so the wiring just wraps them.

What is cached, and how:
- Canonical records, exactly as the adapter returned them, **before any policy**: masking and
  denial happen in the schema on every read, so a cached value is never a rendering for one
  channel that another could be served.
- Per key, whatever the batch: a batch read looks up all its keys at once (``multi_get``),
  calls the backend once for the misses only, stores them and merges. One TTL per kind of
  record (settings ``[cache.ttl_s]``); a TTL of 0 leaves that kind uncached.
- Stampede protection: concurrent misses of one key share one backend call. Each missing key
  gets a future in an in-process single-flight map; whoever misses a key already in flight
  waits for that future instead of calling. The flight runs as its own task, so a caller that
  gives up does not fail the others. With Redis this holds per hub process (N processes make
  at most N calls per key), which is enough to protect a backend from a burst.
- Not cached: identity lookups by ID card or MSISDN (``find_accounts``, ``find_parties``,
  ``find_customer_by_certificate``) run once per customer, on first sight, and their result is
  kept in the identity crosswalk; a cached "nothing found" would only delay a new link. Also
  not cached: customer search pages (many filter combinations, and new customers must show),
  eligibility checks and orders (read around writes, must be current). The line found by an
  MSISDN (``customerByMsisdn``, every time) is cached like the customer's lines.
- Bills and payments: the first ``LIST_WINDOW`` of an account are one entry; a page inside it
  is sliced from it (with the backend's total), a page beyond it goes to billing uncached.

Writes pass through uncached (never retried: see ``adapters.resilience``) and then evict what
they changed, even when they failed, since a timed-out write may have happened. A plan change
(``change_offering``, ``cancel_order``) evicts the customer's lines, the line found by its
MSISDN, and the balance and bills of the billing accounts the cache has seen serving that
number; a balance adjustment evicts the account's balance, bills and payments; a ticket write
evicts the party's tickets. The cache keeps small index entries to know whom a write touches
(subscriber -> customer and MSISDN, MSISDN -> accounts, ticket -> party, order -> subscriber),
filled when the records are read, and living at least as long as the longest TTL.
``RecordCache.evict_customer`` lets workflows evict a whole customer explicitly.

An eviction also marks a read of that key still in flight in this process as stale: its answer
goes to the callers waiting for it but is not stored. Across processes (Redis) a read that
started before a write can still store its older answer after the eviction, for at most its
TTL.

A cache that fails (Redis down, slow, or an entry that does not decode) is a miss, never an
error for the caller; failures are counted and logged by type only. Cache keys hold customer
numbers, account ids and MSISDNs: fine in the cache, never in logs, so aiocache's own debug
log (which prints keys) is kept quiet.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from aiocache import Cache
from aiocache.base import BaseCache
from aiocache.serializers import NullSerializer

from adapters import codec
from adapters.codec import CODEC_VERSION, Codec, page_of, tuple_of
from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from adapters.parsing import unique
from adapters.read_ledger import filling_cache, note_cached
from adapters.records import (
    Balance,
    Bill,
    BillingAccount,
    CustomerProfile,
    Interaction,
    Money,
    Offering,
    Order,
    Page,
    Party,
    Payment,
    StarLevel,
    Subscription,
    Ticket,
)
from telemetry import metrics

log = logging.getLogger("switchboard.cache")

V = TypeVar("V")
B = TypeVar("B", CustomerSystem, BillingSystem, CareSystem)

#: Bills and payments cached per account: the newest this many, one backend page.
LIST_WINDOW = 50


@dataclass(frozen=True, slots=True)
class Kind(Generic[V]):
    """A kind of cached value: its name (in keys, settings and metrics) and its JSON codec."""

    name: str
    codec: Codec[V]


PROFILE = Kind("profile", codec.PROFILE)
SUBSCRIPTIONS = Kind("subscriptions", tuple_of(codec.SUBSCRIPTION))
LINE_BY_MSISDN = Kind("line_by_msisdn", codec.SUBSCRIPTION)
OFFERINGS = Kind("offerings", tuple_of(codec.OFFERING))
BILLING_ACCOUNT = Kind("billing_account", codec.ACCOUNT)
BALANCE = Kind("balance", codec.BALANCE)
BILLS = Kind("bills", page_of(codec.BILL))
PAYMENTS = Kind("payments", page_of(codec.PAYMENT))
TICKETS = Kind("tickets", tuple_of(codec.TICKET))
INTERACTIONS = Kind("interactions", tuple_of(codec.INTERACTION))
RECORD_KINDS: tuple[Kind[Any], ...] = (
    PROFILE,
    SUBSCRIPTIONS,
    LINE_BY_MSISDN,
    OFFERINGS,
    BILLING_ACCOUNT,
    BALANCE,
    BILLS,
    PAYMENTS,
    TICKETS,
    INTERACTIONS,
)

# Index entries: who a write touches. Values are plain JSON.
LINE_OWNER = Kind("idx_line", codec.PLAIN)  # subscriber_no -> [customer_no, msisdn]
NUMBER_ACCOUNTS = Kind("idx_number", codec.PLAIN)  # msisdn -> [billing account ids]
TICKET_PARTY = Kind("idx_ticket", codec.PLAIN)  # ticket id -> party id
ORDER_LINE = Kind("idx_order", codec.PLAIN)  # order id -> subscriber_no
INDEX_KINDS: tuple[Kind[Any], ...] = (LINE_OWNER, NUMBER_ACCOUNTS, TICKET_PARTY, ORDER_LINE)

#: Seconds per kind when the settings do not say otherwise.
DEFAULT_TTLS: Mapping[str, float] = {
    "profile": 300,
    "subscriptions": 60,
    "line_by_msisdn": 60,
    "offerings": 3600,
    "billing_account": 300,
    "balance": 30,
    "bills": 300,
    "payments": 300,
    "tickets": 30,
    "interactions": 60,
}

_ABSENT: Any = object()  # a key the backend does not know: answered, never stored


@dataclass(slots=True)
class CacheStats:
    """Counters per kind since start (for /metrics)."""

    hits: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)
    #: Misses that waited for another caller's backend call instead of making one.
    shared: Counter[str] = field(default_factory=Counter)
    evictions: Counter[str] = field(default_factory=Counter)
    #: Cache operations that failed or entries that did not decode (served as misses).
    errors: int = 0


def _quiet_aiocache() -> None:
    # aiocache logs every key it touches at DEBUG; keys hold MSISDNs and customer numbers.
    logging.getLogger("aiocache").setLevel(logging.INFO)


def memory_backend() -> BaseCache:
    """aiocache's in-process dict, records kept as objects (they are immutable)."""
    _quiet_aiocache()
    # No per-operation timeout: it would wrap every dict lookup in a task.
    return Cache(Cache.MEMORY, serializer=NullSerializer(), timeout=None)


def redis_backend(url: str, timeout_s: float) -> BaseCache:
    """aiocache over Redis; values are the codec's JSON text (the serializer passes it on)."""
    _quiet_aiocache()
    parts = urlsplit(url)
    return Cache(
        Cache.REDIS,
        endpoint=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(parts.path.lstrip("/") or 0),
        password=parts.password,
        ssl=parts.scheme == "rediss",
        serializer=NullSerializer(),
        timeout=timeout_s,
        create_connection_timeout=timeout_s,
    )


class RecordCache:
    """Per-key read-through caching with single-flight, TTLs per kind and eviction."""

    def __init__(
        self,
        backend: BaseCache,
        *,
        ttls: Mapping[str, float] = DEFAULT_TTLS,
        namespace: str = "switchboard",
        serialize: bool = False,
    ) -> None:
        self._backend = backend
        self._ttls = {kind.name: float(ttls.get(kind.name, 0)) for kind in RECORD_KINDS}
        # An index entry must outlive the records it helps to evict.
        index_ttl = max([*self._ttls.values(), 60.0])
        self._ttls.update({kind.name: index_ttl for kind in INDEX_KINDS})
        self._prefix = f"{namespace}:v{CODEC_VERSION}:"
        self._serialize = serialize
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._flights: set[asyncio.Task[None]] = set()
        # Tells the other hub processes what this one evicted (adapters/cache_fanout.py).
        self._fanout: Callable[[list[str]], Awaitable[None]] | None = None
        # Told of every eviction, here or fanned in (the answer cache drops what it built).
        self._evicted: list[Callable[[], None]] = []
        self.stats = CacheStats()
        for kind in RECORD_KINDS:  # every kind's series from the start, at zero
            for counter in (
                metrics.CACHE_HITS,
                metrics.CACHE_MISSES,
                metrics.CACHE_SHARED,
                metrics.CACHE_EVICTIONS,
            ):
                counter.labels(kind.name)

    @classmethod
    def in_memory(cls, **options: Any) -> RecordCache:
        return cls(memory_backend(), serialize=False, **options)

    @classmethod
    def on_redis(cls, url: str, *, timeout_s: float = 0.25, **options: Any) -> RecordCache:
        return cls(redis_backend(url, timeout_s), serialize=True, **options)

    @property
    def prefix(self) -> str:
        """What every key of this cache starts with (tests clean up by it)."""
        return self._prefix

    def ttl(self, kind: Kind[Any]) -> float:
        return self._ttls[kind.name]

    def register(self, kind: Kind[Any], ttl_s: float) -> None:
        """Cache a kind a declared system brings (its name is ``system.operation``)."""
        self._ttls[kind.name] = float(ttl_s)

    async def close(self) -> None:
        client = getattr(self._backend, "client", None)
        if client is not None:
            # aiocache 0.12 closes its Redis client with the call redis 5 deprecated.
            await client.aclose()
        else:
            await self._backend.close()

    # --- reads --------------------------------------------------------------------------

    async def many(
        self,
        kind: Kind[V],
        keys: Iterable[str],
        fetch: Callable[[list[str]], Awaitable[Mapping[str, V]]],
    ) -> dict[str, V]:
        """The values of ``keys`` (those the backend knows), fetching the misses once."""
        wanted = unique(keys)
        if not wanted:
            return {}
        ttl = self.ttl(kind)
        if ttl <= 0:
            fetched = await fetch(wanted)  # its backend call marks the request's ledger
            return {key: fetched[key] for key in wanted if key in fetched}
        note_cached(ttl)
        found: dict[str, V] = {}
        misses: list[str] = []
        for key, value in zip(wanted, await self._read(kind, wanted), strict=True):
            if value is None:
                misses.append(key)
            else:
                found[key] = value
        self.stats.hits[kind.name] += len(found)
        if found:
            metrics.CACHE_HITS.labels(kind.name).inc(len(found))
        if misses:
            self.stats.misses[kind.name] += len(misses)
            metrics.CACHE_MISSES.labels(kind.name).inc(len(misses))
            waiting: dict[str, asyncio.Future[Any]] = {}
            mine: list[str] = []
            for key in misses:
                flight = self._inflight.get(self._key(kind, key))
                if flight is None:
                    mine.append(key)
                else:
                    waiting[key] = flight
            self.stats.shared[kind.name] += len(waiting)
            if waiting:
                metrics.CACHE_SHARED.labels(kind.name).inc(len(waiting))
            if mine:
                waiting.update(self._take_off(kind, mine, fetch))
            # Shielded: a caller that is cancelled stops waiting but leaves the flight alone.
            results = await asyncio.gather(*(asyncio.shield(f) for f in waiting.values()))
            for key, value in zip(waiting, results, strict=True):
                if value is not _ABSENT:
                    found[key] = value
        return {key: found[key] for key in wanted if key in found}

    async def one(self, kind: Kind[V], key: str, fetch: Callable[[], Awaitable[V]]) -> V:
        """One value, fetched once however many callers miss it together."""

        async def fetch_one(keys: list[str]) -> dict[str, V]:
            return {key: await fetch()}

        return (await self.many(kind, [key], fetch_one))[key]

    def _take_off(
        self,
        kind: Kind[V],
        keys: list[str],
        fetch: Callable[[list[str]], Awaitable[Mapping[str, V]]],
    ) -> dict[str, asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Any]] = {key: loop.create_future() for key in keys}
        for key, future in futures.items():
            self._inflight[self._key(kind, key)] = future
        task = loop.create_task(self._fly(kind, futures, fetch))
        self._flights.add(task)
        task.add_done_callback(self._flights.discard)
        return futures

    async def _fly(
        self,
        kind: Kind[V],
        futures: dict[str, asyncio.Future[Any]],
        fetch: Callable[[list[str]], Awaitable[Mapping[str, V]]],
    ) -> None:
        filling_cache()  # this task's backend call is the cache's (adapters/read_ledger.py)
        try:
            fetched = await fetch(list(futures))
        except BaseException as error:
            for key, future in futures.items():
                self._land(kind, key, future)
                if future.done():
                    continue
                if isinstance(error, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(error)
                    future.exception()  # retrieved: waiters re-raise it, none may be left
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        for key, future in futures.items():
            if not future.done():
                future.set_result(fetched.get(key, _ABSENT))
        # Store only keys nobody evicted while the backend was answering.
        await self._write(
            kind,
            [
                (key, fetched[key])
                for key, future in futures.items()
                if key in fetched and self._owns(kind, key, future)
            ],
        )
        raced = []
        for key, future in futures.items():
            if self._owns(kind, key, future):
                self._land(kind, key, future)
            elif key in fetched:
                raced.append(self._key(kind, key))
        if raced:
            # Evicted while being stored: delete what may have gone in after the eviction.
            await self._delete(raced)

    def _owns(self, kind: Kind[Any], key: str, future: asyncio.Future[Any]) -> bool:
        return self._inflight.get(self._key(kind, key)) is future

    def _land(self, kind: Kind[Any], key: str, future: asyncio.Future[Any]) -> None:
        if self._owns(kind, key, future):
            del self._inflight[self._key(kind, key)]

    # --- index entries and eviction ------------------------------------------------------

    async def remember(self, kind: Kind[Any], entries: Mapping[str, Any]) -> None:
        await self._write(kind, list(entries.items()))

    async def recall(self, kind: Kind[Any], keys: Sequence[str]) -> dict[str, Any]:
        wanted = unique(keys)
        values = await self._read(kind, wanted) if wanted else []
        return {k: v for k, v in zip(wanted, values, strict=True) if v is not None}

    async def evict(self, targets: Iterable[tuple[Kind[Any], str]]) -> None:
        """Delete entries, and keep reads of them now in flight from storing their answer."""
        keys = []
        for kind, key in dict.fromkeys(targets):
            full = self._key(kind, key)
            self._inflight.pop(full, None)
            self.stats.evictions[kind.name] += 1
            metrics.CACHE_EVICTIONS.labels(kind.name).inc()
            keys.append(full)
        if keys:
            self._tell_evicted()
            await self._delete(keys)
            self._tell_evicted()  # and after: a request begun meanwhile read the old entry
            if self._fanout is not None:
                await self._fanout(keys)

    def on_eviction(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` on every eviction: this process's, another's (``drop_local``) and
        a clear. It runs before the entries go and again once they are gone, so nothing
        built from them outlives them."""
        self._evicted.append(listener)

    def _tell_evicted(self) -> None:
        for listener in self._evicted:
            listener()

    def fan_out_evictions(self, publish: Callable[[list[str]], Awaitable[None]] | None) -> None:
        """Hand every eviction's keys to ``publish`` too (the scaled mode's eviction feed)."""
        self._fanout = publish

    @property
    def shared(self) -> bool:
        """Whether the entries live in Redis, shared by every hub process."""
        return self._serialize

    async def drop_local(self, full_keys: Sequence[str]) -> None:
        """Evict keys another process evicted (full keys, as ``evict`` publishes them): not
        published again, not counted as this process's evictions. In a shared cache the
        entries are gone already; what this process holds of them is its reads in flight
        and what its listeners built."""
        keys = [k for k in full_keys if isinstance(k, str) and k.startswith(self._prefix)]
        for full in keys:
            self._inflight.pop(full, None)  # a read in flight here must not store
        if keys:
            self._tell_evicted()
            if not self.shared:
                await self._delete(keys)
                self._tell_evicted()

    async def clear_local(self) -> None:
        """Forget everything this process holds (evictions may have been missed while the
        feed was down); a shared cache's entries are every process's, and stay."""
        self._inflight.clear()
        self._tell_evicted()
        if self.shared:
            return
        try:
            await self._backend.clear()
        except Exception as error:
            self._failed("clear", error)
        self._tell_evicted()

    async def evict_line(self, subscriber_no: str) -> None:
        """After a plan change: the customer's lines, the line by MSISDN, bills and balance."""
        owner = (await self.recall(LINE_OWNER, [subscriber_no])).get(subscriber_no)
        if not owner:
            return  # nothing of this line was cached in the index's lifetime
        customer_no, msisdn = owner
        accounts = (await self.recall(NUMBER_ACCOUNTS, [msisdn])).get(msisdn) or []
        await self.evict(
            [
                (SUBSCRIPTIONS, customer_no),
                (LINE_BY_MSISDN, msisdn),
                *((kind, a) for a in accounts for kind in (BALANCE, BILLS)),
            ]
        )

    async def evict_customer(
        self,
        customer_no: str,
        account_ids: Sequence[str] = (),
        party_ids: Sequence[str] = (),
    ) -> None:
        """Everything cached about one customer, for workflows that changed it."""
        lines = (await self.recall(SUBSCRIPTIONS, [customer_no])).get(customer_no) or ()
        await self.evict(
            [
                (PROFILE, customer_no),
                (SUBSCRIPTIONS, customer_no),
                *((LINE_BY_MSISDN, line.msisdn) for line in lines),
                *(
                    (kind, a)
                    for a in account_ids
                    for kind in (BILLING_ACCOUNT, BALANCE, BILLS, PAYMENTS)
                ),
                *((kind, p) for p in party_ids for kind in (TICKETS, INTERACTIONS)),
            ]
        )

    # --- the store ------------------------------------------------------------------------

    def _key(self, kind: Kind[Any], key: str) -> str:
        return f"{self._prefix}{kind.name}:{key}"

    async def _read(self, kind: Kind[V], keys: list[str]) -> list[V | None]:
        try:
            raw = await self._backend.multi_get([self._key(kind, k) for k in keys])
        except Exception as error:
            self._failed("read", error)
            return [None] * len(keys)
        if len(raw) != len(keys):  # aiocache disabled by AIOCACHE_DISABLE answers []
            return [None] * len(keys)
        if not self._serialize:
            return list(raw)
        values: list[V | None] = []
        for text in raw:
            try:
                values.append(None if text is None else kind.codec.loads(text))
            except (ValueError, KeyError, TypeError, ArithmeticError) as error:
                # An entry from other code (or a broken one): a miss, then overwritten.
                self._failed("decode", error)
                values.append(None)
        return values

    async def _write(self, kind: Kind[V], pairs: list[tuple[str, V]]) -> None:
        ttl = self.ttl(kind)
        if not pairs or ttl <= 0:
            return
        dump = kind.codec.dumps if self._serialize else (lambda value: value)
        try:
            await self._backend.multi_set(
                [(self._key(kind, key), dump(value)) for key, value in pairs], ttl=ttl
            )
        except Exception as error:
            self._failed("write", error)

    async def _delete(self, keys: list[str]) -> None:
        try:
            await asyncio.gather(*(self._backend.delete(key) for key in keys))
        except Exception as error:
            self._failed("delete", error)

    def _failed(self, operation: str, error: BaseException) -> None:
        self.stats.errors += 1
        metrics.CACHE_ERRORS.inc()
        # The error's type only: its message may quote a key.
        log.warning("cache %s failed: %s", operation, type(error).__name__)


# --- the wrappers -----------------------------------------------------------------------------


class _CachedBackend(Generic[B]):
    """The life cycle every cached wrapper passes through to the adapter it wraps."""

    def __init__(self, inner: B, cache: RecordCache) -> None:
        self.inner = inner
        self.name = inner.name
        self._cache = cache

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()


class CachedCustomerSystem(_CachedBackend[CustomerSystem]):
    """A CustomerSystem whose reads go through the cache; writes evict what they change."""

    async def get_customers(self, customer_nos: Sequence[str]) -> Mapping[str, CustomerProfile]:
        return await self._cache.many(PROFILE, customer_nos, self.inner.get_customers)

    async def find_customer_by_certificate(self, certificate_no: str) -> CustomerProfile:
        return await self.inner.find_customer_by_certificate(certificate_no)

    async def get_subscriptions(
        self, customer_nos: Sequence[str]
    ) -> Mapping[str, Sequence[Subscription]]:
        return await self._cache.many(SUBSCRIPTIONS, customer_nos, self._fetch_subscriptions)

    async def _fetch_subscriptions(self, customer_nos: list[str]) -> dict[str, tuple]:
        found = await self.inner.get_subscriptions(customer_nos)
        lines = {no: tuple(found.get(no, ())) for no in customer_nos}
        await self._remember_lines(line for group in lines.values() for line in group)
        return lines

    async def find_subscription_by_msisdn(self, msisdn: str) -> Subscription:
        async def fetch() -> Subscription:
            line = await self.inner.find_subscription_by_msisdn(msisdn)
            await self._remember_lines([line])
            return line

        return await self._cache.one(LINE_BY_MSISDN, msisdn, fetch)

    async def _remember_lines(self, lines: Iterable[Subscription]) -> None:
        await self._cache.remember(
            LINE_OWNER, {line.subscriber_no: [line.customer_no, line.msisdn] for line in lines}
        )

    async def search_customers(
        self,
        offset: int,
        limit: int,
        star_level: StarLevel | None = None,
        name_prefix: str | None = None,
    ) -> Page[CustomerProfile]:
        return await self.inner.search_customers(offset, limit, star_level, name_prefix)

    async def get_offerings(self, offering_ids: Sequence[str] = ()) -> Sequence[Offering]:
        key = ",".join(sorted(unique(offering_ids))) or "*"

        async def fetch() -> tuple[Offering, ...]:
            return tuple(await self.inner.get_offerings(offering_ids))

        return await self._cache.one(OFFERINGS, key, fetch)

    async def check_eligibility(self, subscriber_no: str, offering_id: str) -> tuple[bool, str]:
        return await self.inner.check_eligibility(subscriber_no, offering_id)

    async def change_offering(
        self, subscriber_no: str, offering_id: str, idempotency_key: str
    ) -> Order:
        try:
            order = await self.inner.change_offering(subscriber_no, offering_id, idempotency_key)
            await self._cache.remember(ORDER_LINE, {order.id: subscriber_no})
            return order
        finally:
            await self._cache.evict_line(subscriber_no)

    async def cancel_order(self, order_id: str, idempotency_key: str) -> Order:
        subscriber_no: str | None = None
        try:
            order = await self.inner.cancel_order(order_id, idempotency_key)
            subscriber_no = order.subscriber_no
            return order
        finally:
            if subscriber_no is None:
                subscriber_no = (await self._cache.recall(ORDER_LINE, [order_id])).get(order_id)
            if subscriber_no:
                await self._cache.evict_line(subscriber_no)

    async def get_order(self, order_id: str) -> Order:
        return await self.inner.get_order(order_id)


class CachedBillingSystem(_CachedBackend[BillingSystem]):
    """A BillingSystem whose reads go through the cache; adjustments evict the account."""

    async def find_accounts(
        self, *, certificate_nos: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[BillingAccount]:
        accounts = await self.inner.find_accounts(certificate_nos=certificate_nos, msisdns=msisdns)
        await self._remember_numbers(accounts)
        return accounts

    async def get_accounts(self, account_ids: Sequence[str]) -> Mapping[str, BillingAccount]:
        return await self._cache.many(BILLING_ACCOUNT, account_ids, self._fetch_accounts)

    async def _fetch_accounts(self, account_ids: list[str]) -> Mapping[str, BillingAccount]:
        accounts = await self.inner.get_accounts(account_ids)
        await self._remember_numbers(accounts.values())
        return accounts

    async def _remember_numbers(self, accounts: Iterable[BillingAccount]) -> None:
        by_number: dict[str, list[str]] = {}
        for account in accounts:
            for number in account.service_numbers:
                by_number.setdefault(number, []).append(account.id)
        await self._cache.remember(NUMBER_ACCOUNTS, by_number)

    async def get_balances(self, account_ids: Sequence[str]) -> Mapping[str, Balance]:
        return await self._cache.many(BALANCE, account_ids, self.inner.get_balances)

    async def list_bills(self, account_id: str, offset: int, limit: int) -> Page[Bill]:
        return await _windowed(self._cache, BILLS, self.inner.list_bills, account_id, offset, limit)

    async def list_payments(self, account_id: str, offset: int, limit: int) -> Page[Payment]:
        return await _windowed(
            self._cache, PAYMENTS, self.inner.list_payments, account_id, offset, limit
        )

    async def adjust_balance(
        self, account_id: str, amount: Money, reason: str, idempotency_key: str
    ) -> str:
        try:
            return await self.inner.adjust_balance(account_id, amount, reason, idempotency_key)
        finally:
            await self._cache.evict((kind, account_id) for kind in (BALANCE, BILLS, PAYMENTS))


async def _windowed(
    cache: RecordCache,
    kind: Kind[Page[V]],
    list_page: Callable[[str, int, int], Awaitable[Page[V]]],
    account_id: str,
    offset: int,
    limit: int,
) -> Page[V]:
    """A page sliced from the account's cached first window, or asked of the backend."""

    async def fetch() -> Page[V]:
        return await list_page(account_id, 0, LIST_WINDOW)

    window = await cache.one(kind, account_id, fetch)
    if offset + limit <= len(window.items) or len(window.items) >= window.total:
        return Page(window.total, window.items[offset : offset + limit])
    return await list_page(account_id, offset, limit)


class CachedCareSystem(_CachedBackend[CareSystem]):
    """A CareSystem whose reads go through the cache; ticket writes evict the party's tickets."""

    async def find_parties(
        self, *, id_card_numbers: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[Party]:
        return await self.inner.find_parties(id_card_numbers=id_card_numbers, msisdns=msisdns)

    async def get_tickets(self, party_ids: Sequence[str]) -> Mapping[str, Sequence[Ticket]]:
        return await self._cache.many(TICKETS, party_ids, self._fetch_tickets)

    async def _fetch_tickets(self, party_ids: list[str]) -> dict[str, tuple[Ticket, ...]]:
        found = await self.inner.get_tickets(party_ids)
        tickets = {party_id: tuple(found.get(party_id, ())) for party_id in party_ids}
        await self._cache.remember(
            TICKET_PARTY, {t.id: t.party_id for group in tickets.values() for t in group}
        )
        return tickets

    async def get_interactions(
        self, party_ids: Sequence[str]
    ) -> Mapping[str, Sequence[Interaction]]:
        async def fetch(keys: list[str]) -> dict[str, tuple[Interaction, ...]]:
            found = await self.inner.get_interactions(keys)
            return {party_id: tuple(found.get(party_id, ())) for party_id in keys}

        return await self._cache.many(INTERACTIONS, party_ids, fetch)

    async def create_ticket(
        self,
        party_id: str,
        *,
        ticket_type: str,
        name: str,
        description: str,
        severity: str,
        channel: str,
        idempotency_key: str,
    ) -> Ticket:
        try:
            return await self.inner.create_ticket(
                party_id,
                ticket_type=ticket_type,
                name=name,
                description=description,
                severity=severity,
                channel=channel,
                idempotency_key=idempotency_key,
            )
        finally:
            await self._cache.evict([(TICKETS, party_id)])

    async def send_message(self, msisdn: str, text: str, idempotency_key: str) -> str:
        return await self.inner.send_message(msisdn, text, idempotency_key)

    async def update_ticket(
        self,
        ticket_id: str,
        *,
        status: str | None = None,
        priority: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Ticket:
        party_id: str | None = None
        try:
            ticket = await self.inner.update_ticket(
                ticket_id,
                status=status,
                priority=priority,
                note=note,
                idempotency_key=idempotency_key,
            )
            party_id = ticket.party_id
            return ticket
        finally:
            if party_id is None:
                party_id = (await self._cache.recall(TICKET_PARTY, [ticket_id])).get(ticket_id)
            if party_id:
                await self._cache.evict([(TICKETS, party_id)])
