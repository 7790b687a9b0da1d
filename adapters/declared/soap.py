"""The generic SOAP engine: any WSDL, SOAP 1.1 or 1.2, document or rpc literal.

zeep reads the WSDL once per instance (off the event loop); each operation's request is then
prepared from zeep's model of it (``soap_envelope``) and every call only fills in the values,
with lxml, refusing what zeep would refuse, so a mapping whose request does not fit the
contract fails here, not at the vendor. An operation using what the prepared path does not
build is left to zeep's ``binding._create``, decided once when the WSDL is loaded.
Answers are read with lxml (``raw_response``), about 8x cheaper than zeep's objects; faults
over HTTP 200 or 500 (1.1 ``faultcode`` Client/Server, 1.2 ``Code/Value`` Sender/Receiver) and
business result codes in the body become the taxonomy through the mapping's ``errors:``.
Header values (``soap: headers:`` and the body's ``request_header`` part some vendors require)
are filled on every call: ``$settings.name`` from the system's settings (a role's settings
table), ``$call`` with the WSDL operation and ``$messageSeq`` with a message id new on every
attempt.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import zeep
from lxml import etree
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport

from adapters.declared.faults import classify
from adapters.declared.soap_envelope import PreparedOperation, Refused, prepare
from adapters.declared.spec import InstanceSpec, OperationSpec, SystemSpec, fill_settings
from adapters.declared.values import count_of, xml_find, xml_find_all, xml_text
from adapters.errors import AdapterError, BadResponse, BusinessRejected
from adapters.parsing import needs_census, read_xml
from adapters.resilience import Endpoint, make_backend_pool, status_error, transport_error
from adapters.transport import DEFAULT_MAX_RESPONSE_BYTES, CappedSyncTransport

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
#: What ``answer`` assumes a body handed in without its Content-Type was labelled (unit use).
SOAP12_MEDIA_TYPE = "application/soap+xml"
_ENVELOPES = (SOAP11, SOAP12)


def _header_element(qualified: str, values: Mapping[str, str]) -> etree._Element:
    element = etree.Element(qualified)
    for name, value in values.items():
        etree.SubElement(element, name).text = value
    return element


def _per_call(values: Mapping[str, str], call: dict[str, str]) -> dict[str, str]:
    return {name: call.get(value, value) for name, value in values.items()}


def contract_location(spec: SystemSpec, base_url: str) -> str:
    """The WSDL's URL on the instance, or the file beside the system file."""
    contract = spec.contract
    if contract.startswith(("http://", "https://")):
        return contract
    if contract.startswith("/"):
        return base_url + contract
    return str(Path(spec.system_file).parent / contract)


def load_client(
    location: str,
    http: httpx.AsyncClient,
    timeout_s: float,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> zeep.AsyncClient:
    """zeep's client for a WSDL (synchronous: call it in a thread)."""
    wsdl_http = httpx.Client(
        timeout=timeout_s * 5, transport=CappedSyncTransport(max_response_bytes)
    )
    try:
        transport = AsyncTransport(client=http, wsdl_client=wsdl_http)
        return zeep.AsyncClient(
            location, transport=transport, settings=zeep.Settings(raw_response=True, strict=True)
        )
    finally:
        wsdl_http.close()


def binding_of(client: zeep.AsyncClient, wanted: str | None) -> Any:
    bindings = client.wsdl.bindings
    if wanted is not None:
        return bindings[wanted]
    if len(bindings) != 1:
        # Prefer SOAP 1.2 when a WSDL offers both, as the vendor's newer binding.
        soap12 = [b for b in bindings.values() if type(b).__name__ == "Soap12Binding"]
        if len(soap12) == 1:
            return soap12[0]
        raise BadResponse("wsdl", "offers several bindings: name one in soap.binding")
    return next(iter(bindings.values()))


class SoapEngine:
    """Calls one instance of a declared SOAP system."""

    def __init__(self, spec: SystemSpec, instance: InstanceSpec, endpoint: Endpoint) -> None:
        self.spec = spec
        self.instance = instance
        self.name = instance.name
        self._endpoint = endpoint
        # The calls go out on the backend's pool straight (adapters/transport.py); zeep's
        # own async transport is handed an idle httpx client only because it wants one.
        self._http = make_backend_pool(endpoint)
        self._zeep_http = httpx.AsyncClient()
        self._limits = endpoint.reply_limits
        self._thread_above = endpoint.parse_in_thread_above_bytes
        self._service: Any = None
        self._starting = asyncio.Lock()
        settings = spec.settings
        self._headers = [
            (q, {k: fill_settings(v, settings) for k, v in values.items()})
            for q, values in spec.soap_headers
        ]
        part = spec.soap_request_header
        self._request_header = (
            None
            if part is None
            else (part[0], {k: fill_settings(v, settings) for k, v in part[1].items()})
        )
        self._address = fill_settings(spec.soap_address or "", settings)
        self._sequence = itertools.count(1)
        #: The answer element's local name per WSDL operation ("" where the WSDL has none),
        #: filled when the WSDL is loaded.
        self._outputs: dict[str, str] = {}
        #: Per WSDL operation, its request prepared once (filled on each call), and why an
        #: operation is left to zeep's ``_create`` instead; both filled when the WSDL loads.
        self._prepared: dict[str, PreparedOperation] = {}
        self.left_to_zeep: dict[str, str] = {}

    async def start(self) -> None:
        async with self._starting:
            if self._service is None:
                self._service = await asyncio.to_thread(self._load)

    def _load(self) -> AsyncServiceProxy:
        try:
            client = load_client(
                contract_location(self.spec, self._endpoint.base_url),
                self._zeep_http,
                self._endpoint.timeout_s,
                self._endpoint.max_response_bytes,
            )
            binding = binding_of(client, self.spec.soap_binding)
        except httpx.HTTPError as error:
            raise transport_error(self.name, error) from None
        except (zeep.exceptions.Error, etree.XMLSyntaxError, OSError, KeyError):
            raise BadResponse(self.name, "published a WSDL zeep cannot load") from None
        # What each operation answers with, as the WSDL says (checked on every answer).
        self._outputs = {name: _output_element(op) for name, op in binding._operations.items()}
        self._prepared, self.left_to_zeep = prepare(client, binding)
        # The instance's own address: one WSDL serves every instance of a system.
        address = self._endpoint.base_url + self._address
        return AsyncServiceProxy(client, binding, address=address)

    async def close(self) -> None:
        await self._http.aclose()
        await self._zeep_http.aclose()

    def operations(self) -> set[str]:
        """The WSDL's operation names (for ``systems check``); the engine must be started."""
        return set(self._service._binding._operations) if self._service is not None else set()

    async def call(self, operation: OperationSpec, request: Any) -> etree._Element:
        """Send one operation; the body's answer element, or an AdapterError."""
        if self._service is None:
            await self.start()  # the system was down at start-up: load the WSDL now
        kwargs = request if isinstance(request, dict) else {}
        per_call = {
            "$call": str(operation.call),
            "$messageSeq": f"SB{time.time_ns()}{next(self._sequence) % 1000:03d}",
        }
        headers = [_header_element(q, _per_call(v, per_call)) for q, v in self._headers]
        if self._request_header is not None:
            part, values = self._request_header
            kwargs = {part: _per_call(values, per_call), **kwargs}
        service = self._service
        call = str(operation.call)
        if call not in service._binding._operations:
            raise BusinessRejected(self.name, f"has no operation {call}")
        prepared = self._prepared.get(call)
        try:
            if prepared is not None:
                # The envelope zeep would build, filled from the operation's prepared form.
                envelope = prepared.envelope(kwargs, headers)
                http_headers = dict(prepared.http_headers)
            else:
                # zeep builds the envelope from the WSDL (what ServiceProxy's send does,
                # without its transport), for what the prepared form does not cover.
                envelope, http_headers = service._binding._create(
                    call,
                    (),
                    {**kwargs, "_soapheaders": headers or None},
                    client=service._client,
                    options=service._binding_options,
                )
        except (Refused, zeep.exceptions.Error, TypeError, ValueError):
            # Either way a request that does not fit the contract is refused here.
            raise BusinessRejected(
                self.name, f"{operation.name} request does not fit the WSDL"
            ) from None
        message = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        try:
            response = await self._http.send(
                "POST", service._binding_options["address"], headers=http_headers, body=message
            )
        except httpx.HTTPError as error:
            raise transport_error(self.name, error) from None
        content_type = response.headers.get("content-type")
        status, content = response.status_code, response.content
        if len(content) > self._thread_above and not needs_census(content, self._limits):
            # Parsing a big reply takes the loop for tens of milliseconds (a 5 MB one about
            # 300): in a worker thread, where lxml lets go of the GIL, others go on meanwhile.
            # A reply that must first be counted (more "<" and "=" than the item limit: a
            # swarm) stays on the loop: the census is Python work that holds the GIL, and in
            # threads it would only crowd the others' parses past their deadlines.
            return await asyncio.to_thread(self.answer, operation, status, content, content_type)
        return self.answer(operation, status, content, content_type)

    def answer(
        self,
        operation: OperationSpec,
        status: int,
        content: bytes,
        content_type: str | None = SOAP12_MEDIA_TYPE,
    ) -> etree._Element:
        name = operation.name
        if not content:
            raise status_error(self.name, status) or BadResponse(
                self.name, f"answered {name} with an empty body"
            )
        try:
            # No DTDs, entities or network; content type, depth and size checked.
            envelope = read_xml(self.name, content, content_type, self._limits)
        except BadResponse as unreadable:
            raise status_error(self.name, status) or unreadable from None
        namespace = etree.QName(envelope).namespace
        if namespace not in _ENVELOPES:
            raise BadResponse(self.name, f"answered {name} without a SOAP envelope")
        body = envelope.find(f"{{{namespace}}}Body")
        if body is None or len(body) == 0:
            raise BadResponse(self.name, f"answered {name} without a SOAP body")
        payload = body[0]
        if payload.tag == f"{{{namespace}}}Fault":
            raise self._fault(name, payload, namespace)
        if status != 200:
            raise status_error(self.name, status) or BadResponse(
                self.name, f"answered {name} with HTTP {status}"
            )
        expected = self._answer_element(operation)
        if expected is not None and etree.QName(payload).localname != expected:
            # Another operation's answer, or a vendor error page dressed as SOAP.
            raise BadResponse(self.name, f"answered {name} with an unexpected message")
        errors = self.spec.errors
        if errors.result_code is not None:
            code = xml_text(payload, errors.result_code)
            if code is None and errors.result_required:
                raise BadResponse(self.name, f"answered {name} without its result code")
            if code is not None and code not in errors.ok:
                raise classify(self.name, name, errors, code, caller_side=True)
        return payload

    def _answer_element(self, operation: OperationSpec) -> str | None:
        """The local name of the element the WSDL says the operation answers with (None
        before the WSDL is loaded, or when the binding does not say)."""
        return self._outputs.get(str(operation.call)) or None

    def _fault(self, operation: str, fault: etree._Element, namespace: str) -> AdapterError:
        if namespace == SOAP11:
            side = (fault.findtext("faultcode") or "").rpartition(":")[2]
        else:
            side = (fault.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value") or "").rpartition(":")[2]
        path = self.spec.errors.fault_code
        code = xml_text(fault, path) if path else None
        return classify(
            self.name, operation, self.spec.errors, code, caller_side=side in ("Client", "Sender")
        )


def _output_element(operation: Any) -> str:
    """The local name of a WSDL operation's answer element ("" when the binding has none)."""
    qname = getattr(getattr(getattr(operation, "output", None), "body", None), "qname", None)
    return etree.QName(qname).localname if qname else ""


def records_at(payload: etree._Element, operation: OperationSpec) -> list[etree._Element]:
    """The elements holding the operation's records (the last step of ``list`` repeats)."""
    return xml_find_all(payload, operation.list_path)


def total_at(payload: etree._Element, operation: OperationSpec, system: str) -> int:
    found = xml_find(payload, operation.total_path or ())
    return count_of(found.text if found is not None else None, system, operation.name)
