"""/metrics in the Prometheus text format (0.0.4), written by hand: no client library needed.

Labels are backend names and cache kinds only, never keys or anything from a request: metric
labels are stored and shipped far and wide, and must not carry personal data. Figures are per
process (each worker of ``workers > 1`` reports its own).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from adapters.breaker import CircuitState
from adapters.cache import RECORD_KINDS, RecordCache
from adapters.resilience import BackendGuard

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

CIRCUIT_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return lines


def _number(value: float) -> str:
    # Counters stay exact integers (a "g" format would round them to six digits).
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{{{name}="{escaped}"}}'


def render(guards: Mapping[str, BackendGuard], cache: RecordCache | None) -> str:
    backends = sorted(guards.items())
    by_backend = [(_label("backend", name), guard) for name, guard in backends]
    lines: list[str] = []
    lines += _family(
        "switchboard_backend_circuit_state",
        "gauge",
        "Circuit breaker state per backend: 0 closed, 1 half-open, 2 open.",
        ((lb, CIRCUIT_VALUES[g.breaker.state]) for lb, g in by_backend),
    )
    lines += _family(
        "switchboard_backend_consecutive_failures",
        "gauge",
        "Consecutive failed attempts counted by the circuit breaker.",
        ((lb, g.breaker.snapshot().consecutive_failures) for lb, g in by_backend),
    )
    lines += _family(
        "switchboard_backend_in_flight",
        "gauge",
        "Calls in flight to the backend (bulkhead slots in use).",
        ((lb, g.bulkhead.in_flight) for lb, g in by_backend),
    )
    lines += _family(
        "switchboard_backend_calls_total",
        "counter",
        "Attempts sent to the backend, retries included.",
        ((lb, g.stats.attempts) for lb, g in by_backend),
    )
    lines += _family(
        "switchboard_backend_failures_total",
        "counter",
        "Attempts that found the backend unavailable or timed out.",
        ((lb, g.stats.failures) for lb, g in by_backend),
    )
    lines += _family(
        "switchboard_backend_rejected_total",
        "counter",
        "Calls refused at once by an open circuit, without a network call.",
        ((lb, g.stats.rejected) for lb, g in by_backend),
    )
    lines += _family(
        "switchboard_backend_slot_timeouts_total",
        "counter",
        "Calls that found no free bulkhead slot before their deadline.",
        ((lb, g.stats.slot_timeouts) for lb, g in by_backend),
    )
    lines += _family(
        "switchboard_cache_enabled",
        "gauge",
        "Whether the read-through cache is on.",
        [("", 1 if cache is not None else 0)],
    )
    if cache is not None:
        stats = cache.stats
        kinds = [kind.name for kind in RECORD_KINDS]
        for name, help_text, counter in (
            ("hits", "Keys served from the cache.", stats.hits),
            ("misses", "Keys not in the cache.", stats.misses),
            ("shared", "Misses that waited for another caller's backend call.", stats.shared),
            ("evictions", "Keys evicted after writes.", stats.evictions),
        ):
            lines += _family(
                f"switchboard_cache_{name}_total",
                "counter",
                help_text,
                ((_label("kind", kind), counter[kind]) for kind in kinds),
            )
        lines += _family(
            "switchboard_cache_errors_total",
            "counter",
            "Cache operations that failed, served as misses.",
            [("", stats.errors)],
        )
    return "\n".join(lines) + "\n"
