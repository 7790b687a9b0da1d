"""SOAP 1.1 envelopes of the BOSS: safe parsing, XSD validation, answers and faults.

Requests are parsed with entity expansion, DTD loading and network access off (a SOAP message
must not carry a DTD at all, so one is refused outright) and validated against the published
XSD, loaded and compiled once.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://boss.simulator.switchboard/crm/v1"
HERE = Path(__file__).parent
WSDL_PATH = HERE / "BossService.wsdl"
XSD_PATH = HERE / "BossService.xsd"

INVALID_REQUEST = "100000001"  # detail/ErrorCode of every Client fault on a malformed request
SYSTEM_ERROR = "100000002"  # detail/ErrorCode of a Server fault (injected failures)
MAX_REQUEST_BYTES = 1_000_000

_ENVELOPE = f"{{{SOAP_ENV}}}Envelope"
_BODY = f"{{{SOAP_ENV}}}Body"
_NSMAP = {"soapenv": SOAP_ENV, "boss": TNS}


def safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


class SoapFault(Exception):
    """A SOAP fault to answer: ``Client`` for the caller's mistakes, ``Server`` for ours."""

    def __init__(self, side: str, message: str, error_code: str) -> None:
        super().__init__(message)
        self.side = side
        self.message = message
        self.error_code = error_code


def client_fault(message: str, error_code: str = INVALID_REQUEST) -> SoapFault:
    return SoapFault("Client", message, error_code)


class RequestValidator:
    """Parses envelopes and validates their payload against BossService.xsd."""

    def __init__(self, xsd_path: Path = XSD_PATH) -> None:
        self._parser = safe_parser()
        self._schema = etree.XMLSchema(etree.parse(str(xsd_path), self._parser))

    def payload(self, body: bytes) -> etree._Element:
        """The validated ``<Op>RequestMsg`` element of a request, or a Client fault."""
        if len(body) > MAX_REQUEST_BYTES:
            raise client_fault(f"request larger than {MAX_REQUEST_BYTES} bytes")
        if not body.strip():
            raise client_fault("empty request body")
        try:
            tree = etree.fromstring(body, self._parser).getroottree()
        except etree.XMLSyntaxError as error:
            raise client_fault(f"request is not well-formed XML: {error.msg}") from None
        if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
            raise client_fault("a SOAP message must not contain a document type declaration")
        root = tree.getroot()
        if root.tag != _ENVELOPE:
            raise client_fault("the root element must be a SOAP 1.1 soapenv:Envelope")
        body_elements = [child for child in root if child.tag == _BODY]
        if len(body_elements) != 1:
            raise client_fault("the envelope must have exactly one soapenv:Body")
        payload = [child for child in body_elements[0] if isinstance(child.tag, str)]
        if len(payload) != 1:
            raise client_fault("soapenv:Body must hold exactly one request element")
        return payload[0]

    def validate(self, payload: etree._Element) -> None:
        if not self._schema.validate(payload):
            error = self._schema.error_log.last_error
            message = error.message if error is not None else "invalid request"
            raise client_fault(message.replace(f"{{{TNS}}}", ""))


def operation_of(payload: etree._Element) -> str | None:
    """The operation a ``<Op>RequestMsg`` element asks for, or None for anything else."""
    qname = etree.QName(payload)
    if qname.namespace != TNS or not qname.localname.endswith("RequestMsg"):
        return None
    return qname.localname[: -len("RequestMsg")]


def envelope() -> tuple[etree._Element, etree._Element]:
    """A new (Envelope, Body) pair."""
    env = etree.Element(_ENVELOPE, nsmap=_NSMAP)
    return env, etree.SubElement(env, _BODY)


def result_message(
    operation: str, version: str, message_seq: str, code: str, desc: str
) -> tuple[etree._Element, etree._Element]:
    """(Envelope, ``<Op>ResultMsg``) with its ResultHeader filled in."""
    env, body = envelope()
    msg = etree.SubElement(body, f"{{{TNS}}}{operation}ResultMsg")
    header = etree.SubElement(msg, f"{{{TNS}}}ResultHeader")
    for name, value in (
        ("Version", version),
        ("MessageSeq", message_seq),
        ("ResultCode", code),
        ("ResultDesc", desc),
    ):
        etree.SubElement(header, f"{{{TNS}}}{name}").text = value
    return env, msg


def fault_envelope(fault: SoapFault) -> bytes:
    env, body = envelope()
    node = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    # faultcode, faultstring and detail are unqualified in SOAP 1.1.
    etree.SubElement(node, "faultcode").text = f"soapenv:{fault.side}"
    etree.SubElement(node, "faultstring").text = fault.message
    detail = etree.SubElement(node, "detail")
    etree.SubElement(detail, f"{{{TNS}}}ErrorCode").text = fault.error_code
    return serialize(env)


def serialize(env: etree._Element) -> bytes:
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def add_fields(parent: etree._Element, fields: tuple[tuple[str, str | None], ...]) -> None:
    """Append ``<boss:name>value</boss:name>`` children, leaving out None values."""
    sub = etree.SubElement
    for name, value in fields:
        if value is not None:
            sub(parent, f"{{{TNS}}}{name}").text = value


# Not XML: what a gateway in trouble sends back (bad_response).
GARBLED_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<soapenv:Envelope xmlns:soapenv="'
    + SOAP_ENV.encode()
    + b'"><soapenv:Body><boss:Query\x00\xff<<'
)
