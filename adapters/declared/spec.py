"""The two files that declare a legacy system, read into plain specs and checked.

``system.yaml`` says how to reach the system (protocol, contract, instances and their routing,
timeouts, retries, breaker, bulkhead, cache TTLs, readiness, identity timing); ``mapping.yaml``
says what it means (records and their fields with data classes, operations, error conventions,
identity linking, graph fields). Every problem names its file and line; nothing is guessed.
The formats are described in docs/systems.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adapters.declared.canonical import canonical_enums, canonical_fields, canonical_nested
from adapters.declared.role_slots import ROLE_VARIABLES, ROLES
from adapters.declared.yaml_lines import (
    LINE,
    DeclarationInvalid,
    FileProblems,
    Problem,
    line_of,
    load_yaml,
    plain,
)
from adapters.phone import MSISDN_FORMATS

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")
GRAPH_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
FIELD_TYPES = frozenset(
    {"string", "int", "float", "decimal", "bool", "date", "datetime", "msisdn", "money"}
)
MATCHES = frozenset({"msisdn", "certificate", "certificate+msisdn"})
VARIABLES = frozenset({"$keys", "$key", "$offset", "$limit"})
PROTOCOLS = frozenset({"soap", "rest", "plugin"})

SYSTEM_KEYS = {
    "name", "title", "protocol", "contract", "soap", "rest", "instances", "call",
    "readiness", "first_sight", "cache_ttl_s", "health", "plugin", "settings",
}  # fmt: skip
SOAP_KEYS = {"binding", "address", "headers", "request_header"}
#: Per-call values a SOAP header (or the request header part) may carry: the WSDL operation
#: called, and a message id new on every attempt.
CALL_VARIABLES = frozenset({"$call", "$messageSeq"})
#: ``$settings.name`` in the system file: the value of one of its settings (``settings:``).
SETTING = re.compile(r"\$settings\.([a-z][a-z0-9_]*)")
REST_KEYS = {"headers"}
INSTANCE_KEYS = {"name", "base_url", "owns"}
OWNS_KEYS = {"msisdn_prefix", "key_prefix"}
CALL_KEYS = {
    "timeout_s", "retry_attempts", "retry_backoff_s", "max_connections", "max_concurrency",
    "max_concurrency_per_request", "breaker_failure_threshold", "breaker_reset_s",
    "list_read_timeout_s", "parse_in_thread_above_bytes",
}  # fmt: skip
MAPPING_KEYS = {
    "system", "records", "operations", "errors", "identity", "graph", "writes", "role",
}  # fmt: skip
WRITE_KEYS = {
    "call", "method", "path", "description", "key", "arguments", "request", "idempotency",
    "scope", "record", "list", "evicts", "headers",
}  # fmt: skip
#: ``idempotency: header:Idempotency-Key``: a REST write's key travels in that header.
IDEMPOTENCY_HEADER = "header:"
ARGUMENT_TYPES = frozenset({"string", "int", "float", "decimal", "bool"})
FIELD_KEYS = {
    "path", "type", "class", "map", "required", "description", "many", "record", "personal",
}  # fmt: skip
#: How deep records may nest (a ticket's notes, a line's usage): deeper is a mistake.
MAX_NESTING = 4
OPERATION_KEYS = {
    "call", "method", "path", "query", "request", "batch", "list", "record", "key",
    "total", "max_limit", "input", "description", "headers", "all_pages", "maps",
    "msisdn_format",
}  # fmt: skip
ERROR_KEYS = {
    "fault_code", "result_code", "result_required", "ok", "not_found", "rejected",
    "unavailable", "code",
}  # fmt: skip
IDENTITY_KEYS = {
    "match", "lookup", "key", "key_class", "msisdn", "certificate", "msisdn_lookup",
}  # fmt: skip
GRAPH_KEYS = {"field", "type", "description", "record", "read", "connections"}
CONNECTION_KEYS = {"operation", "key", "type", "first", "description"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    path: tuple[str, ...]
    type: str = "string"
    data_class: str | None = None
    value_map: Mapping[str, str] | None = None
    required: bool = False
    description: str | None = None
    #: A list of values (a JSON array; every element at the path in XML).
    many: bool = False
    line: int = 0
    #: A record inside the record (``record: TicketNote``): its spec, resolved once all the
    #: mapping's records are read; the field's value is a dict (a tuple of dicts with many).
    nested: RecordSpec | None = None
    #: The nested record's name as the mapping wrote it (resolved into ``nested``).
    nested_name: str | None = None
    #: Paths tried in order when ``path`` holds nothing (``path: [a.b, c]`` in the mapping).
    alternatives: tuple[tuple[str, ...], ...] = ()
    #: One path without list filters (set when read): values are read the short way.
    plain_path: bool = True
    #: ``personal: false``: the engineer says a field whose name looks personal (an offering's
    #: name, a certificate's type) is not, so `systems check` does not warn about it.
    personal: bool | None = None


@dataclass(frozen=True, slots=True)
class RecordSpec:
    name: str
    fields: tuple[FieldSpec, ...]
    line: int = 0

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """One call of the system and where its records are in the answer."""

    name: str
    record: str | None
    #: SOAP: the WSDL operation. REST: unused (method and path say it).
    call: str | None = None
    method: str = "GET"
    path: str | None = None
    query: Mapping[str, Any] = field(default_factory=dict)
    request: Any = None
    #: Keys per call at most, for operations that take many ($keys); None: one call.
    batch: int | None = None
    #: Where the records are, relative to the answer (SOAP: the body's first element).
    list_path: tuple[str, ...] = ()
    #: The record field each requested key is answered by (batched reads by key).
    key_field: str | None = None
    total_path: tuple[str, ...] | None = None
    max_limit: int | None = None
    #: What the $keys are: the system's own keys, or MSISDNs (routed by the instances' ranges).
    input: str = "keys"
    #: How the system writes the MSISDNs it is asked by (``e164``, ``national``, ``digits``):
    #: each asked number is sent in that form. None: E.164 for ``input: msisdns``, else as
    #: the hub has it.
    msisdn_format: str | None = None
    #: REST: request headers of this operation (templates: an idempotency key header).
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: Follow $offset/$limit pages until the total (a filtered list read whole).
    all_pages: bool = False
    #: Per role variable, the system's code for each value the role fills in
    #: (``$starLevel: {gold: "3"}``): the request side of a field's ``map``.
    maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    line: int = 0

    @property
    def paged(self) -> bool:
        return self.total_path is not None


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """How the system says no, mapped onto the hub's taxonomy."""

    fault_code: tuple[str, ...] | None = None
    result_code: tuple[str, ...] | None = None
    #: Every successful answer carries its result code: one without it is a BadResponse.
    result_required: bool = False
    #: REST: where the error code is in an error body.
    code: tuple[str, ...] | None = None
    ok: frozenset[str] = frozenset({"0"})
    not_found: frozenset[str] = frozenset()
    rejected: frozenset[str] = frozenset()
    unavailable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """How a record of this system is linked to a hub customer."""

    match: str
    lookup: str
    key: str
    key_class: str
    msisdn: str | None = None
    certificate: str | None = None
    #: ``certificate+msisdn``: an operation finding records by the customer's numbers, so
    #: that a record serving one of them under another ID card is seen (a conflict).
    msisdn_lookup: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """A paged list under a graph record (points history under a member)."""

    name: str
    operation: str
    key: str
    type: str
    first: int = 10
    description: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """What the system adds to the graph: a field of Customer and the types behind it."""

    field: str
    type: str
    record: str
    read: str
    description: str | None = None
    connections: tuple[ConnectionSpec, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class WriteSpec:
    """A change the system makes, offered as a mutation: once per idempotency key.

    The mutation takes ``customerId``, the record's ``key`` (which must be one of that
    customer's linked keys in the system), the declared ``arguments`` and ``idempotencyKey``.
    The system receives a request id derived from the caller's credential and that key, in
    the request part ``idempotency`` names: a repeat is answered by the system's first result.
    """

    name: str
    key: str
    arguments: Mapping[str, str]
    operation: OperationSpec
    idempotency: str
    scope: str | None = None
    evicts: tuple[str, ...] = ()
    description: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """The hub role a system plays (adapters/declared/role_slots.py) and its operations."""

    plays: str
    #: Slot name -> the operation that serves it.
    slots: Mapping[str, str]
    line: int = 0


@dataclass(frozen=True, slots=True)
class PrefixRange:
    low: int
    high: int
    digits: int

    def covers(self, national: str) -> bool:
        head = national[: self.digits]
        return head.isdigit() and len(head) == self.digits and self.low <= int(head) <= self.high

    def overlaps(self, other: PrefixRange) -> bool:
        """Whether some value is covered by both (prefixes of unequal length compared on
        the shorter one: ``13`` overlaps ``130-139``)."""
        digits = min(self.digits, other.digits)

        def cut(value: int, own: int) -> int:
            return value // 10 ** (own - digits)

        return cut(self.low, self.digits) <= cut(other.high, other.digits) and cut(
            other.low, other.digits
        ) <= cut(self.high, self.digits)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    name: str
    base_url: str
    #: National-number prefixes this instance owns; empty: it owns everything.
    owns_msisdns: tuple[PrefixRange, ...] = ()
    line: int = 0
    #: Leading digits of the system's own keys (customer numbers...) this instance owns;
    #: empty: the keys say nothing of their instance (a read by key asks every instance).
    owns_keys: tuple[PrefixRange, ...] = ()

    def owns(self, national: str) -> bool:
        return not self.owns_msisdns or any(r.covers(national) for r in self.owns_msisdns)

    def owns_key(self, key: str) -> bool:
        return any(r.covers(key) for r in self.owns_keys)


@dataclass(frozen=True, slots=True)
class CallSpec:
    timeout_s: float = 2.0
    retry_attempts: int = 3
    retry_backoff_s: float = 0.05
    max_connections: int = 20
    max_concurrency: int = 20
    #: Fair share: one request's calls in flight to an instance at once.
    max_concurrency_per_request: int = 5
    breaker_failure_threshold: int = 5
    breaker_reset_s: float = 5.0
    #: A list read whole (``all_pages``): all its pages together at most this long.
    list_read_timeout_s: float = 8.0
    #: SOAP replies longer than this are parsed in a worker thread, off the event loop.
    parse_in_thread_above_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class SystemSpec:
    name: str
    protocol: str
    contract: str
    instances: tuple[InstanceSpec, ...]
    records: Mapping[str, RecordSpec]
    operations: Mapping[str, OperationSpec]
    errors: ErrorSpec
    title: str = ""
    soap_binding: str | None = None
    soap_address: str | None = None
    #: SOAP header elements sent on every call: (qualified name, child values).
    soap_headers: tuple[tuple[str, Mapping[str, str]], ...] = ()
    #: A part of every operation's input, in the body (a vendor's RequestHeader): (part name,
    #: child values). Values, like the headers', may hold $call, $messageSeq, $settings.x.
    soap_request_header: tuple[str, Mapping[str, str]] | None = None
    #: The system's own settings and their values (``settings:``), used as $settings.name in
    #: the system file; a role system's settings table overrides them by name.
    settings: Mapping[str, str] = field(default_factory=dict)
    rest_headers: Mapping[str, str] = field(default_factory=dict)
    call: CallSpec = field(default_factory=CallSpec)
    required: bool = False
    waits_at_first_sight: bool = False
    cache_ttl_s: Mapping[str, float] = field(default_factory=dict)
    health: str | None = None
    identity: IdentitySpec | None = None
    graph: GraphSpec | None = None
    writes: Mapping[str, WriteSpec] = field(default_factory=dict)
    role: RoleSpec | None = None
    plugin: str | None = None
    system_file: str = ""
    mapping_file: str = ""

    @property
    def instance_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.instances)

    def data_classes(self) -> set[str]:
        found = {f.data_class for r in self.records.values() for f in r.fields if f.data_class}
        if self.identity is not None:
            found.add(self.identity.key_class)
        return found


def _path(value: Any) -> tuple[str, ...]:
    text = str(value).strip("/")
    return tuple(step for step in re.split(r"[/.]", text) if step) if text else ()


class _Reader(FileProblems):
    def keys(self, mapping: Any, allowed: set[str], what: str) -> bool:
        if not isinstance(mapping, dict):
            self.error(0, f"{what} must be a mapping")
            return False
        self.unknown_keys(mapping, allowed, what)
        return True

    def number(
        self, spec: dict, key: str, default: float, low: float, high: float, integer: bool = False
    ) -> Any:
        value = spec.get(key, default)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            self.error(spec[LINE], f"{key} must be a number between {low} and {high}")
            return default
        return value

    def codes(self, value: Any, line: int, what: str) -> frozenset[str]:
        if value is None:
            return frozenset()
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, str | int) for i in items):
            self.error(line, f"{what} must be a code or a list of codes")
            return frozenset()
        return frozenset(str(i) for i in items)


def read_system_file(path: Path) -> tuple[dict, list[Problem]]:
    """The system file as a checked mapping (specs are built once the mapping is read too)."""
    document = load_yaml(path)
    reader = _Reader(str(path))
    if not isinstance(document, dict):
        raise DeclarationInvalid([Problem(str(path), 1, "a system file is a mapping")])
    reader.keys(document, SYSTEM_KEYS, "the system file")
    return document, reader.problems


def parse_system(system_path: Path, mapping_path: Path) -> SystemSpec:
    """Both files of one system as a SystemSpec, or DeclarationInvalid listing every problem."""
    problems: list[Problem] = []
    try:
        system_doc, found = read_system_file(system_path)
        problems += found
    except DeclarationInvalid as error:
        problems += error.problems
        system_doc = None
    try:
        mapping_doc = load_yaml(mapping_path)
    except DeclarationInvalid as error:
        problems += error.problems
        mapping_doc = None
    if system_doc is None or mapping_doc is None:
        raise DeclarationInvalid(problems)
    if not isinstance(mapping_doc, dict):
        raise DeclarationInvalid(
            [*problems, Problem(str(mapping_path), 1, "a mapping is a mapping")]
        )
    s = _Reader(str(system_path))
    m = _Reader(str(mapping_path))
    spec = _build(system_doc, mapping_doc, s, m, system_path, mapping_path)
    problems += s.problems + m.problems
    if problems or spec is None:
        raise DeclarationInvalid(problems)
    return spec


def _build(
    sd: dict, md: dict, s: _Reader, m: _Reader, system_path: Path, mapping_path: Path
) -> SystemSpec | None:
    name = sd.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        s.error(sd[LINE], f"name is required and must match {NAME.pattern}")
        name = "invalid"
    if md.get("system") != name:
        m.error(md[LINE], f"system must name the system file's system ('{name}')")
    m.keys(md, MAPPING_KEYS, "the mapping file")
    protocol = sd.get("protocol")
    if protocol not in PROTOCOLS:
        s.error(sd[LINE], f"protocol must be one of {', '.join(sorted(PROTOCOLS))}")
        protocol = "rest"
    contract = sd.get("contract")
    if protocol == "plugin" and contract is None:
        contract = ""  # the plugin speaks the wire: no WSDL or OpenAPI to read
    elif not isinstance(contract, str) or not contract:
        s.error(sd[LINE], "contract is required: the WSDL (soap) or OpenAPI (rest) path or URL")
        contract = ""

    instances = _instances(sd, s)
    call = _call(sd.get("call") or {LINE: sd[LINE]}, s)
    readiness = sd.get("readiness", "required")
    if readiness not in ("required", "optional"):
        s.error(sd[LINE], "readiness must be required or optional")
    first_sight = sd.get("first_sight", "lazy")
    if first_sight not in ("wait", "lazy"):
        s.error(sd[LINE], "first_sight must be wait (link on first sight) or lazy (when asked)")
    ttls: dict[str, float] = {}
    for op, ttl in (sd.get("cache_ttl_s") or {}).items():
        if op == LINE:
            continue
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
            s.error(sd["cache_ttl_s"][LINE], f"cache_ttl_s.{op} must be seconds >= 0")
        else:
            ttls[str(op)] = float(ttl)

    settings = _settings(sd, s)
    soap = sd.get("soap") or {LINE: sd[LINE]}
    headers: list[tuple[str, Mapping[str, str]]] = []
    request_header: tuple[str, Mapping[str, str]] | None = None
    if protocol == "soap":
        s.keys(soap, SOAP_KEYS, "soap")
        for header in soap.get("headers") or []:
            if not isinstance(header, dict) or not isinstance(header.get("element"), str):
                s.error(line_of(soap), "each soap header needs element: '{namespace}Name'")
                continue
            values = _header_values(header.get("values"), settings, s, line_of(soap))
            headers.append((header["element"], values))
        part = soap.get("request_header")
        if part is not None:
            if not isinstance(part, dict) or not isinstance(part.get("part"), str):
                s.error(line_of(soap), "soap.request_header needs part: the input part's name")
            else:
                values = _header_values(part.get("values"), settings, s, part[LINE])
                request_header = (part["part"], values)
        _check_settings(soap.get("address"), settings, s, line_of(soap), "soap.address")
    rest = sd.get("rest") or {LINE: sd[LINE]}
    if protocol == "rest":
        s.keys(rest, REST_KEYS, "rest")

    records = _records(md, m)
    operations = _operations(md, m, records, protocol)
    for op in ttls:
        if op not in operations:
            s.error(sd["cache_ttl_s"][LINE], f"cache_ttl_s names unknown operation '{op}'")
    health = sd.get("health")
    if health is not None and health not in operations:
        s.error(sd[LINE], f"health names unknown operation '{health}'")
    errors = _errors(md.get("errors") or {LINE: md[LINE]}, m)
    identity = _identity(md.get("identity"), m, records, operations)
    graph = _graph(md.get("graph"), m, records, operations)
    writes = _writes(md.get("writes"), m, records, operations, protocol, identity)
    role = _role(md.get("role"), m, records, operations, protocol)
    plugin = sd.get("plugin")
    if plugin is not None and (not isinstance(plugin, str) or ":" not in plugin):
        s.error(sd[LINE], "plugin must be 'package.module:attribute'")
        plugin = None
    if protocol == "plugin":
        if plugin is None:
            s.error(sd[LINE], "protocol plugin needs plugin: 'package.module:attribute'")
        else:
            # Imported now, so a wrong reference is refused with the file and line, not at
            # the first call (adapters/declared/plugin.py).
            from adapters.declared.plugin import PluginNotLoaded, load_factory

            try:
                load_factory(plugin)
            except PluginNotLoaded as error:
                s.error(sd[LINE], str(error))
    elif plugin is not None:
        s.error(sd[LINE], "plugin is for protocol: plugin (a system the mapping cannot speak)")
    return SystemSpec(
        name=name,
        title=str(sd.get("title") or name),
        protocol=protocol,
        contract=contract,
        instances=instances,
        records=records,
        operations=operations,
        errors=errors,
        soap_binding=soap.get("binding"),
        soap_address=soap.get("address"),
        soap_headers=tuple(headers),
        soap_request_header=request_header,
        settings=settings,
        rest_headers={str(k): str(v) for k, v in plain(rest.get("headers") or {}).items()},
        call=call,
        required=readiness == "required",
        waits_at_first_sight=first_sight == "wait",
        cache_ttl_s=ttls,
        health=health,
        identity=identity,
        graph=graph,
        writes=writes,
        role=role,
        plugin=plugin,
        system_file=str(system_path),
        mapping_file=str(mapping_path),
    )


def _settings(sd: dict, s: _Reader) -> dict[str, str]:
    """``settings: {name: default}``: values the system file uses as ``$settings.name``."""
    found = sd.get("settings")
    if found is None:
        return {}
    if not isinstance(found, dict):
        s.error(sd[LINE], "settings must be a mapping: name -> default value")
        return {}
    settings: dict[str, str] = {}
    for name, value in found.items():
        if name == LINE:
            continue
        if not NAME.match(str(name)) or isinstance(value, dict | list) or value is None:
            s.error(found[LINE], f"setting '{name}' must be a name with a plain default value")
            continue
        settings[str(name)] = str(value)
    return settings


def _check_settings(
    value: Any, settings: Mapping[str, str], s: _Reader, line: int, what: str
) -> None:
    for name in SETTING.findall(str(value or "")):
        if name not in settings:
            s.error(line, f"{what}: unknown setting '$settings.{name}' (declare it in settings:)")


def _header_values(
    values: Any, settings: Mapping[str, str], s: _Reader, line: int
) -> dict[str, str]:
    """A header's child values: text, $call, $messageSeq or text with $settings.name."""
    found = plain(values or {})
    if not isinstance(found, dict):
        s.error(line, "soap header values must be a mapping: element -> value")
        return {}
    checked: dict[str, str] = {}
    for name, value in found.items():
        text = str(value)
        _check_settings(text, settings, s, line, f"soap header value {name}")
        if text.startswith("$") and not SETTING.match(text) and text not in CALL_VARIABLES:
            s.error(
                line,
                f"soap header value {name}: unknown variable '{text}' "
                f"(known: {', '.join(sorted(CALL_VARIABLES))}, $settings.name)",
            )
        checked[str(name)] = text
    return checked


def fill_settings(text: str, settings: Mapping[str, str]) -> str:
    """``text`` with every ``$settings.name`` replaced by the setting's value."""
    return SETTING.sub(lambda found: settings.get(found.group(1), found.group(0)), text)


def _instances(sd: dict, s: _Reader) -> tuple[InstanceSpec, ...]:
    specs = sd.get("instances")
    if not isinstance(specs, list) or not specs:
        s.error(sd[LINE], "instances is required: a list of {name, base_url[, owns]}")
        return ()
    found: list[InstanceSpec] = []
    for spec in specs:
        if not s.keys(spec, INSTANCE_KEYS, "an instance"):
            continue
        name = spec.get("name")
        if not isinstance(name, str) or not INSTANCE_NAME.match(name):
            s.error(spec[LINE], f"instance name must match {INSTANCE_NAME.pattern}")
            continue
        base_url = spec.get("base_url")
        # A plugin speaks its own wire (tcp://, a vendor's scheme): any URL it can read.
        scheme = r"^[a-z][a-z0-9+.-]*://" if sd.get("protocol") == "plugin" else r"^https?://"
        if not isinstance(base_url, str) or not re.match(scheme, base_url):
            s.error(spec[LINE], f"instance '{name}': base_url must be an http(s) URL")
            continue
        msisdns: tuple[PrefixRange, ...] = ()
        keys: tuple[PrefixRange, ...] = ()
        owns = spec.get("owns")
        if owns is not None and s.keys(owns, OWNS_KEYS, f"instance '{name}' owns"):
            msisdns = _prefix_ranges(owns, "msisdn_prefix", "130-159", s)
            keys = _prefix_ranges(owns, "key_prefix", "10000-10049", s)
        if any(i.name == name for i in found):
            s.error(spec[LINE], f"instance '{name}' is declared twice")
        found.append(InstanceSpec(name, base_url.rstrip("/"), msisdns, spec[LINE], keys))
    if len(found) > 1 and any(not i.owns_msisdns and not i.owns_keys for i in found):
        s.error(sd[LINE], "with several instances, each must say what it owns (owns:)")
    for index, first in enumerate(found):
        for second in found[index + 1 :]:
            for kind, mine, theirs in (
                ("msisdn_prefix", first.owns_msisdns, second.owns_msisdns),
                ("key_prefix", first.owns_keys, second.owns_keys),
            ):
                if any(a.overlaps(b) for a in mine for b in theirs):
                    s.error(
                        second.line,
                        f"instances '{first.name}' and '{second.name}' both own some "
                        f"{kind} values: a value must have one owner",
                    )
    return tuple(found)


def _prefix_ranges(owns: dict, key: str, example: str, s: _Reader) -> tuple[PrefixRange, ...]:
    """``owns.<key>``: ranges of leading digits (``130-159``, or one prefix ``13``)."""
    texts = owns.get(key) or []
    if not isinstance(texts, list):
        s.error(owns[LINE], f"{key} must be a list of ranges like {example}")
        return ()
    ranges: list[PrefixRange] = []
    for text in texts:
        low, _, high = str(text).partition("-")
        high = high or low
        if not (low.isdigit() and high.isdigit() and len(low) == len(high) and low <= high):
            s.error(owns[LINE], f"{key} '{text}' must be like {example}")
            continue
        ranges.append(PrefixRange(int(low), int(high), len(low)))
    return tuple(ranges)


def _call(spec: dict, s: _Reader) -> CallSpec:
    s.keys(spec, CALL_KEYS, "call")
    return CallSpec(
        timeout_s=s.number(spec, "timeout_s", 2.0, 0.01, 120),
        retry_attempts=s.number(spec, "retry_attempts", 3, 1, 10, integer=True),
        retry_backoff_s=s.number(spec, "retry_backoff_s", 0.05, 0, 10),
        max_connections=s.number(spec, "max_connections", 20, 1, 1000, integer=True),
        max_concurrency=s.number(spec, "max_concurrency", 20, 1, 1000, integer=True),
        max_concurrency_per_request=s.number(
            spec, "max_concurrency_per_request", 5, 1, 1000, integer=True
        ),
        breaker_failure_threshold=s.number(
            spec, "breaker_failure_threshold", 5, 1, 1000, integer=True
        ),
        breaker_reset_s=s.number(spec, "breaker_reset_s", 5.0, 0.01, 3600),
        list_read_timeout_s=s.number(spec, "list_read_timeout_s", 8.0, 0.01, 600),
        parse_in_thread_above_bytes=s.number(
            spec, "parse_in_thread_above_bytes", 256 * 1024, 0, 1 << 30, integer=True
        ),
    )


def _records(md: dict, m: _Reader) -> dict[str, RecordSpec]:
    specs = md.get("records")
    if not isinstance(specs, dict):
        m.error(md[LINE], "records is required: record name -> {fields: ...}")
        return {}
    records: dict[str, RecordSpec] = {}
    for name, spec in specs.items():
        if name == LINE:
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("fields"), dict):
            m.error(specs[LINE], f"record '{name}' needs fields: name -> {{path, type, class}}")
            continue
        fields: list[FieldSpec] = []
        for field_name, f in spec["fields"].items():
            if field_name == LINE:
                continue
            line = spec["fields"][LINE]
            if not GRAPH_NAME.match(str(field_name)):
                m.error(
                    line,
                    f"record '{name}': field name '{field_name}' must match {GRAPH_NAME.pattern}",
                )
                continue
            if f is None or isinstance(f, str):
                f = {"path": f or field_name, LINE: line}
            if not m.keys(f, FIELD_KEYS, f"field '{name}.{field_name}'"):
                continue
            nested_name = f.get("record")
            if nested_name is not None:
                # A record inside the record: its own fields carry the types and classes.
                for key in ("type", "class", "map"):
                    if key in f:
                        m.error(
                            f[LINE],
                            f"field '{name}.{field_name}': a nested record takes no {key} "
                            f"(its fields in '{nested_name}' have theirs)",
                        )
                f = {k: v for k, v in f.items() if k not in ("type", "class", "map")}
            kind = f.get("type", "string")
            if kind not in FIELD_TYPES:
                m.error(
                    f[LINE],
                    f"field '{name}.{field_name}': type must be one of "
                    f"{', '.join(sorted(FIELD_TYPES))}",
                )
                kind = "string"
            value_map = f.get("map")
            if value_map is not None and not isinstance(value_map, dict):
                m.error(f[LINE], f"field '{name}.{field_name}': map must be a mapping")
                value_map = None
            data_class = f.get("class")
            if data_class is not None and not isinstance(data_class, str):
                m.error(f[LINE], f"field '{name}.{field_name}': class must be a data class name")
                data_class = None
            personal = f.get("personal")
            if personal is not None and not isinstance(personal, bool):
                m.error(f[LINE], f"field '{name}.{field_name}': personal must be true or false")
            elif personal is True and data_class is None and nested_name is None:
                m.error(f[LINE], f"field '{name}.{field_name}': a personal field needs a class")
            elif personal is False and data_class is not None:
                m.error(
                    f[LINE],
                    f"field '{name}.{field_name}': personal: false with a class '{data_class}'",
                )
            paths = _field_paths(f.get("path", field_name), f[LINE], f"{name}.{field_name}", m)
            fields.append(
                FieldSpec(
                    name=str(field_name),
                    path=paths[0],
                    alternatives=paths[1:],
                    plain_path=len(paths) == 1 and not any("[" in step for step in paths[0]),
                    type="record" if nested_name is not None else kind,
                    data_class=data_class,
                    value_map={str(k): str(v) for k, v in plain(value_map).items()}
                    if value_map
                    else None,
                    required=bool(f.get("required", False)),
                    description=f.get("description"),
                    many=bool(f.get("many", False)),
                    line=f[LINE],
                    nested_name=str(nested_name) if nested_name is not None else None,
                    personal=f["personal"] if isinstance(f.get("personal"), bool) else None,
                )
            )
        records[str(name)] = RecordSpec(str(name), tuple(fields), spec[LINE])
    return _resolve_nested(records, m)


#: A path step: a name, or a name that filters a list by one field (``medium[type=mobile]``).
PATH_STEP = re.compile(r"^[^\[\]=]+(\[[^\[\]=]+=[^\[\]]*\])?$")


def _field_paths(value: Any, line: int, where: str, m: _Reader) -> tuple[tuple[str, ...], ...]:
    """A field's path, or its list of alternative paths (the first that holds a value wins)."""
    given = value if isinstance(value, list) and value else [value]
    paths = []
    for one in given:
        if not isinstance(one, str | int) or isinstance(one, bool):
            m.error(line, f"field '{where}': path must be text or a list of paths")
            continue
        path = _path(one)
        for step in path:
            if not PATH_STEP.match(step):
                m.error(
                    line,
                    f"field '{where}': path step '{step}' must be a name or name[field=value]",
                )
        paths.append(path)
    return tuple(paths) or ((),)


def _resolve_nested(records: dict[str, RecordSpec], m: _Reader) -> dict[str, RecordSpec]:
    """Every ``record:`` field with its nested record's spec in place, inner records first.

    A record that contains itself (directly or through others), an unknown record name and
    nesting deeper than MAX_NESTING are refused at the field that says so."""
    resolved: dict[str, RecordSpec] = {}

    def resolve(name: str, inside: tuple[str, ...]) -> RecordSpec:
        if name in resolved:
            return resolved[name]
        record = records[name]
        fields = []
        for f in record.fields:
            if f.nested_name is None:
                fields.append(f)
                continue
            where = f"field '{name}.{f.name}'"
            if f.nested_name not in records:
                m.error(f.line, f"{where}: unknown record '{f.nested_name}'")
                continue
            if f.nested_name in (*inside, name):
                m.error(f.line, f"{where}: record '{f.nested_name}' would contain itself")
                continue
            if len(inside) + 1 >= MAX_NESTING:
                m.error(f.line, f"{where}: records nest at most {MAX_NESTING} deep")
                continue
            inner = resolve(f.nested_name, (*inside, name))
            fields.append(replace(f, nested=inner))
        resolved[name] = RecordSpec(record.name, tuple(fields), record.line)
        return resolved[name]

    for name in records:
        resolve(name, ())
    return resolved


def uses_variable(template: Any, variable: str) -> bool:
    """Whether a template (request, query, headers, or a path string) uses ``variable``:
    as a value of its own, or as ``{key}`` inside a string."""
    if isinstance(template, dict):
        return any(uses_variable(v, variable) for k, v in template.items() if k != LINE)
    if isinstance(template, list):
        return any(uses_variable(v, variable) for v in template)
    return template == variable or (
        isinstance(template, str) and "{" + variable[1:] + "}" in template
    )


def _operations(
    md: dict, m: _Reader, records: Mapping[str, RecordSpec], protocol: str
) -> dict[str, OperationSpec]:
    specs = md.get("operations")
    if not isinstance(specs, dict):
        m.error(md[LINE], "operations is required: operation name -> {call, request, ...}")
        return {}
    operations: dict[str, OperationSpec] = {}
    for name, spec in specs.items():
        if name == LINE:
            continue
        if not m.keys(spec, OPERATION_KEYS, f"operation '{name}'"):
            continue
        line = spec[LINE]
        record = spec.get("record")
        if record is not None and record not in records:
            m.error(line, f"operation '{name}': unknown record '{record}'")
        if protocol == "soap" and not isinstance(spec.get("call"), str):
            m.error(line, f"operation '{name}': call (the WSDL operation) is required")
        if protocol == "rest" and not isinstance(spec.get("path"), str):
            m.error(line, f"operation '{name}': path (e.g. /api/members/{{key}}) is required")
        method = str(spec.get("method", "GET")).upper()
        if method not in ("GET", "POST", "PUT", "PATCH"):
            m.error(line, f"operation '{name}': method must be GET, POST, PUT or PATCH")
        request = plain(spec.get("request"))
        query = plain(spec.get("query") or {})
        batch = spec.get("batch")
        # An operation that takes one key per call (a system without batch reads) says
        # $key with batch: 1; the engine still reads a whole list of keys, one call each.
        takes_keys = uses_variable(request, "$keys") or uses_variable(query, "$keys")
        takes_keys = takes_keys or (
            batch == 1 and (uses_variable(request, "$key") or uses_variable(query, "$key"))
        )
        if batch is not None and (not isinstance(batch, int) or not 1 <= batch <= 10000):
            m.error(line, f"operation '{name}': batch must be keys per call, 1-10000")
            batch = None
        if takes_keys and batch is None:
            m.error(line, f"operation '{name}' takes $keys: say how many per call (batch: N)")
        key_field = spec.get("key")
        if key_field is not None and record in records and records[record].field(key_field) is None:
            m.error(line, f"operation '{name}': key '{key_field}' is not a field of '{record}'")
        total = spec.get("total")
        max_limit = spec.get("max_limit")
        if max_limit is not None and (not isinstance(max_limit, int) or max_limit < 1):
            m.error(line, f"operation '{name}': max_limit must be a positive integer")
            max_limit = None
        kind = spec.get("input", "keys")
        if kind not in ("keys", "msisdns"):
            m.error(line, f"operation '{name}': input must be keys or msisdns")
        msisdn_format = spec.get("msisdn_format")
        if msisdn_format is not None and msisdn_format not in MSISDN_FORMATS:
            m.error(
                line,
                f"operation '{name}': msisdn_format must be one of {', '.join(MSISDN_FORMATS)}",
            )
            msisdn_format = None
        headers = plain(spec.get("headers") or {})
        if not isinstance(headers, dict):
            m.error(line, f"operation '{name}': headers must be a mapping: name -> value")
            headers = {}
        used = _variables(request) | _variables(query) | _variables(headers)
        _refuse_placeholders(m, line, f"operation '{name}'", request, query, headers)
        maps = _maps(spec, m, str(name), used)
        for variable in used | _path_variables(spec):
            if variable not in VARIABLES | ROLE_VARIABLES:
                m.error(
                    line,
                    f"operation '{name}': unknown variable '{variable}' "
                    f"(known: {', '.join(sorted(VARIABLES))})",
                )
        operations[str(name)] = OperationSpec(
            name=str(name),
            record=record,
            call=spec.get("call"),
            method=method,
            path=spec.get("path"),
            query=query,
            request=request,
            batch=batch if takes_keys else None,
            list_path=_path(spec.get("list", "")),
            key_field=key_field,
            total_path=_path(total) if total is not None else None,
            max_limit=max_limit,
            input=kind,
            msisdn_format=msisdn_format,
            headers=headers,
            all_pages=bool(spec.get("all_pages", False)),
            maps=maps,
            line=line,
        )
        if spec.get("all_pages") and not (
            total is not None and uses_variable(query, "$offset") and uses_variable(query, "$limit")
        ):
            m.error(line, f"operation '{name}': all_pages needs total and $offset/$limit")
    return operations


def _maps(spec: dict, m: _Reader, name: str, used: set[str]) -> dict[str, dict[str, str]]:
    """``maps: {$variable: {value: code}}``: only for variables the request uses."""
    found = spec.get("maps")
    if found is None:
        return {}
    if not isinstance(found, dict):
        m.error(spec[LINE], f"operation '{name}': maps must be $variable -> {{value: code}}")
        return {}
    maps: dict[str, dict[str, str]] = {}
    for variable, codes in plain(found).items():
        if variable not in used or not isinstance(codes, dict) or not codes:
            m.error(
                found[LINE],
                f"operation '{name}': maps.{variable} must map the values of a variable "
                "its request uses onto the system's codes",
            )
            continue
        maps[str(variable)] = {str(k): str(v) for k, v in codes.items()}
    return maps


def _text_leaves(template: Any) -> Iterator[str]:
    """Every text value of a template, however deep."""
    if isinstance(template, dict):
        for value in template.values():
            yield from _text_leaves(value)
    elif isinstance(template, list):
        for value in template:
            yield from _text_leaves(value)
    elif isinstance(template, str):
        yield template


def _variables(template: Any) -> set[str]:
    return {text for text in _text_leaves(template) if text.startswith("$")}


#: ``<memberNos>``: what ``systems scaffold`` writes where the engineer decides the value.
PLACEHOLDER = re.compile(r"<[A-Za-z_][\w.-]*>")


def _refuse_placeholders(m: _Reader, line: int, what: str, *templates: Any) -> None:
    """A scaffold's placeholder left in a template would be sent to the system as it is."""
    found = {text for t in templates for text in _text_leaves(t) if PLACEHOLDER.fullmatch(text)}
    for placeholder in sorted(found):
        m.error(
            line,
            f"{what}: {placeholder} is the scaffold's placeholder: put a variable "
            "($keys, $key, $offset, $limit, ...) or a fixed value",
        )


def _path_variables(spec: dict) -> set[str]:
    return {"$" + v for v in re.findall(r"\{(\w+)\}", str(spec.get("path") or ""))}


def _errors(spec: dict, m: _Reader) -> ErrorSpec:
    if not m.keys(spec, ERROR_KEYS, "errors"):
        return ErrorSpec()
    line = spec[LINE]
    required = spec.get("result_required", False)
    if not isinstance(required, bool):
        m.error(line, "errors.result_required must be true or false")
    elif required and not spec.get("result_code"):
        m.error(line, "errors.result_required needs result_code (where the code is)")
    return ErrorSpec(
        fault_code=_path(spec["fault_code"]) if spec.get("fault_code") else None,
        result_code=_path(spec["result_code"]) if spec.get("result_code") else None,
        result_required=spec.get("result_required") is True,
        code=_path(spec["code"]) if spec.get("code") else None,
        ok=m.codes(spec.get("ok", ["0"]), line, "ok"),
        not_found=m.codes(spec.get("not_found"), line, "not_found"),
        rejected=m.codes(spec.get("rejected"), line, "rejected"),
        unavailable=m.codes(spec.get("unavailable"), line, "unavailable"),
    )


def _identity(
    spec: Any,
    m: _Reader,
    records: Mapping[str, RecordSpec],
    operations: Mapping[str, OperationSpec],
) -> IdentitySpec | None:
    if spec is None:
        return None
    if not m.keys(spec, IDENTITY_KEYS, "identity"):
        return None
    line = spec[LINE]
    match = spec.get("match")
    if match not in MATCHES:
        m.error(line, f"identity.match must be one of {', '.join(sorted(MATCHES))}")
    lookup = operations.get(str(spec.get("lookup")))
    if lookup is None:
        m.error(line, "identity.lookup must name an operation")
        return None
    if lookup.input != "msisdns" and match == "msisdn":
        m.error(line, "identity.lookup for match: msisdn must be an operation with input: msisdns")
    record = records.get(lookup.record or "")
    for role in ("key", "msisdn", "certificate"):
        wanted = spec.get(role)
        if wanted is not None and (record is None or record.field(wanted) is None):
            m.error(line, f"identity.{role} '{wanted}' is not a field of the lookup's record")
    if not isinstance(spec.get("key"), str):
        m.error(line, "identity.key (the record field that is the system's key) is required")
    if not isinstance(spec.get("key_class"), str):
        m.error(line, "identity.key_class is required: crosswalk keys identify a person")
    if "msisdn" in str(match) and not spec.get("msisdn"):
        m.error(line, "identity.msisdn (the record's number field) is required for this match")
    if "certificate" in str(match) and not spec.get("certificate"):
        m.error(
            line, "identity.certificate (the record's ID-card field) is required for this match"
        )
    msisdn_lookup = spec.get("msisdn_lookup")
    if msisdn_lookup is not None:
        by_number = operations.get(str(msisdn_lookup))
        if match != "certificate+msisdn":
            m.error(line, "identity.msisdn_lookup is for match: certificate+msisdn")
        elif by_number is None:
            m.error(line, f"identity.msisdn_lookup '{msisdn_lookup}' must name an operation")
        elif by_number.record != lookup.record:
            m.error(line, "identity.msisdn_lookup must find the same record as identity.lookup")
    return IdentitySpec(
        match=str(match),
        lookup=lookup.name,
        key=str(spec.get("key")),
        key_class=str(spec.get("key_class")),
        msisdn=spec.get("msisdn"),
        certificate=spec.get("certificate"),
        msisdn_lookup=str(msisdn_lookup) if msisdn_lookup is not None else None,
        line=line,
    )


def _graph(
    spec: Any,
    m: _Reader,
    records: Mapping[str, RecordSpec],
    operations: Mapping[str, OperationSpec],
) -> GraphSpec | None:
    if spec is None:
        return None
    if not m.keys(spec, GRAPH_KEYS, "graph"):
        return None
    line = spec[LINE]
    for key in ("field", "type"):
        if not isinstance(spec.get(key), str) or not GRAPH_NAME.match(spec[key]):
            m.error(line, f"graph.{key} is required and must match {GRAPH_NAME.pattern}")
            return None
    record = spec.get("record")
    if record not in records:
        m.error(line, f"graph.record must name a record (got '{record}')")
        return None
    read = operations.get(str(spec.get("read")))
    if read is None or read.key_field is None:
        m.error(line, "graph.read must name an operation that reads records by key (with key:)")
        return None
    connections: list[ConnectionSpec] = []
    for name, c in (spec.get("connections") or {}).items():
        if name == LINE:
            continue
        if not m.keys(c, CONNECTION_KEYS, f"connection '{name}'"):
            continue
        operation = operations.get(str(c.get("operation")))
        if operation is None or not operation.paged:
            m.error(
                c[LINE], f"connection '{name}': operation must name a paged operation (with total:)"
            )
            continue
        if records[record].field(str(c.get("key"))) is None:
            m.error(c[LINE], f"connection '{name}': key must be a field of '{record}'")
            continue
        if not isinstance(c.get("type"), str) or not GRAPH_NAME.match(c["type"]):
            m.error(c[LINE], f"connection '{name}': type must match {GRAPH_NAME.pattern}")
            continue
        first = c.get("first", 10)
        connections.append(
            ConnectionSpec(
                name=str(name),
                operation=operation.name,
                key=str(c["key"]),
                type=c["type"],
                first=first if isinstance(first, int) and first > 0 else 10,
                description=c.get("description"),
                line=c[LINE],
            )
        )
    return GraphSpec(
        field=spec["field"],
        type=spec["type"],
        record=record,
        read=read.name,
        description=spec.get("description"),
        connections=tuple(connections),
        line=line,
    )


def _write_idempotency(
    idempotency: Any, request: Any, headers: dict, protocol: str, m: _Reader, name: Any, line: int
) -> bool:
    """Whether a write says where its idempotency key goes, and puts ``$idempotencyKey``
    there: a part of its request (``idempotency: requestId``) or, REST only, a header
    (``idempotency: header:Idempotency-Key``, the request then optional)."""
    if not isinstance(idempotency, str) or not idempotency:
        m.error(line, f"write '{name}': idempotency (where its key goes) is required")
        return False
    if idempotency.startswith(IDEMPOTENCY_HEADER):
        header = idempotency[len(IDEMPOTENCY_HEADER) :].strip()
        if protocol != "rest":
            m.error(line, f"write '{name}': idempotency: header: is for REST systems")
            return False
        if request is not None and not isinstance(request, dict):
            m.error(line, f"write '{name}': request must be a mapping (the body's template)")
            return False
        if not header or headers.get(header) != "$idempotencyKey":
            m.error(line, f"write '{name}': headers.{header or '?'} must be $idempotencyKey")
            return False
        return True
    if not isinstance(request, dict):
        m.error(line, f"write '{name}': request (the change's template) is required")
        return False
    if request.get(idempotency) != "$idempotencyKey":
        m.error(line, f"write '{name}': request.{idempotency} must be $idempotencyKey")
        return False
    return True


def _writes(
    specs: Any,
    m: _Reader,
    records: Mapping[str, RecordSpec],
    operations: Mapping[str, OperationSpec],
    protocol: str,
    identity: IdentitySpec | None,
) -> dict[str, WriteSpec]:
    if specs is None:
        return {}
    if not isinstance(specs, dict):
        m.error(0, "writes must be a mapping: mutation name -> {call, key, arguments, ...}")
        return {}
    if identity is None:
        m.error(specs[LINE], "writes act on a customer's records: declare identity: first")
        return {}
    found: dict[str, WriteSpec] = {}
    for name, spec in specs.items():
        if name == LINE:
            continue
        if not m.keys(spec, WRITE_KEYS, f"write '{name}'"):
            continue
        line = spec[LINE]
        if not GRAPH_NAME.match(str(name)):
            m.error(line, f"write name '{name}' must match {GRAPH_NAME.pattern}")
            continue
        key = spec.get("key")
        if not isinstance(key, str) or not GRAPH_NAME.match(key):
            m.error(line, f"write '{name}': key (the argument naming the record) is required")
            continue
        arguments: dict[str, str] = {}
        for arg, arg_spec in (spec.get("arguments") or {}).items():
            if arg == LINE:
                continue
            kind = arg_spec.get("type", "string") if isinstance(arg_spec, dict) else arg_spec
            if kind not in ARGUMENT_TYPES or not GRAPH_NAME.match(str(arg)):
                m.error(
                    line,
                    f"write '{name}': argument '{arg}' needs a type of "
                    f"{', '.join(sorted(ARGUMENT_TYPES))}",
                )
                continue
            arguments[str(arg)] = str(kind)
        reserved = {"customerId", "idempotencyKey", key}
        for arg in sorted(reserved & arguments.keys()):
            m.error(line, f"write '{name}': argument '{arg}' is reserved")
        request = plain(spec.get("request"))
        headers = plain(spec.get("headers") or {})
        if not isinstance(headers, dict):
            m.error(line, f"write '{name}': headers must be a mapping: name -> value")
            headers = {}
        if headers and protocol != "rest":
            m.error(line, f"write '{name}': headers are for REST systems (SOAP: soap.headers)")
        if not _write_idempotency(
            spec.get("idempotency"), request, headers, protocol, m, name, line
        ):
            continue
        if protocol == "rest" and not isinstance(spec.get("path"), str):
            m.error(line, f"write '{name}': path (the resource the change is sent to) is required")
        _refuse_placeholders(m, line, f"write '{name}'", request, headers)
        allowed = {"$key", "$idempotencyKey"} | {f"${a}" for a in arguments}
        for variable in sorted((_variables(request) | _variables(headers)) - allowed):
            m.error(line, f"write '{name}': unknown variable '{variable}'")
        record = spec.get("record")
        if record is not None and record not in records:
            m.error(line, f"write '{name}': unknown record '{record}'")
        if protocol == "soap" and not isinstance(spec.get("call"), str):
            m.error(line, f"write '{name}': call (the WSDL operation) is required")
        evicts = tuple(str(e) for e in spec.get("evicts") or ())
        for op in evicts:
            if op not in operations:
                m.error(line, f"write '{name}': evicts names unknown operation '{op}'")
        scope = spec.get("scope")
        operation = OperationSpec(
            name=str(name),
            record=record,
            call=spec.get("call"),
            method=str(spec.get("method", "POST")).upper(),
            path=spec.get("path"),
            request=request,
            list_path=_path(spec.get("list", "")),
            headers=headers,
            line=line,
        )
        found[str(name)] = WriteSpec(
            name=str(name),
            key=key,
            arguments=arguments,
            operation=operation,
            idempotency=str(spec["idempotency"]),
            scope=str(scope) if scope else None,
            evicts=evicts,
            description=spec.get("description"),
            line=line,
        )
    return found


def _role(
    spec: Any,
    m: _Reader,
    records: Mapping[str, RecordSpec],
    operations: Mapping[str, OperationSpec],
    protocol: str = "rest",
) -> RoleSpec | None:
    """``role: {plays: billing, operations: {slot: operation}}``, held to role_slots.ROLES."""
    if spec is None:
        return None
    if not m.keys(spec, {"plays", "operations"}, "role"):
        return None
    line = spec[LINE]
    plays = spec.get("plays")
    if plays not in ROLES:
        m.error(line, f"role.plays must be one of {', '.join(sorted(ROLES))}")
        return None
    slots = ROLES[plays]
    named = spec.get("operations")
    if not isinstance(named, dict):
        m.error(line, "role.operations is required: slot -> operation")
        return None
    found: dict[str, str] = {}
    for slot_name, op_name in named.items():
        if slot_name == LINE:
            continue
        slot = slots.get(str(slot_name))
        if slot is None:
            m.error(
                named[LINE],
                f"role {plays} has no slot '{slot_name}' (slots: {', '.join(sorted(slots))})",
            )
            continue
        op = operations.get(str(op_name))
        if op is None:
            m.error(named[LINE], f"role slot '{slot_name}': unknown operation '{op_name}'")
            continue
        found[str(slot_name)] = op.name
        _check_slot(m, plays, str(slot_name), slot, op, records, protocol)
    for slot_name, slot in slots.items():
        if slot.required and slot_name not in found:
            m.error(line, f"role {plays} needs an operation for slot '{slot_name}'")
    return RoleSpec(plays=plays, slots=found, line=line)


def _check_canonical(m: _Reader, declared: RecordSpec, canonical: str) -> None:
    """A role's record holds only its canonical record's fields, records where it has them."""
    known = canonical_fields(canonical)
    holds = canonical_nested(canonical)
    enums = canonical_enums(canonical)
    for f in declared.fields:
        if f.name in enums:
            # Built from the enum's value: every code must map onto one, so none can fail.
            allowed = enums[f.name]
            if f.value_map is None or not set(f.value_map.values()) <= allowed:
                m.error(
                    f.line,
                    f"record {declared.name}: {f.name} takes one of {', '.join(sorted(allowed))}"
                    " (map: the system's codes onto them)",
                )
        if f.name not in known:
            m.error(
                f.line,
                f"record {declared.name}: {f.name} is not a field of "
                f"{canonical} (fields: {', '.join(sorted(known))})",
            )
        elif f.name in holds and f.nested is None:
            m.error(
                f.line,
                f"record {declared.name}: {f.name} holds {holds[f.name]} records "
                f"(say record: {holds[f.name]})",
            )
        elif f.nested is not None:
            if holds.get(f.name) != f.nested.name:
                expected = holds.get(f.name)
                m.error(
                    f.line,
                    f"record {declared.name}: {f.name} must be record {expected}"
                    if expected
                    else f"record {declared.name}: {f.name} of {canonical} holds no records",
                )
            else:
                _check_canonical(m, f.nested, f.nested.name)


def _check_slot(
    m: _Reader,
    plays: str,
    slot_name: str,
    slot: Any,
    op: OperationSpec,
    records: Mapping[str, RecordSpec],
    protocol: str = "rest",
) -> None:
    # The record named by the slot is built into the canonical dataclass by field name
    # (adapters/declared/canonical.py): a field it does not have is a mistake in the mapping.
    where = f"role slot '{slot_name}' ({op.name})"
    if slot.record is not None:
        if op.record != slot.record:
            m.error(op.line, f"{where}: record must be {slot.record}")
        elif (declared := records.get(slot.record)) is not None:
            _check_canonical(m, declared, slot.record)
    if slot.kind == "write":
        answer = records.get(op.record or "")
        if answer is None or answer.field("id") is None:
            m.error(op.line, f"{where}: its record needs an id field (the change's id)")
        if op.method == "GET" and protocol == "rest":  # SOAP always POSTs
            m.error(op.line, f"{where}: a change is not a GET")
    if slot.kind in ("keyed", "grouped") and op.key_field != slot.key_field:
        m.error(op.line, f"{where}: key must be {slot.key_field}")
    if slot.kind in ("keyed", "grouped", "lookup") and op.batch is None:
        m.error(op.line, f"{where}: it reads many keys at once: take $keys (with batch: N)")
    if slot.kind == "page" and not op.paged:
        m.error(op.line, f"{where}: a page needs total and $key/$offset/$limit")
    allowed = VARIABLES | slot.variables
    used = _variables(op.request) | _variables(dict(op.query)) | _variables(dict(op.headers))
    for variable in sorted(used - allowed):
        m.error(op.line, f"{where}: the role fills no variable '{variable}' here")
