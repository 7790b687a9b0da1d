"""A small JSON-over-HTTP client for TM Forum style REST backends.

It knows the conventions the TMF APIs share (offset/limit paging with X-Total-Count,
comma-separated filters, TMF error bodies) and turns every failure into the error taxonomy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from adapters.errors import AdapterError, BadResponse, BusinessRejected, NotFound
from adapters.parsing import chunks, csv, read_json, unique
from adapters.resilience import (
    CallPolicy,
    Endpoint,
    make_http_client,
    status_error,
    transport_error,
)

JsonObject = dict[str, Any]
#: TMF filters take comma-separated values; the backends accept at most this many per call.
MAX_FILTER_VALUES = 100


def operation_of(method: str, path: str) -> str:
    """A REST call's name in metrics and spans: the method and the resource, never an id
    (``GET customerBill``; ``path`` is the resource's constant path, not a record's)."""
    return f"{method} {path.rstrip('/').rsplit('/', 1)[-1]}"


class RestClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self.system = endpoint.system
        self._http = make_http_client(endpoint)
        self._limits = endpoint.reply_limits

    async def close(self) -> None:
        await self._http.aclose()

    async def get_list(
        self, path: str, params: Mapping[str, str | int]
    ) -> tuple[list[JsonObject], int]:
        """One page of a list resource and the total the backend reports."""
        response = await self._send("GET", path, params=params)
        items = self._decode(response)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BadResponse(self.system, "answered a list request with something else")
        total_header = response.headers.get("X-Total-Count")
        try:
            total = int(total_header) if total_header is not None else len(items)
        except ValueError:
            raise BadResponse(self.system, "sent a malformed X-Total-Count header") from None
        return items, total

    async def get_all(
        self, path: str, params: Mapping[str, str | int], page_size: int = 200
    ) -> list[JsonObject]:
        """Every item of a filtered list, following offset/limit pages."""
        collected: list[JsonObject] = []
        offset = 0
        while True:
            page, total = await self.get_list(
                path, {**params, "offset": offset, "limit": page_size}
            )
            collected.extend(page)
            if len(collected) > self._limits.max_items:
                # Pages that never end add up: the item limit holds for the whole list.
                raise BadResponse(self.system, "answered a list with more items than the limit")
            offset += len(page)
            if not page or offset >= total:
                return collected

    async def get_one(self, path: str) -> JsonObject:
        return self._object(self._decode(await self._send("GET", path)))

    async def post(
        self, path: str, body: JsonObject, headers: Mapping[str, str] | None = None
    ) -> JsonObject:
        response = await self._send("POST", path, json=body, headers=headers)
        return self._object(self._decode(response))

    async def patch(
        self, path: str, body: JsonObject, headers: Mapping[str, str] | None = None
    ) -> JsonObject:
        response = await self._send(
            "PATCH",
            path,
            json=body,
            headers={"Content-Type": "application/merge-patch+json", **(headers or {})},
        )
        return self._object(self._decode(response))

    async def ping(self, path: str) -> None:
        await self._send("GET", path)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise transport_error(self.system, error) from None
        if response.status_code >= 400:
            raise self._error_for(response)
        return response

    def _error_for(self, response: httpx.Response) -> AdapterError:
        status = response.status_code
        unavailable = status_error(self.system, status)
        if unavailable is not None:
            return unavailable
        backend_code = self._tmf_error_code(response)
        if status == 404:
            return NotFound(self.system, "has no such record", backend_code=backend_code)
        return BusinessRejected(
            self.system, f"refused the request (HTTP {status})", backend_code=backend_code
        )

    def _tmf_error_code(self, response: httpx.Response) -> str | None:
        # The TMF error body's code is a stable number; its message may quote input: not kept.
        try:
            body = self._decode(response)
        except BadResponse:
            return None
        code = body.get("code") if isinstance(body, dict) else None
        return str(code) if code is not None else None

    def _decode(self, response: httpx.Response) -> Any:
        return read_json(
            self.system, response.content, response.headers.get("content-type"), self._limits
        )

    def _object(self, value: Any) -> JsonObject:
        if not isinstance(value, dict):
            raise BadResponse(self.system, "answered with JSON of the wrong shape")
        return value


class RestBackend:
    """What every adapter over a TMF-style REST API shares: life cycle and filtered reads."""

    name: str
    #: A cheap GET that proves the backend answers (used by /readyz).
    ping_path: str

    def __init__(self, endpoint: Endpoint) -> None:
        self._rest = RestClient(endpoint)
        self._policy = CallPolicy(endpoint)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._rest.close()

    async def ping(self) -> None:
        await self._rest.ping(self.ping_path)

    async def _read_filtered(
        self, path: str, filter_name: str, values: Sequence[str]
    ) -> list[JsonObject]:
        """Every item matching any of the values, in as few calls as the filter limit allows."""
        items: list[JsonObject] = []
        for batch in chunks(unique(values), MAX_FILTER_VALUES):
            items += await self._policy.read(
                operation_of("GET", path), self._rest.get_all, path, {filter_name: csv(batch)}
            )
        return items
