"""Channel rules on the operation: which root fields a channel may use, and introspection.

Checked before execution against the channel profile of the caller's credential, so a channel
cannot reach an operation its profile does not list, whatever aliases or fragments it uses.

A channel that may not introspect must not learn the schema from validation messages either:
graphql-core's "Did you mean 'customer'?" suggestions name fields, arguments, types and enum
values. For such channels a document that fails validation is validated again with
suggestions hidden (graphql-core's own ``hide_suggestions``), and those errors go out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    validate,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from schema.errors import GraphError, to_coded_error

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
    def on_operation(self) -> Iterator[None]:
        yield
        self._hide_suggestions(self.execution_context.result)  # HTTP: the one result

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self._hide_suggestions(result)  # websocket: before the result is sent
        yield

    def _hide_suggestions(self, result: Any) -> None:
        context = self.execution_context
        if result is None or not result.errors or context.graphql_document is None:
            return  # answered, or not parsed: no validation messages
        if any(e.original_error is not None or e.path is not None for e in result.errors):
            return  # not (only) validation errors
        request = context.context
        disclosure = getattr(request, "disclosure", None)
        if disclosure is None or not disclosure.enforced:
            return
        profile = disclosure.policy.channel(request.principal.channel)
        if profile is not None and profile.introspection:
            return
        # Validated again without suggestions. The result's list may be the validation cache's
        # (shared by every channel): the result gets a new list, the cached one is untouched.
        # Strawberry validates with these two rules added to the schema's (validate_document).
        hidden = validate(
            context.schema._schema,
            context.graphql_document,
            (*context.validation_rules, MaybeNullValidationRule, OneOfInputValidationRule),
            hide_suggestions=True,
        )
        if hidden:
            # Coded here: a websocket result is sent before CodedErrors sees it.
            result.errors = [to_coded_error(e) for e in hidden]

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
