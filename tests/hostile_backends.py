"""A hostile backend for tests: a proxy in front of a real simulator that can turn its replies.

``python -m tests.hostile_backends --kind soap|rest --upstream URL --port N`` serves on
loopback. In mode ``proxy`` it relays every request to the simulator; in any other mode it
answers the system's reads (SOAP POSTs, REST GETs) with that mode's hostile reply, most of them
built from the simulator's real answer, so that only the hostile part is wrong. BOSS's WSDL
and schemas are always relayed, so the hub can load them.

Control: ``POST /_hostile/mode {"mode": ...}``; ``GET /_hostile/stats`` counts streamed
replies and whether the client hung up before their end (an endless or oversized reply the
hub stopped reading).

Modes:

- ``endless``: a body streamed forever (chunked, no length).
- ``huge``: the real answer followed by 100 MB of whitespace, with its Content-Length.
- ``deep``: the real answer with 100 levels of nesting added (over the hub's 64, under
  libxml2's 256 and Python's recursion limit: a reader without a depth limit takes it).
- ``abyss``: nesting 100,000 levels deep.
- ``laughs`` (SOAP): the real answer under a "billion laughs" DTD, with an entity reference.
- ``xxe`` (SOAP): the real answer under a small DTD declaring an external (file) entity and an
  internal one, both referenced: a parser that accepts DTDs takes it.
- ``huge_wsdl`` (SOAP): reads are relayed, but the WSDL comes with 64 MB of trailing
  whitespace, streamed without a length.
- ``swarm``: the real answer with 300,000 tiny extra items (JSON ``{}`` / XML ``<x/>``),
  under a megabyte of bytes that a parser turns into hundreds of megabytes of objects.
- ``gzip_bomb``: the real answer and 200 MB of whitespace, gzip-compressed to about 200 KB
  (``Content-Encoding: gzip``, its compressed length declared).
- ``wrong_type``: the real answer labelled as the other format (JSON for SOAP, HTML for REST).

Every hostile body carries ``MARKER``, so that tests can check it is never quoted back.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gzip
import re
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MARKER = b"HOSTILE-MARKER-7f3a"
MODES = (
    "proxy",
    "endless",
    "huge",
    "deep",
    "abyss",
    "laughs",
    "xxe",
    "swarm",
    "wrong_type",
    "huge_wsdl",
    "gzip_bomb",
)
HUGE_PADDING = 100 * 1024 * 1024
WSDL_PADDING = 64 * 1024 * 1024
CHUNK = 64 * 1024
DEEP = 100
ABYSS = 100_000
SWARM = 300_000
#: Headers of the simulator's answer worth relaying.
RELAYED = ("content-type", "x-total-count")


@dataclass
class Stats:
    streams_started: int = 0
    streams_aborted: int = 0
    #: The most bytes one aborted stream handed to the server before the client hung up.
    max_bytes_before_abort: int = 0


class HostileBackend:
    def __init__(self, kind: str, upstream: str) -> None:
        self.kind = kind
        self.mode = "proxy"
        self.stats = Stats()
        self._upstream = httpx.AsyncClient(base_url=upstream, timeout=30)

    # --- control ---------------------------------------------------------------------------

    async def set_mode(self, request: Request) -> Response:
        mode = (await request.json()).get("mode")
        if mode not in MODES:
            return JSONResponse({"error": "unknown mode"}, status_code=400)
        self.mode = mode
        return JSONResponse({"mode": mode})

    async def read_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.__dict__)

    # --- serving ---------------------------------------------------------------------------

    async def serve(self, request: Request) -> Response:
        if self.mode == "huge_wsdl":
            real = await self._relay(request)
            if request.method != "GET":
                return real
            return self._streamed(self._padded(bytes(real.body), WSDL_PADDING), self._media_type)
        is_read = request.method == ("POST" if self.kind == "soap" else "GET")
        if self.mode == "proxy" or not is_read:
            return await self._relay(request)
        if self.mode == "endless":
            return self._streamed(self._endless(), self._media_type)
        real = await self._relay(request)
        body = bytes(real.body)
        if self.mode == "gzip_bomb":
            # Two gzip members: the answer, then the padding (compressed once, at start).
            bomb = gzip.compress(body) + _compressed_padding()
            headers = {"content-encoding": "gzip"}
            return Response(bomb, media_type=self._media_type, headers=headers)
        if self.mode == "huge":
            return self._streamed(
                self._padded(body), self._media_type, length=len(body) + HUGE_PADDING
            )
        hostile = getattr(self, f"_{self.kind}_{self.mode}")(body)
        media_type = self._media_type
        if self.mode == "wrong_type":
            media_type = "application/json" if self.kind == "soap" else "text/html"
        headers = {k: v for k, v in real.headers.items() if k == "x-total-count"}
        return Response(
            hostile, status_code=real.status_code, media_type=media_type, headers=headers
        )

    @property
    def _media_type(self) -> str:
        return "text/xml; charset=utf-8" if self.kind == "soap" else "application/json"

    async def _relay(self, request: Request) -> Response:
        answer = await self._upstream.request(
            request.method,
            request.url.path,
            params=list(request.query_params.multi_items()),
            content=await request.body(),
            headers={
                k: v
                for k, v in request.headers.items()
                if k in ("content-type", "soapaction", "x-idempotency-key")
            },
        )
        headers = {k: v for k, v in answer.headers.items() if k in RELAYED}
        return Response(answer.content, status_code=answer.status_code, headers=headers)

    def _streamed(
        self, chunks: AsyncIterator[bytes], media_type: str, *, length: int | None = None
    ) -> StreamingResponse:
        headers = {"content-length": str(length)} if length is not None else None
        return StreamingResponse(self._counted(chunks), media_type=media_type, headers=headers)

    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        self.stats.streams_started += 1
        sent = 0
        finished = False
        try:
            async for chunk in chunks:
                yield chunk
                sent += len(chunk)
            finished = True
        finally:
            if not finished:
                self.stats.streams_aborted += 1
                self.stats.max_bytes_before_abort = max(self.stats.max_bytes_before_abort, sent)

    async def _endless(self) -> AsyncIterator[bytes]:
        if self.kind == "soap":
            yield b'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="' + SOAP_ENV + b'">'
            filler = b"<" + MARKER + b"/>" + b" " * (CHUNK - len(MARKER) - 3)
        else:
            filler = b'{"id": "' + MARKER + b'"},' + b" " * (CHUNK - len(MARKER) - 12)
            yield b"["
        while True:
            yield filler
            await asyncio.sleep(0)

    async def _padded(self, body: bytes, padding: int = HUGE_PADDING) -> AsyncIterator[bytes]:
        yield body
        blank = b" " * CHUNK
        for _ in range(padding // CHUNK):
            yield blank
            await asyncio.sleep(0)

    # --- SOAP: extra content goes inside soapenv:Body, after the answer the hub reads -------

    @staticmethod
    def _in_soap_body(body: bytes, extra: bytes) -> bytes:
        closing = list(re.finditer(rb"</(?:[\w.-]+:)?Body>", body))
        if not closing:
            return body + extra
        at = closing[-1].start()
        return body[:at] + extra + body[at:]

    def _soap_deep(self, body: bytes) -> bytes:
        return self._in_soap_body(body, _xml_nest(DEEP))

    def _soap_abyss(self, body: bytes) -> bytes:
        return self._in_soap_body(body, _xml_nest(ABYSS))

    def _soap_laughs(self, body: bytes) -> bytes:
        entities = [b'<!ENTITY lol0 "' + MARKER + b'">']
        for level in range(1, 10):
            references = b"&lol%d;" % (level - 1) * 10
            entities.append(b'<!ENTITY lol%d "%s">' % (level, references))
        dtd = b"<!DOCTYPE soapenv:Envelope [" + b"".join(entities) + b"]>"
        body = self._in_soap_body(body, b"<laughs>&lol9;</laughs>")
        declaration = re.match(rb"<\?xml[^>]*\?>", body)
        end = declaration.end() if declaration else 0
        return body[:end] + dtd + body[end:]

    def _soap_xxe(self, body: bytes) -> bytes:
        dtd = (
            b'<!DOCTYPE soapenv:Envelope [<!ENTITY ext SYSTEM "file:///etc/hostname">'
            b'<!ENTITY mark "' + MARKER + b'">]>'
        )
        body = self._in_soap_body(body, b"<xxe>&ext;&mark;</xxe>")
        declaration = re.match(rb"<\?xml[^>]*\?>", body)
        end = declaration.end() if declaration else 0
        return body[:end] + dtd + body[end:]

    def _soap_swarm(self, body: bytes) -> bytes:
        swarm = b"<" + MARKER + b">" + b"<x/>" * SWARM + b"</" + MARKER + b">"
        return self._in_soap_body(body, swarm)

    def _soap_wrong_type(self, body: bytes) -> bytes:
        return body

    # --- REST: extra members go into the first object of the answer -----------------------

    @staticmethod
    def _in_first_object(body: bytes, member: bytes) -> bytes:
        start = body.find(b"{")
        if start < 0:
            return body
        return body[: start + 1] + b'"' + MARKER + b'": ' + member + b", " + body[start + 1 :]

    def _rest_deep(self, body: bytes) -> bytes:
        return self._in_first_object(body, b"[" * DEEP + b"]" * DEEP)

    def _rest_abyss(self, body: bytes) -> bytes:
        return self._in_first_object(body, b"[" * ABYSS + b"]" * ABYSS)

    def _rest_swarm(self, body: bytes) -> bytes:
        return self._in_first_object(body, b"[" + b"{}," * (SWARM - 1) + b"{}]")

    def _rest_wrong_type(self, body: bytes) -> bytes:
        return body


SOAP_ENV = b"http://schemas.xmlsoap.org/soap/envelope/"
BOMB_PADDING = 200 * 1024 * 1024


@functools.cache
def _compressed_padding() -> bytes:
    """BOMB_PADDING spaces as one gzip member, compressed a megabyte at a time."""
    blank = b" " * (1024 * 1024)
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    parts = [stream.compress(blank) for _ in range(BOMB_PADDING // len(blank))]
    parts.append(stream.flush())
    return b"".join(parts)


def _xml_nest(levels: int) -> bytes:
    return b"<d>" * levels + MARKER + b"</d>" * levels


def build_app(kind: str, upstream: str) -> Starlette:
    backend = HostileBackend(kind, upstream)
    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    return Starlette(
        routes=[
            Route("/_hostile/mode", backend.set_mode, methods=["POST"]),
            Route("/_hostile/stats", backend.read_stats, methods=["GET"]),
            Route("/{path:path}", backend.serve, methods=methods),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("soap", "rest"), required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Compressed before "ready", not on the first gzip_bomb request: a second or more of CPU
    # there would turn the bomb into a slow reply (BACKEND_TIMEOUT) on a loaded machine.
    _compressed_padding()
    config = uvicorn.Config(
        build_app(args.kind, args.upstream),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        print("hostile ready", flush=True)
        await serving

    asyncio.run(run())


if __name__ == "__main__":
    main()
