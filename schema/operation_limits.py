"""Operation limits from the policy, enforced before anything executes.

Per channel (policy key `limits`): tokens (before parsing; counting stops past the limit),
then depth, aliases, root fields and the estimated backend calls (schema/cost.py) on the
validated document. An operation past one is refused with a coded error naming the limit and
what was found, and no resolver runs, so no backend is called. In `dry_run` mode the excess is
logged (channel, key id, the figures and the document's digest: never the document, which may
hold personal data) and the operation runs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import DocumentNode, GraphQLSchema
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from policies.model import OperationLimits
from schema.cost import OperationFigures, analyse_operation, count_tokens
from schema.errors import GraphError

log = logging.getLogger("switchboard.limits")

CODES = {
    "max_tokens": "TOKEN_LIMIT_EXCEEDED",
    "max_depth": "DEPTH_LIMIT_EXCEEDED",
    "max_aliases": "ALIAS_LIMIT_EXCEEDED",
    "max_root_fields": "ROOT_FIELD_LIMIT_EXCEEDED",
    "max_cost": "COST_LIMIT_EXCEEDED",
}
WHAT = {
    "max_tokens": "tokens",
    "max_depth": "levels of nesting",
    "max_aliases": "aliases",
    "max_root_fields": "root fields",
    "max_cost": "backend calls (estimated)",
}


class DocumentMeasures:
    """The token counts and figures of recent documents: lexing the 360 query costs about
    0.2 ms and measuring it as much, and most traffic repeats a few documents. Figures are
    keyed by the document text, the operation, the integer variables (only they can change a
    page size) and the max page size. At most ``maxsize`` entries of each
    (``graphql.document_cache_size``; 0 caches nothing), and only documents of at most
    ``max_chars`` characters (``graphql.cached_document_max_chars``): bigger ones are measured
    each time, so each cache holds at most ``maxsize`` x ``max_chars`` of text."""

    def __init__(self, maxsize: int = 1024, max_chars: int = 32 * 1024) -> None:
        self._maxsize = maxsize
        self._max_chars = max_chars if maxsize else -1
        self._entries: OrderedDict[tuple, OperationFigures] = OrderedDict()
        self._tokens = functools.lru_cache(maxsize=max(maxsize, 1))(count_tokens)

    def tokens(self, text: str, stop_after: int | None) -> int:
        if len(text) > self._max_chars:
            return count_tokens(text, stop_after)
        return self._tokens(text, stop_after)

    def figures(
        self,
        schema: GraphQLSchema,
        text: str,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        max_page_size: int,
    ) -> OperationFigures:
        if len(text) > self._max_chars:
            return analyse_operation(schema, document, operation_name, variables, max_page_size)
        numbers = tuple(sorted((k, v) for k, v in (variables or {}).items() if type(v) is int))
        key = (id(schema), text, operation_name, numbers, max_page_size)
        found = self._entries.get(key)
        if found is None:
            found = analyse_operation(schema, document, operation_name, variables, max_page_size)
            self._entries[key] = found
            if len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return found


def excess(name: str, found: int, limits: OperationLimits, channel: str) -> GraphError | None:
    """The refusal for one figure past its limit; None within it."""
    limit = getattr(limits, name)
    if found <= limit:
        return None
    return GraphError(
        CODES[name],
        f"The operation has {found} {WHAT[name]}; the {channel} channel allows {limit} ({name}).",
        budget=name,
        limit=str(limit),
        found=str(found),
    )


class OperationLimitsRule(SchemaExtension):
    # Runs on every operation: the common case (within every limit) is kept to a few
    # attribute reads and comparisons on top of the cached figures (bench/limits_ab.py).
    # One per request, from a factory holding the schema's measures (schema/build.py).

    def __init__(
        self, *, measures: DocumentMeasures, execution_context: ExecutionContext | None = None
    ) -> None:
        super().__init__(execution_context=execution_context)
        self._measures = measures

    #: The channel's limits, read once per operation (in on_parse, again if it did not run).
    _found: tuple[OperationLimits, str] | bool | None = False

    def _limits(self) -> tuple[OperationLimits, str] | None:
        found = self._found
        if found is False:
            request = self.execution_context.context
            disclosure = getattr(request, "disclosure", None)
            if disclosure is None or not disclosure.enforced:
                found = None
            else:
                channel = request.principal.channel
                found = (disclosure.policy.limits_for(channel), channel)
            self._found = found
        return found  # type: ignore[return-value]

    def on_parse(self) -> Iterator[None]:
        # Before the parser (ParserCache comes later in the list): counting stops at the
        # limit, so an oversized document costs no more than the limit to refuse.
        found = self._limits()
        query = self.execution_context.query
        if found is not None and query:
            limits, channel = found
            tokens = self._measures.tokens(query, limits.max_tokens)
            if tokens > limits.max_tokens:
                self._refuse("max_tokens", tokens, limits, channel)
        yield

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        found = self._limits()
        document = context.graphql_document
        if found is not None and document is not None:
            limits, channel = found
            figures = self._measures.figures(
                context.schema._schema,
                context.query or "",
                document,
                context.operation_name,
                context.variables,
                context.context.backends.max_page_size,
            )
            if (
                figures.depth > limits.max_depth
                or figures.aliases > limits.max_aliases
                or figures.root_fields > limits.max_root_fields
                or figures.cost > limits.max_cost
            ):
                for name, value in (
                    ("max_depth", figures.depth),
                    ("max_aliases", figures.aliases),
                    ("max_root_fields", figures.root_fields),
                    ("max_cost", figures.cost),
                ):
                    if value > getattr(limits, name):
                        self._refuse(name, value, limits, channel)
        yield

    def _refuse(self, name: str, value: int, limits: OperationLimits, channel: str) -> None:
        """Raise the refusal for a figure past its limit, or only log it in dry-run mode."""
        refusal = excess(name, value, limits, channel)
        if refusal is None:
            return
        if not limits.dry_run:
            raise refusal
        self._log_dry_run(name, value, limits, channel)

    def _log_dry_run(self, name: str, value: int, limits: OperationLimits, channel: str) -> None:
        context = self.execution_context
        log.warning(
            "dry run: operation past %s (%d > %d), channel %s, key %s, document %s",
            name,
            value,
            getattr(limits, name),
            channel,
            context.context.principal.credential_id or "-",
            hashlib.sha256((context.query or "").encode()).hexdigest()[:16],
        )
