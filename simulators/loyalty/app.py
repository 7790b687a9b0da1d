"""The Aurora Loyalty simulator: a Starlette app serving MemberService over SOAP 1.2.

One app per instance (loyalty-north, loyalty-south), both over the same loyalty.db; each owns
one MSISDN range, keeps its own requestIds and has its own /_sim control state.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.control import SimControl, TraceparentRecorder
from simulators.loyalty import soap12
from simulators.loyalty.instances import Instance
from simulators.loyalty.operations import HANDLERS, Scope
from simulators.loyalty.store import LoyaltyStore
from simulators.storage import open_for_serving, read_meta, store_path

SERVICE_PATH = "/loyalty/soap/MemberService"
_WSDL_LOCATION = b"http://127.0.0.1:8104/loyalty/soap/MemberService"

log = logging.getLogger("simulators.loyalty")


def _fault_response(fault: soap12.LoyaltyFault) -> Response:
    return Response(
        soap12.fault_envelope(fault), status_code=fault.http_status, media_type=soap12.CONTENT_TYPE
    )


def _injected_failure() -> Response:
    return _fault_response(soap12.system_fault())


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None once it passes MAX_REQUEST_BYTES (never buffered past it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > soap12.MAX_REQUEST_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > soap12.MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class MemberEndpoint:
    """POST /loyalty/soap/MemberService (and GET ?wsdl)."""

    def __init__(self, scope: Scope, control: SimControl, wsdl: bytes) -> None:
        self._scope = scope
        self._control = control
        self._wsdl = wsdl

    def _wsdl_for(self, request: Request) -> bytes:
        # The address is the socket this instance listens on, not the Host header: nothing a
        # caller sends is reflected into the document.
        host, port = request.scope.get("server") or ("127.0.0.1", self._scope.instance.default_port)
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        location = f"http://{host}:{port}{SERVICE_PATH}".encode()
        return self._wsdl.replace(_WSDL_LOCATION, location)

    async def handle(self, request: Request) -> Response:
        if request.method == "GET":
            if any(key.lower() == "wsdl" for key in request.query_params):
                return Response(self._wsdl_for(request), media_type="text/xml; charset=utf-8")
            return Response("append ?wsdl to get the service description", status_code=404)

        media = soap12.MediaType.parse(request.headers.get("content-type"))
        body = await _read_body(request)
        parsed: soap12.SoapRequest | None = None
        refusal: soap12.LoyaltyFault | None = None
        try:
            if body is None:
                raise soap12.sender_fault(
                    soap12.TOO_MANY, f"request larger than {soap12.MAX_REQUEST_BYTES} bytes"
                )
            parsed = soap12.parse_request(body, media)
        except soap12.LoyaltyFault as fault:
            refusal = fault
        # Counted under the operation asked for, even when the call is then refused.
        if parsed is not None:
            asked = parsed.operation
        else:
            asked = (refusal.operation if refusal else None) or media.operation() or "Unknown"
        blocked = await self._control.admit(asked)
        if blocked is not None:
            return blocked
        if refusal is not None:
            return _fault_response(refusal)
        assert parsed is not None
        return self._answer(parsed)

    def _answer(self, request: soap12.SoapRequest) -> Response:
        env, answer = soap12.response(request.operation)
        try:
            HANDLERS[request.operation](self._scope, request.payload, answer)
        except soap12.LoyaltyFault as fault:
            return _fault_response(fault)
        except Exception as error:
            # The kind of failure only: messages may quote request data (personal data).
            log.error("%s failed with %s", request.operation, type(error).__name__)
            return _fault_response(soap12.system_fault("Internal error."))
        return Response(soap12.serialize(env), media_type=soap12.CONTENT_TYPE)


def create_app(data_dir: Path, instance: Instance) -> Starlette:
    """The MemberService app of ``instance`` over ``data_dir/loyalty.db``."""
    path = store_path(data_dir, "loyalty")
    meta = read_meta(path)
    if meta is None:
        raise FileNotFoundError(f"{path} holds no complete loyalty store")
    conn = open_for_serving(path)
    control = SimControl(_injected_failure, soap12.GARBLED_BODY, soap12.CONTENT_TYPE)
    scope = Scope(LoyaltyStore(conn), instance, meta.seed)
    endpoint = MemberEndpoint(scope, control, soap12.WSDL_PATH.read_bytes())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        conn.close()

    app = Starlette(
        routes=[
            Route(SERVICE_PATH, endpoint.handle, methods=["GET", "POST"]),
            *control.routes(),
        ],
        lifespan=lifespan,
    )
    app.state.control = control
    app.add_middleware(TraceparentRecorder, control=control)
    app.state.instance = instance
    return app
