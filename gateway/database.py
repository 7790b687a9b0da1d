"""The hub's own database: one async SQLAlchemy engine for its state (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 15})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers run beside the writer; NORMAL is durable across a process kill.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    return engine


class LockTimeout(TimeoutError):
    """Another process held the DDL lock longer than allowed."""


@contextlib.asynccontextmanager
async def ddl_lock(engine: AsyncEngine, timeout_s: float = 120.0) -> AsyncIterator[None]:
    """One process at a time changes the tables of a SQLite database file (migrations).

    SQLite looks for a table outside any lock, and the first connections to a fresh file
    switch it to WAL: of two workers starting on a fresh database, the slower was told "table
    already exists" or "database is locked" and took the server down (`serve --workers 2`).
    The lock is a file beside the database (never the database itself: closing a descriptor
    of it would drop SQLite's own locks). PostgreSQL needs none here: gateway/migrate.py takes
    an advisory lock in the migrating transaction.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{database}.ddl.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:  # polled, so the wait is bounded (flock itself has no timeout)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(
                        f"{database}.ddl.lock held for over {timeout_s:g} s"
                    ) from None
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock
