"""Throttling of failed authentication: per client address and per presented key id.

Wrong API keys used to cost nothing but a 401 (200 wrong keys: 200 x 401), so a caller could
guess, or make the hub look keys up in its database, as fast as it liked. Two counts of
failed attempts (a key that is unknown, revoked or malformed) in the last
``auth.failure_window_s`` seconds:

- **per source address**: past ``auth.max_failures_per_source`` failures, every attempt from
  that address is answered 429 without checking the key (Retry-After: until the oldest of
  those failures is a window old);
- **per key id** (the public ``<id>`` of ``sb_<id>.<secret>``): past
  ``auth.max_failures_per_key_id`` failures naming it, from however many addresses, an
  address that has itself failed with that id in the window gets 429 for it without a check.
  An address that has not failed with it is still checked: the right key from another place
  keeps working, and a guesser spread over many addresses gets one try per address.

Requests without any key are not failures (nothing was guessed). Counters live in the
process, like the rate limiter (gateway/rate_limit.py): with N workers or replicas each
counts its own share. The source is the ASGI client address: uvicorn takes it from
X-Forwarded-For only when the peer is a trusted proxy (``FORWARDED_ALLOW_IPS``, by default
127.0.0.1), so callers elsewhere cannot choose it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from starlette.types import Scope

from gateway.settings import AuthSettings


class FailedAuthThrottle:
    """Failed attempts in the last ``failure_window_s`` seconds (a sliding window: no burst
    of twice the limit across a window boundary)."""

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        # The times of the latest failures, at most the limit's worth each (bounded memory).
        self._by_source: dict[str, deque[float]] = {}
        self._by_key_id: dict[str, deque[float]] = {}
        self._pairs: dict[tuple[str, str], float] = {}  # (key id, source) -> last failure

    def refused(self, source: str, key_id: str | None) -> int | None:
        """Seconds to wait if this attempt is refused unchecked, else None (check the key)."""
        now = self._clock()
        window = self._settings.failure_window_s
        until = _blocked_until(
            self._by_source.get(source), self._settings.max_failures_per_source, window, now
        )
        if until is None and key_id is not None:
            last = self._pairs.get((key_id, source))
            if last is not None and now - last < window:  # this address guessed this id
                until = _blocked_until(
                    self._by_key_id.get(key_id), self._settings.max_failures_per_key_id, window, now
                )
        return None if until is None else max(1, math.ceil(until - now))

    def failed(self, source: str, key_id: str | None) -> None:
        """Count one failed attempt (a key was presented and did not authenticate)."""
        now = self._clock()
        tracked = self._settings.failures_tracked
        _note(
            self._by_source,
            source,
            now,
            self._settings.max_failures_per_source,
            self._horizon,
            tracked,
        )
        if key_id is not None:
            _note(
                self._by_key_id,
                key_id,
                now,
                self._settings.max_failures_per_key_id,
                self._horizon,
                tracked,
            )
            self._pairs[(key_id, source)] = now
            if len(self._pairs) > tracked:
                horizon = self._horizon()
                self._pairs = {k: t for k, t in self._pairs.items() if t > horizon}

    def _horizon(self) -> float:
        return self._clock() - self._settings.failure_window_s


def _blocked_until(
    times: deque[float] | None, limit: int, window: float, now: float
) -> float | None:
    """When attempts are let through again, if ``limit`` failures fall in the last window:
    the oldest of them is a window old then. None if they do not."""
    if times is None or len(times) < limit:
        return None
    end = times[0] + window
    return end if end > now else None


def _note(
    counts: dict[str, deque[float]],
    key: str,
    now: float,
    limit: int,
    horizon: Callable[[], float],
    tracked: int,
) -> None:
    times = counts.get(key)
    if times is None:
        times = counts[key] = deque(maxlen=limit)
    times.append(now)
    if len(counts) > tracked:  # forget whoever has not failed within the window
        cutoff = horizon()
        for idle in [k for k, t in counts.items() if t[-1] <= cutoff]:
            del counts[idle]


def source_of(scope: Scope) -> str:
    """The client address of an ASGI scope ('unknown' when the server gives none)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
