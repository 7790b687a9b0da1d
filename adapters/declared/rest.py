"""The generic REST engine: JSON over HTTP, paths and queries filled from the mapping.

``{key}`` in a path is the record's key (URL-quoted); ``$keys`` in a query is the batch,
comma-separated (the TMF convention); ``$offset``/``$limit`` page. A total comes from a body
path or, with ``total: header:X-Total-Count``, from a header. Error bodies' codes (``errors.code``)
meet the same taxonomy as SOAP faults; 404 without a declared code is "not found", other 4xx
without one a refusal, 5xx and 502-504 mean the system is not serving.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from adapters.declared.faults import classify
from adapters.declared.spec import InstanceSpec, OperationSpec, SystemSpec
from adapters.declared.values import count_of, fill_template, json_find
from adapters.errors import BadResponse, NotFound
from adapters.parsing import read_json
from adapters.resilience import Endpoint, make_backend_pool, status_error, transport_error


class Response(Protocol):
    """What an answer is read from (adapters.transport.Reply; an httpx.Response in tests)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...


class RestAnswer:
    """A decoded JSON body with the headers that may carry a total."""

    __slots__ = ("body", "headers")

    def __init__(self, body: Any, headers: Mapping[str, str]) -> None:
        self.body = body
        self.headers = headers


class RestEngine:
    """Calls one instance of a declared REST system."""

    def __init__(self, spec: SystemSpec, instance: InstanceSpec, endpoint: Endpoint) -> None:
        self.spec = spec
        self.instance = instance
        self.name = instance.name
        self._http = make_backend_pool(endpoint)
        self._limits = endpoint.reply_limits
        self._headers = dict(spec.rest_headers)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._http.aclose()

    async def call(self, operation: OperationSpec, values: dict[str, Any]) -> RestAnswer:
        path = str(operation.path)
        if "$key" in values:
            path = path.replace("{key}", quote(str(values["$key"]), safe=""))
        query: dict[str, Any] = {}
        for name, template in operation.query.items():
            value = fill_template(template, values)
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            if value is not None:
                query[name] = value
        body: bytes | None = None
        headers = self._headers
        if operation.method != "GET" and operation.request is not None:
            # A change that leaves every part out is still a JSON object ({}), not no body.
            filled = fill_template(operation.request, values)
            body = json.dumps({} if filled is None else filled, default=_json_number).encode()
            headers = {"Content-Type": "application/json", **headers}
        if operation.headers:
            # A header whose variable has no value (a change without an idempotency key) is
            # left out, not sent as "None".
            filled = {k: fill_template(v, values) for k, v in operation.headers.items()}
            headers = {**headers, **{k: str(v) for k, v in filled.items() if v is not None}}
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()}
        try:
            response = await self._http.send(
                operation.method, path, params=params, headers=headers, body=body
            )
        except httpx.HTTPError as error:
            raise transport_error(self.name, error) from None
        return self.answer(operation, response)

    def answer(self, operation: OperationSpec, response: Response) -> RestAnswer:
        status = response.status_code
        if status >= 500 or status == 429:
            raise status_error(self.name, status) or BadResponse(self.name, f"HTTP {status}")
        content_type = response.headers.get("content-type")
        # Content type, depth and size checked (adapters/parsing.py), the body never quoted.
        try:
            body = (
                read_json(self.name, response.content, content_type, self._limits)
                if response.content
                else None
            )
        except BadResponse:
            if status < 400:
                raise
            # An error page that is not JSON (a web server's text/plain 404): the status
            # still says what happened; there is only no code to read from it.
            body = None
        if status >= 400:
            path = self.spec.errors.code
            code = json_find(body, path) if path else None
            code = str(code) if code is not None else None
            errors = self.spec.errors
            declared = errors.not_found | errors.rejected | errors.unavailable
            if status == 404 and (code is None or code not in declared):
                # The status says it: a code the mapping does not know stays "not found".
                raise NotFound(self.name, "has no such record", backend_code=code or "404")
            raise classify(self.name, operation.name, self.spec.errors, code, caller_side=True)
        if status != 200 and status != 201:
            raise BadResponse(self.name, f"answered {operation.name} with HTTP {status}")
        return RestAnswer(body, response.headers)


def _json_number(value: Any) -> Any:
    """A write's ``decimal`` argument as a JSON number (what TMF amounts are)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def records_at(answer: RestAnswer, operation: OperationSpec, system: str) -> list[Any]:
    if answer.body is None:
        # An empty body, or JSON null: no answer at all, not "no records". Read as none, a
        # first sight would settle the customer as absent from the system.
        raise BadResponse(system, f"answered {operation.name} without a body")
    found = json_find(answer.body, operation.list_path) if operation.list_path else answer.body
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def total_at(answer: RestAnswer, operation: OperationSpec, system: str) -> int:
    path = operation.total_path or ()
    if len(path) == 1 and path[0].lower().startswith("header:"):
        raw: Any = answer.headers.get(path[0].partition(":")[2])
    else:
        raw = json_find(answer.body, path)
    return count_of(raw, system, operation.name)
