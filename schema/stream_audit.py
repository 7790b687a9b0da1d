"""Operations over a websocket leave their audit record when they end.

HTTP operations are recorded around the response (gateway/audit/middleware.py AuditTrail);
a websocket carries many operations on one connection, and a subscription has no response to
hold back. The gateway sets ``RequestContext.on_stream_end`` on a websocket's context; this
extension calls it once per operation (subscription, or a query or mutation sent over the
socket) when the operation ends, however it ends (completed, stopped by the client, cut by the
socket closing, refused).

Strawberry gives every operation on a connection the same context object. What an operation
gathers for its record (customers touched, backends called, fields disclosed, its type and
name) must not mix with its neighbours', and its loaders must not serve another operation's
cached answers; so each operation runs on its own copy of the connection's context: same
principal, purpose, policy and hook, fresh loaders and audit fields. This extension must come
first in the schema's list, so that the other extensions see the copy and have noted the
operation's facts (and coded its errors) before the hook runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

from strawberry.extensions import SchemaExtension

from schema.context import RequestContext, new_request_context


def operation_context(connection: RequestContext) -> RequestContext:
    """A context of its own for one operation on a websocket connection."""
    disclosure = connection.disclosure
    context = new_request_context(
        connection.principal,
        connection.backends,
        connection.request_id,
        disclosure.policy,
        disclosure.purpose,
        disclosure.enforced,
        audit=connection.audit,
    )
    # Disclosure decides with the principal's verification; keep any other field it has.
    context.disclosure = dataclasses.replace(disclosure, disclosed={}, owners={})
    context.connection_params = connection.connection_params
    context.on_stream_end = connection.on_stream_end
    return context


class StreamAudit(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        execution = self.execution_context
        hook = getattr(execution.context, "on_stream_end", None)
        if hook is None:  # HTTP: AuditTrail records it
            yield
            return
        context = operation_context(execution.context)
        execution.context = context
        started_us = time.time_ns() // 1000
        started_perf = time.perf_counter()
        try:
            yield
        finally:
            errors = list(execution.pre_execution_errors or [])
            if execution.result is not None and execution.result.errors:
                errors += execution.result.errors
            await hook(context, started_us, started_perf, errors)
