"""SOAP 1.2 envelopes of Aurora Loyalty's MemberService: safe parsing, answers and faults.

The vendor speaks SOAP 1.2 only and binds rpc/literal: the body holds one element named after
the operation in the target namespace, its parts as unqualified children. Requests are parsed
with entity expansion, DTD loading and network access off, and a DTD is refused outright (SOAP
forbids one). Faults are SOAP 1.2 faults: ``env:Sender`` over HTTP 400 for the caller's
mistakes, ``env:Receiver`` over HTTP 500 for the system's own (and for the one "business" fault
the vendor raises, an unknown member's history).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from lxml import etree

SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "urn:aurora:loyalty:member:v2"
MEDIA_TYPE = "application/soap+xml"
CONTENT_TYPE = f"{MEDIA_TYPE}; charset=utf-8"
WSDL_PATH = Path(__file__).parent / "MemberService.wsdl"
XML_NS = "http://www.w3.org/XML/1998/namespace"

MAX_REQUEST_BYTES = 1_000_000

OPERATIONS = ("getMembersByMsisdn", "getMembers", "getPointsHistory", "redeemPoints", "ping")
# The soapAction of each operation in the WSDL, sent as the media type's ``action`` parameter.
ACTIONS = {name: f"{TNS}#{name}" for name in OPERATIONS}
_OPERATION_OF_ACTION = {action: name for name, action in ACTIONS.items()}

# Codes of lty:LoyaltyFault/lty:code.
VERSION = "LTY-VERSION"
MALFORMED = "LTY-XML"
AUTH = "LTY-AUTH"
INVALID = "LTY-400"
TOO_MANY = "LTY-413"
UNKNOWN_MEMBER = "LTY-404"
SYSTEM = "LTY-500"

_ENVELOPE = f"{{{SOAP12_ENV}}}Envelope"
_HEADER = f"{{{SOAP12_ENV}}}Header"
_BODY = f"{{{SOAP12_ENV}}}Body"
_CREDENTIALS = f"{{{TNS}}}Credentials"
_NSMAP = {"env": SOAP12_ENV, "lty": TNS}


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


class LoyaltyFault(Exception):
    """A SOAP 1.2 fault to answer.

    ``side`` is ``Sender`` (HTTP 400) or ``Receiver`` (HTTP 500); ``category`` groups the codes
    for the caller: ``VALIDATION``, ``SECURITY``, ``BUSINESS`` or ``SYSTEM``. The message never
    quotes request values: they may be personal data.
    """

    def __init__(self, side: str, code: str, category: str, message: str) -> None:
        super().__init__(message)
        self.side = side
        self.code = code
        self.category = category
        self.message = message
        #: The operation the refused request asked for, when that much could be read.
        self.operation: str | None = None

    @property
    def http_status(self) -> int:
        return 400 if self.side == "Sender" else 500


def sender_fault(code: str, message: str) -> LoyaltyFault:
    category = "SECURITY" if code == AUTH else "VALIDATION"
    return LoyaltyFault("Sender", code, category, message)


def invalid(message: str) -> LoyaltyFault:
    return sender_fault(INVALID, message)


def unknown_member_fault() -> LoyaltyFault:
    return LoyaltyFault("Receiver", UNKNOWN_MEMBER, "BUSINESS", "No member has this number.")


def system_fault(message: str = "The loyalty system is unavailable, retry later.") -> LoyaltyFault:
    return LoyaltyFault("Receiver", SYSTEM, "SYSTEM", message)


@dataclass(frozen=True)
class MediaType:
    """What the Content-Type header of a request says."""

    media_type: str
    action: str | None

    @classmethod
    def parse(cls, header: str | None) -> MediaType:
        message = Message()
        if header:
            message["content-type"] = header
        action = message.get_param("action")
        return cls(message.get_content_type(), action if isinstance(action, str) else None)

    def operation(self) -> str | None:
        """The operation the action names, for counting a call refused before parsing."""
        return _OPERATION_OF_ACTION.get(self.action or "")


@dataclass(frozen=True)
class SoapRequest:
    operation: str
    payload: etree._Element
    partner_code: str


def check_media_type(media: MediaType) -> None:
    if media.media_type != MEDIA_TYPE:
        raise sender_fault(
            VERSION,
            f"MemberService speaks SOAP 1.2 only: send {MEDIA_TYPE}, not {media.media_type}.",
        )


def parse_envelope(body: bytes) -> tuple[etree._Element | None, etree._Element]:
    """(Header or None, the single operation element of the Body) of a SOAP 1.2 envelope."""
    if len(body) > MAX_REQUEST_BYTES:
        raise sender_fault(TOO_MANY, f"request larger than {MAX_REQUEST_BYTES} bytes")
    if not body.strip():
        raise sender_fault(MALFORMED, "empty request body")
    try:
        tree = etree.fromstring(body, safe_parser()).getroottree()
    except etree.XMLSyntaxError as error:
        raise sender_fault(MALFORMED, f"request is not well-formed XML: {error.msg}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise sender_fault(MALFORMED, "a SOAP message must not contain a document type declaration")
    root = tree.getroot()
    if root.tag == f"{{{SOAP11_ENV}}}Envelope":
        raise sender_fault(VERSION, "MemberService speaks SOAP 1.2 only, not SOAP 1.1.")
    if root.tag != _ENVELOPE:
        raise sender_fault(MALFORMED, "the root element must be a SOAP 1.2 env:Envelope")
    children = [child for child in root if isinstance(child.tag, str)]
    header = children[0] if children and children[0].tag == _HEADER else None
    rest = children[1:] if header is not None else children
    if len(rest) != 1 or rest[0].tag != _BODY:
        raise sender_fault(
            MALFORMED, "the envelope must hold an optional env:Header, then one env:Body"
        )
    payload = [child for child in rest[0] if isinstance(child.tag, str)]
    if len(payload) != 1:
        raise sender_fault(MALFORMED, "env:Body must hold exactly one operation element")
    return header, payload[0]


def operation_of(payload: etree._Element) -> str | None:
    qname = etree.QName(payload)
    if qname.namespace == TNS and qname.localname in ACTIONS:
        return qname.localname
    return None


def partner_code(header: etree._Element | None) -> str:
    """The partnerCode of the lty:Credentials header block, or an LTY-AUTH fault."""
    blocks = [] if header is None else header.findall(_CREDENTIALS)
    if len(blocks) != 1:
        raise sender_fault(AUTH, "the env:Header must carry one lty:Credentials block")
    codes = blocks[0].findall("partnerCode")
    code = (codes[0].text or "").strip() if len(codes) == 1 else ""
    if not code:
        raise sender_fault(AUTH, "lty:Credentials must carry a non-empty partnerCode")
    return code


def parse_request(body: bytes, media: MediaType) -> SoapRequest:
    """The operation, payload and partner of a request, or the fault that refuses it."""
    check_media_type(media)
    header, payload = parse_envelope(body)
    operation = operation_of(payload)
    if operation is None:
        raise invalid(f"no operation {etree.QName(payload).localname} in namespace {TNS}")
    try:
        if media.action is not None and media.action != ACTIONS[operation]:
            raise invalid(f"the action parameter does not name the operation {operation}")
        return SoapRequest(operation, payload, partner_code(header))
    except LoyaltyFault as fault:
        fault.operation = operation
        raise


def envelope() -> tuple[etree._Element, etree._Element]:
    """A new (Envelope, Body) pair."""
    env = etree.Element(_ENVELOPE, nsmap=_NSMAP)
    return env, etree.SubElement(env, _BODY)


def response(operation: str) -> tuple[etree._Element, etree._Element]:
    """(Envelope, ``lty:<operation>Response``) to append the result parts to."""
    env, body = envelope()
    return env, etree.SubElement(body, f"{{{TNS}}}{operation}Response")


def add_parts(parent: etree._Element, parts: tuple[tuple[str, str | None], ...]) -> None:
    """Append unqualified ``<name>value</name>`` children, leaving out None values."""
    for name, value in parts:
        if value is not None:
            etree.SubElement(parent, name).text = value


def fault_envelope(fault: LoyaltyFault, trace_id: str | None = None) -> bytes:
    env, body = envelope()
    node = etree.SubElement(body, f"{{{SOAP12_ENV}}}Fault")
    code = etree.SubElement(node, f"{{{SOAP12_ENV}}}Code")
    etree.SubElement(code, f"{{{SOAP12_ENV}}}Value").text = f"env:{fault.side}"
    reason = etree.SubElement(node, f"{{{SOAP12_ENV}}}Reason")
    text = etree.SubElement(reason, f"{{{SOAP12_ENV}}}Text")
    text.set(f"{{{XML_NS}}}lang", "en")
    text.text = fault.message
    detail_node = etree.SubElement(node, f"{{{SOAP12_ENV}}}Detail")
    detail = etree.SubElement(detail_node, f"{{{TNS}}}LoyaltyFault")
    for name, value in (
        ("code", fault.code),
        ("category", fault.category),
        ("traceId", trace_id or uuid.uuid4().hex),
    ):
        etree.SubElement(detail, f"{{{TNS}}}{name}").text = value
    return serialize(env)


def serialize(env: etree._Element) -> bytes:
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


# Not XML: what a gateway in trouble sends back (bad_response).
GARBLED_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<env:Envelope xmlns:env="'
    + SOAP12_ENV.encode()
    + b'"><env:Body><lty:getMembers\x00\xff<<'
)
