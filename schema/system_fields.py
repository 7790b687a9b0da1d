"""Graph fields and types that declared systems bring (``graph:`` in a mapping file).

At schema build, each declared system with a ``graph`` section adds one field to ``Customer``
(a list of its records) and a type per record, plus paged connections under it. Fields whose
mapping names a data class are ``classified`` like the hand-written ones, so masking, denial,
row scope, verification, the access log and ``policy explain`` cover them with no code.
Every such field is nullable: when the system fails, its field is null with a coded error and
everything else still answers.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from types import GenericAlias
from typing import Any

import strawberry
from strawberry.types import Info
from strawberry.types.base import get_object_definition

from adapters.declared.registry import SystemRegistry
from adapters.declared.spec import ConnectionSpec, RecordSpec, SystemSpec
from adapters.declared.values import Record
from policies.masks import DataClass
from schema.classified import classified
from schema.cost import FieldCost, ListSize, declare_field_cost
from schema.customer_scope import CustomerScope
from schema.errors import identity_conflict
from schema.types import Customer, Money, check_page

PYTHON_TYPES: dict[str, type] = {
    "string": str,
    "msisdn": str,
    "int": int,
    "float": float,
    "decimal": Decimal,
    "bool": bool,
    "date": date,
    "datetime": datetime,
    # records.Money values; the graph's Money type reads their amount and currency.
    "money": Money,
}

#: Customer's own fields, before any system added some (a schema may be built more than once).
_CUSTOMER_FIELDS = list(get_object_definition(Customer, strict=True).fields)


def record_type(
    name: str,
    record: RecordSpec,
    description: str | None,
    extra: dict[str, Any] | None = None,
) -> type:
    # Named first: mypy reads a subscripted alias inside a dict display as a type application.
    located = strawberry.Private[tuple[str, str] | None]
    annotations: dict[str, Any] = {"_located": located}
    namespace: dict[str, Any] = {"__annotations__": annotations, "_located": None}
    nested: dict[str, type] = {}
    for field in record.fields:
        if field.nested is not None:
            # A record inside the record: a type of its own, named after where it sits.
            kind = nested[field.name] = record_type(
                f"{name}{field.name[:1].upper()}{field.name[1:]}", field.nested, None
            )
        else:
            kind = PYTHON_TYPES[field.type]
        # GenericAlias is what list[kind] builds, spelt so for a type known only at run time.
        annotations[field.name] = GenericAlias(list, kind) | None if field.many else kind | None
        if field.data_class:
            namespace[field.name] = classified(DataClass(field.data_class), field.description)
        else:
            namespace[field.name] = strawberry.field(description=field.description, default=None)
    namespace.update(extra or {})
    built = strawberry.type(type(name, (), namespace), name=name, description=description)
    _NESTED_TYPES[built] = nested
    GENERATED_TYPE_NAMES.add(name)
    return built


#: The nested record types of each generated type, by field (how ``_instance`` builds them).
_NESTED_TYPES: dict[type, dict[str, type]] = {}
#: The names of the types generated from declared records and their pages: all of their
#: fields are a system's records (schema/answer_scope.py may reuse answers made of them).
GENERATED_TYPE_NAMES: set[str] = set()


def _page_type(name: str, item: type) -> type:
    namespace = {"__annotations__": {"total_count": int, "items": GenericAlias(list, item)}}
    GENERATED_TYPE_NAMES.add(name)
    return strawberry.type(type(name, (), namespace), name=name)


def _instance(record_type: type, values: Record, located: tuple[str, str] | None) -> Any:
    names = {f.python_name for f in get_object_definition(record_type, strict=True).fields}
    nested = _NESTED_TYPES.get(record_type, {})
    given = {}
    for key, value in values.items():
        if key not in names:
            continue
        inner = nested.get(key)
        if inner is not None and value is not None:
            value = (
                [_instance(inner, v, None) for v in value]
                if isinstance(value, tuple | list)
                else _instance(inner, value, None)
            )
        given[key] = value
    item = record_type(**given)
    item._located = located
    return item


def _connection_field(spec: SystemSpec, connection: ConnectionSpec, item_type: type) -> Any:
    page_type = _page_type(f"{connection.type}Page", item_type)
    operation = spec.operations[connection.operation]

    async def resolve(root: Any, info: Info, first: int = connection.first, offset: int = 0) -> Any:
        # The hub's page limit (what the cost limit assumes), and the system's own if lower.
        hub_limit = info.context.backends.max_page_size
        limit = min(operation.max_limit or hub_limit, hub_limit)
        first = check_page(first, offset, limit, connection.first)
        instance, _ = root._located
        key = getattr(root, connection.key)
        if key is None:
            return None
        info.context.backends_called.add(instance)
        system = info.context.backends.systems[spec.name]
        total, records = await system.page(connection.operation, instance, key, offset, first)
        return page_type(total_count=total, items=[_instance(item_type, r, None) for r in records])

    resolve.__annotations__["return"] = page_type | None
    return strawberry.field(resolver=resolve, description=connection.description)


def _customer_field(spec: SystemSpec, record_type: type) -> strawberry.types.field.StrawberryField:
    graph = spec.graph
    assert graph is not None
    name, read = spec.name, graph.read

    async def resolve(root: Customer, info: Info) -> Any:
        identity = root._identity
        loaders = info.context.loaders
        keys = await loaders.system_keys(name, identity)
        if not keys and any(identity.conflicts_in(i) for i in spec.instance_names):
            raise identity_conflict(name)
        records = await loaders.system_records(name, read).load_many(keys)
        return [
            _instance(record_type, record, key)
            for key, record in zip(keys, records, strict=True)
            if record is not None
        ]

    resolve.__annotations__["return"] = list[record_type] | None  # type: ignore[valid-type]
    field = strawberry.field(
        resolver=resolve,
        name=graph.field,
        description=graph.description or f"The customer's records in {spec.title}.",
        extensions=[CustomerScope()],
    )
    field.python_name = graph.field
    field.origin = Customer
    return field


def _declare_costs(spec: SystemSpec) -> None:
    """What the system's fields can cost in backend calls, for the operation limits."""
    graph = spec.graph
    assert graph is not None
    # A lookup by number (lazy linking) and a read by key, both batched for the whole request.
    declare_field_cost(f"Customer.{graph.field}", FieldCost(2, batched=True), ListSize(assumed=2))
    for connection in graph.connections:
        # One page call per record it hangs under.
        declare_field_cost(
            f"{graph.type}.{connection.name}",
            FieldCost(1),
            ListSize("first", sized_fields=("items",)),
        )
    for write in spec.writes.values():
        declare_field_cost(f"Mutation.{write.name}", FieldCost(2))


def install_system_fields(registry: SystemRegistry) -> None:
    """Give ``Customer`` the fields of the declared systems (and only theirs)."""
    fields = list(_CUSTOMER_FIELDS)
    for spec in registry:
        graph = spec.graph
        if graph is None:
            continue
        record = spec.records[graph.record]
        extra: dict[str, Any] = {}
        for connection in graph.connections:
            item = spec.records[spec.operations[connection.operation].record or ""]
            item_type = record_type(connection.type, item, None)
            extra[connection.name] = _connection_field(spec, connection, item_type)
        member_type = record_type(graph.type, record, graph.description, extra)
        fields.append(_customer_field(spec, member_type))
        _declare_costs(spec)
    get_object_definition(Customer, strict=True).fields[:] = fields
