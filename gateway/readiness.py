"""What /readyz checks besides the legacy systems: the hub's own dependencies.

Each dependency is a named check with a time limit and a ``required`` flag (settings,
``[readiness.<name>]``): a required one down takes the replica out of rotation (503), an
optional one only degrades it (200 "degraded"). All checks run at once, each cut at its
timeout, so /readyz answers within the slowest limit whatever is hanging. Reports carry
states, error types and figures only: never a URL (it may hold a password) or a message.

The hub's dependencies:

- ``hub_database``: ``SELECT 1`` on the hub's engine.
- ``audit``: the access-log writer can commit (gateway/audit/writer.py ``health``): its task
  runs, no batch has been committing for longer than the timeout, and, unless a batch
  committed within the last timeout, a rolled-back write of the chain's head row succeeds
  (after a failed commit that is how readiness sees the database come back).
- ``workflows``: DBOS launched in this process and its system database answering ``SELECT 1``.
- ``cache``: Redis answers PING, when ``cache.backend = "redis"``.

**A hook for more** (the event broker, when one is configured): build a ``Dependency`` with
its check and pass it in ``extra`` to ``hub_dependencies`` (gateway/app.py), with a
``[readiness.<name>]`` table in ReadinessSettings for its required flag and timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.settings import DependencyReadiness, Settings

Check = Callable[[], Awaitable[dict[str, Any] | None]]


class NotReady(Exception):
    """A check's own verdict; the message is fixed text (it goes into /readyz)."""


@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    check: Check  # raises when down; may return figures for the report
    required: bool
    timeout_s: float

    @classmethod
    def of(cls, name: str, check: Check, settings: DependencyReadiness) -> Dependency:
        return cls(name, check, settings.required, settings.timeout_s)


async def run_check(dependency: Dependency) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any]
    try:
        async with asyncio.timeout(dependency.timeout_s):
            figures = await dependency.check()
    except TimeoutError:
        report = {"status": "down", "reason": f"no answer within {dependency.timeout_s:g} s"}
    except NotReady as verdict:
        report = {"status": "down", "reason": str(verdict)}
    except Exception as error:  # the type only: a driver's message may quote the URL
        report = {"status": "down", "reason": type(error).__name__}
    else:
        report = {"status": "up", **(figures or {})}
    report["required"] = dependency.required
    report["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return report


async def check_all(dependencies: Sequence[Dependency]) -> dict[str, dict[str, Any]]:
    reports = await asyncio.gather(*(run_check(d) for d in dependencies))
    return {d.name: r for d, r in zip(dependencies, reports, strict=True)}


def database_check(engine: AsyncEngine) -> Check:
    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def audit_check(audit: Any, timeout_s: float) -> Check:
    """``audit``: a gateway.audit.service.AuditLog (its writer and engine)."""
    from gateway.audit.store import audit_head

    async def check() -> dict[str, Any]:
        health = audit.writer.health()
        if not health.running:
            raise NotReady("the audit writer is not running")
        if health.committing_for_s is not None and health.committing_for_s > timeout_s:
            raise NotReady(f"a commit has been running for {health.committing_for_s:.1f} s")
        figures = {"pending": health.pending, "last_commit": _outcome(health.last_commit_ok)}
        fresh = health.since_success_s is not None and health.since_success_s < timeout_s
        if health.last_commit_ok and fresh:
            return figures  # the last batch committed just now: that is the proof
        # Take the head row's lock as a commit would, then roll back: nothing is written.
        async with audit.engine.connect() as conn:
            await conn.execute(
                update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq)
            )
            await conn.rollback()
        return figures

    return check


def _outcome(ok: bool | None) -> str:
    return "none yet" if ok is None else "committed" if ok else "failed"


class SystemDatabase:
    """An async engine of its own on DBOS's system database, for its readiness check only
    (DBOS's own engine is synchronous and internal)."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        else:
            parsed = parsed.set(drivername="postgresql+asyncpg")
        self.engine = create_async_engine(parsed, pool_size=1, max_overflow=0, pool_pre_ping=True)

    async def close(self) -> None:
        await self.engine.dispose()


def workflows_check(launched: Callable[[], bool], system_database: SystemDatabase) -> Check:
    async def check() -> None:
        if not launched():
            raise NotReady("the workflow engine is not launched")
        async with system_database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


class RedisPing:
    """One small client for the readiness PING (the cache's own client is aiocache's)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )

    async def check(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


@dataclass(slots=True)
class HubDependencies:
    """The checks, and what they hold open (closed at shutdown)."""

    dependencies: list[Dependency]
    closers: list[Callable[[], Awaitable[None]]]

    async def close(self) -> None:
        for close in self.closers:
            await close()


def hub_dependencies(
    settings: Settings,
    engine: AsyncEngine,
    *,
    audit: Any | None,
    workflows_launched: Callable[[], bool] | None,
    workflows_database_url: str | None,
    extra: Sequence[Dependency] = (),
) -> HubDependencies:
    """The hub's dependencies as configured: what is not configured is not checked."""
    readiness = settings.readiness
    found = [Dependency.of("hub_database", database_check(engine), readiness.hub_database)]
    closers: list[Callable[[], Awaitable[None]]] = []
    if audit is not None:
        found.append(
            Dependency.of("audit", audit_check(audit, readiness.audit.timeout_s), readiness.audit)
        )
    if workflows_launched is not None and workflows_database_url is not None:
        system_database = SystemDatabase(workflows_database_url)
        closers.append(system_database.close)
        found.append(
            Dependency.of(
                "workflows",
                workflows_check(workflows_launched, system_database),
                readiness.workflows,
            )
        )
    if settings.cache.enabled and settings.cache.backend == "redis":
        ping = RedisPing(settings.cache.redis_url, readiness.cache.timeout_s)
        closers.append(ping.close)
        found.append(Dependency.of("cache", ping.check, readiness.cache))
    found.extend(extra)
    return HubDependencies(found, closers)
