"""Attribute fields with a policy rule, resolved without strawberry's per-call chain.

Strawberry resolves a field that carries a field extension through a chain it builds on every
call: an ``Info`` object, the arguments converted, a ``reduce`` over ``partial`` objects, and
only then the extension around the attribute read. The privacy rules sit on many plain
attributes (a name, an MSISDN, a ticket's text; every field of ``Customer`` carries the row
scope), so a 360 answer paid that chain some twenty times. For a field that is only an
attribute of its parent (no resolver, no arguments) and carries exactly one extension that
can apply itself to the value (``applied``: ``Classified`` and its kinds, ``CustomerScope``),
``resolve_attributes_directly`` gives graphql-core a resolver that reads the attribute and
calls that same method: one rule, one path to the data, minus the chain.

Everything else keeps strawberry's chain: fields with a resolver (it may fetch, so a scope
check must come first), with arguments (strawberry converts them), with several extensions
(their order is strawberry's) or with an extension that has no ``applied``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import strawberry
from graphql import GraphQLObjectType, GraphQLResolveInfo

from schema.field_info import FieldInfo


class AppliesToValue(Protocol):
    """A field extension whose whole rule is a function of the value read."""

    def applied(self, value: Any, source: Any, info: FieldInfo) -> Any: ...


def _direct(
    rule: AppliesToValue, read: Callable[[Any, str], Any], name: str
) -> Callable[[Any, GraphQLResolveInfo], Any]:
    applied = rule.applied

    def resolve(source: Any, info: GraphQLResolveInfo) -> Any:
        return applied(read(source, name), source, info)

    return resolve


def resolve_attributes_directly(schema: strawberry.Schema) -> list[str]:
    """Give each eligible field (see the module's docstring) its direct resolver; the fields
    changed, as ``Type.field``."""
    changed: list[str] = []
    for type_name, graphql_type in schema._schema.type_map.items():
        if not isinstance(graphql_type, GraphQLObjectType):
            continue
        for field_name, field in graphql_type.fields.items():
            definition = (field.extensions or {}).get("strawberry-definition")
            if definition is None or definition.base_resolver is not None or field.args:
                continue
            extensions = definition.extensions
            if len(extensions) != 1 or not callable(getattr(extensions[0], "applied", None)):
                continue
            # The attribute read is strawberry's own default resolver (getattr unless the
            # schema's config says otherwise), set on the field when the schema was built.
            field.resolve = _direct(
                extensions[0], definition.default_resolver, definition.python_name
            )
            changed.append(f"{type_name}.{field_name}")
    return changed
