"""The hub's own database: one async SQLAlchemy engine for its state (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
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


async def create_tables(engine: AsyncEngine, *schemas: MetaData) -> None:
    """Create missing tables (idempotent; several workers may race here at start-up)."""
    async with _creating_alone(engine), engine.begin() as conn:
        for metadata in schemas:
            await conn.run_sync(metadata.create_all, checkfirst=True)


@contextlib.asynccontextmanager
async def _creating_alone(engine: AsyncEngine) -> AsyncIterator[None]:
    """One process at a time creates the tables of a SQLite database file.

    SQLite looks for a table outside any lock, and the first connections to a fresh file
    switch it to WAL: of two workers starting on a fresh database, the slower was told "table
    already exists" or "database is locked" and took the server down (`serve --workers 2`).
    The lock is a file beside the database (never the database itself: closing a descriptor
    of it would drop SQLite's own locks); PostgreSQL needs none.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.ddl.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
