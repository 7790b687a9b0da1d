"""Throttling of failed authentication: per client address and per presented key id.

Wrong API keys used to cost nothing but a 401 (200 wrong keys: 200 x 401), so a caller could
guess, or make the hub look keys up in its database, as fast as it liked. Two counters of
failed attempts (a key that is unknown, revoked or malformed) per fixed window of
``auth.failure_window_s``:

- **per source address**: past ``auth.max_failures_per_source`` failures, every attempt from
  that address is answered 429 (Retry-After: the end of the window) without checking the key;
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
from collections.abc import Callable

from gateway.settings import AuthSettings

MAX_TRACKED = 100_000  # entries per map before stale windows are forgotten


class FailedAuthThrottle:
    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._by_source: dict[str, tuple[int, int]] = {}  # source -> (window, failures)
        self._by_key_id: dict[str, tuple[int, int]] = {}  # key id -> (window, failures)
        self._pairs: dict[tuple[str, str], int] = {}  # (key id, source) -> window it failed in

    def _window(self) -> tuple[int, int]:
        """The current window's number, and the whole seconds until it ends."""
        now = self._clock()
        size = self._settings.failure_window_s
        window = int(now // size)
        return window, max(1, math.ceil((window + 1) * size - now))

    def refused(self, source: str, key_id: str | None) -> int | None:
        """Seconds to wait if this attempt is refused unchecked, else None (check the key)."""
        window, retry_after = self._window()
        seen = self._by_source.get(source)
        if seen and seen[0] == window and seen[1] >= self._settings.max_failures_per_source:
            return retry_after
        if key_id is not None:
            named = self._by_key_id.get(key_id)
            if (
                named
                and named[0] == window
                and named[1] >= self._settings.max_failures_per_key_id
                and self._pairs.get((key_id, source)) == window
            ):
                return retry_after
        return None

    def failed(self, source: str, key_id: str | None) -> None:
        """Count one failed attempt (a key was presented and did not authenticate)."""
        window, _ = self._window()
        _count(self._by_source, source, window)
        if key_id is not None:
            _count(self._by_key_id, key_id, window)
            self._pairs[(key_id, source)] = window
            if len(self._pairs) > MAX_TRACKED:
                self._pairs = {k: w for k, w in self._pairs.items() if w == window}


def _count(counts: dict[str, tuple[int, int]], key: str, window: int) -> None:
    start, failures = counts.get(key, (window, 0))
    counts[key] = (window, failures + 1) if start == window else (window, 1)
    if len(counts) > MAX_TRACKED:  # forget addresses and ids idle since an earlier window
        for stale in [k for k, v in counts.items() if v[0] != window]:
            del counts[stale]


def source_of(scope: dict) -> str:
    """The client address of an ASGI scope ('unknown' when the server gives none)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
