"""Breaker state per replica and worker, published in Redis and summarised (`/replicas`,
`switchboard status`).

A breaker is per process (adapters/breaker.py): each worker of each replica has its own
circuits. In the scaled mode every process writes, every ``scaled.heartbeat_s``, one entry
``<key_prefix>:replicas:<replica>:<worker>`` with a TTL of ``scaled.replica_ttl_s``: its
replica id, worker (its workflow executor id, else its pid), pid, the time, and per backend
the circuit's state, consecutive failures and since when it is in that state. A process that
stops deletes its entry; one that is killed drops out when the TTL runs out. The summary reads
every live entry: the replicas with their workers, and per backend how many processes see its
circuit closed, half-open or open.

Nothing here identifies a customer: replica ids, backend names, counts and times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from adapters.resilience import BackendGuard
from gateway.settings import ScaledSettings

log = logging.getLogger("switchboard.replicas")


@dataclass(frozen=True, slots=True)
class SummaryLimits:
    """What one summary reads at most (bounded time and memory whatever Redis holds):
    ``scaled.summary_max_entries`` and ``scaled.summary_max_entry_bytes``."""

    max_entries: int = 1000
    max_entry_bytes: int = 65_536

    @classmethod
    def of(cls, scaled: ScaledSettings) -> SummaryLimits:
        return cls(scaled.summary_max_entries, scaled.summary_max_entry_bytes)


def breaker_states(guards: Mapping[str, BackendGuard]) -> dict[str, dict[str, Any]]:
    """This process's breakers: per backend its state, consecutive failures and since when
    (the function /metrics or anyone else can read the same figures from)."""
    states: dict[str, dict[str, Any]] = {}
    for name, guard in sorted(guards.items()):
        snapshot = guard.breaker.snapshot()
        states[name] = {
            "state": snapshot.state.value,
            "consecutive_failures": snapshot.consecutive_failures,
            "since": snapshot.since.isoformat() if snapshot.since else None,
        }
    return states


def entry_key(prefix: str, replica: str, worker: str) -> str:
    return f"{prefix}:replicas:{replica}:{worker}"


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of live entries: replicas with their workers, and circuits per backend."""
    replicas: dict[str, list[dict[str, Any]]] = {}
    backends: dict[str, dict[str, int]] = {}
    for entry in sorted(entries, key=lambda e: (str(e["replica"]), str(e["worker"]))):
        replicas.setdefault(str(entry["replica"]), []).append(entry)
        for name, breaker in entry["breakers"].items():
            counts = backends.setdefault(name, {"closed": 0, "half_open": 0, "open": 0})
            state = breaker.get("state")
            if state in counts:
                counts[state] += 1
    return {
        "replicas": [{"replica": r, "workers": ws} for r, ws in replicas.items()],
        "backends": backends,
    }


def _decoded(raw: Any, max_bytes: int) -> dict[str, Any] | None:
    if not isinstance(raw, bytes | str) or len(raw) > max_bytes:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("breakers"), dict)
        or not all(isinstance(b, dict) for b in entry["breakers"].values())
        or "replica" not in entry
        or "worker" not in entry
    ):
        return None
    return entry


class ReplicaBoard:
    """This process's entry on the board, refreshed in the background; and the summary."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        replica_id: str,
        worker: Callable[[], str],
        guards: Callable[[], Mapping[str, BackendGuard]],
        heartbeat_s: float,
        ttl_s: float,
        timeout_s: float,
        limits: SummaryLimits = SummaryLimits(),
    ) -> None:
        self._redis = redis
        self._limits = limits
        self._prefix = prefix
        self.replica_id = replica_id
        self._worker = worker
        self._guards = guards
        self._heartbeat_s = heartbeat_s
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._key: str | None = None

    def entry(self) -> dict[str, Any]:
        return {
            "replica": self.replica_id,
            "worker": self._worker(),
            "pid": os.getpid(),
            "updated_at": datetime.now(UTC).isoformat(),
            "breakers": breaker_states(self._guards()),
        }

    async def publish(self) -> None:
        entry = self.entry()
        self._key = entry_key(self._prefix, self.replica_id, str(entry["worker"]))
        async with asyncio.timeout(self._timeout_s):
            await self._redis.set(self._key, json.dumps(entry), px=self._ttl_ms)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        failing = False
        while True:
            try:
                await self.publish()
                if failing:
                    log.info("replica board: publishing again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not failing:  # once per outage, the error's type only
                    log.warning("replica board: publish failed (%s)", type(error).__name__)
                failing = True
            await asyncio.sleep(self._heartbeat_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._key is not None:
            with contextlib.suppress(Exception):  # a stopped replica leaves; else the TTL
                async with asyncio.timeout(self._timeout_s):
                    await self._redis.delete(self._key)

    async def summary(self) -> dict[str, Any]:
        return await read_summary(self._redis, self._prefix, self._timeout_s * 4, self._limits)


async def read_summary(
    redis: Redis, prefix: str, timeout_s: float, limits: SummaryLimits = SummaryLimits()
) -> dict[str, Any]:
    """Every live entry under ``prefix``, summarised (raises on a Redis failure)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        keys: list[Any] = []
        async for key in redis.scan_iter(match=f"{prefix}:replicas:*", count=200):
            keys.append(key)
            if len(keys) >= limits.max_entries:
                break
        raws = await redis.mget(keys) if keys else []
    entries = [e for e in (_decoded(raw, limits.max_entry_bytes) for raw in raws) if e is not None]
    summary = summarise(entries)
    summary["read_ms"] = round((time.monotonic() - started) * 1000, 1)
    return summary
