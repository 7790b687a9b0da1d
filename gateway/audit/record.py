"""One audit record: what it holds, its canonical serialisation and its chain hash.

A record holds no field values and no personal data: customers appear only as keyed hashes
(HMAC-SHA256 under the hub's customer key), principals by their subject and credential id,
documents by their SHA-256. The canonical form is stable JSON (sorted keys, no spaces, ASCII),
and each record's hash covers the hash of the one before it:
``hash = sha256(prev_hash || canonical)`` (both as ASCII hex/JSON bytes). The sequence number
is deliberately not part of the canonical form: the chain, not the number, fixes the order,
which lets the verifier tell a moved record from an edited one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

GENESIS_HASH = "0" * 64

OUTCOMES = ("ok", "partial", "refused", "error")
LEVELS = ("clear", "masked", "denied")
# Fields a record carries only when set (canonical form and stored row alike).
OPTIONAL_FIELDS = ("source", "refused_count", "window_end_us")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One operation that reached /graphql, as the log keeps it (before chaining)."""

    time_us: int  # microseconds since the Unix epoch, UTC
    request_id: str
    outcome: str  # ok | partial | refused | error
    code: str | None = None  # the refusal's or error's extensions.code
    subject: str | None = None
    role: str | None = None
    channel: str | None = None
    partner: str | None = None
    credential_id: str | None = None
    purpose: str | None = None
    operation_type: str | None = None  # query | mutation | subscription; None if unparsed
    operation_name: str | None = None
    document_sha256: str | None = None
    customers: tuple[str, ...] = ()  # keyed hashes, sorted
    disclosed: dict[str, str] = field(default_factory=dict)  # field path -> level
    policy_version: str | None = None
    backends: tuple[str, ...] = ()  # sorted
    latency_us: int = 0
    # Refusals only (docs/audit.md, "Refusals past a limit"); outside the canonical form when
    # None, so records written before these fields existed keep their hashes.
    source: str | None = None  # keyed hash of the caller's address, when no principal
    refused_count: int | None = None  # an aggregate: refusals counted, not recorded one by one
    window_end_us: int | None = None  # an aggregate: the end of its window (time_us: start)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "time_us": self.time_us,
            "request_id": self.request_id,
            "outcome": self.outcome,
            "code": self.code,
            "subject": self.subject,
            "role": self.role,
            "channel": self.channel,
            "partner": self.partner,
            "credential_id": self.credential_id,
            "purpose": self.purpose,
            "operation_type": self.operation_type,
            "operation_name": self.operation_name,
            "document_sha256": self.document_sha256,
            "customers": list(self.customers),
            "disclosed": dict(self.disclosed),
            "policy_version": self.policy_version,
            "backends": list(self.backends),
            "latency_us": self.latency_us,
        }
        for name in OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @property
    def has_clear(self) -> bool:
        return "clear" in self.disclosed.values()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditRecord:
        return cls(
            time_us=int(data["time_us"]),
            request_id=data["request_id"],
            outcome=data["outcome"],
            code=data.get("code"),
            subject=data.get("subject"),
            role=data.get("role"),
            channel=data.get("channel"),
            partner=data.get("partner"),
            credential_id=data.get("credential_id"),
            purpose=data.get("purpose"),
            operation_type=data.get("operation_type"),
            operation_name=data.get("operation_name"),
            document_sha256=data.get("document_sha256"),
            customers=tuple(data.get("customers") or ()),
            disclosed=dict(data.get("disclosed") or {}),
            policy_version=data.get("policy_version"),
            backends=tuple(data.get("backends") or ()),
            latency_us=int(data.get("latency_us") or 0),
            source=data.get("source"),
            refused_count=_int_or_none(data.get("refused_count")),
            window_end_us=_int_or_none(data.get("window_end_us")),
        )


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


# --- fitting a record to its columns -------------------------------------------------------

#: Fields held in text columns that may be null, and those that may not.
_OPTIONAL_TEXT = (
    "code", "subject", "role", "channel", "partner", "credential_id", "purpose",
    "operation_type", "operation_name", "document_sha256", "policy_version", "source",
)  # fmt: skip
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


def _text(value: Any, length: int | None) -> str | None:
    """A column's text, or None when the value is not text at all.

    Never ``str(value)`` of something else: a caller's object could hold personal data, and
    the log must not gain what the request layer did not mean to record. NUL (refused by
    PostgreSQL) and lone surrogates (not encodable, refused by SQLite) are replaced.
    """
    if not isinstance(value, str):
        return None
    if value.isascii() and "\x00" not in value:  # the common case: nothing to mend
        return value if length is None or len(value) <= length else value[:length]
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:length] if length is not None else value


def _bigint(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    try:
        number = int(value)
    except (OverflowError, ValueError):  # inf, nan
        return default
    return min(max(number, _BIGINT_MIN), _BIGINT_MAX)


def _texts(values: Any, length: int | None) -> tuple[str, ...]:
    if not isinstance(values, list | tuple | set | frozenset):
        return ()
    return tuple(t for t in (_text(v, length) for v in values) if t is not None)


def _plain(value: Any, length: int) -> bool:
    """ASCII text without NUL within ``length``: what almost every field of a record holds."""
    return type(value) is str and value.isascii() and "\x00" not in value and len(value) <= length


def _fits(record: AuditRecord, lengths: Mapping[str, int]) -> bool:
    """Whether the record already fits its columns (checked cheaply, without building)."""
    unbounded = 1 << 30
    for name in _OPTIONAL_TEXT:
        value = getattr(record, name)
        if value is not None and not _plain(value, lengths.get(name, unbounded)):
            return False
    if not _plain(record.request_id, lengths.get("request_id", unbounded)):
        return False
    if record.outcome not in OUTCOMES:
        return False
    for number in (record.time_us, record.latency_us, record.refused_count, record.window_end_us):
        if number is not None and (
            type(number) is not int or not _BIGINT_MIN <= number <= _BIGINT_MAX
        ):
            return False
    if record.time_us is None or record.latency_us is None:
        return False
    for values in (record.customers, record.backends):
        if type(values) is not tuple or not all(_plain(v, 64) for v in values):
            return False
    disclosed = record.disclosed
    if type(disclosed) is not dict:
        return False
    # Every path and level at once (a record of a 360 answer discloses ~30 paths): a join
    # refuses anything that is not text, and the joined text is checked once.
    try:
        paths, levels = "".join(disclosed), "".join(disclosed.values())
    except TypeError:
        return False
    return paths.isascii() and levels.isascii() and "\x00" not in paths and "\x00" not in levels


def fitted(record: AuditRecord, lengths: Mapping[str, int]) -> AuditRecord:
    """The record with every field of its column's type: what one request put in cannot
    fail the commit of the whole batch its record shares (gateway/audit/writer.py).

    Text is cut to its column's ``lengths``; a value of the wrong type becomes null (or empty,
    or 0 where the column is not nullable); an unknown outcome becomes ``error``. A record that
    already fits is returned as it is, so the common case costs a few type checks.
    """
    if _fits(record, lengths):
        return record
    changes: dict[str, Any] = {}

    def fit(name: str, value: Any) -> None:
        if value != getattr(record, name) or type(value) is not type(getattr(record, name)):
            changes[name] = value

    for name in _OPTIONAL_TEXT:
        fit(name, _text(getattr(record, name), lengths.get(name)))
    fit("request_id", _text(record.request_id, lengths.get("request_id")) or "")
    fit("outcome", record.outcome if record.outcome in OUTCOMES else "error")
    fit("time_us", _bigint(record.time_us, 0))
    fit("latency_us", _bigint(record.latency_us, 0))
    fit("refused_count", _bigint(record.refused_count, None))
    fit("window_end_us", _bigint(record.window_end_us, None))
    fit("customers", _texts(record.customers, 64))
    fit("backends", _texts(record.backends, 64))
    disclosed = record.disclosed if isinstance(record.disclosed, dict) else {}
    if disclosed is not record.disclosed or not all(
        _text(k, None) == k and _text(v, None) == v for k, v in disclosed.items()
    ):
        changes["disclosed"] = {
            k: v for k, v in disclosed.items() if _text(k, None) == k and _text(v, None) == v
        }
    return replace(record, **changes) if changes else record


def stable_json(value: Any) -> bytes:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`` as
    bytes, byte for byte, for the ints, texts, lists and dicts a record holds.

    orjson writes it several times faster (the log's serialisation was a quarter of a
    record's cost). The two agree on sorted ASCII keys, separators, ints, null and booleans;
    they may differ in how they escape, so wherever orjson's output holds a byte outside
    printable ASCII or a backslash, the standard library writes the value instead. Floats
    (which they print differently) never occur: ``fitted`` makes every number an int.
    """
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an int beyond 64 bits, a key that is not text
        out = None
    # orjson escapes every control character (with a backslash) and writes the rest as is:
    # printable ASCII without a backslash is then exactly what the standard library writes.
    if out is None or not out.isascii() or b"\\" in out or b"\x7f" in out:
        out = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
            "ascii"
        )
    return out


def canonical(record: AuditRecord) -> bytes:
    """The bytes the chain hash covers: stable JSON, identical on every machine."""
    return stable_json(record.as_dict())


def chain_hash(prev_hash: str, record: AuditRecord) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(record)).hexdigest()


def document_hash(document: str | None) -> str | None:
    return hashlib.sha256(document.encode()).hexdigest() if document is not None else None


class CustomerHasher:
    """Keyed hashes of customer ids: searchable by whoever holds the key, opaque to others.

    A plain SHA-256 of a hub id or MSISDN could be reversed by hashing every candidate; the
    HMAC key (kept outside the log) prevents that.
    """

    def __init__(self, key: bytes, *, remembered: int = 4096) -> None:
        if len(key) < 16:
            raise ValueError("the audit customer key must be at least 16 bytes")
        self._key = key
        # The same customers come back request after request: their hashes are remembered
        # (an HMAC is ~3.5 us, a third of building a record), up to ``remembered`` of them.
        self._remembered = remembered
        self._known: dict[str, str] = {}

    def __call__(self, customer_id: str) -> str:
        known = self._known.get(customer_id)
        if known is None:
            known = hmac.new(self._key, customer_id.encode(), hashlib.sha256).hexdigest()
            if self._remembered:
                if len(self._known) >= self._remembered:
                    self._known.clear()  # cheaper than keeping an order; refilled as they recur
                self._known[customer_id] = known
        return known
