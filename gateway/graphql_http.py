"""GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/) for the strawberry view.

``GraphQLOverHTTP`` is mixed into the gateway's view (gateway/app.py) before strawberry's
``GraphQL``:

- **Media type.** ``RequestGate`` (gateway/http_input.py) chose it from ``Accept``. With
  ``application/graphql-response+json`` a request error (the document does not parse or
  validate, or the variables do not fit it) answers 400, without a ``data`` key, in that
  media type; anything that executed answers 200. With ``application/json`` every GraphQL
  answer is 200, as the draft requires for that media type (and as before).
- **Operation types per method.** GET runs queries only: a mutation over GET is 405 with
  ``Allow: POST``. Subscriptions run only over the websocket (graphql-transport-ws): over
  HTTP they are refused with 400 SUBSCRIPTION_REQUIRES_WEBSOCKET before anything runs
  (strawberry executed them as queries and failed inside, INTERNAL_ERROR and a traceback).
- **Strawberry's own refusals** (plain text before) become coded GraphQL errors.
"""

from __future__ import annotations

import json
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from gateway.http_input import (
    APPLICATION_JSON,
    GRAPHQL_RESPONSE_JSON,
    MEDIA_TYPE_KEY,
    InputRefused,
    coded_response,
)
from schema.errors import is_request_error

STATUS_KEY = "switchboard.graphql_status"
#: The content type of an answer sent as application/graphql-response+json.
GRAPHQL_RESPONSE_CONTENT_TYPE = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
HTTP_OPERATIONS: dict[str, frozenset[OperationType]] = {
    "GET": frozenset({OperationType.QUERY}),
    "POST": frozenset({OperationType.QUERY, OperationType.MUTATION}),
}
STRAWBERRY_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def _operation_refused(error: InvalidOperationTypeError) -> InputRefused:
    if error.operation_type is OperationType.SUBSCRIPTION:
        return InputRefused(
            400,
            "SUBSCRIPTION_REQUIRES_WEBSOCKET",
            "Subscriptions run over the websocket at /graphql (graphql-transport-ws), "
            "not over HTTP.",
        )
    return InputRefused(
        405,
        "METHOD_NOT_ALLOWED",
        "Only queries may be sent with GET; send mutations with POST.",
        headers=(("Allow", "POST"),),
    )


class GraphQLOverHTTP:
    """Mixin for strawberry's ASGI ``GraphQL`` view (see the module's docstring)."""

    schema: Any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # type: ignore[misc]
            return
        media_type = scope.get(MEDIA_TYPE_KEY, APPLICATION_JSON)
        try:
            response: Response = await self.run(Request(scope, receive))  # type: ignore[attr-defined]
        except InputRefused as refusal:
            response = coded_response(refusal, media_type)
        except HTTPException as error:  # strawberry's fixed reasons: no caller data in them
            code = STRAWBERRY_CODES.get(error.status_code, "BAD_REQUEST")
            refused = InputRefused(error.status_code, code, error.reason)
            response = coded_response(refused, media_type)
        else:
            status = scope.pop(STATUS_KEY, None)
            if status is not None:
                response.status_code = status
            content_type = response.headers.get("content-type", "")
            if media_type == GRAPHQL_RESPONSE_JSON and content_type.startswith(APPLICATION_JSON):
                response.headers["content-type"] = GRAPHQL_RESPONSE_CONTENT_TYPE
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        # Also the websocket's decoder: JSON nested past the interpreter's recursion limit
        # raised RecursionError out of strawberry's handler; as invalid JSON the socket is
        # closed with 4400. (HTTP bodies were checked by RequestGate already.)
        try:
            return json.loads(data)
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "", 0) from None

    async def execute_single(  # strawberry's signature
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Any,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        allowed = HTTP_OPERATIONS.get(request_adapter.method, frozenset())
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError as error:
            raise _operation_refused(error) from None
        except CannotGetOperationTypeError:
            raise InputRefused(
                400,
                "BAD_REQUEST",
                "Name the operation to run (operationName): the document has none by that "
                "name, or several.",
            ) from None
        except MissingQueryError:
            raise InputRefused(400, "BAD_REQUEST", "The request needs a query.") from None

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response = process_result(result)
        scope = request.scope
        if scope.get(MEDIA_TYPE_KEY) == GRAPHQL_RESPONSE_JSON and is_request_error(result):
            # The draft: a request error is a 4xx without data (nothing was executed).
            response.pop("data", None)
            scope[STATUS_KEY] = 400
        return response
