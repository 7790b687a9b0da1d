"""A plugin engine for a system no mapping can speak: a line protocol over raw TCP.

The "device inventory" it talks to (``DeviceServer`` below, started by the tests) answers one
line per request: ``FIND <msisdn,...>`` or ``GET <imei,...>`` gives ``OK <json>``;
``ERR <code>`` is a refusal. The engine turns that into JSON-like answers and the hub's error
taxonomy; the mapping (tests/systems/devices/mapping.yaml) does everything else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from adapters.declared.spec import InstanceSpec, OperationSpec, SystemSpec
from adapters.errors import BadResponse, BusinessRejected, NotFound
from adapters.resilience import Endpoint

MAX_LINE = 64 * 1024


class DeviceLineEngine:
    def __init__(self, spec: SystemSpec, instance: InstanceSpec, endpoint: Endpoint) -> None:
        address = urlsplit(endpoint.base_url)  # tcp://host:port
        self.name = instance.name
        self._host, self._port = address.hostname or "127.0.0.1", address.port or 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def call(self, operation: OperationSpec, values: dict[str, Any]) -> Any:
        keys = values.get("$keys") or [k for k in (values.get("$key"),) if k is not None]
        request = f"{operation.call} {','.join(str(k) for k in keys)}\n"
        reader, writer = await asyncio.open_connection(self._host, self._port, limit=MAX_LINE)
        try:
            writer.write(request.encode())
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        verb, _, rest = line.decode(errors="replace").strip().partition(" ")
        if verb == "OK":
            return json.loads(rest)
        if verb == "ERR" and rest == "NOTFOUND":
            raise NotFound(self.name, "has no such device", backend_code=rest)
        if verb == "ERR":
            raise BusinessRejected(self.name, "refused the request", backend_code=rest[:32])
        raise BadResponse(self.name, "answered with an unknown line")


def engine(spec: SystemSpec, instance: InstanceSpec, endpoint: Endpoint) -> DeviceLineEngine:
    """The factory ``plugin: tests.plugins.device_line:engine`` names."""
    return DeviceLineEngine(spec, instance, endpoint)


def broken(spec: SystemSpec, instance: InstanceSpec, endpoint: Endpoint) -> Any:
    """An engine whose calls fail with an exception outside the taxonomy."""

    class Broken(DeviceLineEngine):
        async def call(self, operation: OperationSpec, values: dict[str, Any]) -> Any:
            raise RuntimeError("customer 13800000000 not parsed")  # must never be echoed

    return Broken(spec, instance, endpoint)


class DeviceServer:
    """The legacy system itself: devices by IMEI, found by the line's MSISDN."""

    def __init__(self, devices: Mapping[str, dict[str, Any]]) -> None:
        self.devices = dict(devices)
        self.requests: list[str] = []
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"tcp://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().strip()
        self.requests.append(line)
        verb, _, argument = line.partition(" ")
        keys = [k for k in argument.split(",") if k]
        if verb == "FIND":
            # The system keeps numbers as entered; it matches on the national number.
            national = {k[-11:] for k in keys}
            found = [d for d in self.devices.values() if d["msisdn"][-11:] in national]
            answer = f"OK {json.dumps({'devices': found})}"
        elif verb == "GET":
            found = [self.devices[k] for k in keys if k in self.devices]
            answer = f"OK {json.dumps({'devices': found})}" if found else "ERR NOTFOUND"
        else:
            answer = "ERR BADVERB"
        writer.write((answer + "\n").encode())
        await writer.drain()
        writer.close()
