"""TMF-style REST conventions shared by the billing and care simulators.

Paging (offset/limit, X-Total-Count, X-Result-Count), comma-separated filters, Money, TMF
error bodies, and ``business_route``: the wrapper that puts every business endpoint behind the
simulator control and turns ``ApiError`` into a TMF error answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.control import SimControl

JSON = "application/json"
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
MAX_FILTER_VALUES = 100

log = logging.getLogger("simulators.rest")

_REASONS = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 500: "Internal error"}
_CODES = {400: "22", 404: "60", 405: "22", 500: "1"}


class ApiError(Exception):
    """An answer with a TMF error body: ``{"code", "reason", "message", "status"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return error_response(self.status, self.message)


def error_response(status: int, message: str) -> Response:
    body = {
        "code": _CODES.get(status, "1"),
        "reason": _REASONS.get(status, "Error"),
        "message": message,
        "status": str(status),
    }
    return json_response(body, status)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(value), status_code=status, headers=headers, media_type=JSON)


def money(cents: int) -> dict[str, Any]:
    return {"unit": "CNY", "value": round(cents / 100, 2)}


def paging(request: Request) -> tuple[int, int]:
    """(offset, limit) of a list request; 400 when either is not a proper number."""
    params = request.query_params
    try:
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise bad_request("offset and limit must be integers") from None
    if offset < 0:
        raise bad_request("offset must be 0 or more")
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit must be between 1 and {MAX_LIMIT}")
    return offset, limit


def filter_values(request: Request, name: str) -> list[str] | None:
    """The comma-separated values of a filter parameter, or None when it is absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not values:
        raise bad_request(f"filter {name} has no value")
    if len(values) > MAX_FILTER_VALUES:
        raise bad_request(f"filter {name} takes at most {MAX_FILTER_VALUES} values")
    return list(dict.fromkeys(values))


def one_filter(request: Request, names: Sequence[str]) -> tuple[str, list[str]]:
    """The single filter a lookup needs: exactly one of ``names`` must be present."""
    present = [(name, filter_values(request, name)) for name in names]
    given = [(name, values) for name, values in present if values is not None]
    if len(given) != 1:
        raise bad_request(f"exactly one of the filters {', '.join(names)} is required")
    return given[0][0], given[0][1]  # type: ignore[return-value]


def required_filter(request: Request, name: str) -> list[str]:
    values = filter_values(request, name)
    if values is None:
        raise bad_request(f"filter {name} is required")
    return values


def list_response(items: list[dict[str, Any]], total: int) -> Response:
    headers = {"X-Total-Count": str(total), "X-Result-Count": str(len(items))}
    return json_response(items, headers=headers)


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise bad_request("the body must be JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


Handler = Callable[[Request], Awaitable[Response]]


def business_route(control: SimControl, method: str, path: str, handler: Handler) -> Route:
    """A route counted as ``"<METHOD> <path template>"`` and subject to the control state."""
    operation = f"{method} {path}"

    async def endpoint(request: Request) -> Response:
        blocked = await control.admit(operation)
        if blocked is not None:
            return blocked
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()
        except Exception as error:
            # The kind of failure only: messages and tracebacks may quote personal data.
            log.error("%s failed with %s", operation, type(error).__name__)
            return error_response(500, "internal error")

    return Route(path, endpoint, methods=[method])


async def http_exception(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer with TMF bodies too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(status, f"no resource {request.url.path} for {request.method}")


def injected_failure() -> Response:
    return error_response(500, "internal error, please retry later")


# Not JSON: a truncated body, as a proxy in trouble sends back (bad_response).
GARBLED_BODY = b'[{"id": "BA00000\x00\xff'
