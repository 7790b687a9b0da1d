"""The hub's Prometheus instruments (prometheus-client), multiprocess-safe.

Every series of /metrics is defined here. Labels are backend names, cache kinds, workflow
step names, channels and bounded operation names only, never keys or anything else from a
request: metric labels are stored and shipped far and wide and must not carry personal data.

With several workers, ``switchboard serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the
workers start (``gateway/metrics.py``): each worker then writes its values to files there and
/metrics sums them, so whichever worker answers describes the whole replica. Gauges say how
they combine: live maxima for states (the worst worker's circuit), live sums for in-flight
calls.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# ``*_created`` samples double the series for a timestamp nobody graphs.
disable_created_metrics()

#: Seconds. Loopback backends answer in ~1 ms, a slow one within its timeout (2 s default).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Workflow steps call backends with retries and wait on databases: longer tail.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}

# --- backends (adapters/resilience.py, adapters/breaker.py) ---------------------------------

CIRCUIT_STATE = Gauge(
    "switchboard_backend_circuit_state",
    "Circuit breaker state per backend: 0 closed, 1 half-open, 2 open (the worst worker's).",
    ["backend"],
    multiprocess_mode="livemax",
)
CONSECUTIVE_FAILURES = Gauge(
    "switchboard_backend_consecutive_failures",
    "Consecutive failed attempts counted by the circuit breaker (the highest worker's).",
    ["backend"],
    multiprocess_mode="livemax",
)
IN_FLIGHT = Gauge(
    "switchboard_backend_in_flight",
    "Calls in flight to the backend (bulkhead slots in use, all workers).",
    ["backend"],
    multiprocess_mode="livesum",
)
CALLS = Counter(
    "switchboard_backend_calls", "Attempts sent to the backend, retries included.", ["backend"]
)
FAILURES = Counter(
    "switchboard_backend_failures",
    "Attempts that found the backend unavailable or timed out.",
    ["backend"],
)
REJECTED = Counter(
    "switchboard_backend_rejected",
    "Calls refused at once by an open circuit, without a network call.",
    ["backend"],
)
SLOT_TIMEOUTS = Counter(
    "switchboard_backend_slot_timeouts",
    "Calls that found no free bulkhead slot before their deadline.",
    ["backend"],
)
BACKEND_DURATION = Histogram(
    "switchboard_backend_call_duration_seconds",
    "One attempt of a backend call, from the bulkhead slot to the answer read (or the error).",
    ["backend", "operation"],
    buckets=LATENCY_BUCKETS,
)

# --- the read-through cache (adapters/cache.py) ---------------------------------------------

CACHE_ENABLED = Gauge(
    "switchboard_cache_enabled",
    "Whether the read-through cache is on.",
    multiprocess_mode="livemax",
)
CACHE_HITS = Counter("switchboard_cache_hits", "Keys served from the cache.", ["kind"])
CACHE_MISSES = Counter("switchboard_cache_misses", "Keys not in the cache.", ["kind"])
CACHE_SHARED = Counter(
    "switchboard_cache_shared", "Misses that waited for another caller's backend call.", ["kind"]
)
CACHE_EVICTIONS = Counter("switchboard_cache_evictions", "Keys evicted after writes.", ["kind"])
CACHE_ERRORS = Counter(
    "switchboard_cache_errors", "Cache operations that failed, served as misses."
)
ANSWER_CACHE = Counter(
    "switchboard_answer_cache",
    "Whole answers looked up (hit, miss) or offered (stored, not_reusable, too_large).",
    ["outcome"],
)

# --- operations, workflows, audit -----------------------------------------------------------

OPERATION_DURATION = Histogram(
    "switchboard_operation_duration_seconds",
    "A GraphQL operation over HTTP, from the request to the response (audit commit included).",
    ["operation", "channel"],
    buckets=LATENCY_BUCKETS,
)
WORKFLOW_STEP_DURATION = Histogram(
    "switchboard_workflow_step_duration_seconds",
    "One run of a workflow step (a replayed step is not run, nor counted).",
    ["step", "outcome"],
    buckets=STEP_BUCKETS,
)
AUDIT_COMMIT = Histogram(
    "switchboard_audit_commit_seconds",
    "From handing an access-log record to the writer to its group commit.",
    buckets=LATENCY_BUCKETS,
)
AUDIT_BATCHES = Counter(
    "switchboard_audit_batches_total",
    "Group commits of access-log records, by where they were committed: on the event loop "
    "(SQLite, the write lock free), on the writer's thread (SQLite, the lock taken) or through "
    "the database engine (PostgreSQL). Records per batch: the commit histogram's count "
    "divided by this.",
    ["committed"],
)


@dataclass(frozen=True, slots=True)
class BackendMeters:
    """One backend's children of the instruments above, resolved once (labels() costs)."""

    system: str
    circuit_state: Gauge
    consecutive_failures: Gauge
    in_flight: Gauge
    calls: Counter
    failures: Counter
    rejected: Counter
    slot_timeouts: Counter

    def duration(self, operation: str) -> Histogram:
        return BACKEND_DURATION.labels(self.system, operation)


def backend_meters(system: str) -> BackendMeters:
    meters = BackendMeters(
        system,
        CIRCUIT_STATE.labels(system),
        CONSECUTIVE_FAILURES.labels(system),
        IN_FLIGHT.labels(system),
        CALLS.labels(system),
        FAILURES.labels(system),
        REJECTED.labels(system),
        SLOT_TIMEOUTS.labels(system),
    )
    meters.circuit_state.set(0)  # the series exists from the start, closed
    meters.consecutive_failures.set(0)
    meters.in_flight.set(0)
    return meters


#: What an operation without a name, or with a name we will not label, is reported as.
ANONYMOUS = "anonymous"
OTHER = "other"
UNLABELLED = "unlabelled"
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
# A name with a run of digits may spell a phone or ID-card number the caller put there.
_DIGITS = re.compile(r"[0-9]{4}")


class OperationNames:
    """Operation names as metric labels and span attributes, with bounded cardinality.

    The name comes from the caller's document: the first ``max_names`` distinct names a
    process sees are kept, later new ones become ``other``; unnamed operations are
    ``anonymous``; names that are too long or hold a run of four digits (which could spell
    an MSISDN or an ID-card number) are ``unlabelled``.
    """

    def __init__(self, max_names: int) -> None:
        self.max_names = max_names
        self._kept: set[str] = set()
        self._lock = threading.Lock()

    def label(self, name: str | None) -> str:
        if not name:
            return ANONYMOUS
        if name in self._kept:
            return name
        if not _NAME.fullmatch(name) or _DIGITS.search(name):
            return UNLABELLED
        with self._lock:
            if len(self._kept) >= self.max_names:
                return OTHER
            self._kept.add(name)
        return name
