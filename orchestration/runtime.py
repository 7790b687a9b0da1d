"""What workflow steps reach: the backends, the request store, the event bus, the timings.

DBOS registers workflows and steps as module-level functions and calls them back (also when it
recovers a workflow after a crash), so they cannot be handed their dependencies per call. The
engine installs one ``Runtime`` here at launch and removes it at shutdown; steps read it with
``current()``. It is the only process-wide state of the package, set in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from orchestration.store import RequestStore

#: Evicts a customer's cached records: (customer_no, account_ids, party_ids).
Evict = Callable[[str, Sequence[str], Sequence[str]], Awaitable[None]]


async def _no_eviction(customer_no: str, accounts: Sequence[str], parties: Sequence[str]) -> None:
    return None


class EventBus:
    """Wakes this process's subscriptions when a request moves.

    Only a hint: subscriptions read the events from the history table (shared by every
    replica) and also look there on a short interval, so events written by another replica
    reach them too.
    """

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def waiter(self) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.add(event)
        return event

    def drop(self, event: asyncio.Event) -> None:
        self._waiters.discard(event)

    def publish(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for event in list(self._waiters):
            loop.call_soon_threadsafe(event.set)


@dataclass(frozen=True, slots=True)
class Timings:
    """Waits of the workflows, in seconds (tests shorten them)."""

    #: Replaces every category's SLA when set (tests use seconds).
    complaint_sla_s: float | None = None
    feedback_wait_s: float = 7 * 24 * 3600.0
    handoff_wait_s: float = 14 * 24 * 3600.0
    #: Attempts of a legacy call that fails with a retryable error, same idempotency key.
    call_attempts: int = 3
    call_backoff_s: float = 0.5


@dataclass(frozen=True, slots=True)
class Runtime:
    customer_system: CustomerSystem
    billing: BillingSystem
    care: CareSystem
    store: RequestStore
    timings: Timings = field(default_factory=Timings)
    bus: EventBus = field(default_factory=EventBus)
    evict: Evict = _no_eviction


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("the workflow engine is not running (no Runtime installed)")
    return _current
