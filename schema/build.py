"""Assembles the executable schema with its document caches and error handling."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from schema.audit import AuditQuery
from schema.channel_rules import ChannelRules
from schema.errors import CodedErrors
from schema.operation_facts import OperationFacts
from schema.query import Query as CustomerQuery

# Each feature keeps its root fields in its own module; the roots are merged here so that a
# new feature adds one entry to a tuple instead of editing another feature's class.
QUERY_ROOTS: tuple[type, ...] = (CustomerQuery, AuditQuery)
MUTATION_ROOTS: tuple[type, ...] = ()
SUBSCRIPTION_ROOTS: tuple[type, ...] = ()


def _merged(name: str, roots: tuple[type, ...]) -> type | None:
    if not roots:
        return None
    if len(roots) == 1:
        return roots[0]
    return merge_types(name, roots)


class GraphSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # CodedErrors logs what needs logging without the messages (they may hold data);
        # strawberry's default would log every error with its message and stack.
        return None


def build_schema(document_cache_size: int = 1024) -> strawberry.Schema:
    extensions: list[Any] = [CodedErrors, ChannelRules, OperationFacts]
    if document_cache_size:
        # Parsing and validation cost more than execution: cache both per document.
        extensions += [
            ParserCache(maxsize=document_cache_size),
            ValidationCache(maxsize=document_cache_size),
        ]
    return GraphSchema(
        query=_merged("Query", QUERY_ROOTS),
        mutation=_merged("Mutation", MUTATION_ROOTS),
        subscription=_merged("Subscription", SUBSCRIPTION_ROOTS),
        extensions=extensions,
    )


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
