"""Helpers for reading backend values into canonical types, failing as BadResponse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.errors import BadResponse
from adapters.records import Money


@contextmanager
def reading(system: str, what: str) -> Iterator[None]:
    """Turn a missing key or a wrong type while mapping a record into BadResponse."""
    try:
        yield
    except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError):
        raise BadResponse(system, f"sent a {what} this adapter cannot read") from None


def to_date(value: str | None) -> date | None:
    return date.fromisoformat(value[:10]) if value else None


def to_datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def to_money(value: dict[str, Any] | None) -> Money:
    if value is None:
        return Money(Decimal("0"))
    return Money(Decimal(str(value["value"])), str(value.get("unit", "CNY")))


def csv(values: list[str] | tuple[str, ...]) -> str:
    return ",".join(values)


def chunks(values: list[str], size: int) -> Iterator[list[str]]:
    """Split a batch into the backend's maximum filter size."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def unique(values: Any) -> list[str]:
    """Keys in first-seen order without repeats (DataLoaders may hand over duplicates)."""
    return list(dict.fromkeys(values))
