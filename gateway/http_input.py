"""What a caller may send to /graphql over HTTP, checked before strawberry reads it.

Strawberry trusts its input more than a public endpoint can: a JSON body that is a string, a
number, ``null`` or invalid UTF-8 made it raise (HTTP 500), a lone surrogate (``"\\ud800"``)
reached the workflow store, and a body of any size was read into memory. ``RequestGate`` sits
between authentication and the view and refuses such requests with a 4xx and a coded error
(``errors[].extensions.code``) before anything runs, so they change nothing:

- the media type the answer will have (``Accept``; 406 NOT_ACCEPTABLE if we have none of
  those asked for): ``application/graphql-response+json`` or ``application/json``, as the
  GraphQL-over-HTTP draft says; the view shapes the answer by it (gateway/graphql_http.py);
- a POST body: ``application/json`` in UTF-8 (415 UNSUPPORTED_MEDIA_TYPE), at most
  ``http.max_body_bytes`` (413 PAYLOAD_TOO_LARGE, also when Content-Length says so, without
  reading it), strict UTF-8 and strict JSON (no NaN), nested at most ``http.max_json_depth``,
  no lone surrogates, one request object (no batches) with ``query`` a string, ``variables``
  and ``extensions`` objects or null, ``operationName`` a string or null (400 BAD_REQUEST);
- a GET: the same rules for its ``variables`` and ``extensions`` parameters.

The body read here is handed on to the view unchanged. Messages name the rule broken, never
the caller's data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
#: The POST body's JSON object, once checked (gateway/app.py looks kept answers up by it).
REQUEST_JSON_KEY = "switchboard.request_json"
APPLICATION_JSON = "application/json"
MEDIA_TYPE_KEY = "switchboard.media_type"  # the scope key the view reads the choice from


@dataclass(frozen=True)
class InputRefused(Exception):
    """A request refused before GraphQL: status, code and a message naming the rule."""

    status: int
    code: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def coded_response(refusal: InputRefused, media_type: str = APPLICATION_JSON) -> JSONResponse:
    """A GraphQL-shaped error answer (no ``data`` key: nothing was executed)."""
    body = {"errors": [{"message": refusal.message, "extensions": {"code": refusal.code}}]}
    return JSONResponse(
        body,
        status_code=refusal.status,
        headers=dict(refusal.headers),
        media_type=media_type,
    )


def _bad_request(message: str) -> InputRefused:
    return InputRefused(400, "BAD_REQUEST", message)


def negotiate(accept: str | None) -> str:
    """The media type to answer in, from the Accept header (GraphQL over HTTP, draft).

    No header: application/json. application/graphql-response+json when the caller lists it
    at least as high as application/json; wildcards mean application/json.
    """
    if accept is None or not accept.strip():
        return APPLICATION_JSON
    best: tuple[float, int, str] | None = None  # (q, specificity, media type)
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        media = media.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media == GRAPHQL_RESPONSE_JSON:
            candidate = (quality, 2, GRAPHQL_RESPONSE_JSON)
        elif media == APPLICATION_JSON:
            candidate = (quality, 1, APPLICATION_JSON)
        elif media in ("*/*", "application/*"):
            candidate = (quality, 0, APPLICATION_JSON)
        else:
            continue
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        raise InputRefused(
            406,
            "NOT_ACCEPTABLE",
            "Answers are application/graphql-response+json or application/json; "
            "subscriptions go over the websocket (graphql-transport-ws).",
        )
    return best[2]


def _check_content_type(headers: Headers) -> None:
    media, _, params = headers.get("content-type", "").partition(";")
    if media.strip().lower() != APPLICATION_JSON:
        raise InputRefused(
            415, "UNSUPPORTED_MEDIA_TYPE", "POST a JSON body with Content-Type: application/json."
        )
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise InputRefused(
                415, "UNSUPPORTED_MEDIA_TYPE", "The JSON body must be encoded in UTF-8."
            )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(raw: bytes | str, max_depth: int) -> Any:
    """Strict JSON: UTF-8 (overlong forms refused), no NaN/Infinity, bounded depth, no lone
    surrogates anywhere (they cannot be stored or sent on, and crashed the writers)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise _bad_request("The body is not valid UTF-8.") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _bad_request(f"The JSON is nested deeper than {max_depth} levels.") from None
    except ValueError:  # JSONDecodeError included
        raise _bad_request("The body is not valid JSON.") from None
    check_json_tree(value, max_depth)
    return value


def check_json_tree(value: Any, max_depth: int) -> None:
    """Depth at most ``max_depth`` and no lone surrogate in any key or string."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, dict | list):
            if depth > max_depth:
                raise _bad_request(f"The JSON is nested deeper than {max_depth} levels.")
            if isinstance(node, dict):
                for key, item in node.items():
                    _check_text(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_request(
            "A string in the JSON holds a lone UTF-16 surrogate (e.g. \\ud800); it is not text."
        ) from None


def check_request_object(data: Any) -> None:
    """One GraphQL request: the parameters the GraphQL-over-HTTP draft defines, typed."""
    if isinstance(data, list):
        raise _bad_request("Batched requests (a JSON array) are not supported: send one.")
    if not isinstance(data, dict):
        raise _bad_request("The body must be a JSON object with a query.")
    if not isinstance(data.get("query"), str):
        raise _bad_request("The request needs a query, as a string.")
    for name, kind in (("variables", dict), ("extensions", dict), ("operationName", str)):
        if data.get(name) is not None and not isinstance(data[name], kind):
            what = "an object" if kind is dict else "a string"
            raise _bad_request(f"{name} must be {what} or null.")


class RequestGate:
    """ASGI middleware for /graphql: refuses bad HTTP input with a coded 4xx (see above)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query_params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if scope["method"] == "GET" and "query" not in query_params:
            await self.app(scope, receive, send)  # the GraphiQL page, or strawberry's 404
            return
        media_type = APPLICATION_JSON
        try:
            media_type = negotiate(headers.get("accept"))
            scope[MEDIA_TYPE_KEY] = media_type
            if scope["method"] == "POST":
                _check_content_type(headers)
                body = await self._read_body(headers, receive)
                request = decode_json(body, self.max_json_depth)
                check_request_object(request)
                scope[REQUEST_JSON_KEY] = request  # as checked: the answer cache's lookup
                receive = _replay(body, receive)
            else:
                self._check_get(query_params)
        except InputRefused as refusal:
            await coded_response(refusal, media_type)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_get(self, params: dict[str, str]) -> None:
        data: dict[str, Any] = {"query": params.get("query")}
        if "operationName" in params:
            data["operationName"] = params["operationName"] or None
        for name in ("variables", "extensions"):
            if params.get(name):
                data[name] = decode_json(params[name], self.max_json_depth)
        check_request_object(data)

    async def _read_body(self, headers: Headers, receive: Receive) -> bytes:
        too_large = InputRefused(
            413, "PAYLOAD_TOO_LARGE", f"The body is larger than {self.max_body_bytes} bytes."
        )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise too_large  # refused without reading it
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _bad_request("The client went away before sending the body.")
            body.extend(message.get("body", b""))
            if len(body) > self.max_body_bytes:
                raise too_large
            if not message.get("more_body", False):
                return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives the body already read, then what the client sends next
    (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
