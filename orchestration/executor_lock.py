"""An executor's liveness lock: held for as long as a process runs workflows under an id.

DBOS recovers a workflow only under the executor id that ran it, at that executor's launch. A
replica gone for good never launches again, so its pending workflows wait for ever unless
another replica takes them over (``switchboard workflows recover --executor <id>``). Taking
them over while the executor still runs would run each of them twice at once, so the hub
proves the executor is gone first: every running executor holds a lock that the operating
system or the database releases when the process dies, even by SIGKILL.

- **PostgreSQL** (the scaled mode): a session advisory lock on the DBOS system database,
  ``pg_try_advisory_lock`` on a 64-bit key derived from the executor id, held by one
  connection of the process. PostgreSQL drops it with the connection: at once when the
  process dies on a live host (the kernel closes its socket), after the TCP keepalive when the
  host itself is gone.
- **SQLite** (one machine): an exclusive ``flock`` on ``alive-<executor id>.lock`` in the
  replica's state dir, released by the kernel with the process.

The same lock keeps two processes from running under one id: a start finds it held, waits
``workflows.executor_lock_wait_s`` (a predecessor's connection may not be closed yet), then
refuses to start.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url


def advisory_key(executor_id: str) -> int:
    """A signed 64-bit advisory lock key for an executor id (stable across releases)."""
    digest = hashlib.sha256(b"switchboard-executor:" + executor_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ExecutorLock:
    """One held liveness lock (a PostgreSQL connection or a file descriptor)."""

    def __init__(self, executor_id: str, holder: Any, kind: str) -> None:
        self.executor_id = executor_id
        self._holder = holder
        self.kind = kind

    def release(self) -> None:
        if self._holder is None:
            return
        if self.kind == "postgres":
            self._holder.close()  # the advisory lock goes with the session
        else:
            os.close(self._holder)
        self._holder = None


def _is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def try_lock(executor_id: str, system_database_url: str, lock_dir: Path) -> ExecutorLock | None:
    """The executor's lock if nobody holds it, else None (the executor is alive)."""
    if _is_postgres(system_database_url):
        import psycopg

        dsn = make_url(system_database_url).set(drivername="postgresql")
        conn = psycopg.connect(
            dsn.render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=10,
            application_name=f"switchboard-executor-lock:{executor_id}"[:63],
        )
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (advisory_key(executor_id),)
            ).fetchone()
        except BaseException:
            conn.close()
            raise
        if row is None or not row[0]:
            conn.close()
            return None
        return ExecutorLock(executor_id, conn, "postgres")
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"alive-{executor_id}.lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return ExecutorLock(executor_id, fd, "file")


def lock_waiting(
    executor_id: str, system_database_url: str, lock_dir: Path, wait_s: float
) -> ExecutorLock:
    """The executor's lock, waiting up to ``wait_s`` for a predecessor to let it go."""
    deadline = time.monotonic() + wait_s
    while True:
        lock = try_lock(executor_id, system_database_url, lock_dir)
        if lock is not None:
            return lock
        if time.monotonic() >= deadline:
            raise ExecutorAlive(executor_id)
        time.sleep(0.5)


class ExecutorAlive(RuntimeError):
    """Another live process holds this executor id's lock."""

    def __init__(self, executor_id: str) -> None:
        super().__init__(
            f"workflow executor {executor_id!r} is running in another process (its liveness "
            "lock is held): give this process another workflows.executor_id"
        )
        self.executor_id = executor_id
