"""What a /_sim/events request may say, shared by the systems' event builders."""

from __future__ import annotations

import re
from typing import Any

from simulators.events import EventRequestError

MSISDN = re.compile(r"1[3-9][0-9]{9}")


def event_type(body: dict[str, Any], known: tuple[str, ...]) -> str:
    kind = body.get("eventType")
    if kind not in known:
        raise EventRequestError(f"eventType must be one of {', '.join(known)}")
    return str(kind)


def msisdn(body: dict[str, Any]) -> str | None:
    value = body.get("msisdn")
    if value is None:
        return None
    if not isinstance(value, str) or not MSISDN.fullmatch(value):
        raise EventRequestError("msisdn must be an 11-digit number")  # not repeated: personal
    return value


def integer(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EventRequestError(f"{name} must be an integer between {low} and {high}")
    return value


def text(body: dict[str, Any], name: str, default: str, max_length: int = 64) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise EventRequestError(f"{name} must be a string of 1-{max_length} characters")
    return value
