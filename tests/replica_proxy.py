"""A small round-robin HTTP + websocket reverse proxy (aiohttp) in front of gateway replicas,
for tests/test_replicas.py: what a load balancer does, on loopback, in a thread of its own.

Each HTTP request and each websocket connection goes to the next upstream in turn; ``pin``
sends them all to one while a test needs "through replica B". The answer names the upstream
that served it (``X-Upstream``), and ``served`` keeps the order.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from aiohttp import WSMsgType, web

from tests.harness import free_ports

# Hop-by-hop and framing headers are the proxy's own business on each side.
DROPPED = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-encoding",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
}


class RoundRobinProxy:
    def __init__(self, upstreams: dict[str, str]) -> None:
        self.upstreams = dict(upstreams)
        self._turn = itertools.cycle(list(upstreams))
        self._pinned: str | None = None
        self.served: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- life cycle, from the test's thread ------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @contextmanager
    def pin(self, name: str) -> Iterator[None]:
        self._pinned = name
        try:
            yield
        finally:
            self._pinned = None

    async def _start(self) -> None:
        (port,) = free_ports(1)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- proxying ----------------------------------------------------------------------------

    def _pick(self) -> str:
        name = self._pinned or next(self._turn)
        self.served.append(name)
        return name

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = self._pick()
        base = self.upstreams[name]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self._websocket(request, base, name, headers)
        assert self._session is not None
        async with self._session.request(
            request.method,
            base + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            answer = web.Response(status=upstream.status, body=body)
            for key, value in upstream.headers.items():
                if key.lower() not in DROPPED:
                    answer.headers.add(key, value)
            answer.headers["X-Upstream"] = name
            return answer

    async def _websocket(
        self, request: web.Request, base: str, name: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        assert self._session is not None
        protocols = [
            p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",") if p
        ]
        try:
            upstream = await self._session.ws_connect(
                base.replace("http://", "ws://") + request.path_qs,
                protocols=protocols,
                headers=headers,
            )
        except aiohttp.WSServerHandshakeError as refused:  # e.g. 403 for a bad key
            return web.Response(status=refused.status, headers={"X-Upstream": name})
        client = web.WebSocketResponse(protocols=protocols)
        client.headers["X-Upstream"] = name
        await client.prepare(request)

        async def pump(source, sink) -> None:
            async for message in source:
                if message.type == WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break

        tasks = [
            asyncio.ensure_future(pump(client, upstream)),
            asyncio.ensure_future(pump(upstream, client)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        code = upstream.close_code or client.close_code or 1000
        await upstream.close()
        await client.close(code=code)
        return client
