"""RequestIds (gateway/app.py): every request gets an id, the caller's only when it is safe,
echoed back; with tracing off the caller's traceparent reaches the backend calls and the
request's log line carries its trace id."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from gateway.app import RequestIds
from telemetry import tracing

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def served(headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], list[dict], dict]:
    """One request through RequestIds: what the app saw, what went out, the backend headers."""
    seen: dict[str, Any] = {}
    sent: list[dict] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["request_id"] = scope["switchboard.request_id"]
        seen["outgoing"] = tracing.outgoing()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "POST", "path": "/graphql", "headers": headers}
    asyncio.run(RequestIds(app)(scope, receive, send))
    return seen, sent, dict(sent[0]["headers"])


def test_a_safe_caller_id_is_kept_and_echoed() -> None:
    seen, _, headers = served([(b"x-request-id", b"order-77.a_b")])
    assert seen["request_id"] == "order-77.a_b"
    assert headers[b"x-request-id"] == b"order-77.a_b"


@pytest.mark.parametrize(
    "offered", [b"", b"has space", b"13800138000\r\nX-Evil: 1", b"x" * 65, "名前".encode()]
)
def test_an_unsafe_or_missing_id_is_replaced(offered: bytes) -> None:
    seen, _, headers = served([(b"x-request-id", offered)] if offered else [])
    assert re.fullmatch(r"[0-9a-f]{32}", seen["request_id"])
    assert headers[b"x-request-id"] == seen["request_id"].encode()


def test_the_first_of_repeated_headers_counts() -> None:
    seen, _, _ = served(
        [(b"x-request-id", b"first"), (b"x-request-id", b"second"), (b"traceparent", b"bad")]
    )
    assert seen["request_id"] == "first"


class TraceIdAtEmit(logging.Handler):
    """What the hub's log filter would stamp on each line: the trace id current when written."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), tracing.current_trace_id()))


def test_tracing_off_the_callers_traceparent_reaches_backends_and_the_log_line() -> None:
    assert tracing.tracer() is None
    logger = logging.getLogger("switchboard.gateway")
    handler, level = TraceIdAtEmit(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        seen, _, _ = served([(b"traceparent", TRACEPARENT.encode())])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen["outgoing"] == {"traceparent": TRACEPARENT}
    ((message, trace_id),) = handler.lines
    assert message.startswith("POST /graphql 204")
    assert trace_id == TRACEPARENT.split("-")[1]
    # Released after the request: nothing leaks into the next one.
    assert tracing.outgoing() == {}


def test_a_malformed_traceparent_is_not_passed_on() -> None:
    seen, _, _ = served([(b"traceparent", b"00-zz-yy-01")])
    assert seen["outgoing"] == {}
