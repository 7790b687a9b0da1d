"""Traces with OpenTelemetry: off unless configured, and then nothing is made per call.

``configure`` installs this process's tracer (an SDK ``TracerProvider`` with a ratio sampler
that follows the caller's sampling decision, and an OTLP/HTTP exporter in a background batch
processor). It is not the global provider: only the hub's own spans go to it, and DBOS's
instrumentation stays off. While ``tracer()`` is None every call site takes its plain path: no
span objects, no context switches; the one thing still done is to pass a caller's
``traceparent`` on to the backends unchanged (a proxy that does not trace keeps the chain).

W3C Trace Context only (``traceparent`` / ``tracestate``): baggage is neither read nor sent,
a caller's baggage could carry anything.

Span attributes are names and codes (operation name and type, channel, system, backend
operation, attempt, outcome code, record kind, batch size): never keys or values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import Tracer, format_trace_id, get_current_span

if TYPE_CHECKING:  # the SDK is imported by configure() only: the CLI starts faster
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

#: A well-formed W3C traceparent (version 00 and later versions' first four fields).
TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_PROPAGATOR = TraceContextTextMapPropagator()

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
#: The caller's traceparent while tracing is off: forwarded to every backend call.
_passed: ContextVar[str | None] = ContextVar("switchboard_traceparent", default=None)


def configure(
    *,
    enabled: bool,
    otlp_endpoint: str,
    service_name: str,
    sample_ratio: float,
    exporter: SpanExporter | None = None,
) -> None:
    """Install (or, with ``enabled=False``, remove) this process's tracer.

    ``exporter`` replaces the OTLP exporter (tests read spans from an in-memory one; it is
    then exported synchronously, so a span is readable as soon as it ends).
    """
    global _provider, _tracer
    shutdown()
    if not enabled:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("switchboard")


def shutdown() -> None:
    """Flush and stop the exporter (the gateway's lifespan end)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, None


def tracer() -> Tracer | None:
    """This process's tracer, or None while tracing is off (take the plain path then)."""
    return _tracer


def incoming(headers: Mapping[str, str]) -> Context | None:
    """The caller's trace context from its headers, when tracing is on (else None)."""
    traceparent = headers.get("traceparent")
    if traceparent is None or TRACEPARENT.fullmatch(traceparent.strip()) is None:
        return None
    carrier = {"traceparent": traceparent.strip()}
    if "tracestate" in headers:
        carrier["tracestate"] = headers["tracestate"]
    return _PROPAGATOR.extract(carrier)


def pass_through(traceparent: str | None) -> Token[str | None] | None:
    """Tracing off: keep a well-formed caller traceparent for the backends of this request."""
    if traceparent is None or TRACEPARENT.fullmatch(traceparent.strip()) is None:
        return None
    return _passed.set(traceparent.strip())


def release(token: Token[str | None] | None) -> None:
    if token is not None:
        _passed.reset(token)


def outgoing() -> dict[str, str]:
    """The headers a backend call carries: the current span's context, or the caller's."""
    if _tracer is None:
        passed = _passed.get()
        return {"traceparent": passed} if passed is not None else {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def current_trace_id() -> str | None:
    """The trace id logs carry: the current span's, or the caller's while tracing is off."""
    if _tracer is not None:
        context = get_current_span().get_span_context()
        return format_trace_id(context.trace_id) if context.is_valid else None
    passed = _passed.get()
    return passed[3:35] if passed is not None else None
