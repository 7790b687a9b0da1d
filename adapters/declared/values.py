"""From a system's answer to a declared record: a plain dict of typed values, per field spec.

Values keep their exact text unless a type says otherwise: member numbers such as ``0042``
stay strings byte for byte; ``msisdn`` fields are normalised to E.164; ``map`` translates the
vendor's codes into the graph's values. A field that does not read as its type makes the whole
answer a BadResponse (the system's fields fail, nothing else does).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal, DecimalException
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


#: A path step that picks list elements by a field: ``contactMedium[mediumType=mobile]``.
FILTER_STEP = re.compile(r"^([^\[\]=]+)\[([^\[\]=]+)=([^\[\]]*)\]$")


@functools.cache
def _step(step: str) -> tuple[str, str | None, str | None]:
    """(name, field, value) of a step; field and value are None for a plain step."""
    matched = FILTER_STEP.match(step)
    if matched is None:
        return step, None, None
    return matched.group(1), matched.group(2), matched.group(3)


def has_filter(path: tuple[str, ...]) -> bool:
    return any("[" in step for step in path)


def json_select(value: Any, path: tuple[str, ...]) -> list[Any]:
    """Every value at a path whose steps may filter lists (``relatedParty[role=customer]``):
    a filtered step keeps the list's elements whose field has the value, and the steps after
    it apply to each of them."""
    current = [value]
    for step in path:
        name, key, want = _step(step)
        found: list[Any] = []
        for item in current:
            got = json_find(item, (name,))
            if key is None:
                if got is not None:
                    found.append(got)
            elif isinstance(got, list):
                found += [e for e in got if isinstance(e, dict) and str(e.get(key)) == want]
        current = found
    return current


def xml_select(element: etree._Element, path: tuple[str, ...]) -> list[etree._Element]:
    """Every element at a path whose steps may filter (``contact[type=mobile]``: the children
    named contact whose child type has that text); plain steps follow every match."""
    current = [element]
    for step in path:
        name, key, want = _step(step)
        found: list[etree._Element] = []
        for item in current:
            for child in xml_children(item, name):
                if key is None or xml_text(child, (key,)) == want:
                    found.append(child)
        current = found
    return current


def fill_template(template: Any, values: Mapping[str, Any]) -> Any:
    """A request template with the call's variables ($keys, $key, ...) in place.

    A variable without a value (absent or None: an optional filter, a ticket change that
    leaves the priority alone) leaves out what holds it: its entry in an object, its element
    in a list, and an object or list all of whose variables are unset. The result is None
    when the whole template is left out."""
    filled, _, _ = _fill(template, values)
    return None if filled is _LEFT_OUT else filled


_LEFT_OUT = object()


def _fill(template: Any, values: Mapping[str, Any]) -> tuple[Any, bool, bool]:
    """(filled value, holds variables, some variable has a value)."""
    if isinstance(template, str) and template.startswith("$"):
        value = values.get(template)
        return (_LEFT_OUT, True, False) if value is None else (value, True, True)
    if isinstance(template, dict | list):
        items = template.items() if isinstance(template, dict) else enumerate(template)
        holds = any_set = False
        kept: list[tuple[Any, Any]] = []
        for key, part in items:
            filled, part_holds, part_set = _fill(part, values)
            holds, any_set = holds or part_holds, any_set or part_set
            if filled is not _LEFT_OUT:
                kept.append((key, filled))
        if holds and not any_set:
            return _LEFT_OUT, True, False
        if isinstance(template, dict):
            return dict(kept), holds, any_set
        return [v for _, v in kept], holds, any_set
    return template, False, False


def json_find(value: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


#: What the graph can carry: GraphQL's Int is 32 bits; amounts beyond these (1e400, NaN,
#: Infinity) are a broken or hostile answer, not data, and would fail the caller's answer
#: (or the insight rules) far from the system that sent them.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def _bounded_int(value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError("out of range")
    return value


def _bounded_decimal(value: Decimal) -> Decimal:
    # By the exponent first: comparing 1E+999999999 itself would overflow the context.
    if not value.is_finite() or (value and not -30 <= value.adjusted() < 15):
        raise ValueError("out of range")
    return value


def count_of(raw: Any, system: str, operation: str) -> int:
    """A list's total as a system tells it: a whole number from 0 to 2^31 - 1."""
    try:
        total = int(str(raw).strip()) if raw is not None and not isinstance(raw, bool) else None
    except ValueError:
        total = None
    if total is None or not 0 <= total <= INT_MAX:
        raise BadResponse(system, f"answered {operation} without a total")
    return total


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
            return _bounded_int(int(raw))
        if kind == "float":
            real = float(raw)
            if not math.isfinite(real):
                raise ValueError("not finite")
            return real
        if kind == "decimal":
            return _bounded_decimal(Decimal(str(raw)))
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
            return Money(_bounded_decimal(Decimal(str(value))), str(unit))
        if kind == "date":
            return date.fromisoformat(str(raw)[:10])
        if kind == "datetime":
            return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except (ValueError, TypeError, DecimalException, OverflowError):
        raise BadResponse(system, f"sent a {spec.name} that is not a {spec.type}") from None
    raise BadResponse(system, f"field {spec.name} has an unknown type")


Children = dict[str, list[etree._Element]]


def _children(element: etree._Element) -> Children:
    """An element's children by local name, in order: built once per record, so each field's
    first step is a lookup rather than a scan of every child (a record has dozens)."""
    index: Children = {}
    for child in element:
        tag = child.tag
        if isinstance(tag, str):
            index.setdefault(tag.rpartition("}")[2], []).append(child)
    return index


def _plain_all(element: etree._Element, index: Children, path: tuple[str, ...]) -> list[Any]:
    """``xml_find_all`` through the index: the first match at each step, every match last."""
    if not path:
        return [element]
    first = index.get(path[0], ())
    if len(path) == 1:
        return list(first)
    return xml_find_all(first[0], path[1:]) if first else []


def _plain_text(element: etree._Element, index: Children, path: tuple[str, ...]) -> str | None:
    if not path:
        return element.text or ""
    first = index.get(path[0])
    if not first:
        return None
    found = first[0] if len(path) == 1 else xml_find(first[0], path[1:])
    return None if found is None else (found.text or "")


def _xml_elements(element: etree._Element, index: Children, spec: FieldSpec) -> list[Any]:
    if spec.plain_path:
        return _plain_all(element, index, spec.path)
    for path in (spec.path, *spec.alternatives):
        found = xml_select(element, path) if has_filter(path) else _plain_all(element, index, path)
        if found:
            return found
    return []


def _xml_value(element: etree._Element, index: Children, spec: FieldSpec, system: str) -> Any:
    if spec.nested is not None:
        return _xml_nested(element, index, spec, spec.nested, system)
    if spec.many:
        found = _xml_elements(element, index, spec)
        return tuple(convert(e.text or "", spec, system) for e in found)
    if spec.plain_path:
        return convert(_plain_text(element, index, spec.path), spec, system)
    found = _xml_elements(element, index, spec)
    return convert((found[0].text or "") if found else None, spec, system)


def _xml_nested(
    element: etree._Element, index: Children, spec: FieldSpec, nested: RecordSpec, system: str
) -> Any:
    found = _xml_elements(element, index, spec)
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


def _json_raw(value: Any, spec: FieldSpec) -> Any:
    """The raw value at the field's path, else at the first alternative path that has one."""
    if spec.plain_path:  # the common case, per field of every record: no filter, one path
        return json_find(value, spec.path)
    for path in (spec.path, *spec.alternatives):
        if has_filter(path):
            found = json_select(value, path)
            raw = found if spec.many else (found[0] if found else None)
        else:
            raw = json_find(value, path)
        if raw is not None and raw != []:
            return raw
    return None


def _json_value(value: Any, spec: FieldSpec, system: str) -> Any:
    raw = _json_raw(value, spec)
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
    index = _children(element)
    return {f.name: _xml_value(element, index, f, system) for f in record.fields}


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
