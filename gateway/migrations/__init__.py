"""Alembic's migration scripts for the hub's tables (env.py, versions/); the API that runs
them is gateway/migrate.py. A package, so the wheel carries the scripts."""
