"""`switchboard migrate [--check]`, and the schema check the other verbs make first.

Only `migrate` (and the demo, and `serve` with ``database.migrate_on_start``) changes the hub
database's schema; `serve`, `keys create` and `audit ...` refuse a database that is not at
this release's head, with one line saying what to do (gateway/migrate.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from sqlalchemy.exc import DBAPIError

from gateway.database import LockTimeout, create_engine
from gateway.migrate import DatabaseNotMigrated, head_revision, require_head, upgrade
from gateway.settings import Settings, load_settings


class DatabaseUnreachable(Exception):
    """The hub database did not answer (one line: the error's type, never the URL)."""


async def migrate_database(settings: Settings) -> tuple[str | None, str]:
    """Upgrade the configured hub database to head: (revision before, revision after)."""
    engine = create_engine(settings.database_url)
    try:
        done = await upgrade(engine, lock_timeout_s=settings.database.migrate_lock_timeout_s)
    except (DBAPIError, OSError) as error:
        raise DatabaseUnreachable(f"hub database unreachable ({type(error).__name__})") from None
    finally:
        await engine.dispose()
    return done.before, done.after


async def check_database(settings: Settings) -> None:
    """Raise DatabaseNotMigrated (or DatabaseUnreachable) unless the database is at head."""
    engine = create_engine(settings.database_url)
    try:
        await require_head(engine)
    except (DBAPIError, OSError) as error:
        raise DatabaseUnreachable(f"hub database unreachable ({type(error).__name__})") from None
    finally:
        await engine.dispose()


def prepare_database(settings: Settings) -> None:
    """What `serve` does before its workers start: migrate (``database.migrate_on_start``),
    else check; once, in the parent, so N workers never race."""
    if settings.database.migrate_on_start:
        before, after = asyncio.run(migrate_database(settings))
        if before != after:
            print(f"hub database migrated: {before or 'none'} -> {after}", file=sys.stderr)
    else:
        asyncio.run(check_database(settings))


def _migrate(args: argparse.Namespace) -> int:
    overrides = {"database_url": args.database_url} if args.database_url else {}
    settings = load_settings(**overrides)
    if args.check:
        try:
            asyncio.run(check_database(settings))
        except DatabaseNotMigrated as error:
            print(f"switchboard migrate: {error}", file=sys.stderr)
            return 1
        print(f"hub database at head ({head_revision()})")
        return 0
    try:
        before, after = asyncio.run(migrate_database(settings))
    except LockTimeout as error:
        print(f"switchboard migrate: another migration holds the lock: {error}", file=sys.stderr)
        return 1
    if before == after:
        print(f"hub database already at head ({after})")
    else:
        print(f"hub database migrated: {before or 'none'} -> {after}")
    return 0


def add_migrate_command(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="upgrade the hub database's tables to this release (idempotent)",
        description="Upgrade the hub database (database_url) to this release's schema with "
        "alembic. Safe to run again, and from several processes at once (they wait for each "
        "other). Adopts a database the previous release created, keeping its rows.",
    )
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 (with one line) unless the database is at head",
    )
    migrate.add_argument("--database-url", help="the hub database (default: from the settings)")
    migrate.set_defaults(run=_migrate)
