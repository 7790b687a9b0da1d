"""One audit record per operation that reaches /graphql, refused or not.

``AuditTrail`` wraps the /graphql endpoint (authentication included), so a request refused
before GraphQL (401, 403, 429, 400) is recorded as well as one the graph answers. It holds the
response back until the record is committed (group commit in the writer): a response the
caller received always has its record in the log. If the log cannot be written the caller
gets 503 AUDIT_UNAVAILABLE instead of the answer: no unlogged disclosure. The exception is a
flood of refusals (``audit.refusal_codes``): past the first few per caller and window they
are counted into one aggregate record (``gateway/audit/refusals.py``) and answered at once.

``record_subscription`` is the same for operations on a websocket (schema/stream_audit.py
calls the gateway's hook once per operation when it ends), and ``record_refused_connection``
for a websocket refused before any operation (bad key, channel).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.audit.record import AuditRecord
from gateway.audit.service import AuditLog
from gateway.audit.writer import AuditUnavailable
from policies.principal import Principal
from schema.operation_limits import CODES

log = logging.getLogger("switchboard.audit")

# Codes that mean "the caller may not do this" rather than "it went wrong".
REFUSAL_CODES = frozenset(
    {
        # Who is asking, and for what (gateway/auth.py, the channel rules).
        "UNAUTHENTICATED",
        "CHANNEL_MISMATCH",
        "RATE_LIMITED",
        "BAD_PURPOSE",
        "CHANNEL_NOT_ALLOWED",
        "OPERATION_NOT_ALLOWED",
        "INTROSPECTION_NOT_ALLOWED",
        "SEARCH_NOT_ALLOWED",
        "FORBIDDEN",
        "SCOPE_REQUIRED",  # a partner credential without the mutation's scope
        # The customer's verification the channel asks for (schema/verification_rules.py,
        # gateway/verification_gate.py).
        "VERIFICATION_REQUIRED",
        "VERIFICATION_INVALID",
        "VERIFICATION_EXPIRED",
        "VERIFICATION_NOT_CARRIED",
        "CUSTOMER_NOT_VERIFIED",
        # The operation limits (schema/operation_limits.py): refused before anything ran.
        *CODES.values(),
        # The HTTP request itself (gateway/http_input.py, gateway/graphql_http.py).
        "BAD_REQUEST",
        "PAYLOAD_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "NOT_ACCEPTABLE",
        "METHOD_NOT_ALLOWED",
        "SUBSCRIPTION_REQUIRES_WEBSOCKET",
        "TOKEN_CHANNEL_UNKNOWN",  # a bearer token for a channel the policy does not have
        "PERSISTED_DOCUMENT_REQUIRED",  # a trusted_only channel sent another document
        "PERSISTED_DOCUMENT_NOT_FOUND",
        "EXPORT_TOO_LARGE",  # the auditors' page's export, past audit.export_max_records
    }
)


def _code(error: GraphQLError | dict[str, Any]) -> str | None:
    extensions = error.extensions if isinstance(error, GraphQLError) else error.get("extensions")
    return (extensions or {}).get("code")


def outcome_of(data: Any, errors: list[Any]) -> tuple[str, str | None]:
    """ok | partial | refused | error, and the first error's code."""
    if not errors:
        return "ok", None
    code = _code(errors[0])
    nothing = data is None or (isinstance(data, dict) and all(v is None for v in data.values()))
    if nothing and code in REFUSAL_CODES:
        return "refused", code
    return ("error" if nothing else "partial"), code


def record_operation(
    audit: AuditLog,
    *,
    request_id: str,
    principal: Principal | None,
    purpose: str | None,
    context: Any | None,
    outcome: str,
    code: str | None,
    started_us: int,
    latency_us: int,
    source: str | None = None,
) -> AuditRecord:
    """The record of one operation, from what the request context gathered.

    ``source`` (a keyed hash of the caller's address) is kept only when there is no
    principal: it is whom a refused, unauthenticated caller is counted against."""
    disclosed: dict[str, str] = {}
    customers: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    policy_version = None
    operation_type = operation_name = document_sha256 = None
    if context is not None:
        disclosure = context.disclosure
        # ``_value_`` rather than the ``value`` property: a plain attribute, a third the cost.
        disclosed = {path: level._value_ for path, level in sorted(disclosure.disclosed.items())}
        policy_version = disclosure.policy.version
        customers = tuple(sorted({audit.hasher(c) for c in context.customers_touched}))
        backends = tuple(sorted(context.backends_called))
        operation_type = context.operation_type
        operation_name = context.operation_name
        document_sha256 = context.document_sha256
    return AuditRecord(
        time_us=started_us,
        request_id=request_id,
        outcome=outcome,
        code=code,
        subject=principal.subject if principal else None,
        role=principal.role if principal else None,
        channel=principal.channel if principal else None,
        partner=principal.partner if principal else None,
        credential_id=(principal.credential_id or None) if principal else None,
        purpose=purpose,
        operation_type=operation_type,
        operation_name=operation_name,
        document_sha256=document_sha256,
        customers=customers,
        disclosed=disclosed,
        policy_version=policy_version,
        backends=backends,
        latency_us=latency_us,
        source=source if principal is None else None,
    )


def source_of(audit: AuditLog, scope: Scope) -> str:
    """The caller's address as a keyed hash (an address is personal data; a plain hash of
    an IPv4 address is reversed by hashing all 2**32 of them)."""
    client = scope.get("client")
    return audit.hasher(f"source:{client[0] if client else '-'}")


async def record_subscription(
    audit: AuditLog,
    context: Any,
    *,
    started_us: int,
    started_perf: float,
    errors: list[Any] | None = None,
) -> int:
    """Record one subscription operation (websocket path) when it ends; its seq.

    ``context`` is the subscription's RequestContext (it carries principal, purpose, what was
    disclosed and the customers touched over the subscription's life); ``errors`` are the
    GraphQL errors it ended with, if any. Raises AuditUnavailable if the log cannot be written.
    """
    outcome, code = outcome_of({"subscription": True} if not errors else None, errors or [])
    record = record_operation(
        audit,
        request_id=context.request_id,
        principal=context.principal,
        purpose=context.disclosure.purpose,
        context=context,
        outcome=outcome,
        code=code,
        started_us=started_us,
        latency_us=int((time.perf_counter() - started_perf) * 1_000_000),
    )
    return await audit.append(record)


async def record_refused_connection(
    audit: AuditLog,
    *,
    request_id: str,
    principal: Principal | None,
    purpose: str | None,
    code: str,
    started_us: int,
    started_perf: float,
) -> None:
    """Record a websocket refused before any operation ran on it (bad key, wrong channel).

    Like a refused HTTP request, the attempt is in the log, without an operation type. A log
    that cannot be written is only reported: the socket is refused either way.
    """
    record = record_operation(
        audit,
        request_id=request_id,
        principal=principal,
        purpose=purpose,
        context=None,
        outcome="refused",
        code=code,
        started_us=started_us,
        latency_us=int((time.perf_counter() - started_perf) * 1_000_000),
    )
    if audit.refusals.counts(record):
        return  # counted into its window's aggregate record
    try:
        await audit.append(record)
    except AuditUnavailable:
        log.error("audit record of a refused websocket lost: request_id=%s", request_id)


def _is_operation(scope: Scope) -> bool:
    # The GraphiQL page (GET without a query) executes nothing: no record.
    if scope["method"] == "GET":
        return "query" in Request(scope).query_params
    return True


def _every_request(scope: Scope) -> bool:
    return True


def _refusal_code(status: int, body: bytes) -> str:
    try:
        return json.loads(body)["errors"][0]["extensions"]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"


class AuditTrail:
    """``every_get``: record GET requests without a query too (the export endpoint; on
    /graphql such a GET is the GraphiQL page). An endpoint that commits its own record
    before answering (a streamed export) sets ``scope["switchboard.recorded"]``: its
    response then goes out as it comes, not held back."""

    def __init__(self, app: ASGIApp, audit: AuditLog, *, every_get: bool = False) -> None:
        self.app = app
        self.audit = audit
        self._recorded = _every_request if every_get else _is_operation

    def _record(
        self, scope: Scope, status: int, body: bytes, started: tuple[int, float]
    ) -> AuditRecord:
        context = scope.get("switchboard.context")
        result = scope.get("switchboard.result")
        if result is not None:
            outcome, code = outcome_of(result.data, result.errors or [])
        elif status >= 400:
            code = _refusal_code(status, body)
            outcome = "refused" if code in REFUSAL_CODES else "error"
        else:
            outcome, code = "ok", None
        principal = scope.get("switchboard.principal")
        return record_operation(
            self.audit,
            request_id=scope.get("switchboard.request_id", ""),
            principal=principal,
            purpose=scope.get("switchboard.purpose"),
            context=context,
            outcome=outcome,
            code=code,
            started_us=started[0],
            latency_us=int((time.perf_counter() - started[1]) * 1_000_000),
            source=source_of(self.audit, scope) if principal is None else None,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._recorded(scope):
            await self.app(scope, receive, send)
            return
        started = (time.time_ns() // 1000, time.perf_counter())
        held: list[Message] = []
        body = bytearray()
        done = False

        async def audited_send(message: Message) -> None:
            nonlocal done
            if done:
                await send(message)
                return
            if scope.get("switchboard.recorded"):  # its record is committed already
                done = True
                await send(message)
                return
            held.append(message)
            if message["type"] != "http.response.body":
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            done = True
            status = held[0]["status"]
            record = self._record(scope, status, bytes(body), started)
            if scope.get("switchboard.result") is None and self.audit.refusals.counts(record):
                # A refusal past the first few of its window (rate limited, bad keys): counted
                # into one aggregate record, answered without a record of its own.
                for kept in held:
                    await send(kept)
                return
            try:
                await self.audit.append(record)
            except AuditUnavailable:
                await _unavailable(scope, receive, send)
                return
            for kept in held:
                await send(kept)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not done:
                done = True
                try:
                    await self.audit.append(self._record(scope, 500, b"", started))
                except AuditUnavailable:
                    log.error("audit record of a failed request not written")
            raise


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        {
            "errors": [
                {
                    "message": "The access log cannot be written now; nothing was answered.",
                    "extensions": {"code": "AUDIT_UNAVAILABLE"},
                }
            ]
        },
        status_code=503,
    )
    await response(scope, receive, send)
