"""One timestamp style in every answer: RFC 3339, in UTC, with the offset written `+00:00`.

The hub's own times are UTC (workflow history, audit records, verifications), but SQLite hands
a `DateTime(timezone=True)` column back without its offset, and the backends send their local
offset (the bundled ones `+08:00`). The graph's `DateTime` scalar is therefore replaced by this
one: an aware value is converted to UTC, a naive one is taken as UTC (the hub stores UTC; a
backend that sends local times without an offset must be given one in its adapter). `+00:00`
rather than `Z` because it is what Python's `isoformat` writes, so exports, `/readyz` and the
graph agree without a second formatter (docs/wire-contract.md, "Timestamps").
"""

from __future__ import annotations

from datetime import UTC, datetime

from strawberry.schema.types.base_scalars import wrap_parser
from strawberry.types.scalar import ScalarDefinition

RFC3339_URL = "https://datatracker.ietf.org/doc/html/rfc3339"


def in_utc(moment: datetime) -> datetime:
    """The same instant in UTC (a naive value is taken as UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-12-02T11:26:44.123456+00:00` (microseconds only when there are any)."""
    return in_utc(moment).isoformat()


def from_micros(time_us: int) -> datetime:
    """Microseconds since the epoch (the audit log's times) as an aware UTC datetime."""
    return datetime.fromtimestamp(time_us / 1_000_000, UTC)


def micros_text(time_us: int) -> str:
    return rfc3339(from_micros(time_us))


def _serialize(value: object) -> str:
    if not isinstance(value, datetime):  # strawberry passes what a resolver returned
        raise TypeError(f"DateTime cannot represent {type(value).__name__}")
    return rfc3339(value)


DATETIME = ScalarDefinition(
    name="DateTime",
    description="A date and time as RFC 3339, always in UTC with the offset written +00:00 "
    "(2026-12-02T03:26:44.5+00:00). Inputs accept any offset; without one, UTC.",
    specified_by_url=RFC3339_URL,
    serialize=_serialize,
    parse_value=wrap_parser(datetime.fromisoformat, "DateTime"),
    parse_literal=None,
    origin=datetime,
)

SCALAR_OVERRIDES: dict[object, ScalarDefinition] = {datetime: DATETIME}
