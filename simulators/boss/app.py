"""The BOSS simulator: a Starlette app serving BossService over SOAP 1.1.

Routes: the WSDL and XSD as static documents, the service endpoint, and the /_sim control
routes. One SQLite connection and one compiled schema serve every request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.boss import soap
from simulators.boss.events import builder as event_builder
from simulators.boss.operations import HANDLERS, BusinessError, Handler
from simulators.boss.store import BossStore
from simulators.control import SimControl, TraceparentRecorder
from simulators.events import EventHub
from simulators.storage import open_for_serving, store_path

SERVICE_PATH = "/boss/services/BossService"
XML = "text/xml; charset=utf-8"
SUCCESS_DESC = "Operation succeeded."

log = logging.getLogger("simulators.boss")


def _fault_response(fault: soap.SoapFault) -> Response:
    return Response(soap.fault_envelope(fault), status_code=500, media_type=XML)


def _injected_failure() -> Response:
    return _fault_response(
        soap.SoapFault("Server", "System busy, please try again later.", soap.SYSTEM_ERROR)
    )


class BossEndpoint:
    """POST /boss/services/BossService (and GET ?wsdl)."""

    def __init__(self, store: BossStore, control: SimControl, wsdl: bytes) -> None:
        self._store = store
        self._control = control
        self._wsdl = wsdl
        self._validator = soap.RequestValidator()

    async def handle(self, request: Request) -> Response:
        if request.method == "GET":
            if any(key.lower() == "wsdl" for key in request.query_params):
                return Response(self._wsdl, media_type=XML)
            return Response("append ?wsdl to get the service description", status_code=404)

        body = await request.body()
        payload = operation = None
        parse_fault: soap.SoapFault | None = None
        try:
            payload = self._validator.payload(body)
            operation = soap.operation_of(payload)
        except soap.SoapFault as fault:
            parse_fault = fault
        # Counted under the operation asked for, even when the call is then refused.
        action = request.headers.get("soapaction", "").strip().strip('"')
        blocked = await self._control.admit(operation or action or "Unknown")
        if blocked is not None:
            return blocked
        if parse_fault is not None:
            return _fault_response(parse_fault)
        assert payload is not None
        handler = HANDLERS.get(operation or "")
        if handler is None:
            qname = etree.QName(payload)
            return _fault_response(
                soap.client_fault(f"unknown operation element {qname.localname}")
            )
        try:
            self._validator.validate(payload)
        except soap.SoapFault as fault:
            return _fault_response(fault)
        assert operation is not None
        return self._answer(operation, handler, payload)

    def _answer(self, operation: str, handler: Handler, payload: etree._Element) -> Response:
        header = payload[0]  # RequestHeader, guaranteed first by the schema
        version = header.findtext(f"{{{soap.TNS}}}Version") or "1.0"
        message_seq = header.findtext(f"{{{soap.TNS}}}MessageSeq") or ""
        try:
            result = handler(self._store, payload[1])
        except BusinessError as error:
            env, _ = soap.result_message(operation, version, message_seq, error.code, error.desc)
            return Response(soap.serialize(env), media_type=XML)
        except soap.SoapFault as fault:
            return _fault_response(fault)
        except Exception as error:
            # The kind of failure only: messages may quote request data (personal data).
            log.error("%s failed with %s", operation, type(error).__name__)
            return _fault_response(soap.SoapFault("Server", "Internal error.", soap.SYSTEM_ERROR))
        env, msg = soap.result_message(operation, version, message_seq, "0", SUCCESS_DESC)
        msg.append(result)
        return Response(soap.serialize(env), media_type=XML)


def create_app(data_dir: Path) -> Starlette:
    """The BOSS app over ``data_dir/boss.db``."""
    conn = open_for_serving(store_path(data_dir, "boss"))
    control = SimControl(_injected_failure, soap.GARBLED_BODY, XML)
    wsdl = soap.WSDL_PATH.read_bytes()
    xsd = soap.XSD_PATH.read_bytes()
    store = BossStore(conn)
    endpoint = BossEndpoint(store, control, wsdl)
    events = EventHub("boss", event_builder(store))

    async def wsdl_document(request: Request) -> Response:
        return Response(wsdl, media_type=XML)

    async def xsd_document(request: Request) -> Response:
        return Response(xsd, media_type=XML)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await events.start()
        yield
        await events.stop()
        conn.close()

    app = Starlette(
        routes=[
            Route(SERVICE_PATH, endpoint.handle, methods=["GET", "POST"]),
            Route(f"{SERVICE_PATH}.wsdl", wsdl_document, methods=["GET"]),
            Route("/boss/services/BossService.xsd", xsd_document, methods=["GET"]),
            *control.routes(),
            *events.routes(),
        ],
        lifespan=lifespan,
    )
    app.state.control = control
    app.state.events = events
    app.add_middleware(TraceparentRecorder, control=control)
    return app
