"""Fields that carry personal data, and the extension that applies the policy to them.

The extension sits on the field itself, so every way of reaching the value (aliases,
fragments, variables, lists, nesting) goes through it: there is no second path to the data.
A denied field is null with a FIELD_DENIED error at its path; classified fields are nullable
so that a denial never blanks the object around them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from graphql.pyutils import Path
from strawberry.extensions import FieldExtension
from strawberry.types import Info

from policies.masks import DataClass
from policies.model import Level
from schema.customer_scope import owner_of
from schema.errors import GraphError
from schema.field_info import FieldInfo


def field_path(info: FieldInfo) -> str:
    """The response path without list indices or aliases: parent type names, then fields."""
    names: list[str] = []
    path: Path | None = info.path
    while path is not None:
        if isinstance(path.key, str):
            names.append(path.key)
        path = path.prev
    # Aliases are in the response path; the field name is what policy and audit care about.
    names[0] = info.field_name
    return ".".join(reversed(names))


def denied(info: FieldInfo) -> GraphError:
    return GraphError(
        "FIELD_DENIED",
        f"{info.field_name} is not disclosed to this caller.",
    )


def disclose(info: FieldInfo, data_class: DataClass, value: Any) -> Any:
    """A value of a class as the request's policy lets it out: clear, masked, or denied.

    For fields whose class depends on the value's origin (a crosswalk key's class is its
    system's), resolvers call this directly; fixed classes use the ``Classified`` extension.
    """
    disclosure = info.context.disclosure
    if not disclosure.enforced:
        return value
    # Whose data this is matters only when the request is verified for some customer.
    owner = owner_of(info) if disclosure.principal.verification is not None else None
    decision = disclosure.decide(data_class, owner)
    disclosure.record(field_path(info), decision.level)
    if decision.level is Level.DENIED:
        raise denied(info)
    if decision.level is Level.MASKED:
        return disclosure.policy.mask(data_class, value)
    return value


class Classified(FieldExtension):
    """Applies the request's disclosure decision for one data class to a field's value.

    ``applied`` is the whole rule: strawberry's chain calls it (``resolve``), and so does the
    direct resolver of an attribute field (schema/direct_fields.py)."""

    def __init__(self, data_class: DataClass) -> None:
        super().__init__()
        self.data_class = data_class

    def _apply(self, value: Any, info: FieldInfo) -> Any:
        return disclose(info, self.data_class, value)

    def applied(self, value: Any, source: Any, info: FieldInfo) -> Any:
        """The field's value as this request may see it (or FIELD_DENIED)."""
        return self._apply(value, info)

    def resolve(self, next_: Callable[..., Any], source: Any, info: Info, **kwargs: Any) -> Any:
        return self.applied(next_(source, info, **kwargs), source, info)

    async def resolve_async(
        self,
        next_: Callable[..., Awaitable[Any]],
        source: Any,
        info: Info,
        **kwargs: Any,
    ) -> Any:
        return self.applied(await next_(source, info, **kwargs), source, info)


class KeyClassified(Classified):
    """A crosswalk key: its class is its system's key class (``system_key`` by default).

    ``policy explain`` and the schema's class map see the default class; at run time each
    key goes out as its own system's class decides.
    """

    def _class_of(self, source: Any, info: FieldInfo) -> DataClass:
        found = info.context.backends.key_classes.get(getattr(source, "system", ""))
        return DataClass(found) if found else self.data_class

    def applied(self, value: Any, source: Any, info: FieldInfo) -> Any:
        return disclose(info, self._class_of(source, info), value)


def classified(data_class: DataClass, description: str | None = None) -> Any:
    """A strawberry field carrying personal data of a class."""
    import strawberry

    return strawberry.field(extensions=[Classified(data_class)], description=description)


def classified_fields(schema: Any) -> dict[tuple[str, str], DataClass]:
    """(type name, field name) -> data class, for every classified field of a schema."""
    found: dict[tuple[str, str], DataClass] = {}
    for type_name, graphql_type in schema._schema.type_map.items():
        for field_name, field in (getattr(graphql_type, "fields", None) or {}).items():
            definition = (field.extensions or {}).get("strawberry-definition")
            for extension in getattr(definition, "extensions", None) or ():
                if isinstance(extension, Classified):
                    found[(type_name, field_name)] = extension.data_class
    return found
