"""`switchboard policy explain`: per field of a query, what a caller would get and why."""

from __future__ import annotations

from dataclasses import dataclass, fields

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    InlineFragmentNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    parse,
    validate,
)

from policies.model import ROWS_VERIFIED_CUSTOMER, Policy
from policies.principal import Principal
from policies.verification import rank
from schema.channel_rules import _fields, operation_fields
from schema.classified import classified_fields
from schema.cost import OperationFigures, analyse_operation, count_tokens
from schema.operation_limits import CODES
from schema.search_rules import SEARCH_ARGUMENTS, search_refusal
from schema.verification_rules import paging_roots


@dataclass(frozen=True)
class FieldVerdict:
    path: str
    outcome: str  # clear | masked | denied | "not personal data" (always clear)
    reason: str


@dataclass(frozen=True)
class LimitCheck:
    name: str  # the policy key: max_cost, max_depth, ...
    found: int
    limit: int

    @property
    def exceeded(self) -> bool:
        return self.found > self.limit


@dataclass(frozen=True)
class SearchCheck:
    where: str  # e.g. "customers(namePrefix:)"
    data_class: str
    refusal: str | None  # why not; None: allowed


@dataclass(frozen=True)
class OperationReport:
    """What the operation limits and search rules make of a query, for `policy explain`."""

    figures: OperationFigures
    limits: list[LimitCheck]
    dry_run: bool
    searches: list[SearchCheck]


def _searches(
    document: DocumentNode, policy: Policy, principal: Principal, purpose: str | None
) -> list[SearchCheck]:
    fragments = {
        d.name.value: d.selection_set
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }
    found: list[SearchCheck] = []
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        for node in _fields(definition.selection_set, fragments, set()):
            for argument in node.arguments or ():
                key = (node.name.value, argument.name.value)
                if key not in SEARCH_ARGUMENTS or isinstance(argument.value, NullValueNode):
                    continue
                where = f"{key[0]}({key[1]}:)"
                if all(check.where != where for check in found):
                    found.append(
                        SearchCheck(
                            where,
                            SEARCH_ARGUMENTS[key].data_class.value,
                            search_refusal(policy, principal, purpose, *key),
                        )
                    )
    return found


def operation_report(
    schema: object,
    policy: Policy,
    principal: Principal,
    purpose: str | None,
    document_text: str,
    max_page_size: int = 200,
) -> OperationReport | None:
    """Cost, depth, aliases, root fields and tokens against the channel's limits, and each
    search argument against the search rule; None if the document is not valid."""
    graphql_schema = schema._schema  # type: ignore[attr-defined]
    try:
        document = parse(document_text)
    except GraphQLError:
        return None
    if validate(graphql_schema, document):
        return None
    limits = policy.limits_for(principal.channel)
    figures = analyse_operation(
        graphql_schema, document, None, None, max_page_size=max_page_size, detail=True
    )
    found = {
        "max_cost": figures.cost,
        "max_depth": figures.depth,
        "max_aliases": figures.aliases,
        "max_root_fields": figures.root_fields,
        "max_tokens": count_tokens(document_text),
    }
    checks = [
        LimitCheck(f.name, found[f.name], getattr(limits, f.name))
        for f in fields(limits)
        if f.name in found
    ]
    return OperationReport(
        figures, checks, limits.dry_run, _searches(document, policy, principal, purpose)
    )


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
    report = operation_report(schema, policy, principal, purpose, document_text)
    if report is not None:
        if not report.dry_run:
            refusals += [
                f"{check.name}: {check.found} > {check.limit} ({CODES[check.name]})"
                for check in report.limits
                if check.exceeded
            ]
        refusals += [
            f"search {check.where} on class {check.data_class}: {check.refusal} "
            "(SEARCH_NOT_ALLOWED)"
            for check in report.searches
            if check.refusal is not None
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
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    target = graphql_schema.get_type(fragment.type_condition.name.value)
                    walk(fragment.selection_set, target, prefix)

    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            root = graphql_schema.get_root_type(definition.operation)
            walk(definition.selection_set, root, "")
    return refusals, list(verdicts.values())
