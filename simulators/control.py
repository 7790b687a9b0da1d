"""Simulator control, shared by the three systems: call counts and injected misbehaviour.

Each system owns one ``SimControl``. Business endpoints ask it to ``admit`` each call before
doing any work; the answer is either ``None`` (go ahead) or the response the system gives
instead (503 when down, a garbled body, an injected failure). The ``/_sim/*`` routes read and
change the state; they are never delayed, failed or counted themselves.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

#: Business calls whose ``traceparent`` header the simulator keeps for /_sim/traceparents.
KEPT_TRACEPARENTS = 1000


@dataclass
class ControlState:
    latency_ms: tuple[float, float] | None = None
    failure_rate: float = 0.0
    down: bool = False
    bad_response: bool = False
    #: Operations (as counted in /_sim/stats) that always fail, whatever ``failure_rate`` says:
    #: lets a test fail one kind of call only (e.g. billing's adjustment POST).
    fail_operations: frozenset[str] = frozenset()

    def as_json(self) -> dict[str, Any]:
        return {
            "latency_ms": list(self.latency_ms) if self.latency_ms is not None else None,
            "failure_rate": self.failure_rate,
            "down": self.down,
            "bad_response": self.bad_response,
            "fail_operations": sorted(self.fail_operations),
        }


class ControlError(ValueError):
    """A /_sim/control body that cannot be applied."""


def _parse_latency(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )
    if not ok or not 0 <= value[0] <= value[1] <= 60_000:
        raise ControlError("latency_ms must be null or [min, max] with 0 <= min <= max <= 60000")
    return (float(value[0]), float(value[1]))


def apply_control(state: ControlState, body: Any) -> ControlState:
    """A new state: ``state`` with the fields present in ``body`` changed (all validated first)."""
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    unknown = set(body) - {"latency_ms", "failure_rate", "down", "bad_response", "fail_operations"}
    if unknown:
        raise ControlError(f"unknown control fields: {', '.join(sorted(unknown))}")
    new = ControlState(
        state.latency_ms, state.failure_rate, state.down, state.bad_response, state.fail_operations
    )
    if "latency_ms" in body:
        new.latency_ms = _parse_latency(body["latency_ms"])
    if "failure_rate" in body:
        rate = body["failure_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ControlError("failure_rate must be a number between 0.0 and 1.0")
        new.failure_rate = float(rate)
    if "fail_operations" in body:
        names = body["fail_operations"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ControlError("fail_operations must be a list of operation names")
        new.fail_operations = frozenset(names)
    for flag in ("down", "bad_response"):
        if flag in body:
            if not isinstance(body[flag], bool):
                raise ControlError(f"{flag} must be true or false")
            setattr(new, flag, body[flag])
    return new


class SimControl:
    """Counts and misbehaviour of one simulated system.

    ``failure`` builds the response of an injected failure in the system's own style (a SOAP
    Server fault, a TMF error body); ``garbage`` is the body answered with HTTP 200 when
    ``bad_response`` is on, deliberately not valid in the system's format.
    """

    def __init__(
        self, failure: Callable[[], Response], garbage: bytes, garbage_media_type: str
    ) -> None:
        self.state = ControlState()
        self.calls: Counter[str] = Counter()
        #: The W3C ``traceparent`` of the latest business calls (None: the call had none), so
        #: a test can see what an operator's system would receive.
        self.traceparents: deque[str | None] = deque(maxlen=KEPT_TRACEPARENTS)
        self._failure = failure
        self._garbage = garbage
        self._garbage_media_type = garbage_media_type
        self._random = random.Random()

    async def admit(self, operation: str) -> Response | None:
        """Count one business call and decide whether it may proceed."""
        self.calls[operation] += 1
        state = self.state
        if state.down:
            return Response(status_code=503)
        if state.latency_ms is not None:
            low, high = state.latency_ms
            await asyncio.sleep(self._random.uniform(low, high) / 1000)
        if state.bad_response:
            return Response(self._garbage, status_code=200, media_type=self._garbage_media_type)
        if operation in state.fail_operations:
            return self._failure()
        if state.failure_rate > 0 and self._random.random() < state.failure_rate:
            return self._failure()
        return None

    def reset(self) -> None:
        self.calls.clear()
        self.traceparents.clear()
        self.state = ControlState()

    def routes(self) -> list[Route]:
        return [
            Route("/_sim/health", self._health, methods=["GET"]),
            Route("/_sim/stats", self._stats, methods=["GET"]),
            Route("/_sim/control", self._control, methods=["GET", "POST"]),
            Route("/_sim/reset", self._reset, methods=["POST"]),
            Route("/_sim/traceparents", self._traceparents, methods=["GET"]),
        ]

    async def _traceparents(self, request: Request) -> Response:
        return JSONResponse({"traceparents": list(self.traceparents)})

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _stats(self, request: Request) -> Response:
        return JSONResponse({"calls": dict(self.calls), "total": sum(self.calls.values())})

    async def _control(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.state = apply_control(self.state, await request.json())
            except ControlError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            except ValueError:
                return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        return JSONResponse(self.state.as_json())

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"status": "ok", "control": self.state.as_json()})


class TraceparentRecorder:
    """Middleware of each system's app: keeps every business call's traceparent header in
    its ``SimControl`` (``app.add_middleware(TraceparentRecorder, control=control)``)."""

    def __init__(self, app: ASGIApp, control: SimControl) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_sim/"):
            value = dict(scope["headers"]).get(b"traceparent")
            self.control.traceparents.append(value.decode("latin-1") if value else None)
        await self.app(scope, receive, send)
