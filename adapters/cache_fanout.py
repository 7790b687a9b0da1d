"""Cache evictions that reach every hub process: a Redis pub/sub channel.

The memory cache (adapters/cache.py) is per process. With several workers or replicas, a
write made in one process (a declared write, a workflow step) evicted only there, and the
others served the old record until its TTL. In the scaled mode every process publishes the
keys it evicts on ``<key_prefix>:cache-evictions`` and subscribes to it: each eviction is
applied to every process's memory cache, and a read of an evicted key in flight anywhere does
not store its (older) answer.

- **Reconnects by itself**: the subscription is one task that, on any error, waits (doubling
  up to ``reconnect_max_s``) and subscribes again. Evictions published while a process was
  not subscribed are lost to it, so a process that re-subscribes **clears its whole memory
  cache** first: a burst of misses, never a stale record kept.
- A publish that fails (Redis down) is logged by error type and counted; the other processes
  then serve the old record for at most its TTL, as they did before the feed existed.
- Messages are JSON ``{"origin": <process>, "keys": [...]}``; a process skips its own. A
  message that does not decode, holds more than ``scaled.eviction_max_keys`` keys or is
  longer than ``scaled.eviction_max_message_bytes``, is dropped (counted, logged by type):
  anyone able to publish on the channel can at most empty caches. A process publishes its
  evictions in as many messages as those limits need, so every other process accepts them.

Keys hold customer numbers and MSISDNs, as the cache's keys do in Redis: they go on the
channel, never into a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from adapters.cache import RecordCache

log = logging.getLogger("switchboard.cache")


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """The largest eviction message, published or accepted (the same on every process)."""

    max_keys: int = 10_000
    max_bytes: int = 1_048_576


class EvictionFeed:
    """Publishes this process's evictions and applies everyone else's."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        cache: RecordCache,
        *,
        timeout_s: float,
        reconnect_max_s: float,
        limits: MessageLimits = MessageLimits(),
    ) -> None:
        self._redis = redis
        self._limits = limits
        self._channel = channel
        self._cache = cache
        self._timeout_s = timeout_s
        self._reconnect_max_s = reconnect_max_s
        self._origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.applied = 0
        self.dropped = 0
        self.publish_errors = 0
        self.resubscribes = 0

    async def start(self, wait_s: float) -> None:
        """Subscribe (in the background) and wait up to ``wait_s`` for it: evictions made by
        others right after this process starts serving must reach it."""
        self._cache.fan_out_evictions(self.publish)
        self._task = asyncio.get_running_loop().create_task(self._listen())
        try:
            await asyncio.wait_for(self.subscribed.wait(), wait_s)
        except TimeoutError:
            log.warning("cache eviction feed not subscribed yet; it keeps trying")

    async def close(self) -> None:
        self._cache.fan_out_evictions(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def publish(self, keys: list[str]) -> None:
        for message in encode_messages(self._origin, keys, self._limits):
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._redis.publish(self._channel, message)
            except Exception as error:
                self.publish_errors += 1
                log.warning("cache eviction publish failed: %s", type(error).__name__)

    async def _listen(self) -> None:
        backoff = 0.1
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                if not first:
                    # Evictions may have gone by while this process was not listening.
                    self.resubscribes += 1
                    await self._cache.clear_local()
                    log.info("cache eviction feed subscribed again; memory cache cleared")
                first = False
                backoff = 0.1
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._apply(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.subscribed.clear()
                log.warning(
                    "cache eviction feed lost (%s); subscribing again in %.1fs",
                    type(error).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._reconnect_max_s)
            finally:
                with contextlib.suppress(Exception):  # the connection may be gone already
                    await pubsub.aclose()

    async def _apply(self, data: Any) -> None:
        decoded = decode_message(data, self._limits)
        if decoded is None:
            self.dropped += 1
            log.warning("cache eviction message dropped: not a list of keys")
            return
        origin, keys = decoded
        if origin == self._origin or not keys:
            return  # this process evicted them itself
        await self._cache.drop_local(keys)
        self.applied += 1


def encode_messages(origin: str, keys: list[str], limits: MessageLimits) -> list[str]:
    """The messages carrying ``keys``, each within ``limits``. A key that cannot fit in a
    message on its own is left out (logged by its length only): no receiver would take it,
    and the other processes serve its old record for at most its TTL, as without the feed."""
    messages: list[str] = []
    batch: list[str] = []
    empty = len(json.dumps({"origin": origin, "keys": []}))
    size = empty
    for key in keys:
        encoded = len(json.dumps(key)) + 2  # ASCII (escaped), and ", " between keys
        if empty + encoded > limits.max_bytes:
            log.warning("cache eviction key of %d characters is too long to publish", len(key))
            continue
        if batch and (len(batch) == limits.max_keys or size + encoded > limits.max_bytes):
            messages.append(json.dumps({"origin": origin, "keys": batch}))
            batch, size = [], empty
        batch.append(key)
        size += encoded
    if batch:
        messages.append(json.dumps({"origin": origin, "keys": batch}))
    return messages


def decode_message(data: Any, limits: MessageLimits) -> tuple[object, list[str]] | None:
    """(origin, keys) of a message, None for one that does not decode or is over the limits."""
    if isinstance(data, bytes | bytearray):
        if len(data) > limits.max_bytes:
            return None
        try:
            data = data.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(data, str) or len(data) > limits.max_bytes:
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    keys = message.get("keys")
    if not isinstance(keys, list) or len(keys) > limits.max_keys:
        return None
    if not all(isinstance(k, str) for k in keys):
        return None
    return message.get("origin"), keys
