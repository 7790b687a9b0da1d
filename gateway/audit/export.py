"""`GET /audit/export`: the auditors' page's export of its current filter, as CSV or JSON lines.

Same authorisation as the page's own calls: the endpoint sits behind the gateway's
``Authenticate`` (key or bearer token, throttling, rate limit, purpose) and answers only the
auditor role in a channel whose policy lists ``auditLog``. The export is itself an audited
access: its record (operation type ``export``, name ``auditExport``, the filtered customer as
its keyed hash) is committed before the first byte goes out, and a log that cannot be written
means 503 ``AUDIT_UNAVAILABLE`` with nothing exported. Refusals (401, 403, 400, 413) are
recorded by ``AuditTrail`` around it like any other refused request.

Bounded: the filter may match at most ``audit.export_max_records`` records (else 413
``EXPORT_TOO_LARGE``, nothing sent); the records are streamed oldest first,
``audit.export_batch_records`` at a time, up to the newest record when the export was asked for.
Customers stay keyed hashes; nothing personal is in an export.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.audit.export_format import FORMATS, csv_header, csv_lines, jsonl_lines
from gateway.audit.middleware import record_operation
from gateway.audit.service import AuditLog
from gateway.audit.writer import AuditUnavailable
from gateway.policy_store import PolicyStore
from policies.principal import Principal
from schema.audit import AUDITOR_ROLE, MAX_FILTER_TEXT
from schema.audit_reader import AuditSearch

OPERATION_NAME = "auditExport"
OPERATION_TYPE = "export"
TEXT_FILTERS = {
    # query parameter -> AuditSearch field (the names of GraphQL's AuditFilter)
    "customerId": "customer_id",
    "principal": "principal",
    "channel": "channel",
    "role": "role",
    "operation": "operation",
    "code": "code",
    "purpose": "purpose",
    "requestId": "request_id",
}
OUTCOMES = ("ok", "partial", "refused", "error")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


class ExportRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"errors": [{"message": self.message, "extensions": {"code": self.code}}]},
            status_code=self.status,
        )


def _bad(message: str) -> ExportRefused:
    return ExportRefused(400, "BAD_USER_INPUT", message)


def _moment(name: str, text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"{name} is not an RFC 3339 date and time.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def parse_export(params: Any) -> tuple[str, AuditSearch]:
    """The format and the filter from the query string; BAD_USER_INPUT names what is wrong
    (never the value: a customer id is personal data)."""
    known = {*TEXT_FILTERS, "from", "to", "decision", "clearOnly", "format"}
    if set(params.keys()) - known:  # not echoed: a caller's text
        raise _bad(f"unknown parameter; known: {', '.join(sorted(known))}.")
    if any(len(params.getlist(name)) > 1 for name in params):
        raise _bad("each parameter at most once.")
    fmt = params.get("format", "csv")
    if fmt not in FORMATS:
        raise _bad("format must be csv or jsonl.")
    fields: dict[str, Any] = {}
    for name, field in TEXT_FILTERS.items():
        value = params.get(name)
        if value is None or value == "":
            continue
        if len(value) > MAX_FILTER_TEXT:
            raise _bad(f"{name} must be 1 to {MAX_FILTER_TEXT} characters.")
        fields[field] = value
    for name, field in (("from", "time_from_us"), ("to", "time_to_us")):
        if params.get(name):
            fields[field] = _moment(name, params[name])
    decision = params.get("decision")
    if decision:
        if decision.lower() not in OUTCOMES:
            raise _bad("decision must be one of ok, partial, refused, error.")
        fields["outcome"] = decision.lower()
    clear = params.get("clearOnly", "false").lower()
    if clear not in ("true", "false"):
        raise _bad("clearOnly must be true or false.")
    fields["clear_only"] = clear == "true"
    return fmt, AuditSearch(**fields)


class AuditExport:
    """The ASGI endpoint (behind Authenticate, inside AuditTrail)."""

    def __init__(
        self, audit: AuditLog, policies: PolicyStore, *, max_records: int, batch_records: int
    ) -> None:
        self.audit = audit
        self.policies = policies
        self.max_records = max_records
        self.batch_records = batch_records

    def _authorise(self, principal: Principal) -> None:
        if principal.role != AUDITOR_ROLE:
            raise ExportRefused(403, "FORBIDDEN", "Only the auditor role may export the log.")
        profile = self.policies.current.channel(principal.channel)
        if profile is None or not profile.allows("auditLog"):
            raise ExportRefused(
                403, "OPERATION_NOT_ALLOWED", "This channel may not read the access log."
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = (time.time_ns() // 1000, time.perf_counter())
        request = Request(scope)
        principal: Principal = scope["switchboard.principal"]  # Authenticate let it through
        try:
            self._authorise(principal)
            fmt, search = parse_export(request.query_params)
            head = await self.audit.reader.last_seq()
            total = await self.audit.reader.count(search, up_to_seq=head)
            if total > self.max_records:
                raise ExportRefused(
                    413,
                    "EXPORT_TOO_LARGE",
                    f"The filter matches {total} records; the page exports at most "
                    f"{self.max_records} (audit.export_max_records): narrow it (dates), or use "
                    "`switchboard audit export`.",
                )
        except ExportRefused as refused:
            await refused.response()(scope, receive, send)
            return
        record = record_operation(
            self.audit,
            request_id=scope.get("switchboard.request_id", ""),
            principal=principal,
            purpose=scope.get("switchboard.purpose"),
            context=None,
            outcome="ok",
            code=None,
            started_us=started[0],
            latency_us=int((time.perf_counter() - started[1]) * 1_000_000),
        )
        customers = (self.audit.hasher(search.customer_id),) if search.customer_id else ()
        record = dataclasses.replace(
            record,
            operation_type=OPERATION_TYPE,
            operation_name=OPERATION_NAME,
            customers=customers,
        )
        try:
            await self.audit.append(record)  # committed before anything is exported
        except AuditUnavailable:
            await ExportRefused(
                503, "AUDIT_UNAVAILABLE", "The access log cannot be written now; nothing exported."
            ).response()(scope, receive, send)
            return
        scope["switchboard.recorded"] = True  # AuditTrail: streamed, not held back
        stamp = datetime.fromtimestamp(started[0] / 1_000_000, UTC).strftime("%Y%m%dT%H%M%SZ")
        response = StreamingResponse(
            self._body(fmt, search, head),
            media_type=MEDIA_TYPES[fmt],
            headers={
                "Content-Disposition": f'attachment; filename="audit-{stamp}.{fmt}"',
                "Cache-Control": "no-store",
                "X-Export-Records": str(total),
                "X-Export-Last-Seq": str(head),
            },
        )
        await response(scope, receive, send)

    async def _body(self, fmt: str, search: AuditSearch, head: int) -> AsyncIterator[str]:
        if fmt == "csv":
            yield csv_header()
        batch: list[Any] = []
        sent = 0
        async for entry in self.audit.reader.iterate(
            search, batch=self.batch_records, up_to_seq=head
        ):
            batch.append(entry)
            sent += 1
            if len(batch) >= self.batch_records or sent >= self.max_records:
                yield csv_lines(batch) if fmt == "csv" else jsonl_lines(batch)
                batch = []
            if sent >= self.max_records:  # never more than counted and allowed
                return
        if batch:
            yield csv_lines(batch) if fmt == "csv" else jsonl_lines(batch)
