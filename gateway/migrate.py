"""The hub's schema, migrated with alembic: upgrade to head, and the check the gateway makes.

Every table of the hub is in ``hub_metadata()``; the migration scripts are in
``gateway/migrations/`` (revision 0001 is the previous release's schema). One process at a time
migrates a database: PostgreSQL takes a transaction-level advisory lock (and the DDL is
transactional: all or nothing), SQLite the DDL lock file beside the database. The second of two
``switchboard migrate`` started at once waits, then finds the database at head and does
nothing. DBOS keeps its own tables (in its system database) and migrates them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.database import ddl_lock

SCRIPT_LOCATION = "gateway:migrations"
#: Any constant, the same in every release: the key of the PostgreSQL advisory lock.
ADVISORY_LOCK_KEY = 0x5357_4D49_4752  # "SWMIGR"


def hub_metadata() -> list[MetaData]:
    """The metadata of every hub table (what the head revision must create)."""
    from adapters import identity_store
    from gateway import auth, verification_store
    from gateway.audit import store as audit_store
    from marketing import (
        offer_store,
        recording,  # noqa: F401  (its event_decision table: events metadata)
    )
    from marketing import store as event_store
    from orchestration import store as request_store

    return [
        identity_store.metadata,
        auth.metadata,
        verification_store.metadata,
        request_store.metadata,
        audit_store.metadata,
        event_store.metadata,  # with recording's event_decision table on it
        offer_store.metadata,
    ]


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "gateway/migrations has no revision"
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


class DatabaseNotMigrated(Exception):
    """The hub database is not at this release's head revision (one line, what to do)."""

    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        if current is not None and current not in known_revisions():
            message = (
                f"hub database is at revision {current}, which this release does not know "
                f"(a newer release migrated it; this release needs {head})"
            )
        else:
            message = (
                f"hub database is at revision {current or 'none'}, this release needs {head}: "
                "run `switchboard migrate`"
            )
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Migrated:
    before: str | None
    after: str


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: no migration ever ran on it)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def require_head(engine: AsyncEngine) -> None:
    """Raise DatabaseNotMigrated unless the database is at this release's head."""
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise DatabaseNotMigrated(current, head)


async def upgrade(engine: AsyncEngine, *, lock_timeout_s: float = 120.0) -> Migrated:
    """Upgrade the database to head (idempotent; concurrent callers wait for each other)."""

    def run(connection: Connection) -> Migrated:
        before = _current(connection)
        if before != head_revision():
            command.upgrade(alembic_config(connection), "head")
        return Migrated(before, _current(connection) or "")

    async with ddl_lock(engine, lock_timeout_s), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Bounded wait for the other migrator; the lock ends with this transaction.
            await conn.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'"))
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        return await conn.run_sync(run)
