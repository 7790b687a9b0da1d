"""One notification (a JSON document) read through its source's mapping: pure, no I/O.

What comes out is everything of the ``BusinessEvent`` but the hub customer id, which intake
resolves through the crosswalk. A notification that does not read (no id, an unknown type, a
time without offset, a payload value of the wrong type) is refused with a code and a message
naming the path, never the value: values may be personal data.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers

from marketing.sources import EventMapping, PayloadField

MAX_ID_LENGTH = 128
_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces


class NotificationInvalid(ValueError):
    """A notification the mapping cannot read; ``code`` is the refusal's stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class MappedEvent:
    system_event_id: str
    event_type: str
    occurred_at: dt.datetime
    customer_key: str | None
    subscriber: str | None
    payload: dict[str, Any]


def value_at(document: Any, path: tuple[str, ...]) -> Any:
    """The value at a path of keys and list indexes, or None when any step is missing."""
    current = document
    for step in path:
        if isinstance(current, dict):
            current = current.get(step)
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return None
        if current is None:
            return None
    return current


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _text(document: Any, path: tuple[str, ...], what: str) -> str:
    value = value_at(document, path)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _ID.match(value):
        raise NotificationInvalid(
            "EVENT_INVALID", f"{what} at {_dotted(path)} is missing or not a plain identifier"
        )
    return value


def _time(document: Any, path: tuple[str, ...]) -> dt.datetime:
    value = value_at(document, path)
    try:
        when = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise NotificationInvalid(
            "EVENT_INVALID", f"the event time at {_dotted(path)} must be ISO 8601 with an offset"
        )
    return when


def _msisdn(value: Any, path: tuple[str, ...]) -> str:
    """E.164 (+86... for national numbers), as the crosswalk and docs/systems.md spell them."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    # Cached: the same lines come back event after event (phonenumbers' parse was 5 % of the
    # gateway's CPU under the events bench). Only short texts, so the cache stays small.
    e164 = _cached_e164(text) if len(text) <= 32 else _e164(text)
    if e164 is None:
        raise NotificationInvalid(
            "EVENT_INVALID", f"the line at {_dotted(path)} is not a phone number"
        )
    return e164


def _e164(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


_cached_e164 = functools.lru_cache(maxsize=65_536)(_e164)


def _payload_value(field: PayloadField, value: Any) -> Any:
    kind = field.type
    ok = True
    if kind == "string":
        ok = isinstance(value, str | int | float) and not isinstance(value, bool)
        value = str(value)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "decimal":
        try:
            value = str(Decimal(str(value))) if not isinstance(value, bool) else None
        except InvalidOperation:
            value = None
        ok = value is not None
    elif kind in ("date", "datetime"):
        try:
            parsed = (dt.date if kind == "date" else dt.datetime).fromisoformat(str(value))
        except ValueError:
            parsed = None
        ok = isinstance(value, str) and parsed is not None
    if not ok:
        raise NotificationInvalid(
            "EVENT_INVALID", f"payload field {field.name} at {_dotted(field.path)} is not {kind}"
        )
    return value


def map_notification(mapping: EventMapping, document: Any) -> MappedEvent:
    if not isinstance(document, dict):
        raise NotificationInvalid("EVENT_INVALID", "a notification is a JSON object")
    their_type = value_at(document, mapping.event_type)
    event_type = mapping.types.get(their_type) if isinstance(their_type, str) else None
    if event_type is None:
        raise NotificationInvalid(
            "EVENT_TYPE_UNKNOWN",
            f"the event type at {_dotted(mapping.event_type)} is not one this source maps",
        )
    customer_key = None
    if mapping.customer is not None and value_at(document, mapping.customer.path) is not None:
        customer_key = _text(document, mapping.customer.path, "the customer key")
    subscriber = None
    if mapping.subscriber is not None:
        raw = value_at(document, mapping.subscriber)
        subscriber = _msisdn(raw, mapping.subscriber) if raw is not None else None
    payload = {}
    for field in mapping.payload:
        raw = value_at(document, field.path)
        if raw is not None:
            payload[field.name] = _payload_value(field, raw)
    return MappedEvent(
        system_event_id=_text(document, mapping.event_id, "the event id"),
        event_type=event_type,
        occurred_at=_time(document, mapping.occurred_at),
        customer_key=customer_key,
        subscriber=subscriber,
        payload=payload,
    )
