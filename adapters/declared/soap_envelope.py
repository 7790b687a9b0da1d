"""SOAP request envelopes prepared once per WSDL operation and filled on each call.

zeep reads the WSDL; this module reads zeep's model of it once, when the engine loads the WSDL,
and keeps per operation only what an envelope needs: the SOAP version's envelope namespace,
the input element's qualified name, its child elements in WSDL order with their qualified
names, min/max occurs and xsd simple types (zeep's own ``xmlvalue`` per type, so values are
written exactly as zeep writes them), and the HTTP headers zeep would send. A call then only
walks that small tree with the request's values and builds the envelope with lxml (which
escapes every value): no zeep ``CompoundValue`` objects, deep copies or signature parsing on
the hot path.

It refuses what zeep refuses, at the same point (before anything is sent): an unknown argument,
a missing required element, a list longer or shorter than the element's occurs allow, a value
the xsd type's ``xmlvalue`` refuses (a collection for an xsd:string), a value lxml refuses (a
control character). It follows zeep's rules where zeep is lenient, so the envelope is the one
zeep builds: zeep writes ``str(value)`` for numeric types without checking them (text for an
xsd:int goes out as text) and does not check xsd facets (patterns, enumerations, lengths).

What it does not cover is left to zeep, decided per operation when the WSDL is loaded (see
``prepare``): attributes, nillable elements or element defaults, xsd:all, groups, a choice
that is not the whole content of its type or whose options are not simple elements, repeated
sequences or choices, xsd:any, list/union/anyType values, SOAP-encoded arrays, WS-Addressing,
and messages zeep wraps itself. Two value shapes zeep would guess at are refused here instead
(neither comes out of a mapping's request template): a list for an element that occurs at
most once and holds a complex type, and a bare value for a complex type whose first child is
not a simple element.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding
from zeep.wsdl.messages.base import SerializedMessage
from zeep.wsdl.messages.soap import SoapMessage
from zeep.xsd.elements.element import Element
from zeep.xsd.elements.indicators import Choice
from zeep.xsd.elements.indicators import Sequence as XsdSequence
from zeep.xsd.types.builtins import BuiltinType
from zeep.xsd.types.complex import ComplexType

#: Deeper nesting than this is left to zeep (it also stops a recursive type from looping).
MAX_DEPTH = 16


class Refused(ValueError):
    """The request does not fit the operation's input (what zeep would raise on)."""


class Unsupported(Exception):
    """The operation uses something the prepared path does not build: zeep builds it."""


@dataclass(frozen=True, slots=True)
class Node:
    """One element of an operation's input: simple (``xmlvalue``) or complex (children)."""

    name: str  # the argument's name (zeep's: the element's attribute name, made unique)
    tag: str  # the qualified name, "{namespace}local" or "local" where the schema is unqualified
    min_occurs: int
    max_occurs: int | None  # None: unbounded
    xmlvalue: Callable[[Any], Any] | None  # simple types: zeep's own writer; None: complex
    children: tuple[Node, ...] = ()  # a complex type's sequence, in WSDL order
    choice: bool = False  # the children are the options of the type's xsd:choice
    choice_optional: bool = False
    empty: bool = False  # a complex type with no content at all

    @property
    def multiple(self) -> bool:
        return self.max_occurs != 1

    @property
    def optional(self) -> bool:
        return self.min_occurs == 0


@dataclass(frozen=True, slots=True)
class PreparedOperation:
    """What one WSDL operation's request needs; ``envelope`` fills it for one call."""

    envelope_tag: str
    header_tag: str
    body_tag: str
    nsmap: Mapping[str, str]
    body: Node
    http_headers: Mapping[str, str]

    def envelope(
        self, kwargs: Mapping[str, Any], headers: Sequence[etree._Element]
    ) -> etree._Element:
        """The request envelope, as zeep's ``binding._create`` builds it; Refused, TypeError
        or ValueError when the arguments do not fit the WSDL."""
        values = _compound(self.body, kwargs)
        # Built in zeep's order (Envelope, Header with the header elements appended, Body,
        # then the body's elements depth first), so lxml gives the namespaces the same
        # prefixes as in zeep's envelope.
        envelope = etree.Element(self.envelope_tag, nsmap=self.nsmap)
        if headers:
            header = etree.SubElement(envelope, self.header_tag)
            for element in headers:
                header.append(element)
        body = etree.SubElement(envelope, self.body_tag)
        _render_complex(body, self.body, values)
        return envelope


def prepare(client: Any, binding: Any) -> tuple[dict[str, PreparedOperation], dict[str, str]]:
    """Each operation of a binding prepared, and why the others are left to zeep."""
    prepared: dict[str, PreparedOperation] = {}
    left: dict[str, str] = {}
    for name, operation in binding._operations.items():
        try:
            prepared[name] = _prepare_operation(client, binding, operation)
        except Unsupported as why:
            left[name] = str(why)
        except (AttributeError, TypeError, KeyError) as error:
            # zeep's model is read through its internals: should a zeep version move them,
            # the operation is built by zeep as before rather than the WSDL failing to load
            # (the tests hold the bundled WSDLs to being prepared entirely).
            left[name] = f"zeep's model not as expected ({type(error).__name__})"
    return prepared, left


def _prepare_operation(client: Any, binding: Any, operation: Any) -> PreparedOperation:
    if not isinstance(binding, Soap11Binding | Soap12Binding):
        raise Unsupported("not a SOAP 1.1 or 1.2 binding")
    # zeep's egress steps the prepared path does not repeat: ws-addressing, plugins, WSSE and
    # extra HTTP headers (the engine's client has none of the last three; checked anyway).
    if operation.abstract.wsa_action:
        raise Unsupported("WS-Addressing")
    if client.plugins or client.wsse or client.settings.extra_http_headers:
        raise Unsupported("zeep plugins, WSSE or extra HTTP headers")
    message = operation.input
    if type(message).serialize is not SoapMessage.serialize:
        raise Unsupported("a message type zeep serialises its own way")
    if message.body is None:
        raise Unsupported("an input without a body")
    if message._is_body_wrapped:
        raise Unsupported("a body zeep wraps itself (several parts)")
    namespace = message.nsmap["soap-env"]
    nsmap = {"soap-env": namespace, **client.wsdl.types._prefix_map_custom}
    body = _node(message.body, message.body.name, 0)
    if body.xmlvalue is not None:
        raise Unsupported("a simple-typed body")
    # zeep's headers: SOAPAction from the message, Content-Type from the binding (with the
    # action for SOAP 1.2), as in SoapMessage.serialize and binding._set_http_headers.
    action = operation.soapaction
    serialized = SerializedMessage(
        path=None, headers={"SOAPAction": f'"{action}"' if action else '""'}, content=None
    )
    binding._set_http_headers(serialized, operation)
    return PreparedOperation(
        envelope_tag=f"{{{namespace}}}Envelope",
        header_tag=f"{{{namespace}}}Header",
        body_tag=f"{{{namespace}}}Body",
        nsmap=nsmap,
        body=body,
        http_headers=dict(serialized.headers),
    )


def _node(element: Any, name: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise Unsupported("nesting deeper than the prepared path goes (or a recursive type)")
    if type(element) is not Element:
        raise Unsupported(f"{type(element).__name__} in the input (not a plain element)")
    if element.nillable or element.default is not None:
        raise Unsupported(f"{element.name}: nillable or with a default")
    occurs = element.max_occurs
    max_occurs: int | None
    if occurs == "unbounded":
        max_occurs = None
    elif isinstance(occurs, int):
        max_occurs = occurs
    else:
        raise Unsupported(f"{element.name}: maxOccurs {occurs!r}")
    common = {"name": name, "tag": element.qname.text, "min_occurs": int(element.min_occurs)}
    xsd_type = element.type
    if isinstance(xsd_type, BuiltinType):
        return Node(max_occurs=max_occurs, xmlvalue=xsd_type.xmlvalue, **common)
    if not isinstance(xsd_type, ComplexType):
        raise Unsupported(f"{element.name}: an xsd list, union or anyType")
    if xsd_type.attributes:
        raise Unsupported(f"{element.name}: attributes")
    if xsd_type._array_type:
        raise Unsupported(f"{element.name}: a SOAP-encoded array")
    content = xsd_type.elements_nested
    if not content:
        return Node(max_occurs=max_occurs, xmlvalue=None, empty=True, **common)
    if len(content) != 1:
        raise Unsupported(f"{element.name}: mixed content")
    indicator = content[0][1]
    if indicator.accepts_multiple:
        raise Unsupported(f"{element.name}: a repeated sequence or choice")
    if type(indicator) is XsdSequence:
        children = []
        for child_name, child in indicator.elements_nested:
            if child_name is None or type(child) is not Element:
                # A choice, group or xsd:any inside a sequence: zeep gives its options
                # defaults of their own that change what it renders.
                raise Unsupported(f"{element.name}: a choice, group or any in a sequence")
            children.append(_node(child, child_name, depth + 1))
        return Node(max_occurs=max_occurs, xmlvalue=None, children=tuple(children), **common)
    if type(indicator) is Choice:
        options = []
        for option_name, option in indicator.elements_nested:
            option_node = _node(option, option_name, depth + 1) if option_name else None
            if option_node is None or option_node.xmlvalue is None or option.name != option_name:
                raise Unsupported(f"{element.name}: a choice of other than simple elements")
            options.append(option_node)
        return Node(
            max_occurs=max_occurs,
            xmlvalue=None,
            children=tuple(options),
            choice=True,
            choice_optional=indicator.is_optional,
            **common,
        )
    raise Unsupported(f"{element.name}: {type(indicator).__name__} content")


# --- filling, per call: zeep's CompoundValue construction, then its render ---------------


def _compound(node: Node, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The values of a complex element, as zeep's ``CompoundValue`` holds them."""
    if node.choice:
        return _choice_values(node, kwargs)
    values: dict[str, Any] = {}
    used = 0
    for child in node.children:
        if child.name in kwargs:
            used += 1
            value = kwargs[child.name]
            values[child.name] = value if child.xmlvalue is not None else _create(child, value)
        else:
            values[child.name] = [] if child.multiple else None
    if used != len(kwargs):
        raise TypeError(f"unknown argument for {node.name}")
    return values


def _choice_values(node: Node, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    # zeep's Choice.parse_kwargs: empty values are taken whatever they are, the first
    # non-empty one is the choice, and a second non-empty one is left over (refused).
    values: dict[str, Any] = {}
    used = 0
    found = False
    for option in node.children:
        if option.name in kwargs:
            value = kwargs[option.name]
            if not value:
                values[option.name] = value
                used += 1
            elif not found:
                values[option.name] = value
                used += 1
                found = True
    if used != len(kwargs):
        raise TypeError(f"more than one choice, or an unknown argument, for {node.name}")
    if not found:
        return {}
    for option in node.children:
        values.setdefault(option.name, None)
    return values


def _create(node: Node, value: Any) -> Any:
    """A complex element's value as zeep's ``_create_object`` makes it."""
    if value is None:
        return None
    if isinstance(value, list):
        if not node.multiple:
            raise Refused(f"a list for {node.name}, which occurs once")
        return [_create_item(node, item) for item in value]
    return _create_item(node, value)


def _create_item(node: Node, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return _compound(node, value)
    if isinstance(value, list):
        raise Refused(f"a list of lists for {node.name}")
    # A bare value fills the first child, as zeep's positional argument does.
    if node.choice or not node.children or node.children[0].xmlvalue is None:
        raise Refused(f"a bare value for {node.name}")
    return _compound(node, {node.children[0].name: value})


def _render_complex(parent: etree._Element, node: Node, values: dict[str, Any]) -> None:
    element = etree.SubElement(parent, node.tag)
    if node.empty:
        return
    if node.choice:
        # zeep's Choice.render: the first option holding a value is rendered.
        for option in node.children:
            value = values.get(option.name)
            if value is not None:
                _render(element, option, value)
                return
        if not node.choice_optional:
            raise Refused(f"no choice given for {node.name}")
        return
    for child in node.children:
        value = values[child.name]
        if value is not None or not child.optional:
            _render(element, child, value)


def _render(parent: etree._Element, node: Node, value: Any) -> None:
    """zeep's Element.render: validate the occurs, then each item."""
    simple = node.xmlvalue is not None
    if node.multiple and isinstance(value, list):
        if len(value) < node.min_occurs:
            raise Refused(f"fewer {node.name} than minOccurs")
        if node.max_occurs is not None and len(value) > node.max_occurs:
            raise Refused(f"more {node.name} than maxOccurs")
        if simple and any(item is None for item in value):
            raise Refused(f"an empty {node.name} in a list")
        for item in value:
            _render_item(parent, node, item)
        return
    if value is None and (simple or not node.optional):
        raise Refused(f"missing {node.name}")
    _render_item(parent, node, value)


def _render_item(parent: etree._Element, node: Node, value: Any) -> None:
    if value is None:
        if not node.optional:
            etree.SubElement(parent, node.tag)
        return
    xmlvalue = node.xmlvalue
    if xmlvalue is None:
        _render_complex(parent, node, value)
        return
    child = etree.SubElement(parent, node.tag)
    child.text = value if isinstance(value, etree.CDATA) else xmlvalue(value)
