"""Wires the scaled mode from settings: shared limits, the eviction feed, the replica board.

Without ``scaled.redis_url`` every piece is the in-process one and nothing here touches the
network. With it: one redis-py client for the feed and the board, one ``limits`` storage for
the rate limits and the failed-authentication throttle (gateway/shared_limits.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from adapters.cache import RecordCache
from adapters.cache_fanout import EvictionFeed, MessageLimits
from adapters.resilience import BackendGuard
from gateway.auth_throttle import FailedAuthThrottle
from gateway.replica_board import ReplicaBoard, SummaryLimits, breaker_states, summarise
from gateway.settings import Settings
from gateway.shared_limits import (
    AuthThrottle,
    LocalAuthThrottle,
    LocalRequestLimiter,
    RequestLimiter,
    SharedAuthThrottle,
    SharedRequestLimiter,
    limits_storage,
)


def redis_client(url: str, timeout_s: float) -> Redis:
    # Every call bounded; pub/sub connections checked so that a silent outage is noticed.
    return Redis.from_url(
        url,
        socket_timeout=None,  # pub/sub waits on its socket; calls are cut by asyncio.timeout
        socket_connect_timeout=timeout_s,
        health_check_interval=10,
    )


@dataclass
class Scaled:
    """What the gateway uses of the scaled mode (in-process stand-ins when it is off)."""

    limiter: RequestLimiter
    throttle: AuthThrottle
    replica_id: str
    redis: Redis | None = None
    feed: EvictionFeed | None = None
    board: ReplicaBoard | None = None

    async def start(self) -> None:
        if self.feed is not None:
            await self.feed.start(wait_s=2.0)
        if self.board is not None:
            # Listed at once, not a heartbeat later; a failure here the heartbeat logs.
            with contextlib.suppress(Exception):
                await self.board.publish()
            self.board.start()

    async def close(self) -> None:
        if self.board is not None:
            await self.board.close()
        if self.feed is not None:
            await self.feed.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def summary(
        self, worker: str, guards: Mapping[str, BackendGuard]
    ) -> tuple[dict[str, Any], int]:
        """The replica summary, and its HTTP status (503 when Redis cannot be read)."""
        if self.board is None:
            # Not scaled: this process is the whole picture.
            entry = {
                "replica": self.replica_id,
                "worker": worker,
                "pid": os.getpid(),
                "breakers": breaker_states(guards),
            }
            return {"shared": False, **summarise([entry])}, 200
        try:
            return {"shared": True, **await self.board.summary()}, 200
        except Exception as error:
            return {"shared": True, "error": f"redis unavailable: {type(error).__name__}"}, 503


def build_scaled(
    settings: Settings,
    cache: RecordCache | None,
    worker: Callable[[], str],
    guards: Callable[[], Mapping[str, BackendGuard]],
) -> Scaled:
    scaled = settings.scaled
    replica_id = scaled.replica_id or settings.workflows.executor_id
    if scaled.redis_url is None:
        return Scaled(
            limiter=LocalRequestLimiter(),
            throttle=LocalAuthThrottle(FailedAuthThrottle(settings.auth)),
            replica_id=replica_id,
        )
    storage = limits_storage(scaled)
    redis = redis_client(scaled.redis_url, scaled.operation_timeout_s)
    feed = None
    answers = settings.cache.answers
    if cache is not None and (settings.cache.backend == "memory" or answers.enabled):
        # Per-process memory caches need the feed; a Redis cache is shared already, but the
        # answers each process keeps over it must hear of every other process's evictions.
        feed = EvictionFeed(
            redis,
            f"{scaled.key_prefix}:cache-evictions",
            cache,
            timeout_s=scaled.operation_timeout_s,
            reconnect_max_s=scaled.reconnect_max_s,
            limits=MessageLimits(scaled.eviction_max_keys, scaled.eviction_max_message_bytes),
        )
    board = ReplicaBoard(
        redis,
        prefix=scaled.key_prefix,
        replica_id=replica_id,
        worker=worker,
        guards=guards,
        heartbeat_s=scaled.heartbeat_s,
        ttl_s=scaled.replica_ttl_s,
        timeout_s=scaled.operation_timeout_s,
        limits=SummaryLimits.of(scaled),
    )
    return Scaled(
        limiter=SharedRequestLimiter(storage, scaled),
        throttle=SharedAuthThrottle(storage, scaled, settings.auth),
        replica_id=replica_id,
        redis=redis,
        feed=feed,
        board=board,
    )
