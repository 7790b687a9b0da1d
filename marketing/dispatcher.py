"""Hands stored, unhandled events to the installed EventHandler, in batches, at least once.

Each dispatcher (one per hub process) claims a batch (``EventStore.claim``: a lease, SKIP
LOCKED on PostgreSQL), calls the handler, and marks the batch handled only after the handler
returned. A handler that raises gets the batch again after ``retry_after_s``; a process that
dies holding a claim loses it when the lease ends. Replicas and workers each run one and share
the table: in the normal case every event is handed to exactly one of them, once.

Until a handler is installed nothing is claimed: events stay stored and unhandled. The same
loop prunes events handled longer ago than the retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass

from marketing.events import EventHandler
from marketing.store import EventStore, utcnow

log = logging.getLogger("switchboard.events")


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    batch_size: int = 100
    poll_s: float = 0.2
    lease_s: float = 60.0
    retry_after_s: float = 5.0
    retention_s: float = 30 * 86400.0
    prune_interval_s: float = 3600.0


class Dispatcher:
    def __init__(self, store: EventStore, config: DispatchConfig, worker: str) -> None:
        self._store = store
        self._config = config
        self._worker = worker
        self._handler: EventHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        self._last_active = -1e9
        self.handed = 0

    def install(self, handler: EventHandler) -> None:
        self._handler = handler
        self.wake()

    def wake(self) -> None:
        """New events were stored: look now rather than at the next poll."""
        self._last_active = time.monotonic()
        self._wake.set()

    def busy_for(self, window_s: float) -> float:
        """Seconds until this process's intake and dispatch count as idle: ``window_s`` after
        the last event stored here (a ``wake``) or the last batch handed; 0 when idle."""
        return max(0.0, self._last_active + window_s - time.monotonic())

    async def run_once(self) -> int:
        """Claim one batch and hand it; the number of events handed (0: nothing to do)."""
        handler = self._handler
        if handler is None:
            return 0
        claim = await self._store.claim(self._worker, self._config.batch_size, self._config.lease_s)
        if not claim.events:
            return 0
        try:
            await handler.handle(claim.events)
        except Exception as error:
            # The kind only (the message may quote event data); the batch comes back later.
            log.error(
                "event handler failed on %d events: %s (handed again in %.0f s)",
                len(claim.events),
                type(error).__name__,
                self._config.retry_after_s,
            )
            await self._store.release(claim, self._config.retry_after_s)
            return 0
        kept = await self._store.mark_handled(claim)
        if kept < len(claim.events):
            log.warning("%d events' lease ended before they were handled", len(claim.events) - kept)
        self.handed += len(claim.events)
        self._last_active = time.monotonic()
        return len(claim.events)

    async def prune_if_due(self) -> int:
        now = time.monotonic()
        if now - self._last_prune < self._config.prune_interval_s:
            return 0
        self._last_prune = now
        pruned = await self._store.prune(utcnow() - dt.timedelta(seconds=self._config.retention_s))
        if pruned:
            log.info("pruned %d handled events", pruned)
        return pruned

    async def _run(self) -> None:
        while True:
            try:
                await self.prune_if_due()
                handed = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: try again at the next poll
                log.error("event dispatch failed: %s", type(error).__name__)
                handed = 0
            if handed < self._config.batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._config.poll_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="events-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
