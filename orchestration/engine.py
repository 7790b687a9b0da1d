"""DBOS Transact inside the gateway process: configuration, launch and shutdown.

- System database: a SQLite file beside the hub's own SQLite database by default; with the hub
  on PostgreSQL, the same database (DBOS keeps its tables in the ``dbos`` schema) unless
  ``workflows.database_url`` names another.
- ``application_version`` is pinned in the settings: recovery and queues only pick up
  workflows of the running version, so a release that changes a workflow's steps must bump it
  and say what happens to the workflows in flight (docs/workflows.md).
- ``executor_id`` comes from the settings, one per process and stable across restarts: a
  replica restarted under its own id recovers its own pending workflows at launch.
- Workflow inputs, outputs, step outputs and messages are stored as portable JSON (DBOS's
  ``portable_json`` serializer), never pickles, so code can change underneath them.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dbos import DBOS, DBOSConfig
from dbos._serialization import DBOSPortableJSON
from sqlalchemy.engine import make_url

from orchestration import runtime as runtime_module
from orchestration.executor_lock import ExecutorLock, lock_waiting
from orchestration.runtime import Runtime

log = logging.getLogger("switchboard.workflows")

APP_NAME = "switchboard"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    system_database_url: str
    application_version: str
    executor_id: str
    #: uvicorn workers of this replica: with more than one, each claims a worker slot.
    workers: int = 1
    #: Where worker slots are locked (the replica's local state dir).
    lock_dir: Path = Path(".switchboard")
    #: How long a start waits for this executor id's liveness lock (orchestration/executor_lock).
    executor_lock_wait_s: float = 30.0


def claim_worker_slot(executor_id: str, lock_dir: Path, workers: int) -> tuple[str, int | None]:
    """The executor id of this process, and the lock that holds its slot.

    One worker keeps the configured id. Several workers of one replica read the same settings,
    so each takes the lowest free slot (an exclusive lock on a file, released by the kernel when
    the process dies, even by SIGKILL) and runs as ``<id>-w<slot>``: a worker that uvicorn
    restarts takes the slot its predecessor freed and recovers that slot's workflows. Slots
    past ``workers`` are only taken while a dying worker still holds its own.
    """
    if workers <= 1:
        return executor_id, None
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(workers * 2):
        fd = os.open(lock_dir / f"executor-{executor_id}-{slot}.lock", os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return f"{executor_id}-w{slot}", fd
    raise RuntimeError(f"no free workflow executor slot for {executor_id} in {lock_dir}")


def system_database_url(hub_database_url: str, configured: str | None) -> str:
    """The DBOS system database for a hub database URL (SQLAlchemy URLs, sync drivers)."""
    if configured:
        return configured
    url = make_url(hub_database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if not database or database == ":memory:":
            raise ValueError("workflows need a file database: set workflows.database_url")
        return f"sqlite:///{Path(database).with_name('workflows.sqlite')}"
    # PostgreSQL: the hub's own database; DBOS picks its driver (psycopg) itself.
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class WorkflowEngine:
    """Starts DBOS with the workflows registered by the orchestration modules."""

    def __init__(self, config: EngineConfig, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self._launched = False
        self._slot_lock: int | None = None
        self._alive: ExecutorLock | None = None
        self.executor_id = config.executor_id

    @property
    def launched(self) -> bool:
        """DBOS was launched by this process and not yet shut down (for /readyz)."""
        return self._launched

    def launch(self) -> None:
        # Importing the workflow modules registers their workflows and steps with DBOS.
        from orchestration import complaint, handoff, plan_change  # noqa: F401

        url = self.config.system_database_url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.executor_id, self._slot_lock = claim_worker_slot(
            self.config.executor_id, self.config.lock_dir, self.config.workers
        )
        try:
            # Held while this process runs: `workflows recover` takes it to prove us gone.
            self._alive = lock_waiting(
                self.executor_id, url, self.config.lock_dir, self.config.executor_lock_wait_s
            )
        except BaseException:
            self._release_slot()
            raise
        self.runtime.bus.bind(asyncio.get_running_loop())
        runtime_module.install(self.runtime)
        config: DBOSConfig = {
            "name": APP_NAME,
            "system_database_url": url,
            "application_version": self.config.application_version,
            "executor_id": self.executor_id,
            "serializer": DBOSPortableJSON,
            "log_level": "WARNING",
            "notification_listener_polling_interval_sec": 0.2,
        }
        DBOS(config=config)
        # Called on the gateway's event loop: DBOS runs recovered async workflows on it.
        DBOS.launch()
        self._launched = True
        log.info(
            "workflow engine up: version=%s executor=%s",
            self.config.application_version,
            self.executor_id,
        )

    def shutdown(self) -> None:
        if self._launched:
            DBOS.destroy(workflow_completion_timeout_sec=0)
            self._launched = False
        runtime_module.install(None)
        if self._alive is not None:
            self._alive.release()
            self._alive = None
        self._release_slot()

    def _release_slot(self) -> None:
        if self._slot_lock is not None:
            os.close(self._slot_lock)  # frees the slot for this worker's successor
            self._slot_lock = None
