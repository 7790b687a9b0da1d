"""Reading backend replies: bounded JSON and XML documents, then values in canonical types.

Every reply body a backend sends is turned into a document here, and only here
(``read_json``, ``read_xml``), so that each backend's limits hold whoever wrote its adapter:

- **Content type.** A REST reply must say JSON (``application/json`` or ``application/*+json``),
  a SOAP reply XML (``text/xml``, or ``application/soap+xml`` for SOAP 1.2). A body labelled
  otherwise is not guessed at.
- **Depth and size.** At most ``max_depth`` levels of nesting and ``max_items`` values. JSON is
  measured on the bytes before ``json.loads`` sees them, without recursion (the stdlib parser
  recurses per level: 100,000 levels raised RecursionError); XML is counted before the tree is
  built when it might be too big, and its depth checked on the tree (libxml2 itself refuses
  more than 256 levels without ``huge_tree``, and parses without recursing).
- **No DTDs, no entities, no network.** A DTD has no place in a SOAP message (SOAP 1.1/1.2
  forbid it) and is how entity expansion ("billion laughs") and external entities start: a
  reply carrying one is refused, and the parser never expands or fetches anything anyway.

Every violation is a ``BadResponse`` naming the system and the limit, never quoting the body.
The body's size is capped before it gets here, by the transport (``adapters/transport.py``).
"""

from __future__ import annotations

import gc
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from itertools import accumulate
from typing import Any

from lxml import etree

from adapters.errors import BadResponse
from adapters.records import Money

#: Nesting levels a reply may have by default; the bundled systems' replies need at most 7.
DEFAULT_MAX_DEPTH = 64
#: JSON values, or XML elements and attributes, one reply may hold by default.
DEFAULT_MAX_ITEMS = 200_000

SOAP_MEDIA_TYPES = frozenset({"text/xml", "application/soap+xml"})


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """How deep and how big a document one backend may send (``Endpoint.reply_limits``)."""

    max_depth: int = DEFAULT_MAX_DEPTH
    max_items: int = DEFAULT_MAX_ITEMS


def media_type(content_type: str | None) -> str:
    """``application/json`` from ``Application/JSON; charset=utf-8``; "" when there is none."""
    return (content_type or "").partition(";")[0].strip().lower()


def is_json_media_type(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def is_soap_media_type(content_type: str | None) -> bool:
    return media_type(content_type) in SOAP_MEDIA_TYPES


# --- JSON ----------------------------------------------------------------------------------

#: Every byte but those of JSON's structure: string quotes, brackets, commas.
_NOT_JSON_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{},')
#: A backslash and the character it escapes.
_ESCAPE_PAIR = re.compile(rb"\\.", re.DOTALL)
#: +1 for an opening bracket, -1 for a closing one, 0 for anything else.
_NESTING_STEP = [0] * 256
for _byte in b"[{":
    _NESTING_STEP[_byte] = 1
for _byte in b"]}":
    _NESTING_STEP[_byte] = -1


def _json_structure(content: bytes) -> bytes:
    """The brackets and commas of a JSON document that lie outside its strings.

    All of it runs at C speed on the bytes (translate, replace, split). For a document that
    json.loads would reject the result may be wrong; json.loads then rejects it.
    """
    # (A one-byte search is a memchr; the two-byte one costs as much as the rest together.)
    if b"\\" in content and b'\\"' in content:
        # Escaped quotes do not end strings. Drop escape pairs left to right (an escaped
        # backslash before a quote leaves the quote standing, as in JSON). A body without any
        # backslash-quote has no escaped quote, whatever its other escapes.
        content = _ESCAPE_PAIR.sub(b"", content)
    structure = content.translate(None, _NOT_JSON_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        # Strings that held brackets or commas are left: keep what lies between them.
        structure = b"".join(structure.split(b'"')[0::2])
    return structure


def _nested_deeper_than(brackets: bytes, max_depth: int) -> bool:
    """Whether a bracket sequence nests deeper than ``max_depth``, without recursion."""
    # Each pass drops every innermost pair, one or two levels at a time: when a few passes
    # empty it, the depth is at most twice their number. Typical replies (4 or 5 levels) are
    # settled so; anything else is measured exactly, by a running sum in C.
    rest = brackets
    for _ in range(max_depth // 2):
        if not rest:
            return False
        rest = rest.replace(b"[]", b"").replace(b"{}", b"")
    if not rest:
        return False
    return max(accumulate(map(_NESTING_STEP.__getitem__, brackets))) > max_depth


def check_json_shape(system: str, content: bytes, limits: ReplyLimits) -> None:
    """BadResponse if a JSON body nests deeper or holds more items than ``limits`` allow.

    Items are containers plus commas, about one per array element or object member.
    """
    structure = _json_structure(content)
    items = structure.count(b",") + structure.count(b"[") + structure.count(b"{")
    if items > limits.max_items:
        raise BadResponse(
            system, f"answered with more than {limits.max_items} JSON items (max_response_items)"
        )
    if _nested_deeper_than(structure.translate(None, b","), limits.max_depth):
        raise BadResponse(
            system, f"answered with JSON nested over {limits.max_depth} levels (max_response_depth)"
        )


def read_json(
    system: str,
    content: bytes,
    content_type: str | None,
    limits: ReplyLimits,
) -> Any:
    """The JSON document of a reply body, within its backend's limits; else BadResponse."""
    if not is_json_media_type(content_type):
        raise BadResponse(system, "answered with a content type that is not JSON")
    check_json_shape(system, content, limits)
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and over-long integers. RecursionError cannot
        # happen within the depth limit; it is caught so that it never escapes as a crash.
        raise BadResponse(system, "answered with a body that is not JSON") from None


# --- XML -----------------------------------------------------------------------------------

#: Entities are never expanded, DTDs and external resources never loaded, huge trees refused.
_XML_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
}
#: One parser per thread: lxml's parsers must not be used by two threads at once, and big
#: replies are parsed in worker threads (``parse_in_thread_above_bytes``).
_PARSERS = threading.local()


def _xml_parser() -> etree.XMLParser:
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = etree.XMLParser(**_XML_OPTIONS)
    return parser


class _TooMuchXml(Exception):
    def __init__(self, limit: str) -> None:
        self.limit = limit


class _XmlCensus:
    """A parser target that counts elements and attributes and tracks depth, building nothing.

    Used before the tree is built for a body big enough to hold too many: a tree costs about
    a hundred bytes per node, so 8 MiB of ``<a/>`` would make some 2 million of them.
    """

    def __init__(self, limits: ReplyLimits) -> None:
        self._limits = limits
        self._items = 0
        self._depth = 0

    def start(self, tag: str, attrib: dict[str, str], nsmap: Any = None) -> None:
        self._items += 1 + len(attrib)
        self._depth += 1
        if self._items > self._limits.max_items:
            raise _TooMuchXml("items")
        if self._depth > self._limits.max_depth:
            raise _TooMuchXml("depth")

    def end(self, tag: str) -> None:
        self._depth -= 1

    def data(self, data: str) -> None:
        return None

    def close(self) -> None:
        return None


@lru_cache(maxsize=8)
def _below_depth(max_depth: int) -> etree.XPath:
    """An XPath true when an element sits deeper than ``max_depth`` (evaluated in C)."""
    return etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")


def needs_census(content: bytes, limits: ReplyLimits) -> bool:
    """Whether an XML body must be counted exactly before it is parsed. Every element and
    attribute needs a "<" or a "=": fewer of those than the limit, and the count needs no
    parse. More, and they are counted exactly before any tree exists."""
    return content.count(b"<") + content.count(b"=") > limits.max_items


def read_xml(
    system: str,
    content: bytes,
    content_type: str | None,
    limits: ReplyLimits,
    *,
    media_types: frozenset[str] = SOAP_MEDIA_TYPES,
) -> etree._Element:
    """The root element of an XML reply body, within its backend's limits; else BadResponse."""
    if media_type(content_type) not in media_types:
        raise BadResponse(system, "answered with a content type that is not SOAP XML")
    if needs_census(content, limits):
        _census(system, content, limits)
    try:
        root = etree.fromstring(content, _xml_parser())
    except etree.XMLSyntaxError:
        raise BadResponse(system, "answered with a body that is not XML") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise BadResponse(system, "answered with a document type declaration (refused)")
    if _below_depth(limits.max_depth)(root):
        raise BadResponse(
            system, f"answered with XML nested over {limits.max_depth} levels (max_response_depth)"
        )
    return root


def _census(system: str, content: bytes, limits: ReplyLimits) -> None:
    exceeded = _census_outcome(content, limits)
    if exceeded is not None:
        # lxml keeps the exception the census raised inside its parser, in a reference cycle
        # with all the parse made (one element with 860,000 attributes is a 100 MB dict):
        # left to the garbage collector's own pace, a backend sending such replies grew the
        # hub by gigabytes. Collected now, on this path only (a refused reply of over
        # max_items elements and attributes: rare, and dearer to parse than to collect).
        gc.collect()
    if exceeded == "depth":
        raise BadResponse(
            system, f"answered with XML nested over {limits.max_depth} levels (max_response_depth)"
        )
    if exceeded == "items":
        raise BadResponse(
            system,
            f"answered with more than {limits.max_items} XML elements and attributes "
            "(max_response_items)",
        )
    if exceeded == "syntax":
        raise BadResponse(system, "answered with a body that is not XML")


def _census_outcome(content: bytes, limits: ReplyLimits) -> str | None:
    """Which limit the body passes ("depth", "items"), "syntax" if it does not parse, or None."""
    parser = etree.XMLParser(target=_XmlCensus(limits), **_XML_OPTIONS)
    try:
        etree.fromstring(content, parser)
    except _TooMuchXml as error:
        return error.limit
    except etree.XMLSyntaxError:
        return "syntax"
    return None


# --- values --------------------------------------------------------------------------------


@contextmanager
def reading(system: str, what: str) -> Iterator[None]:
    """Turn a missing key or a wrong type while mapping a record into BadResponse."""
    try:
        yield
    except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError):
        raise BadResponse(system, f"sent a {what} this adapter cannot read") from None


def to_date(value: str | None) -> date | None:
    return date.fromisoformat(value[:10]) if value else None


def to_datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def to_money(value: dict[str, Any] | None) -> Money:
    if value is None:
        return Money(Decimal("0"))
    return Money(Decimal(str(value["value"])), str(value.get("unit", "CNY")))


def csv(values: list[str] | tuple[str, ...]) -> str:
    return ",".join(values)


def chunks(values: list[str], size: int) -> Iterator[list[str]]:
    """Split a batch into the backend's maximum filter size."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def unique(values: Any) -> list[str]:
    """Keys in first-seen order without repeats (DataLoaders may hand over duplicates)."""
    return list(dict.fromkeys(values))
