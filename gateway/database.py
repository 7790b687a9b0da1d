"""The hub's own database: one async SQLAlchemy engine for its state (SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
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
    for attempt in range(3):
        try:
            async with engine.begin() as conn:
                for metadata in schemas:
                    await conn.run_sync(metadata.create_all, checkfirst=True)
            return
        except DBAPIError as error:
            # SQLite looks for a table outside the write lock: of two workers starting on a
            # fresh database, the one that loses the race is told "already exists"; its next
            # pass finds the tables. (Without this, `serve --workers 2` died on first use.)
            if "already exists" not in str(error.orig) or attempt == 2:
                raise
