"""What the gateway adds to traces and metrics around a request (docs/operations.md).

``server_span`` (inside ``RequestIds``, for every HTTP request while tracing is on): the
caller's W3C trace context is taken up and the request's server span opened, named after the
route, never the raw path (a path may be anything a caller typed). With tracing off
``RequestIds`` keeps the caller's ``traceparent`` for the backend calls itself.

``OperationMetrics`` (around /graphql, outside the audit trail): once the response is sent,
the operation's duration goes into ``switchboard_operation_duration_seconds`` by operation
name (bounded, ``telemetry.metrics.OperationNames``) and channel, and the server span gets
the operation's name, type and channel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, get_current_span
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from telemetry import tracing
from telemetry.metrics import OPERATION_DURATION, OperationNames

#: The paths the gateway serves, as span names; anything else is "other".
ROUTES = frozenset({"/graphql", "/healthz", "/readyz", "/metrics", "/audit", "/audit/app.js"})
#: Who an unauthenticated or refused-before-authentication request is counted as.
NO_CHANNEL = "none"


def route_of(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith("/graphql/"):
        return "/graphql/*"  # GraphiQL's assets
    return "other"


@contextmanager
def server_span(tracer: Tracer, scope: Scope, headers: Mapping[str, str]) -> Iterator[Span]:
    """The request's server span, in the caller's trace if it sent one (tracing on; with
    tracing off ``RequestIds`` keeps the caller's traceparent itself, with no span)."""
    method = scope.get("method", "GET")
    route = route_of(scope["path"])
    with tracer.start_as_current_span(
        f"{method} {route}",
        context=tracing.incoming(headers),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
        record_exception=False,
    ) as span:
        yield span


def _is_operation(scope: Scope) -> bool:
    # The GraphiQL page (GET without a query) executes nothing.
    if scope["method"] == "GET":
        return "query" in Request(scope).query_params
    return True


class OperationMetrics:
    def __init__(self, app: ASGIApp, names: OperationNames) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_operation(scope):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noting_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            context = scope.get("switchboard.context")
            principal = scope.get("switchboard.principal")
            name = self.names.label(getattr(context, "operation_name", None))
            channel = getattr(principal, "channel", None) or NO_CHANNEL
            OPERATION_DURATION.labels(name, channel).observe(time.perf_counter() - started)
            if tracing.tracer() is not None:
                self._describe(get_current_span(), context, name, channel, status)

    @staticmethod
    def _describe(span: Span, context: Any, name: str, channel: str, status: int) -> None:
        kind = getattr(context, "operation_type", None) or "unknown"
        span.update_name(f"{kind} {name}")
        span.set_attribute("graphql.operation.name", name)
        span.set_attribute("graphql.operation.type", kind)
        span.set_attribute("switchboard.channel", channel)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
