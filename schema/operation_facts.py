"""Notes on the request context what operation ran, for the audit log.

The type (query / mutation / subscription) comes from the parsed document, so the audit log
is generic over operation types whatever root fields other features add. A document that does
not parse leaves the type unset; its SHA-256 is recorded all the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension


class OperationFacts(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        try:
            yield
        finally:
            # Also when a channel rule refused the operation (raised through the extensions).
            self._note()

    def _note(self) -> None:
        execution = self.execution_context
        context = execution.context
        if not hasattr(context, "document_sha256"):
            return  # a context without audit fields (e.g. a tool building its own)
        if execution.query is not None:
            context.document_sha256 = hashlib.sha256(execution.query.encode()).hexdigest()
        try:
            context.operation_name = execution.operation_name
            if execution.graphql_document is not None:
                context.operation_type = execution.operation_type.value
        except Exception:  # noqa: S110 -- an unknown operation name: leave them unset
            pass
