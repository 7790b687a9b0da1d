"""How the hub calls a backend: one time budget, a breaker, a bulkhead, and retries for reads.

Every call, read or write, gets a deadline (the endpoint's timeout) and passes the backend's
guard: the request's fair share (at most ``max_concurrency_per_request`` of one request's calls
in flight, ``adapters/request_share.py``), the circuit breaker (fail fast while the system is
down, probe it back) and the bulkhead (at most ``max_concurrency`` calls in flight; waiting for
a slot spends the same budget). Only time spent in the backend counts against it: an attempt
that times out after the hub's own queueing left it less than ``breaker_min_budget_share`` of
the timeout is not the backend's failure.
Reads are retried, and only for errors that may pass (unavailable, timed out), with jittered
exponential backoff; attempts, backoff sleeps and slot waits all fit inside the one deadline,
so a slow or dead backend costs the caller at most its timeout. Writes are never retried here:
they carry idempotency keys and are repeated, if at all, by the durable workflow that owns them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Histogram
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from adapters.breaker import Bulkhead, CircuitBreaker, NoFreeSlot, is_failure
from adapters.errors import AdapterError, BadResponse, Throttled, TimedOut, Unavailable
from adapters.parsing import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEMS, ReplyLimits
from adapters.read_ledger import note_direct
from adapters.request_share import NoRequestSlot, current_share
from adapters.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AiohttpTransport,
    BackendPool,
    ResponseTooLarge,
)
from telemetry import tracing
from telemetry.metrics import CIRCUIT_VALUES, BackendMeters, backend_meters

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(slots=True)
class CallStats:
    """Counters of one backend since start (for /metrics)."""

    #: Attempts that went to the backend (each retry counts).
    attempts: int = 0
    #: Attempts that ended unavailable or timed out.
    failures: int = 0
    #: Calls refused at once by the open circuit.
    rejected: int = 0
    #: Calls that found no free slot before their deadline.
    slot_timeouts: int = 0
    #: Calls that waited for their own request's slots until their deadline (not the backend's
    #: fault: the request asked for more than its share).
    request_slot_timeouts: int = 0
    #: Attempts that timed out after queueing in the hub had left them too little of the
    #: budget; not counted against the backend's breaker.
    queued_timeouts: int = 0


class BackendGuard:
    """The breaker, bulkhead and counters of one backend.

    One per backend, shared by every call to it and read by /readyz and /metrics. The wiring
    (``gateway/backends.py``) builds it and hands it over in the ``Endpoint``; an adapter built
    without one (tests, scripts) gets its own from the endpoint's settings.
    """

    def __init__(
        self,
        system: str,
        *,
        failure_threshold: int = 5,
        reset_s: float = 5.0,
        max_concurrency: int = 50,
        max_concurrency_per_request: int = 10,
        min_budget_share: float = 0.5,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if max_concurrency_per_request < 1 or not 0 <= min_budget_share <= 1:
            raise ValueError(
                "max_concurrency_per_request must be >= 1 and min_budget_share in [0, 1]"
            )
        self.system = system
        self.breaker = breaker or CircuitBreaker(
            system, failure_threshold=failure_threshold, reset_s=reset_s
        )
        #: The backend's Prometheus series (telemetry/metrics.py), kept in step with ``stats``.
        self.meters: BackendMeters = backend_meters(system)
        self.breaker.listener = self._breaker_changed
        self._breaker_changed()
        self.bulkhead = Bulkhead(system, max_concurrency, gauge=self.meters.in_flight)
        self._durations: dict[str, Histogram] = {}
        # A share above the bulkhead would be no share at all.
        self.max_concurrency_per_request = min(max_concurrency_per_request, max_concurrency)
        #: An attempt that reaches the backend with less than this share of its call's budget
        #: and then times out spent most of it queueing in the hub: not the backend's failure.
        self.min_budget_share = min_budget_share
        self.stats = CallStats()

    @classmethod
    def for_endpoint(cls, endpoint: Endpoint) -> BackendGuard:
        return cls(
            endpoint.system,
            failure_threshold=endpoint.breaker_failure_threshold,
            reset_s=endpoint.breaker_reset_s,
            max_concurrency=endpoint.max_concurrency,
            max_concurrency_per_request=endpoint.max_concurrency_per_request,
            min_budget_share=endpoint.breaker_min_budget_share,
        )

    def _breaker_changed(self) -> None:
        snapshot = self.breaker.snapshot()
        self.meters.circuit_state.set(CIRCUIT_VALUES[snapshot.state.value])
        self.meters.consecutive_failures.set(snapshot.consecutive_failures)

    def _duration(self, operation: str) -> Histogram:
        found = self._durations.get(operation)
        if found is None:
            # Operation names are the adapters' own constants: a bounded set per backend.
            found = self._durations[operation] = self.meters.duration(operation)
        return found

    async def attempt(
        self,
        operation: str,
        number: int,
        deadline: float,
        budget_s: float,
        call: Callable[P, Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """One attempt (``number``, from 1) of a call: the request's share, the breaker, a
        bulkhead slot, then the call, all by ``deadline``; ``budget_s`` is the whole call's
        time budget. ``operation`` names the call in metrics and spans (a constant of the
        adapter: never a key)."""
        tracer = tracing.tracer()
        if tracer is None:  # tracing off: no span objects at all
            return await self._shared(operation, deadline, budget_s, call, *args, **kwargs)
        with tracer.start_as_current_span(
            f"{self.system} {operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "switchboard.system": self.system,
                "switchboard.operation": operation,
                "switchboard.attempt": number,
            },
            record_exception=False,  # an error's message may quote the backend's answer
            set_status_on_exception=False,
        ) as span:
            try:
                result = await self._shared(operation, deadline, budget_s, call, *args, **kwargs)
            except AdapterError as error:
                span.set_attribute("switchboard.outcome", error.code)
                span.set_status(Status(StatusCode.ERROR, error.code))
                raise
            except BaseException:
                span.set_attribute("switchboard.outcome", "CANCELLED")
                raise
            span.set_attribute("switchboard.outcome", "OK")
            return result

    async def _shared(
        self,
        operation: str,
        deadline: float,
        budget_s: float,
        call: Callable[P, Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        note_direct()  # unless a record cache's fill makes it (adapters/read_ledger.py)
        share = current_share()
        if share is None:  # outside a request: a workflow step, a script
            return await self._attempt(operation, deadline, budget_s, call, *args, **kwargs)
        try:
            slots = await share.acquire(self.system, self.max_concurrency_per_request, deadline)
        except NoRequestSlot:
            # Raised before the breaker saw the call: nothing to settle.
            self.stats.request_slot_timeouts += 1
            raise
        try:
            return await self._attempt(operation, deadline, budget_s, call, *args, **kwargs)
        finally:
            slots.release()

    async def _attempt(
        self,
        operation: str,
        deadline: float,
        budget_s: float,
        call: Callable[P, Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        try:
            probe = self.breaker.admit()
        except AdapterError:
            self.stats.rejected += 1
            self.meters.rejected.inc()
            raise
        loop = asyncio.get_running_loop()
        budget_left = float("inf")  # until the call starts: a slot timeout is not the backend's
        try:
            await self.bulkhead.acquire(deadline)
            try:
                self.stats.attempts += 1
                self.meters.calls.inc()
                budget_left = deadline - loop.time()
                started = time.perf_counter()
                try:
                    async with asyncio.timeout_at(deadline):
                        result = await call(*args, **kwargs)
                except TimeoutError:
                    # Our own deadline, not the transport's: the budget ran out mid-call.
                    raise TimedOut(self.system, "did not answer within the timeout") from None
                finally:
                    self._duration(operation).observe(time.perf_counter() - started)
            finally:
                self.bulkhead.release()
        except TimedOut as error:
            if budget_left < self.min_budget_share * budget_s:
                # The hub's queueing (slot waits, earlier attempts) ate the budget: the
                # backend had too little of it to be blamed for the timeout.
                self.stats.queued_timeouts += 1
                self.breaker.abandoned(probe)
            else:
                self._settle(probe, error)
            raise
        except AdapterError as error:
            self._settle(probe, error)
            raise
        except BaseException:
            # Cancelled by the caller: says nothing about the backend.
            self.breaker.abandoned(probe)
            raise
        self.breaker.succeeded(probe)
        return result

    async def probe(self, ping: Callable[[], Awaitable[None]], timeout_s: float) -> None:
        """A readiness probe that respects the breaker, outside the bulkhead.

        An open circuit answers ``CircuitOpen`` without touching the network. Once the
        cool-down is over, the ping is the half-open probe itself: a hub taken out of rotation
        by its readiness check gets no traffic that could close the circuit, so the check has
        to. While the circuit is closed the ping only reports: a cheap ping that passes must
        not reset the count of real calls that keep failing.
        """
        deadline = asyncio.get_running_loop().time() + timeout_s
        probe = self.breaker.admit()
        try:
            async with asyncio.timeout_at(deadline):
                await ping()
        except TimeoutError:
            if probe:
                self.breaker.failed(probe)
            raise TimedOut(self.system, "did not answer within the timeout") from None
        except AdapterError as error:
            if probe:
                self._settle(probe, error, count=False)
            raise
        except BaseException:
            self.breaker.abandoned(probe)
            raise
        if probe:
            self.breaker.succeeded(probe)

    def _settle(self, probe: bool, error: AdapterError, *, count: bool = True) -> None:
        if is_failure(error):
            if count:
                self.stats.failures += 1
                self.meters.failures.inc()
            self.breaker.failed(probe)
        elif isinstance(error, NoFreeSlot):
            # The call never reached the backend.
            if count:
                self.stats.slot_timeouts += 1
                self.meters.slot_timeouts.inc()
            self.breaker.abandoned(probe)
        else:
            # Not found, refused, unreadable: the system answered.
            self.breaker.succeeded(probe)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a backend lives and how patiently to call it."""

    system: str
    base_url: str
    timeout_s: float = 2.0
    max_connections: int = 50
    retry_attempts: int = 3
    retry_backoff_s: float = 0.05
    #: Consecutive failed attempts (unavailable, timed out) that open the circuit.
    breaker_failure_threshold: int = 5
    #: Cool-down of an open circuit before one probe call may try the system again.
    breaker_reset_s: float = 5.0
    #: Bulkhead: calls in flight at once; more wait for a slot within their timeout.
    max_concurrency: int = 50
    #: A reply body (decompressed) longer than this is dropped with its connection.
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: JSON arrays/objects or XML elements nested deeper than this are refused.
    max_response_depth: int = DEFAULT_MAX_DEPTH
    #: JSON values or XML elements and attributes in one reply (or one list read) at most.
    max_response_items: int = DEFAULT_MAX_ITEMS
    #: Fair share: one request's calls in flight at once; its others wait for its own slots.
    max_concurrency_per_request: int = 10
    #: A timed-out attempt counts against the breaker only if it reached the backend with at
    #: least this share of the timeout left.
    breaker_min_budget_share: float = 0.5
    #: A list read whole, page after page (``all_pages``): all its calls together at most this.
    list_read_timeout_s: float = 8.0
    #: A SOAP reply body longer than this (and within the item limit, so needing no census)
    #: is parsed and checked in a worker thread, so that the event loop serves other
    #: requests meanwhile (lxml parses without holding the GIL).
    parse_in_thread_above_bytes: int = 256 * 1024
    #: The backend's shared guard; None builds one from the fields above.
    guard: BackendGuard | None = field(default=None, compare=False, repr=False)

    @property
    def reply_limits(self) -> ReplyLimits:
        """What ``adapters.parsing.read_json`` / ``read_xml`` accept from this backend."""
        return ReplyLimits(max_depth=self.max_response_depth, max_items=self.max_response_items)


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, AdapterError) and error.retryable


class CallPolicy:
    """Runs calls to one backend: reads with retries, writes once, all through its guard.

    A read's first attempt goes straight to the guard; tenacity takes over only once an
    attempt has failed in a way that may pass. Running every call through tenacity cost about
    a tenth of the gateway's CPU under load (its per-attempt hook wrapping), for retries that
    almost never happen.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.guard = endpoint.guard or BackendGuard.for_endpoint(endpoint)
        self._timeout_s = endpoint.timeout_s
        self._attempts = endpoint.retry_attempts
        self._wait = wait_random_exponential(multiplier=endpoint.retry_backoff_s, max=1.0)

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeout_s

    async def read(
        self, operation: str, call: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """``call(*args, **kwargs)`` with retries; ``operation`` names it in metrics and
        spans (the adapter's constant for the call, e.g. ``QueryCustomer``: never a key)."""
        deadline = self._deadline()
        try:
            return await self.guard.attempt(
                operation, 1, deadline, self._timeout_s, call, *args, **kwargs
            )
        except AdapterError as error:
            if not error.retryable or self._attempts < 2:
                raise
            first_failure = error
        return await self._retry(operation, first_failure, deadline, call, *args, **kwargs)

    async def _retry(
        self,
        operation: str,
        first_failure: AdapterError,
        deadline: float,
        call: Callable[P, Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """The remaining attempts of a read, with jittered backoff, inside the same deadline."""
        loop = asyncio.get_running_loop()
        retrying = AsyncRetrying(
            # stop_before_delay counts the coming backoff sleep: no retry that would start
            # after the budget is spent. Each attempt is also cut at the deadline itself.
            stop=stop_after_attempt(self._attempts - 1)
            | stop_before_delay(max(0.0, deadline - loop.time())),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        # The backoff before the second attempt, as tenacity would have slept it.
        state = RetryCallState(retrying, None, (), {})
        pause = self._wait(state)
        if loop.time() + pause >= deadline:
            raise first_failure
        await asyncio.sleep(pause)
        number = 1

        async def again() -> R:
            nonlocal number
            number += 1
            return await self.guard.attempt(
                operation, number, deadline, self._timeout_s, call, *args, **kwargs
            )

        return await retrying(again)

    async def write(
        self, operation: str, call: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        # Once, never retried: a timed-out write may have happened; its workflow repeats it
        # with the same idempotency key.
        try:
            return await self.guard.attempt(
                operation, 1, self._deadline(), self._timeout_s, call, *args, **kwargs
            )
        except TimedOut as timed_out:
            # Said to the caller: the change may have been made, and a repeat is safe.
            raise TimedOut(
                timed_out.system,
                f"{timed_out.message}; the change may have been made: repeat it with the "
                "same idempotency key to learn its outcome",
                backend_code=timed_out.backend_code,
            ) from None


def make_http_client(endpoint: Endpoint) -> httpx.AsyncClient:
    """A pooled client for one backend; the timeout covers connect, write, read and pool wait.

    The httpx API over aiohttp's pool (``adapters/transport.py``): httpx's own pool costs
    over ten times the CPU per request.
    """
    return httpx.AsyncClient(
        base_url=endpoint.base_url,
        timeout=httpx.Timeout(endpoint.timeout_s),
        transport=AiohttpTransport(endpoint.max_connections, endpoint.max_response_bytes),
        headers={"User-Agent": "switchboard-hub"},
    )


def make_backend_pool(endpoint: Endpoint) -> BackendPool:
    """The declared engines' pool for one backend: aiohttp called straight, with the same
    timeout, connection limit, reply cap and default headers as ``make_http_client``."""
    return BackendPool(
        endpoint.base_url,
        endpoint.timeout_s,
        endpoint.max_connections,
        endpoint.max_response_bytes,
        headers={
            "User-Agent": "switchboard-hub",
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
        },
    )


def transport_error(system: str, error: httpx.HTTPError) -> AdapterError:
    """Translate an httpx failure into the taxonomy (the URL may hold keys: never echo it)."""
    if isinstance(error, httpx.TimeoutException):
        return TimedOut(system, "did not answer within the timeout")
    if isinstance(error, ResponseTooLarge):
        return BadResponse(
            system, f"answered with a body over the {error.limit}-byte limit (max_response_bytes)"
        )
    if isinstance(error, httpx.TransportError):
        return Unavailable(system, "could not be reached")
    return BadResponse(system, "answered with an unusable HTTP response")


def status_error(system: str, status: int) -> AdapterError | None:
    """HTTP statuses that mean the system is not serving right now: its server-side failures
    and 429, its own "too many calls"."""
    if status == 429:
        return Throttled(system, "is throttling calls (HTTP 429)", backend_code="429")
    if status in (502, 503, 504):
        return Unavailable(system, f"is unavailable (HTTP {status})", backend_code=str(status))
    if status >= 500:
        return Unavailable(system, f"failed internally (HTTP {status})", backend_code=str(status))
    return None
