"""Static cost of an operation: how many backend calls it can cause, before it runs.

The analysis walks the validated document of the chosen operation (aliases counted, fragments
expanded, variables resolved) and adds, per field, the backend calls one resolution of it can
cause, times the number of times it resolves:

- a field that calls a backend directly (a customer search, a bill page per account) costs its
  calls once per parent object it resolves under, so list sizes above it multiply it;
- a field that resolves through a per-request DataLoader (schema/loaders.py) costs the batched
  call once per place it appears in the document, whatever the number of parents: the loader
  sends one call per list level for all of them (chunked, ``BATCH_SIZE`` keys per call, as the
  adapters do). Two aliases of the same loader field count twice, though the loader may share
  one call: the estimate errs on the high side.

List sizes come from the field's page argument (``first``): its value, or the variable's, or
the argument's default, or the schema's max page size if it has none, capped at the max page
size (beyond it the resolver refuses the page anyway). Lists without a page argument have an
assumed size. Like IBM's cost directive (``@listSize(slicingArguments, sizedFields)``), a
connection's size applies to the children that hold its items (``nodes``, ``items``).

The cost table is data keyed by ``Type.field``, with a default for fields it does not name (a
field that only reads what its parent already loaded costs nothing); it is meant to be derived
from the systems' mapping files later. Introspection fields are not counted: the channel
profile decides whether a channel may introspect, and they call no backend.

Besides cost the walk counts depth (nested field levels), aliases and root fields, the bounds
GraphQL Armor calls max-depth, max-aliases and max-root-fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    Lexer,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    TokenKind,
    VariableNode,
    get_named_type,
)

#: Keys per batched backend call (adapters/boss.py MAX_BATCH, adapters/rest.py
#: MAX_FILTER_VALUES).
BATCH_SIZE = 100
#: Items a list without a page argument is assumed to hold.
DEFAULT_LIST_SIZE = 10


@dataclass(frozen=True, slots=True)
class FieldCost:
    """The backend calls one resolution of a field can cause."""

    calls: int = 0
    #: Through a per-request DataLoader: once per list level, not per parent.
    batched: bool = False


@dataclass(frozen=True, slots=True)
class ListSize:
    """How many items a list field (or a page holding a list) returns."""

    #: The argument that bounds it (e.g. "first"); None: the size is assumed.
    slicing_argument: str | None = None
    assumed: int = DEFAULT_LIST_SIZE
    #: For a page object: the children holding its items (the size applies to them).
    sized_fields: tuple[str, ...] = ()


DEFAULT_FIELD_COST = FieldCost()

#: Type.field -> its backend calls. Keep in step with the resolvers (schema/query.py,
#: schema/types.py, schema/verification.py) until the mapping files say it.
FIELD_COSTS: dict[str, FieldCost] = {
    # Entry points: a crosswalk lookup by hub id (identity resolution at first sight) is
    # batched; a lookup by MSISDN and a search page are one customer-system call each.
    "Query.customer": FieldCost(1, batched=True),
    "Query.customerByMsisdn": FieldCost(1),
    "Query.customers": FieldCost(1),
    "Query.offerings": FieldCost(1),
    # A customer's pieces, each from its system through a loader.
    "Customer.profile": FieldCost(1, batched=True),
    "Customer.subscriptions": FieldCost(1, batched=True),
    "Customer.billingAccounts": FieldCost(1, batched=True),
    "Customer.tickets": FieldCost(1, batched=True),
    "Customer.interactions": FieldCost(1, batched=True),
    "BillingAccount.balance": FieldCost(1, batched=True),
    # Insight reads the profile, lines, accounts' balances, tickets and interactions through
    # the loaders and a year of bills and payments per account (2 assumed): counted per
    # customer, erring high when the 360 query loads the same records anyway.
    "Customer.insight": FieldCost(10),
    # Pages of bills and payments: one billing call per account.
    "BillingAccount.bills": FieldCost(1),
    "BillingAccount.payments": FieldCost(1),
    # Verifications: the customer's lines (or profile), and the SMS through care.
    "Mutation.startOtp": FieldCost(2),
    "Mutation.checkIdCard": FieldCost(1),
}

#: Type.field -> its list size, for the lists and pages whose size matters.
LIST_SIZES: dict[str, ListSize] = {
    "Query.customers": ListSize("first", sized_fields=("nodes",)),
    "Query.offerings": ListSize(assumed=50),
    "Customer.subscriptions": ListSize(assumed=5),
    "Customer.billingAccounts": ListSize(assumed=2),
    "Customer.tickets": ListSize("first"),
    "Customer.interactions": ListSize("first"),
    "BillingAccount.bills": ListSize("first", sized_fields=("items",)),
    "BillingAccount.payments": ListSize("first", sized_fields=("items",)),
}


def declare_field_cost(key: str, cost: FieldCost, size: ListSize | None = None) -> None:
    """Cost a field a declared system adds (schema/system_fields.py), from its mapping."""
    FIELD_COSTS[key] = cost
    if size is not None:
        LIST_SIZES[key] = size


@dataclass(slots=True)
class OperationFigures:
    """What the analysis found for one operation."""

    cost: int = 0
    depth: int = 0
    aliases: int = 0
    root_fields: int = 0
    #: Field path -> its estimated calls (filled only when asked for, for `policy explain`).
    paths: dict[str, int] = field(default_factory=dict)


def count_tokens(text: str, stop_after: int | None = None) -> int:
    """Lexical tokens of a document, comments included (as the parser's `max_tokens` counts
    them); stops counting past `stop_after` (a run of comments is read whole first)."""
    lexer = Lexer(Source(text))
    previous = lexer.token
    count = 0
    try:
        while True:
            token = lexer.advance()
            # The lexer skips comments but links them between the tokens it returns.
            between = previous.next
            while between is not None and between is not token:
                count += 1
                between = between.next
            if token.kind is TokenKind.EOF:
                return count
            count += 1
            if stop_after is not None and count > stop_after:
                return count
            previous = token
    except GraphQLError:
        return count  # a document that does not lex: the tokens before the error


def _is_list(field_def: GraphQLField) -> bool:
    kind = field_def.type
    if isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    return isinstance(kind, GraphQLList)


class _Walk:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, Any] | None,
        max_page_size: int,
        detail: bool,
    ) -> None:
        self.schema = schema
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.variables = dict(variables or {})
        self.variable_defaults: dict[str, Any] = {}
        self.max_page_size = max_page_size
        self.detail = detail
        #: (fragment, type, times) -> (cost, depth, aliases): a fragment spread many times
        #: is walked once per multiplicity, so nested spreads cannot blow the walk up.
        self.memo: dict[tuple[str, str, int], tuple[int, int, int]] = {}
        self.active: set[tuple[str, str, int]] = set()
        self.paths: dict[str, int] = {}

    def page_size(self, node: FieldNode, field_def: GraphQLField, size: ListSize) -> int:
        if size.slicing_argument is None:
            return size.assumed
        name = size.slicing_argument
        value: Any = None
        argument = next((a for a in node.arguments or () if a.name.value == name), None)
        if argument is not None:
            if isinstance(argument.value, IntValueNode):
                value = int(argument.value.value)
            elif isinstance(argument.value, VariableNode):
                variable = argument.value.name.value
                value = self.variables.get(variable, self.variable_defaults.get(variable))
        if value is None and argument is None:
            defined = field_def.args.get(name)
            default = defined.default_value if defined is not None else None
            value = default if isinstance(default, int) else None
        if isinstance(value, bool) or not isinstance(value, int):
            return self.max_page_size
        return max(0, min(value, self.max_page_size))

    def selections(
        self, selection_set: SelectionSetNode | None, parent: Any, times: int, path: str
    ) -> tuple[int, int, int]:
        """(cost, depth, aliases) of a selection set resolved `times` times."""
        if selection_set is None or not isinstance(parent, GraphQLObjectType):
            return 0, 0, 0
        cost = depth = aliases = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                c, d, a = self.field(selection, parent, times, path)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                c, d, a = self.selections(selection.selection_set, target, times, path)
            elif isinstance(selection, FragmentSpreadNode):
                c, d, a = self.spread(selection.name.value, times, path)
            else:
                continue
            cost, depth, aliases = cost + c, max(depth, d), aliases + a
        return cost, depth, aliases

    def spread(self, name: str, times: int, path: str) -> tuple[int, int, int]:
        fragment = self.fragments.get(name)
        if fragment is None:
            return 0, 0, 0
        target = self.schema.get_type(fragment.type_condition.name.value)
        key = (name, getattr(target, "name", ""), times)
        if key in self.active:
            return 0, 0, 0  # a cycle (validation refuses them): nothing more to count
        if not self.detail and key in self.memo:
            return self.memo[key]
        self.active.add(key)
        try:
            found = self.selections(fragment.selection_set, target, times, path)
        finally:
            self.active.discard(key)
        self.memo[key] = found
        return found

    def field(
        self, node: FieldNode, parent: GraphQLObjectType, times: int, path: str
    ) -> tuple[int, int, int]:
        name = node.name.value
        if name.startswith("__"):
            return 0, 0, 0  # introspection and __typename: no backend, the profile decides
        field_def = parent.fields.get(name)
        if field_def is None:
            return 0, 0, 0
        key = f"{parent.name}.{name}"
        label = node.alias.value if node.alias else name
        shown = f"{path}.{label}" if path else label
        rule = FIELD_COSTS.get(key, DEFAULT_FIELD_COST)
        # A loader sends one call per list level for all parents; a direct call, one each.
        own = rule.calls * (math.ceil(times / BATCH_SIZE) if rule.batched else times)
        if self.detail and own:
            self.paths[shown] = self.paths.get(shown, 0) + own
        size = LIST_SIZES.get(key)
        if size is None and _is_list(field_def):
            size = ListSize()
        child = get_named_type(field_def.type)
        aliases = 1 if node.alias is not None else 0
        if size is None:
            c, d, a = self.selections(node.selection_set, child, times, shown)
        elif not size.sized_fields:
            count = self.page_size(node, field_def, size)
            c, d, a = self.selections(node.selection_set, child, times * count, shown)
        else:
            count = self.page_size(node, field_def, size)
            c, d, a = self.sized(node, child, times, count, size.sized_fields, shown)
        return own + c, d + 1, aliases + a

    def sized(
        self,
        node: FieldNode,
        page: Any,
        times: int,
        count: int,
        sized_fields: tuple[str, ...],
        path: str,
    ) -> tuple[int, int, int]:
        """A page object: its item lists resolve `count` times more often than the page."""
        if node.selection_set is None or not isinstance(page, GraphQLObjectType):
            return 0, 0, 0
        cost = depth = aliases = 0
        for selection in _flatten(node.selection_set, self.fragments, set()):
            item_times = times * count if selection.name.value in sized_fields else times
            field_def = page.fields.get(selection.name.value)
            if field_def is None or selection.name.value.startswith("__"):
                continue
            shown = f"{path}.{selection.alias.value if selection.alias else selection.name.value}"
            c, d, a = self.selections(
                selection.selection_set, get_named_type(field_def.type), item_times, shown
            )
            cost, depth, aliases = (
                cost + c,
                max(depth, d + 1),
                aliases + a + (1 if selection.alias else 0),
            )
        return cost, depth, aliases


def _flatten(
    selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode], seen: set
) -> list[FieldNode]:
    """The fields of a selection set, through fragments (for a page object's few fields)."""
    found: list[FieldNode] = []
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            found.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            found += _flatten(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                found += _flatten(fragment.selection_set, fragments, seen | {fragment.name.value})
    return found


def chosen_operation(
    document: DocumentNode, operation_name: str | None
) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == operation_name), None)


def analyse_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
    max_page_size: int = 200,
    detail: bool = False,
) -> OperationFigures:
    """Cost, depth, aliases and root fields of the operation a request runs.

    `document` must have passed validation. `detail` also fills the calls per field path.
    """
    operation = chosen_operation(document, operation_name)
    if operation is None:
        return OperationFigures()
    root = schema.get_root_type(operation.operation)
    walk = _Walk(schema, document, variables, max_page_size, detail)
    for definition in operation.variable_definitions or ():
        if isinstance(definition.default_value, IntValueNode):
            name = definition.variable.name.value
            walk.variable_defaults[name] = int(definition.default_value.value)
    cost, depth, aliases = walk.selections(operation.selection_set, root, 1, "")
    roots = [
        f
        for f in _flatten(operation.selection_set, walk.fragments, set())
        if not f.name.value.startswith("__")
    ]
    return OperationFigures(cost, depth, aliases, len(roots), walk.paths)
