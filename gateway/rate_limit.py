"""Per-credential request limits from the channel profile (requests per minute).

A fixed one-minute window per credential, in process: with several workers or replicas each
enforces the limit on its own share, so the effective limit is a multiple of it until the
limiter moves to Redis with the scaled mode's shared cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, int]] = {}

    def allow(self, key: str, per_minute: int | None) -> tuple[bool, int]:
        """Whether one more request fits, and the seconds until the window resets."""
        if per_minute is None:
            return True, 0
        now = self._clock()
        window = int(now // 60)
        start, count = self._windows.get(key, (window, 0))
        if start != window:
            start, count = window, 0
        retry_after = max(1, int((window + 1) * 60 - now))
        if count >= per_minute:
            return False, retry_after
        self._windows[key] = (start, count + 1)
        if len(self._windows) > 100_000:  # forget idle credentials
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        return True, retry_after
