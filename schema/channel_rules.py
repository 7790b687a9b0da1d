"""Channel rules on the operation: which root fields a channel may use, and introspection.

Checked before execution against the channel profile of the caller's credential, so a channel
cannot reach an operation its profile does not list, whatever aliases or fragments it uses.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension

from schema.errors import GraphError

INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


def _fields(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, SelectionSetNode],
    seen: set[str],
) -> Iterator[FieldNode]:
    """Every field in a selection set, through inline fragments and fragment spreads."""
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            yield from _fields(fragments.get(selection.name.value), fragments, seen)


def operation_fields(document: DocumentNode, operation_name: str | None) -> tuple[set[str], bool]:
    """The root fields an operation uses, and whether it introspects anywhere."""
    fragments = {
        d.name.value: d.selection_set
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = next(
        (
            o
            for o in operations
            if operation_name is None or (o.name and o.name.value == operation_name)
        ),
        None,
    )
    if chosen is None:
        return set(), False
    roots = {f.name.value for f in _fields(chosen.selection_set, fragments, set())}
    introspects = bool(roots & INTROSPECTION_FIELDS)
    if not introspects:
        stack = list(_fields(chosen.selection_set, fragments, set()))
        while stack and not introspects:
            node = stack.pop()
            introspects = node.name.value in INTROSPECTION_FIELDS
            stack.extend(_fields(node.selection_set, fragments, set()))
    return roots - INTROSPECTION_FIELDS - {"__typename"}, introspects


class ChannelRules(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        principal = context.context.principal
        profile = context.context.disclosure.policy.channel(principal.channel)
        document = context.graphql_document
        if document is not None and context.context.disclosure.enforced:
            roots, introspects = operation_fields(document, context.operation_name)
            if profile is None:
                raise GraphError(
                    "CHANNEL_NOT_ALLOWED", "This channel has no profile in the policy."
                )
            refused = sorted(op for op in roots if not profile.allows(op))
            if refused:
                raise GraphError(
                    "OPERATION_NOT_ALLOWED",
                    f"The {principal.channel} channel may not use: {', '.join(refused)}.",
                )
            if introspects and not profile.introspection:
                raise GraphError(
                    "INTROSPECTION_NOT_ALLOWED",
                    f"The {principal.channel} channel may not introspect the schema.",
                )
        yield
