"""Operations over a websocket leave their audit record when they end.

HTTP operations are recorded around the response (gateway/audit/middleware.py AuditTrail);
a websocket carries many operations on one connection, and a subscription has no response to
hold back. The gateway sets ``RequestContext.on_stream_end`` on a websocket's context; this
extension calls it once per operation (subscription, or a query or mutation sent over the
socket) when the operation ends, however it ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from strawberry.extensions import SchemaExtension


class StreamAudit(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        hook = getattr(self.execution_context.context, "on_stream_end", None)
        started_us = time.time_ns() // 1000
        started_perf = time.perf_counter()
        try:
            yield
        finally:
            if hook is not None:
                execution = self.execution_context
                errors = list(execution.pre_execution_errors or [])
                if execution.result is not None and execution.result.errors:
                    errors += execution.result.errors
                await hook(execution.context, started_us, started_perf, errors)
