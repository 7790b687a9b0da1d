"""From a declared record (a dict of typed values) to the hub's canonical record dataclass.

A system that plays a role names its records after the canonical ones (``BillingAccount``,
``Bill``...) and its fields after theirs (``holder_name``, ``amount_due``...), so the mapping
is by name, checked when the files are read. A field the answer left out gets the canonical
type's empty value ("" for text, () for lists, zero for money), as the hand-written adapters
did, so a system that does not know a field never fails the record for it. An enum field
(``CustomerProfile.star_level``) is built from its value, which the mapping's ``map:`` gives
(the check holds every mapped code to the enum's values).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from adapters import records
from adapters.records import Money


def _record_class(name: str) -> type:
    found = getattr(records, name, None)
    if not (isinstance(found, type) and dataclasses.is_dataclass(found)):
        raise KeyError(name)
    return found


def camel(name: str) -> str:
    """``amount_due`` -> ``amountDue``: how a mapping names a canonical field."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def canonical_fields(name: str) -> frozenset[str]:
    """The mapping's names of the canonical record's fields (empty for an unknown record)."""
    try:
        return frozenset(camel(f.name) for f in dataclasses.fields(_record_class(name)))
    except KeyError:
        return frozenset()


def canonical_enums(name: str) -> dict[str, frozenset[str]]:
    """The mapping's names of the record's enum fields -> the values the enum takes."""
    try:
        cls = _record_class(name)
    except KeyError:
        return {}
    hints = typing.get_type_hints(cls)
    return {
        camel(f.name): frozenset(str(member.value) for member in hints[f.name])
        for f in dataclasses.fields(cls)
        if _enum_of(hints[f.name]) is not None
    }


def _enum_of(hint: Any) -> type[enum.Enum] | None:
    candidates = [hint, *typing.get_args(hint)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, enum.Enum)), None)


def _empty_for(hint: Any) -> Callable[[], Any]:
    """What a missing value of this annotated type becomes."""
    args = typing.get_args(hint)
    if type(None) in args:
        return lambda: None
    if hint is str:
        return str
    if hint is Money:
        return lambda: Money(Decimal("0"))
    if typing.get_origin(hint) is tuple:
        return tuple
    if hint is int:
        return int
    if hint is Decimal:
        return lambda: Decimal("0")
    if hint is bool:
        return bool
    inner = nested_record(hint)
    if inner is not None:  # a record the answer left out: the record of empty values
        return lambda: to_canonical(inner, {})
    return lambda: None


def nested_record(hint: Any) -> str | None:
    """The canonical record a field holds (``Usage``; ``TicketNote`` for a tuple of them)."""
    if typing.get_origin(hint) is tuple:
        hint = typing.get_args(hint)[0]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and hint is not Money:
        return hint.__name__
    return None


def canonical_nested(name: str) -> dict[str, str]:
    """The mapping's names of the canonical record's fields that hold records -> their record."""
    try:
        cls = _record_class(name)
    except KeyError:
        return {}
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        inner = nested_record(hints[f.name])
        if inner is not None:
            found[camel(f.name)] = inner
    return found


def _converter(hint: Any) -> Callable[[Any], Any] | None:
    """How a declared nested value (a dict, or a tuple of dicts) or an enum's value becomes
    the canonical one; None: the value is the canonical one already."""
    members = _enum_of(hint)
    if members is not None:
        return members  # StarLevel("gold")
    inner = nested_record(hint)
    if inner is None:
        return None
    if typing.get_origin(hint) is tuple:
        return lambda values: tuple(to_canonical(inner, v) for v in values)
    return lambda value: to_canonical(inner, value)


@functools.cache
def _builder(name: str) -> Callable[[Mapping[str, Any]], Any]:
    cls = _record_class(name)
    hints = typing.get_type_hints(cls)
    plan = [
        (f.name, camel(f.name), _empty_for(hints[f.name]), _converter(hints[f.name]))
        for f in dataclasses.fields(cls)
    ]

    def build(record: Mapping[str, Any]) -> Any:
        values = {}
        for field_name, declared, empty, convert in plan:
            value = record.get(declared)
            if value is None:
                values[field_name] = empty()
            else:
                values[field_name] = value if convert is None else convert(value)
        return cls(**values)

    return build


def to_canonical(name: str, record: Mapping[str, Any]) -> Any:
    """The canonical ``name`` record built from a declared record of the same name."""
    return _builder(name)(record)
