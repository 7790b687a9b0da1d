"""`switchboard policy explain`: per field of a query, what a caller would get and why."""

from __future__ import annotations

from dataclasses import dataclass

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLObjectType,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    parse,
    validate,
)

from policies.model import ROWS_VERIFIED_CUSTOMER, Policy
from policies.principal import Principal
from policies.verification import rank
from schema.channel_rules import operation_fields
from schema.classified import classified_fields
from schema.verification_rules import paging_roots


@dataclass(frozen=True)
class FieldVerdict:
    path: str
    outcome: str  # clear | masked | denied | "not personal data" (always clear)
    reason: str


def explain(
    schema: object,
    policy: Policy,
    principal: Principal,
    purpose: str | None,
    document_text: str,
    verified: str | None = None,
) -> tuple[list[str], list[FieldVerdict]]:
    """Refusals of the whole operation (if any), and a verdict per field path.

    `verified` is the level the caller holds for the customer whose data it reads (a
    verification counts for that customer only: anyone else's data is decided as unverified).
    """
    graphql_schema = schema._schema  # type: ignore[attr-defined]
    try:
        document = parse(document_text)
    except GraphQLError as error:
        return [f"the query does not parse: {error.message}"], []
    errors = validate(graphql_schema, document)
    if errors:
        return [f"the query is not valid: {e.message}" for e in errors], []
    refusals: list[str] = []
    profile = policy.channel(principal.channel)
    roots, introspects = operation_fields(document, None)
    if profile is None:
        refusals.append(f"channel '{principal.channel}' has no profile: every request is refused")
    else:
        refusals += [
            f"operation '{op}' is not allowed for channel '{principal.channel}'"
            for op in sorted(roots)
            if not profile.allows(op)
        ]
        if introspects and not profile.introspection:
            refusals.append(f"channel '{principal.channel}' may not introspect")
        levels = policy.verification_levels
        for op in sorted(roots):
            required = profile.requires_verification.get(op)
            if required is not None and rank(levels, verified) < rank(levels, required):
                refusals.append(
                    f"operation '{op}' needs verification level {required} in channel "
                    f"'{principal.channel}' (VERIFICATION_REQUIRED)"
                )
        if profile.rows == ROWS_VERIFIED_CUSTOMER:
            refusals += [
                f"operation '{op}' pages through customers; channel '{principal.channel}' acts "
                "for its verified customer only (CUSTOMER_NOT_IN_SCOPE)"
                for op in paging_roots(graphql_schema, roots)
            ]
    classes = classified_fields(schema)
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    verdicts: dict[str, FieldVerdict] = {}

    def walk(selection_set: SelectionSetNode | None, parent: object, prefix: str) -> None:
        if selection_set is None or not isinstance(parent, GraphQLObjectType):
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name.startswith("__"):
                    continue
                path = f"{prefix}.{name}" if prefix else name
                data_class = classes.get((parent.name, name))
                if selection.selection_set is not None:
                    pass  # an object: its leaves carry the verdicts
                elif data_class is None:
                    verdicts.setdefault(path, FieldVerdict(path, "not personal data", ""))
                else:
                    decision = policy.decide(data_class, principal, purpose, verified)
                    verdicts[path] = FieldVerdict(
                        path,
                        decision.level.value,
                        f"class {data_class.value}, rule {decision.rule_id}",
                    )
                field = parent.fields.get(name)
                if field is not None:
                    walk(selection.selection_set, get_named_type(field.type), path)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = graphql_schema.get_type(condition.name.value) if condition else parent
                walk(selection.selection_set, target, prefix)
            else:
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    target = graphql_schema.get_type(fragment.type_condition.name.value)
                    walk(fragment.selection_set, target, prefix)

    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            root = graphql_schema.get_root_type(definition.operation)
            walk(definition.selection_set, root, "")
    return refusals, list(verdicts.values())
