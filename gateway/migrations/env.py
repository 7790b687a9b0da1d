"""Alembic's environment for the hub's database.

``switchboard migrate`` (gateway/migrate.py) hands in a connection it already holds, inside
its transaction and under its lock: the migrations run there. Run by hand (``alembic`` with
``-x url=...`` from the repository, docs/operations.md, "Migrating"), this opens the hub's
async engine itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from gateway.migrate import hub_metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=hub_metadata(),
        # SQLite alters a table by copying it: later revisions' op.batch_alter_table works
        # on both databases.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_own_engine(url: str) -> None:
    from gateway.database import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    raise SystemExit("the hub's migrations run online only: give -x url=<database url>")
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        from gateway.settings import load_settings

        url = load_settings().database_url
    asyncio.run(_run_on_own_engine(url))
