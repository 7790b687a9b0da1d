"""How fresh a request's reads were: what the answer cache needs to know about a request.

An answer may be kept for reuse (gateway/answer_cache.py) only when every backend read the
request made was served by the record cache (adapters/cache.py), and then for no longer than
the shortest TTL among the kinds it read: a read that went to a backend uncached (a customer
search page, an eligibility check, a kind whose TTL is 0, a deep page of bills) is current
only for that request, and so is an answer built on it.

The adapters know nothing of answers: the request layer opens a ledger per request
(``open_read_ledger``, schema/context.py); the record cache notes the kinds it serves
(``note_cached``), and the backend guard notes every call made outside a cache fill
(``note_direct``). A cache fill runs as a task of its own and marks itself
(``filling_cache``), so the call it makes is the cache's, not the request's.
"""

from __future__ import annotations

import math
from contextvars import ContextVar


class ReadLedger:
    """One request's reads: the shortest TTL among the cached kinds, and whether any read
    went to a backend around the cache."""

    __slots__ = ("direct_calls", "min_ttl_s")

    def __init__(self) -> None:
        self.min_ttl_s = math.inf
        self.direct_calls = 0

    @property
    def reusable_for_s(self) -> float:
        """How long an answer built from these reads may be reused (0: not at all)."""
        return 0.0 if self.direct_calls else self.min_ttl_s


CURRENT_LEDGER: ContextVar[ReadLedger | None] = ContextVar("switchboard_read_ledger", default=None)
#: Set inside the record cache's fill tasks: the backend call there is the cache's.
_FILLING: ContextVar[bool] = ContextVar("switchboard_filling_cache", default=False)


def open_read_ledger() -> ReadLedger:
    """Give the calling task (and the tasks it starts from now on) a ledger of its own."""
    ledger = ReadLedger()
    CURRENT_LEDGER.set(ledger)
    return ledger


def note_cached(ttl_s: float) -> None:
    """A read served through the record cache under a kind with this TTL."""
    ledger = CURRENT_LEDGER.get()
    if ledger is not None and ttl_s < ledger.min_ttl_s:
        ledger.min_ttl_s = ttl_s


def note_direct() -> None:
    """A backend call outside a cache fill: the answer depends on a read nobody keeps."""
    if _FILLING.get():
        return
    ledger = CURRENT_LEDGER.get()
    if ledger is not None:
        ledger.direct_calls += 1


def filling_cache() -> None:
    """Mark the current task (a record cache's fill task) as filling the cache."""
    _FILLING.set(True)
