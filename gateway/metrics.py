"""/metrics: the Prometheus exposition of telemetry/metrics.py, for the whole replica.

One worker: the process's own registry. Several workers (``switchboard serve --workers N``):
the parent gives every worker one ``PROMETHEUS_MULTIPROC_DIR`` in the replica's state dir,
emptied at start (``prepare_multiprocess_dir``), each worker writes its values to its own
files there, and whichever worker answers /metrics sums them all (prometheus-client's
multiprocess mode). A worker that exits removes its live gauges (``worker_exited``); one
killed outright is noticed at the next scrape (its pid is gone) and removed the same way, so
a dead worker's circuit state or in-flight count does not linger. Its counters and
histograms stay counted: they happened.

Labels are backend names, cache kinds, steps, channels and bounded operation names only:
nothing here identifies a customer.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    values,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def multiprocess_dir() -> Path | None:
    """The shared directory, if this process writes its values there.

    prometheus-client picks its value store when first imported: the environment variable
    alone (set after that import) does not make a process write to the directory.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory or values.ValueClass is values.MutexValue:
        return None
    return Path(directory)


def prepare_multiprocess_dir(state_dir: Path, port: int) -> Path:
    """An empty directory for this replica's workers (per port: replicas sharing a state
    dir do not mix), exported for the workers to inherit. Called by the parent only."""
    directory = (state_dir / f"metrics-{port}").resolve()
    shutil.rmtree(directory, ignore_errors=True)  # the previous run's files would add up
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def worker_exited(pid: int | None = None) -> None:
    """Remove a worker's live gauges (this process's by default)."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid or os.getpid(), str(directory))


def _reap_dead_workers(directory: Path) -> None:
    for name in os.listdir(directory):
        found = _LIVE_GAUGE_FILE.fullmatch(name)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:  # alive, someone else's
            pass


def render() -> bytes:
    """The exposition text: this process's series, or every worker's summed."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY)
    _reap_dead_workers(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(directory))
    return generate_latest(registry)
