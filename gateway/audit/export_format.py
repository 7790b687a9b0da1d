"""The rows of an export of the access log (CSV and JSON lines), one definition for the CLI
(`switchboard audit export`) and the auditors' page (`GET /audit/export`).

Times are RFC 3339 in UTC (schema/timestamps.py); customers stay keyed hashes, as stored.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from schema.audit_reader import AuditEntry
from schema.timestamps import micros_text

EXPORT_COLUMNS = (
    "seq",
    "time",
    "request_id",
    "outcome",
    "code",
    "subject",
    "role",
    "channel",
    "partner",
    "credential_id",
    "purpose",
    "operation_type",
    "operation_name",
    "document_sha256",
    "customers",
    "disclosed",
    "policy_version",
    "backends",
    "latency_ms",
    "hash",
    "source",
    "refused_count",
    "window_end",
)
FORMATS = ("csv", "jsonl")


def export_row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "time": micros_text(entry.time_us),
        "request_id": entry.request_id,
        "outcome": entry.outcome,
        "code": entry.code,
        "subject": entry.subject,
        "role": entry.role,
        "channel": entry.channel,
        "partner": entry.partner,
        "credential_id": entry.credential_id,
        "purpose": entry.purpose,
        "operation_type": entry.operation_type,
        "operation_name": entry.operation_name,
        "document_sha256": entry.document_sha256,
        "customers": list(entry.customers),
        "disclosed": dict(entry.disclosed),
        "policy_version": entry.policy_version,
        "backends": list(entry.backends),
        "latency_ms": entry.latency_us / 1000,
        "hash": entry.hash,
        "source": entry.source,
        "refused_count": entry.refused_count,
        "window_end": micros_text(entry.window_end_us) if entry.window_end_us is not None else None,
    }


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row for CSV: lists joined with `;`, disclosures as `path=level`."""
    flat = dict(row)
    flat["customers"] = ";".join(row["customers"])
    flat["disclosed"] = ";".join(f"{p}={v}" for p, v in row["disclosed"].items())
    flat["backends"] = ";".join(row["backends"])
    return flat


def csv_header() -> str:
    out = io.StringIO()
    csv.DictWriter(out, EXPORT_COLUMNS).writeheader()
    return out.getvalue()


def csv_lines(entries: Iterable[AuditEntry]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, EXPORT_COLUMNS)
    for entry in entries:
        writer.writerow(flat_row(export_row(entry)))
    return out.getvalue()


def jsonl_lines(entries: Iterable[AuditEntry]) -> str:
    return "".join(
        json.dumps(export_row(e), ensure_ascii=False, sort_keys=True) + "\n" for e in entries
    )
