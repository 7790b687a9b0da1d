"""From a system's answer to a declared record: a plain dict of typed values, per field spec.

Values keep their exact text unless a type says otherwise: member numbers such as ``0042``
stay strings byte for byte; ``msisdn`` fields are normalised to E.164; ``map`` translates the
vendor's codes into the graph's values. A field that does not read as its type makes the whole
answer a BadResponse (the system's fields fail, nothing else does).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

from adapters.declared.spec import FieldSpec, RecordSpec
from adapters.errors import BadResponse
from adapters.phone import to_e164
from adapters.records import Money

Record = Mapping[str, Any]


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def xml_children(element: etree._Element, step: str) -> Iterator[etree._Element]:
    """Children named ``step``, whatever their namespace (rpc parts are unqualified)."""
    for child in element:
        if _local(child.tag) == step:
            yield child


def xml_find(element: etree._Element, path: tuple[str, ...]) -> etree._Element | None:
    for step in path:
        found = next(xml_children(element, step), None)
        if found is None:
            return None
        element = found
    return element


def xml_find_all(element: etree._Element, path: tuple[str, ...]) -> list[etree._Element]:
    if not path:
        return [element]
    parent = xml_find(element, path[:-1])
    return list(xml_children(parent, path[-1])) if parent is not None else []


def xml_text(element: etree._Element, path: tuple[str, ...]) -> str | None:
    found = xml_find(element, path)
    if found is None:
        return None
    return found.text or ""


def fill_template(template: Any, values: Mapping[str, Any]) -> Any:
    """A request template with the call's variables ($keys, $key, ...) in place."""
    if isinstance(template, dict):
        return {k: fill_template(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_template(v, values) for v in template]
    if isinstance(template, str) and template in values:
        return values[template]
    return template


def json_find(value: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


def convert(raw: Any, spec: FieldSpec, system: str) -> Any:
    """One field's value in its declared type (None stays None)."""
    if raw is None or raw == "":
        if spec.required:
            raise BadResponse(system, f"sent a record without its {spec.name}")
        return None
    try:
        if spec.value_map is not None:
            key = str(raw)
            if key not in spec.value_map:
                raise BadResponse(system, f"sent an unmapped value for {spec.name}")
            return spec.value_map[key]
        kind = spec.type
        if kind == "string":
            if isinstance(raw, dict | list):
                raise ValueError("not a scalar")
            return raw if isinstance(raw, str) else str(raw)
        if kind == "msisdn":
            number = to_e164(str(raw))
            if number is None:
                raise ValueError("not a phone number")
            return number
        if kind == "int":
            if isinstance(raw, bool | float):
                raise ValueError("not an integer")
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "decimal":
            return Decimal(str(raw))
        if kind == "bool":
            text = str(raw).lower()
            if text not in ("true", "false", "1", "0"):
                raise ValueError("not a boolean")
            return text in ("true", "1")
        if kind == "money":
            # TMF money is {"value": 12.5, "unit": "CNY"}; in XML the element's text.
            if isinstance(raw, dict):
                value, unit = raw.get("value"), raw.get("unit") or "CNY"
            else:
                value, unit = raw, "CNY"
            if value is None or isinstance(value, bool | dict | list):
                raise ValueError("not an amount")
            return Money(Decimal(str(value)), str(unit))
        if kind == "date":
            return date.fromisoformat(str(raw)[:10])
        if kind == "datetime":
            return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except (ValueError, TypeError, InvalidOperation, OverflowError):
        raise BadResponse(system, f"sent a {spec.name} that is not a {spec.type}") from None
    raise BadResponse(system, f"field {spec.name} has an unknown type")


def _xml_value(element: etree._Element, spec: FieldSpec, system: str) -> Any:
    if spec.nested is not None:
        return _xml_nested(element, spec, spec.nested, system)
    if spec.many:
        return tuple(convert(e.text or "", spec, system) for e in xml_find_all(element, spec.path))
    return convert(xml_text(element, spec.path), spec, system)


def _xml_nested(element: etree._Element, spec: FieldSpec, nested: RecordSpec, system: str) -> Any:
    found = xml_find_all(element, spec.path)
    if spec.many:
        return tuple(from_xml(e, nested, system) for e in found)
    if not found:
        if spec.required:
            raise BadResponse(system, f"sent a record without its {spec.name}")
        return None
    return from_xml(found[0], nested, system)


def _json_nested(raw: Any, spec: FieldSpec, nested: RecordSpec, system: str) -> Any:
    if raw is None:
        if spec.required:
            raise BadResponse(system, f"sent a record without its {spec.name}")
        return () if spec.many else None
    if spec.many:
        if not isinstance(raw, list):
            raise BadResponse(system, f"sent a {spec.name} that is not a list")
        return tuple(from_json(item, nested, system) for item in raw)
    return from_json(raw, nested, system)


def _json_value(value: Any, spec: FieldSpec, system: str) -> Any:
    raw = json_find(value, spec.path)
    if spec.nested is not None:
        return _json_nested(raw, spec, spec.nested, system)
    if spec.many:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise BadResponse(system, f"sent a {spec.name} that is not a list")
        return tuple(convert(item, spec, system) for item in raw)
    return convert(raw, spec, system)


def from_xml(element: etree._Element, record: RecordSpec, system: str) -> dict[str, Any]:
    return {f.name: _xml_value(element, f, system) for f in record.fields}


def from_json(value: Any, record: RecordSpec, system: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadResponse(system, f"sent a {record.name} that is not an object")
    return {f.name: _json_value(value, f, system) for f in record.fields}


# --- JSON for the cache (Redis): typed values by the record's spec, never pickle -------------


def _encode_one(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Money):
        return {"value": str(value.amount), "unit": value.currency}
    return value


def _decode_one(item: Any, f: FieldSpec) -> Any:
    if item is None or f.value_map is not None:
        return item
    if f.type == "date":
        return date.fromisoformat(item)
    if f.type == "datetime":
        return datetime.fromisoformat(item)
    if f.type == "decimal":
        return Decimal(item)
    if f.type == "money":
        return Money(Decimal(item["value"]), item["unit"])
    return item


def encode(record: Record, spec: RecordSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in spec.fields:
        value = record.get(f.name)
        if f.nested is not None:
            inner = f.nested
            if f.many:
                out[f.name] = [encode(v, inner) for v in value or ()]
            else:
                out[f.name] = None if value is None else encode(value, inner)
        elif f.many:
            out[f.name] = [_encode_one(v) for v in value or ()]
        else:
            out[f.name] = _encode_one(value)
    return out


def decode(value: Any, spec: RecordSpec) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("a cached record is an object")
    out: dict[str, Any] = {}
    for f in spec.fields:
        item = value.get(f.name)
        if f.nested is not None:
            inner = f.nested
            if f.many:
                out[f.name] = tuple(decode(v, inner) for v in item or ())
            else:
                out[f.name] = None if item is None else decode(item, inner)
        elif f.many:
            out[f.name] = tuple(_decode_one(v, f) for v in item or ())
        else:
            out[f.name] = _decode_one(item, f)
    return out
