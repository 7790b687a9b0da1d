"""The audit tables (SQLAlchemy Core): records, customer hashes per record, head, checkpoints.

The same tables serve SQLite (the embedded default) and PostgreSQL (scaled mode). Indexes are
the ones an auditor's questions need on millions of records: by customer (through
``audit_customer``), by principal subject, by channel and by time, each ending in ``seq`` so a
page in log order is an index range scan.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from gateway.audit.record import OPTIONAL_FIELDS, AuditRecord, stable_json

metadata = MetaData()

audit_record = Table(
    "audit_record",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("time_us", BigInteger, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("code", String(64)),
    Column("subject", String(128)),
    Column("role", String(32)),
    Column("channel", String(32)),
    Column("partner", String(64)),
    Column("credential_id", String(16)),
    Column("purpose", String(64)),
    Column("operation_type", String(16)),
    Column("operation_name", String(128)),
    Column("document_sha256", String(64)),
    Column("customers", Text, nullable=False),  # JSON list of keyed hashes
    Column("disclosed", Text, nullable=False),  # JSON object: path -> level
    Column("has_clear", Boolean, nullable=False),  # derived from disclosed, for clearOnly
    Column("policy_version", String(64)),
    Column("backends", Text, nullable=False),  # JSON list
    Column("latency_us", BigInteger, nullable=False),
    Column("source", String(64)),  # keyed hash of a refused caller's address (no principal)
    Column("refused_count", BigInteger),  # an aggregate of refusals: how many
    Column("window_end_us", BigInteger),  # an aggregate of refusals: its window's end
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_record_subject_seq", "subject", "seq"),
    Index("ix_audit_record_channel_seq", "channel", "seq"),
    Index("ix_audit_record_time", "time_us"),
)

# One row per customer a record touched: an auditor's "who looked at this customer" is an
# index range scan here, whatever the record's other customers.
audit_customer = Table(
    "audit_customer",
    metadata,
    Column("customer_hash", String(64), primary_key=True),
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
)

# The chain's head, one row: writers lock it to append (any number of workers or replicas).
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # published | prune
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Index("ix_audit_checkpoint_seq", "seq"),  # the newest checkpoint, polled every second
)


def _dumps(value: Any) -> str:
    return stable_json(value).decode("ascii")


def record_row(seq: int, record: AuditRecord, prev_hash: str, hash_: str) -> dict[str, Any]:
    data = record.as_dict()
    for name in OPTIONAL_FIELDS:
        data.setdefault(name, None)
    data.update(
        seq=seq,
        customers=_dumps(data["customers"]),
        disclosed=_dumps(data["disclosed"]),
        backends=_dumps(data["backends"]),
        has_clear=record.has_clear,
        prev_hash=prev_hash,
        hash=hash_,
    )
    return data


#: The record table's columns, in order: a row of ``select(audit_record)`` holds them so.
RECORD_COLUMNS = tuple(column.name for column in audit_record.columns)
_AT = {name: position for position, name in enumerate(RECORD_COLUMNS)}


def record_of(row: Any) -> AuditRecord:
    """The record a stored row holds (to re-hash it, or to show it): what
    ``AuditRecord.from_dict`` makes of its columns. ``row`` is a row of
    ``select(audit_record)``, every column in the table's order.

    Every record is read back once more to be verified before a checkpoint signs it; read by
    position, a row costs a fifth of reading it by name or copying it into a dict."""
    values = tuple(row)
    if len(values) != len(RECORD_COLUMNS):
        raise ValueError("not a whole audit_record row")
    at = _AT
    refused_count, window_end_us = values[at["refused_count"]], values[at["window_end_us"]]
    return AuditRecord(
        time_us=int(values[at["time_us"]]),
        request_id=values[at["request_id"]],
        outcome=values[at["outcome"]],
        code=values[at["code"]],
        subject=values[at["subject"]],
        role=values[at["role"]],
        channel=values[at["channel"]],
        partner=values[at["partner"]],
        credential_id=values[at["credential_id"]],
        purpose=values[at["purpose"]],
        operation_type=values[at["operation_type"]],
        operation_name=values[at["operation_name"]],
        document_sha256=values[at["document_sha256"]],
        customers=tuple(_json_column(values[at["customers"]]) or ()),
        disclosed=dict(_json_column(values[at["disclosed"]]) or {}),
        policy_version=values[at["policy_version"]],
        backends=tuple(_json_column(values[at["backends"]]) or ()),
        latency_us=int(values[at["latency_us"]] or 0),
        source=values[at["source"]],
        refused_count=None if refused_count is None else int(refused_count),
        window_end_us=None if window_end_us is None else int(window_end_us),
    )


def _json_column(text: str) -> Any:
    """A JSON column read back: exactly what ``json.loads`` gives, several times faster.

    Every record is read back once more to be verified before a checkpoint signs it, and the
    standard library's parser was a third of that. orjson agrees with it on texts, lists and
    objects, which is all these columns hold as written; it differs on numbers (an integer
    past 64 bits becomes a float) and on lone surrogates, so anything else found in a column
    (a row written by someone else) is read by the standard library."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, list | dict) and all(type(item) is str for item in items):
        return value
    return json.loads(text)
