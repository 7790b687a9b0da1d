"""``step``: DBOS's step decorator, with the step's duration in /metrics and a span.

Every workflow step is declared with ``@step("plan_change.order")`` instead of
``@DBOS.step(name=...)``. The timing wraps the step's own function, so it measures runs
only: a step DBOS replays from its recorded output (recovery) is not run, and not counted.
Outcome label: ``ok``, ``failed`` (the step returned ``{"ok": False, ...}``: a legacy system
refused or failed) or ``error`` (it raised).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from dbos import DBOS

from telemetry import tracing
from telemetry.metrics import WORKFLOW_STEP_DURATION

P = ParamSpec("P")
R = TypeVar("R")


def _outcome(result: Any) -> str:
    return "failed" if isinstance(result, dict) and result.get("ok") is False else "ok"


def step(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        histograms = {
            outcome: WORKFLOW_STEP_DURATION.labels(name, outcome)
            for outcome in ("ok", "failed", "error")
        }

        @functools.wraps(function)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            outcome = "error"
            tracer = tracing.tracer()
            try:
                if tracer is None:
                    result = await function(*args, **kwargs)
                else:
                    with tracer.start_as_current_span(
                        f"step {name}",
                        attributes={"switchboard.step": name},
                        record_exception=False,
                    ) as span:
                        result = await function(*args, **kwargs)
                        span.set_attribute("switchboard.outcome", _outcome(result))
                outcome = _outcome(result)
                return result
            finally:
                histograms[outcome].observe(time.perf_counter() - started)

        return DBOS.step(name=name)(timed)  # type: ignore[no-any-return]

    return decorate
