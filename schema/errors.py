"""Errors the graph returns: a stable ``extensions.code`` and a message safe to show.

Adapter errors become GraphQL errors at the path of the field that needed the backend, so the
rest of the answer still comes back. Anything unexpected is masked: callers get a code and a
request-independent message, never a stack trace or a backend's own words.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from adapters.errors import AdapterError

log = logging.getLogger("switchboard.schema")


class GraphError(Exception):
    """An error the graph raises itself (bad input, unknown id), with its code."""

    def __init__(self, code: str, message: str, **extensions: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = extensions


def bad_input(message: str) -> GraphError:
    return GraphError("BAD_USER_INPUT", message)


def not_found(what: str) -> GraphError:
    return GraphError("NOT_FOUND", f"No {what} with that identifier.")


def key_reused() -> GraphError:
    """A caller's idempotency key used before with another input (or another mutation)."""
    return GraphError(
        "IDEMPOTENCY_KEY_REUSED",
        "This idempotency key was used before with another input; use a new key.",
    )


def identity_conflict(system: str) -> GraphError:
    return GraphError(
        "IDENTITY_CONFLICT",
        f"The customer's records in {system} disagree with the customer system; "
        "the hub does not guess. See identity.conflicts.",
        system=system,
    )


def identity_unresolved(system: str) -> GraphError:
    return GraphError(
        "BACKEND_UNAVAILABLE",
        f"The customer's {system} records could not be looked up; try again later.",
        system=system,
    )


def _coded(error: GraphQLError, code: str, message: str, **extra: str) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": code, **extra},
    )


# graphql-core's variable coercion errors: "Variable '$id' has invalid value at .a: <why>". The
# reason quotes the value the caller sent (it may be personal data) and, for input objects,
# suggests field names: only the variable and the path inside it are kept.
_VARIABLE_ERROR = re.compile(
    r"^(Variable '\$[_A-Za-z][_0-9A-Za-z]*' has invalid (?:default )?value)"
)
_VARIABLE_PATH = re.compile(r"^ at ((?:\.[_A-Za-z][_0-9A-Za-z]*|\[\d+\])+):")

# The codes of errors about the request itself (nothing was executed): GraphQL over HTTP
# answers them 4xx with application/graphql-response+json (gateway/graphql_http.py).
REQUEST_ERROR_CODES = frozenset(
    {"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"}
)


def _variable_error(error: GraphQLError) -> GraphQLError | None:
    """A variable that does not fit its type, coded BAD_USER_INPUT without its value."""
    if error.path is not None:
        return None
    found = _VARIABLE_ERROR.match(error.message)
    if found is None:
        return None
    path = _VARIABLE_PATH.match(error.message[found.end() :])
    message = found.group(1) + (f" at {path.group(1)}" if path else "") + "."
    return _coded(error, "BAD_USER_INPUT", message)


def is_request_error(result: Any) -> bool:
    """Whether a result only says the request was unusable (parse, validation, variables)."""
    errors = getattr(result, "errors", None)
    return (
        bool(errors)
        and getattr(result, "data", None) is None
        and all(
            e.path is None and (e.extensions or {}).get("code") in REQUEST_ERROR_CODES
            for e in errors or ()
        )
    )


def to_coded_error(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if (original is None or not isinstance(original, GraphError | AdapterError)) and "code" not in (
        error.extensions or {}
    ):
        variable = _variable_error(error)
        if variable is not None:
            return variable
    if original is None:
        # Syntax and validation errors (about the document the caller sent), or an error
        # coded already: keep what it carries, add a code where it has none.
        extensions = dict(error.extensions or {})
        if "code" not in extensions:
            parse_failed = "Syntax Error" in error.message
            extensions["code"] = (
                "GRAPHQL_PARSE_FAILED" if parse_failed else "GRAPHQL_VALIDATION_FAILED"
            )
        return _coded(error, extensions.pop("code"), error.message, **extensions)
    if isinstance(original, GraphError):
        return _coded(error, original.code, original.message, **original.extensions)
    if isinstance(original, AdapterError):
        extra = {"system": original.system}
        if original.backend_code:
            extra["backendCode"] = original.backend_code
        return _coded(error, original.code, f"{original.system} {original.message}.", **extra)
    # Unknown: log the type and where it happened, but not its message (it may hold data).
    log.error(
        "internal error at %s: %s\n%s",
        ".".join(str(p) for p in error.path or ()),
        type(original).__name__,
        "".join(traceback.format_tb(original.__traceback__)),
    )
    return _coded(error, "INTERNAL_ERROR", "Internal error.")


class CodedErrors(SchemaExtension):
    """Rewrites every error of a result into its coded, safe form."""

    def on_operation(self) -> Iterator[None]:
        yield
        # Parse and validation errors are answered from pre_execution_errors, possibly in
        # another list holding the same objects: code those in place.
        for error in self.execution_context.pre_execution_errors or ():
            if error.original_error is None:
                error.extensions = to_coded_error(error).extensions
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [to_coded_error(e) for e in result.errors]
