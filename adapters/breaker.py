"""Per-backend circuit breaker and bulkhead: fail fast while a system is down, cap its load.

Circuit breaker policy: **N consecutive failures open the circuit** (not a failure ratio in a
window). Consecutive counting needs no clock or window bookkeeping, reacts within N calls of an
outage whatever the traffic, and a single success in between (the system answered) proves it
is serving. Only the kinds of error that say the system is not serving count as failures:
``Unavailable`` and ``TimedOut``. Business errors (``NotFound``, ``BusinessRejected``) and
answers the adapter cannot read (``BadResponse``) prove the system answered and reset the
count. Retries count one failure per attempt.

    closed --N consecutive failures--> open --reset_s elapsed, next call--> half_open
    half_open: exactly one call (the probe) goes through, the others fail fast;
               probe succeeds -> closed, probe fails -> open again (a new cool-down).

While open, a call fails at once with ``CircuitOpen`` (an ``Unavailable``, code
``BACKEND_UNAVAILABLE``) without touching the network.

The bulkhead caps the calls in flight to one backend (an ``asyncio.Semaphore``). Waiting for a
slot is part of the call's time budget: a caller that would wait past its deadline gets
``NoFreeSlot`` (a ``TimedOut``) instead of queueing for ever behind a slow system.

Both are plain single-threaded asyncio objects: no locks, state changes happen between awaits.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Gauge

from adapters.errors import TimedOut, Unavailable

log = logging.getLogger("switchboard.breaker")


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(Unavailable):
    """The breaker refused the call: the system has been failing and calls are suspended."""

    # Retrying at once cannot succeed: the breaker decides when to try the system again.
    retryable = False

    def __init__(self, system: str) -> None:
        super().__init__(system, "is failing; calls are suspended (circuit open)")


class NoFreeSlot(TimedOut):
    """Every call slot of the backend stayed busy until the caller's deadline."""

    # The wait used the whole time budget: there is nothing left to retry with.
    retryable = False

    def __init__(
        self, system: str, message: str = "had no free call slot within the timeout"
    ) -> None:
        super().__init__(system, message)


def is_failure(error: BaseException) -> bool:
    """Whether an error says the system is not serving (what opens the circuit)."""
    return isinstance(error, Unavailable | TimedOut) and not isinstance(
        error, CircuitOpen | NoFreeSlot
    )


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """The breaker as /readyz and /metrics report it."""

    state: CircuitState
    consecutive_failures: int
    #: When the circuit last opened (wall clock, UTC); None while it has never opened.
    opened_at: datetime | None
    #: When the circuit entered its current state (the breaker's creation for a first state).
    since: datetime | None = None


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one backend (see the module docstring)."""

    def __init__(
        self,
        system: str,
        *,
        failure_threshold: int = 5,
        reset_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_s > 0")
        self.system = system
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_mono = 0.0
        self._opened_at: datetime | None = None
        self._since = datetime.now(UTC)
        self._probe_in_flight = False
        #: Called after the state or the failure count changed (the guard's gauges).
        self.listener: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.listener is not None:
            self.listener()

    @property
    def state(self) -> CircuitState:
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(self._state, self._failures, self._opened_at, self._since)

    def admit(self) -> bool:
        """Let a call through or raise ``CircuitOpen``; True when the call is the probe.

        Every admitted call must end in exactly one of ``succeeded``, ``failed`` or
        ``abandoned`` with the value returned here.
        """
        if self._state is CircuitState.CLOSED:
            return False
        if self._state is CircuitState.OPEN:
            if self._clock() - self._opened_mono < self.reset_s:
                raise CircuitOpen(self.system)
            self._state = CircuitState.HALF_OPEN
            self._since = datetime.now(UTC)
            self._changed()
        if self._probe_in_flight:
            raise CircuitOpen(self.system)
        self._probe_in_flight = True
        return True

    def succeeded(self, probe: bool) -> None:
        """The system answered (a result, or a business error)."""
        if probe:
            self._probe_in_flight = False
            self._state = CircuitState.CLOSED
            self._since = datetime.now(UTC)
            self._failures = 0
            self._changed()
            log.info("%s circuit closed: the probe call succeeded", self.system)
        elif self._state is CircuitState.CLOSED and self._failures:
            self._failures = 0
            self._changed()
        # A call admitted before the circuit opened does not close it: only the probe does.

    def failed(self, probe: bool) -> None:
        """The system did not serve the call (unavailable or timed out)."""
        if probe:
            self._probe_in_flight = False
            self._open()
        elif self._state is CircuitState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
            else:
                self._changed()

    def abandoned(self, probe: bool) -> None:
        """The call ended without a verdict on the system (cancelled, or no free slot)."""
        if probe:
            # Free the probe's place so that the next call probes instead.
            self._probe_in_flight = False

    def _open(self) -> None:
        was = self._state
        self._state = CircuitState.OPEN
        self._opened_mono = self._clock()
        self._opened_at = self._since = datetime.now(UTC)
        self._opened_at = datetime.now(UTC)
        self._changed()
        # The system's name and counts only: nothing of the calls themselves.
        if was is CircuitState.HALF_OPEN:
            log.warning("%s circuit open again: the probe call failed", self.system)
        else:
            log.warning(
                "%s circuit open after %d consecutive failures; calls suspended for %.1fs",
                self.system,
                self._failures,
                self.reset_s,
            )


class Bulkhead:
    """At most ``max_concurrency`` calls in flight to one backend; waiting counts as time."""

    def __init__(self, system: str, max_concurrency: int, *, gauge: Gauge | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.system = system
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0
        #: The in-flight gauge of /metrics (summed over the workers), if any.
        self._gauge = gauge

    async def acquire(self, deadline: float) -> None:
        """Take one slot, to be given back with ``release``; ``NoFreeSlot`` if none frees up
        before ``deadline`` (on the event loop's clock, ``loop.time()``).

        A pair of calls rather than an async context manager: contextlib's generator-based
        one cost more than the slot itself, on every backend call."""
        if self._slots.locked():
            try:
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
            except TimeoutError:
                raise NoFreeSlot(self.system) from None
        else:
            # A free slot is taken without suspending: no timer on the fast path.
            await self._slots.acquire()
        self.in_flight += 1
        if self._gauge is not None:
            self._gauge.inc()

    def release(self) -> None:
        self.in_flight -= 1
        if self._gauge is not None:
            self._gauge.dec()
        self._slots.release()
