"""Assembles the executable schema with its document caches and error handling."""

from __future__ import annotations

from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from adapters.declared.registry import EMPTY, SystemRegistry
from schema.audit import AuditQuery
from schema.channel_rules import ChannelRules
from schema.direct_fields import resolve_attributes_directly
from schema.errors import CodedErrors, to_coded_error
from schema.marketing import MarketingMutation, MarketingQuery
from schema.operation_facts import OperationFacts
from schema.operation_limits import DocumentMeasures, OperationLimitsRule
from schema.query import Query as CustomerQuery
from schema.stream_audit import StreamAudit
from schema.system_fields import install_system_fields
from schema.system_writes import system_mutations
from schema.timestamps import SCALAR_OVERRIDES
from schema.verification import VerificationMutation, VerificationQuery
from schema.verification_rules import VerificationRules
from schema.workflows import WorkflowMutation, WorkflowQuery, WorkflowSubscription

# Each feature keeps its root fields in its own module; the roots are merged here so that a
# new feature adds one entry to a tuple instead of editing another feature's class.
QUERY_ROOTS: tuple[type, ...] = (
    CustomerQuery,
    VerificationQuery,
    WorkflowQuery,
    AuditQuery,
    MarketingQuery,
)
MUTATION_ROOTS: tuple[type, ...] = (VerificationMutation, WorkflowMutation, MarketingMutation)
SUBSCRIPTION_ROOTS: tuple[type, ...] = (WorkflowSubscription,)


def _merged(name: str, roots: tuple[type, ...]) -> type | None:
    if not roots:
        return None
    if len(roots) == 1 and roots[0].__name__ == name:
        return roots[0]
    return merge_types(name, roots)


class GraphSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # CodedErrors logs what needs logging without the messages (they may hold data);
        # strawberry's default would log every error with its message and stack.
        if (
            execution_context is not None
            and execution_context.graphql_document is not None  # parse errors: none yet
            and execution_context.operation_type is OperationType.SUBSCRIPTION
        ):
            # Subscription results skip CodedErrors' rewrite: code them in place here.
            for error in errors:
                if "code" not in (error.extensions or {}):
                    coded = to_coded_error(error)
                    error.message = coded.message
                    error.extensions = coded.extensions
        return None


def build_schema(
    document_cache_size: int = 1024,
    registry: SystemRegistry = EMPTY,
    *,
    operation_limits: bool = True,
    cached_document_max_chars: int = 32 * 1024,
) -> strawberry.Schema:
    """The schema, with the graph fields of the systems ``registry`` declares.

    ``operation_limits=False`` leaves the limits' extension out altogether (the benchmark's
    off side: ``graphql.operation_limits``), so that what is measured is its whole cost."""
    install_system_fields(registry)
    declared_writes = system_mutations(registry)
    mutation_roots = (*MUTATION_ROOTS, declared_writes) if declared_writes else MUTATION_ROOTS
    extensions: list[Any] = [
        StreamAudit,  # first: the others see a websocket operation's own context
        CodedErrors,
        ChannelRules,
        VerificationRules,
        OperationFacts,
    ]
    if operation_limits:
        # After the channel rules: a refused operation is not costed. Its measures of recent
        # documents are the schema's own, sized like the document caches below.
        measures = DocumentMeasures(document_cache_size, cached_document_max_chars)
        extensions.insert(
            extensions.index(VerificationRules) + 1,
            partial(OperationLimitsRule, measures=measures),
        )
    if document_cache_size:
        # Parsing and validation cost more than execution: cache both per document.
        # Factories, as strawberry asks (a fresh extension per request, strawberry #4369):
        # the LRU behind each is strawberry's own, one per size, shared by every request
        # (validation's keyed by the schema as well).
        extensions += [
            partial(ParserCache, maxsize=document_cache_size),
            partial(ValidationCache, maxsize=document_cache_size),
        ]
    query = _merged("Query", QUERY_ROOTS)
    assert query is not None  # QUERY_ROOTS is never empty
    schema = GraphSchema(
        query=query,
        mutation=_merged("Mutation", mutation_roots),
        # "Subscription" is taken: it is a customer's line (the telecom word).
        subscription=_merged("SubscriptionRoot", SUBSCRIPTION_ROOTS),
        extensions=extensions,
        # One timestamp style in every answer: RFC 3339 in UTC (schema/timestamps.py).
        scalar_overrides=SCALAR_OVERRIDES,
    )
    # The policy's rules on plain attributes, without strawberry's per-call chain.
    resolve_attributes_directly(schema)
    return schema


def operation_names(schema: strawberry.Schema) -> set[str]:
    """The root fields a channel profile may list: queries, mutations and subscriptions."""
    graphql_schema = schema._schema
    names: set[str] = set()
    for root in (
        graphql_schema.query_type,
        graphql_schema.mutation_type,
        graphql_schema.subscription_type,
    ):
        if root is not None:
            names |= set(root.fields)
    return names
