"""Rate limits and the failed-authentication throttle shared by every replica, in Redis.

With ``scaled.redis_url`` set, a channel's ``rate_limit_per_minute`` counts a credential's
requests in every replica and worker together (the ``limits`` library's moving window on
Redis: no burst of twice the limit across a minute boundary), and so do the failed
authentications per address and per key id (gateway/auth_throttle.py has the rules).
Without it, the in-process counters of gateway/rate_limit.py and gateway/auth_throttle.py
are used as before.

**Redis down.** Every Redis call is cut at ``scaled.operation_timeout_s``. A failure switches
the process to its in-process counters for ``scaled.redis_retry_s`` (one log line, the error's
type only), then Redis is tried again: a dead Redis costs at most one timeout per period, never
one per request. With ``rate_limit_on_redis_error = "local"`` (the default) each process then
enforces the limits on its own, which is what the hub did before the scaled mode: fail open
to a limit per process rather than refuse every caller because a cache server is down. With
``"closed"`` the requests a rate limit applies to are refused (429, Retry-After the retry
period) while Redis is unreachable; the throttle of failed keys always falls back to its
in-process count (refusing every key check would lock everyone out).

Keys hold credential ids, key ids (the public part of a key) and client addresses: they stay
in Redis, never in logs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from gateway.auth_throttle import FailedAuthThrottle
from gateway.rate_limit import RateLimiter
from gateway.settings import AuthSettings, ScaledSettings

log = logging.getLogger("switchboard.limits")


class RequestLimiter(Protocol):
    async def allow(self, key: str, per_minute: int | None) -> tuple[bool, int]:
        """Whether one more request fits, and (when it does not) the seconds to wait."""
        ...


class AuthThrottle(Protocol):
    async def refused(self, source: str, key_id: str | None) -> int | None: ...

    async def failed(self, source: str, key_id: str | None) -> None: ...


class LocalRequestLimiter:
    """The in-process fixed window (gateway/rate_limit.py) behind the async interface."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self._limiter = limiter or RateLimiter()

    async def allow(self, key: str, per_minute: int | None) -> tuple[bool, int]:
        return self._limiter.allow(key, per_minute)


class LocalAuthThrottle:
    """The in-process throttle (gateway/auth_throttle.py) behind the async interface."""

    def __init__(self, throttle: FailedAuthThrottle) -> None:
        self._throttle = throttle

    async def refused(self, source: str, key_id: str | None) -> int | None:
        return self._throttle.refused(source, key_id)

    async def failed(self, source: str, key_id: str | None) -> None:
        self._throttle.failed(source, key_id)


class RedisFallback:
    """Use Redis until it fails, then the in-process counters for ``retry_s``."""

    def __init__(
        self, what: str, retry_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._what = what
        self._retry_s = retry_s
        self._clock = clock
        self._until = 0.0

    def usable(self) -> bool:
        return self._clock() >= self._until

    def failed(self, error: BaseException) -> None:
        # The error's type only: a Redis error message can quote a key.
        log.warning(
            "%s: Redis unavailable (%s); counting in process for %.1fs",
            self._what,
            type(error).__name__,
            self._retry_s,
        )
        self._until = self._clock() + self._retry_s

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self._retry_s))


def limits_storage(settings: ScaledSettings) -> RedisStorage:
    """The ``limits`` storage on the scaled mode's Redis (redis-py's asyncio client)."""
    assert settings.redis_url is not None
    return RedisStorage(
        "async+" + settings.redis_url,
        wrap_exceptions=True,
        implementation="redispy",
        key_prefix=f"{settings.key_prefix}:limits",
        socket_timeout=settings.operation_timeout_s,
        socket_connect_timeout=settings.operation_timeout_s,
    )


def _seconds_until(reset_time: float) -> int:
    return max(1, math.ceil(reset_time - time.time()))


class SharedRequestLimiter:
    """Requests per minute per credential, counted in Redis by every replica."""

    def __init__(self, storage: RedisStorage, settings: ScaledSettings) -> None:
        self._window = MovingWindowRateLimiter(storage)
        self._timeout_s = settings.operation_timeout_s
        self._closed = settings.rate_limit_on_redis_error == "closed"
        self._fallback = RedisFallback("rate limits", settings.redis_retry_s)
        self._local = RateLimiter()

    async def allow(self, key: str, per_minute: int | None) -> tuple[bool, int]:
        if per_minute is None:
            return True, 0
        if self._fallback.usable():
            item = RateLimitItemPerMinute(per_minute)
            try:
                async with asyncio.timeout(self._timeout_s):
                    if await self._window.hit(item, "rate", key):
                        return True, 0
                    stats = await self._window.get_window_stats(item, "rate", key)
                return False, _seconds_until(stats.reset_time)
            except Exception as error:  # StorageError, timeouts, connection errors
                self._fallback.failed(error)
        if self._closed:
            return False, self._fallback.retry_after
        return self._local.allow(key, per_minute)


class SharedAuthThrottle:
    """Failed authentications per address and per key id, counted in Redis (the rules of
    gateway/auth_throttle.py; the window is ``auth.failure_window_s`` rounded up to whole
    seconds, the storage's unit)."""

    def __init__(self, storage: RedisStorage, settings: ScaledSettings, auth: AuthSettings) -> None:
        self._window = MovingWindowRateLimiter(storage)
        self._timeout_s = settings.operation_timeout_s
        self._fallback = RedisFallback("auth throttle", settings.redis_retry_s)
        self._local = FailedAuthThrottle(auth)
        seconds = max(1, math.ceil(auth.failure_window_s))
        self._by_source: RateLimitItem = RateLimitItemPerSecond(
            auth.max_failures_per_source, seconds
        )
        self._by_key_id: RateLimitItem = RateLimitItemPerSecond(
            auth.max_failures_per_key_id, seconds
        )
        # "This address failed with this id within the window": one hit fills it.
        self._pair: RateLimitItem = RateLimitItemPerSecond(1, seconds)

    async def refused(self, source: str, key_id: str | None) -> int | None:
        if self._fallback.usable():
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._refused(source, key_id)
            except Exception as error:
                self._fallback.failed(error)
        return self._local.refused(source, key_id)

    async def _refused(self, source: str, key_id: str | None) -> int | None:
        window = self._window
        if not await window.test(self._by_source, "auth-source", source):
            stats = await window.get_window_stats(self._by_source, "auth-source", source)
            return _seconds_until(stats.reset_time)
        if key_id is None or await window.test(self._pair, "auth-pair", key_id, source):
            return None  # this address has not guessed this id lately: check the key
        if not await window.test(self._by_key_id, "auth-key", key_id):
            stats = await window.get_window_stats(self._by_key_id, "auth-key", key_id)
            return _seconds_until(stats.reset_time)
        return None

    async def failed(self, source: str, key_id: str | None) -> None:
        if self._fallback.usable():
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._window.hit(self._by_source, "auth-source", source)
                    if key_id is not None:
                        await self._window.hit(self._by_key_id, "auth-key", key_id)
                        await self._window.hit(self._pair, "auth-pair", key_id, source)
                return
            except Exception as error:
                self._fallback.failed(error)
        self._local.failed(source, key_id)
