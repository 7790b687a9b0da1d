"""Operation limits from the policy, enforced before anything executes.

Per channel (policy key `limits`): tokens (before parsing; counting stops past the limit),
then depth, aliases, root fields and the estimated backend calls (schema/cost.py) on the
validated document. An operation past one is refused with a coded error naming the limit and
what was found, and no resolver runs, so no backend is called. In `dry_run` mode the excess is
logged (channel, key id, the figures and the document's digest: never the document, which may
hold personal data) and the operation runs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from policies.model import OperationLimits
from schema.cost import analyse_operation, count_tokens
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
    def _limits(self) -> tuple[OperationLimits, str] | None:
        request = self.execution_context.context
        disclosure = getattr(request, "disclosure", None)
        if disclosure is None or not disclosure.enforced:
            return None
        channel = request.principal.channel
        return disclosure.policy.limits_for(channel), channel

    def on_parse(self) -> Iterator[None]:
        # Before the parser (ParserCache comes later in the list): counting stops at the
        # limit, so an oversized document costs no more than the limit to refuse.
        found = self._limits()
        query = self.execution_context.query
        if found is not None and query:
            limits, channel = found
            tokens = count_tokens(query, limits.max_tokens)
            refusal = excess("max_tokens", tokens, limits, channel)
            if refusal is not None:
                if not limits.dry_run:
                    raise refusal
                self._log_dry_run("max_tokens", tokens, limits, channel)
        yield

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        found = self._limits()
        document = context.graphql_document
        if found is not None and document is not None:
            limits, channel = found
            figures = analyse_operation(
                context.schema._schema,
                document,
                context.operation_name,
                context.variables,
                max_page_size=context.context.backends.max_page_size,
            )
            measured = [
                ("max_depth", figures.depth),
                ("max_aliases", figures.aliases),
                ("max_root_fields", figures.root_fields),
                ("max_cost", figures.cost),
            ]
            for name, value in measured:
                refusal = excess(name, value, limits, channel)
                if refusal is None:
                    continue
                if not limits.dry_run:
                    raise refusal
                self._log_dry_run(name, value, limits, channel)
        yield

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
