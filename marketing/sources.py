"""Event sources declared by files: ``systems/<name>/events.yaml``, read and checked.

An event source is part of the declared-system vocabulary (docs/systems.md, docs/marketing.md
``## Events``). Its file says how the events arrive (``transport: webhook``: TMF630/TMF688 hub
registration and signed callbacks; ``transport: nats``: a JetStream stream read by a durable
pull consumer) and how one notification maps onto a ``BusinessEvent`` (where its id, type and
time are, the type map, the customer key and line, the payload fields). It sits in the
system's folder beside ``system.yaml`` and ``mapping.yaml`` (or alone, for the bundled BOSS,
billing and care, whose connection still comes from their settings sections). Every problem
names the file and line, like the system files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.declared.yaml_lines import (
    LINE,
    DeclarationInvalid,
    FileProblems,
    Problem,
    load_yaml,
)
from marketing.events import EVENT_TYPES

EVENTS_FILE = "events.yaml"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
SUBJECT = re.compile(r"^[A-Za-z0-9_.*>-]{1,255}$")
STREAM = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
TRANSPORTS = ("webhook", "nats")
PAYLOAD_TYPES = frozenset({"string", "int", "float", "bool", "datetime", "date", "decimal"})
#: The crosswalk key a customer reference names: the BOSS customer number (the hub id's
#: anchor), a billing account id, a care party id, or a declared system instance's key.
CORE_KEYS = ("boss", "billing", "care")

FILE_KEYS = {"source", "system", "transport", "base_url", "webhook", "nats", "mapping"}
WEBHOOK_KEYS = {"hub", "query", "secret_env", "signature_header", "timestamp_header"}
NATS_KEYS = {"stream", "subject", "durable"}
MAPPING_KEYS = {"event_id", "event_type", "occurred_at", "types", "customer", "subscriber",
                "payload"}  # fmt: skip
CUSTOMER_KEYS = {"path", "key"}
PAYLOAD_KEYS = {"path", "type", "class"}


def split_path(text: str) -> tuple[str, ...]:
    return tuple(step for step in re.split(r"[/.]", text.strip("/")) if step)


@dataclass(frozen=True, slots=True)
class PayloadField:
    name: str
    path: tuple[str, ...]
    type: str = "string"
    data_class: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerRef:
    """Where the notification names the customer, and whose key it is."""

    path: tuple[str, ...]
    key: str  # "boss" | "billing" | "care" | a declared instance name


@dataclass(frozen=True, slots=True)
class EventMapping:
    event_id: tuple[str, ...]
    event_type: tuple[str, ...]
    occurred_at: tuple[str, ...]
    #: The system's event type -> one of EVENT_TYPES; types not listed are refused.
    types: Mapping[str, str]
    customer: CustomerRef | None = None
    subscriber: tuple[str, ...] | None = None
    #: Paths are from the notification's root; a field absent from a notification is left out.
    payload: tuple[PayloadField, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    hub: str
    secret_env: str
    query: str | None = None
    signature_header: str = "X-Hub-Signature-256"
    timestamp_header: str = "X-Hub-Timestamp"


@dataclass(frozen=True, slots=True)
class NatsSpec:
    stream: str
    subject: str
    durable: str


@dataclass(frozen=True, slots=True)
class EventSourceSpec:
    name: str
    system: str
    transport: str
    mapping: EventMapping
    webhook: WebhookSpec | None = None
    nats: NatsSpec | None = None
    base_url: str | None = None
    file: str = ""
    line: int = 0

    def registration_query(self) -> str:
        assert self.webhook is not None
        if self.webhook.query is not None:
            return self.webhook.query
        return "eventType=" + ",".join(sorted(self.mapping.types))


@dataclass(frozen=True)
class EventSources:
    sources: Mapping[str, EventSourceSpec] = field(default_factory=dict)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.sources.values())

    def __len__(self) -> int:
        return len(self.sources)

    def get(self, name: str) -> EventSourceSpec | None:
        return self.sources.get(name)


class _Reader(FileProblems):
    def mapping(self, value: Any, allowed: set[str], what: str, line: int) -> dict | None:
        if not isinstance(value, dict):
            self.error(line, f"{what} must be a mapping")
            return None
        self.unknown_keys(value, allowed, what)
        return value

    def path(self, value: Any, line: int, what: str) -> tuple[str, ...]:
        if not isinstance(value, str) or not split_path(value):
            self.error(line, f"{what} must be a path like event.customer.id")
            return ("invalid",)
        return split_path(value)


def parse_source(path: Path) -> EventSourceSpec:
    """One events file as a spec, or DeclarationInvalid listing every problem."""
    document = load_yaml(path)
    r = _Reader(str(path))
    if not isinstance(document, dict):
        raise DeclarationInvalid([Problem(str(path), 1, "an events file is a mapping")])
    r.mapping(document, FILE_KEYS, "the events file", 1)
    line = document[LINE]
    name = document.get("source")
    if not isinstance(name, str) or not NAME.match(name):
        r.error(line, f"source is required and must match {NAME.pattern}")
        name = "invalid"
    system = document.get("system", name)
    if not isinstance(system, str) or not NAME.match(system):
        r.error(line, "system must name the system whose address the source is at")
        system = name
    transport = document.get("transport", "webhook")
    if transport not in TRANSPORTS:
        r.error(line, f"transport must be one of {', '.join(TRANSPORTS)}")
        transport = "webhook"
    base_url = document.get("base_url")
    if base_url is not None and (
        not isinstance(base_url, str) or not re.match(r"^https?://", base_url)
    ):
        r.error(line, "base_url must be an http(s) URL")
        base_url = None
    webhook = nats = None
    if transport == "webhook":
        webhook = _webhook(document.get("webhook"), r, line)
    elif document.get("webhook") is not None:
        r.error(line, "webhook: is for transport: webhook")
    if transport == "nats":
        nats = _nats(document.get("nats"), r, line)
    elif document.get("nats") is not None:
        r.error(line, "nats: is for transport: nats")
    mapping = _mapping(document.get("mapping"), r, line)
    if r.problems or mapping is None:
        raise DeclarationInvalid(r.problems)
    return EventSourceSpec(
        name=name,
        system=system,
        transport=transport,
        mapping=mapping,
        webhook=webhook,
        nats=nats,
        base_url=base_url.rstrip("/") if base_url else None,
        file=str(path),
        line=line,
    )


def _webhook(value: Any, r: _Reader, line: int) -> WebhookSpec | None:
    spec = r.mapping(value, WEBHOOK_KEYS, "webhook", line)
    if spec is None:
        return None
    hub = spec.get("hub")
    if not isinstance(hub, str) or not hub.startswith("/"):
        r.error(spec[LINE], "webhook.hub must be the registration path, e.g. /hub")
        hub = "/hub"
    secret_env = spec.get("secret_env")
    if not isinstance(secret_env, str) or not ENV_NAME.match(secret_env):
        r.error(
            spec[LINE],
            "webhook.secret_env must name the environment variable holding the shared secret",
        )
        secret_env = "INVALID"  # noqa: S105 -- a placeholder name after an error
    query = spec.get("query")
    if query is not None and not isinstance(query, str):
        r.error(spec[LINE], "webhook.query must be a string (eventType=A,B)")
        query = None
    headers = {}
    for key in ("signature_header", "timestamp_header"):
        header = spec.get(key)
        if header is not None and (
            not isinstance(header, str) or not re.match(r"^[A-Za-z0-9-]{1,64}$", header)
        ):
            r.error(spec[LINE], f"webhook.{key} must be an HTTP header name")
        elif header is not None:
            headers[key] = header
    return WebhookSpec(hub=hub, secret_env=secret_env, query=query, **headers)


def _nats(value: Any, r: _Reader, line: int) -> NatsSpec | None:
    spec = r.mapping(value, NATS_KEYS, "nats", line)
    if spec is None:
        return None
    stream, subject, durable = spec.get("stream"), spec.get("subject"), spec.get("durable")
    if not isinstance(stream, str) or not STREAM.match(stream):
        r.error(spec[LINE], "nats.stream must be a stream name ([A-Za-z0-9_-])")
    if not isinstance(subject, str) or not SUBJECT.match(subject):
        r.error(spec[LINE], "nats.subject must be a subject (wildcards * and > allowed)")
    if not isinstance(durable, str) or not STREAM.match(durable):
        r.error(spec[LINE], "nats.durable must be a consumer name ([A-Za-z0-9_-])")
    return NatsSpec(str(stream), str(subject), str(durable))


def _mapping(value: Any, r: _Reader, line: int) -> EventMapping | None:
    spec = r.mapping(value, MAPPING_KEYS, "mapping", line)
    if spec is None:
        return None
    line = spec[LINE]
    types: dict[str, str] = {}
    type_map = spec.get("types")
    if not isinstance(type_map, dict) or len(type_map) <= 1:  # the line marker only
        r.error(line, "mapping.types is required: the system's event type -> the hub's")
    else:
        for theirs, ours in type_map.items():
            if theirs == LINE:
                continue
            if ours not in EVENT_TYPES:
                r.error(
                    type_map[LINE],
                    f"mapping.types.{theirs}: '{ours}' is not an event type "
                    f"(known: {', '.join(EVENT_TYPES)})",
                )
                continue
            types[str(theirs)] = str(ours)
    customer = None
    if spec.get("customer") is not None:
        c = r.mapping(spec["customer"], CUSTOMER_KEYS, "mapping.customer", line)
        if c is not None:
            key = c.get("key")
            if not isinstance(key, str) or not NAME.match(key):
                r.error(
                    c[LINE],
                    "mapping.customer.key must name whose key it is: boss (customer number), "
                    "billing, care, or a declared system instance",
                )
                key = "invalid"
            customer = CustomerRef(r.path(c.get("path"), c[LINE], "mapping.customer.path"), key)
    subscriber = None
    if spec.get("subscriber") is not None:
        subscriber = r.path(spec["subscriber"], line, "mapping.subscriber")
    payload: list[PayloadField] = []
    raw_payload = spec.get("payload") or {LINE: line}
    if not isinstance(raw_payload, dict):
        r.error(line, "mapping.payload must be a mapping: name -> {path, type}")
        raw_payload = {LINE: line}
    for name, f in raw_payload.items():
        if name == LINE:
            continue
        if not re.match(r"^[a-z][a-z0-9_]{0,63}$", str(name)):
            r.error(raw_payload[LINE], f"payload field '{name}' must be snake_case")
            continue
        if isinstance(f, str):
            f = {"path": f, LINE: raw_payload[LINE]}
        checked = r.mapping(f, PAYLOAD_KEYS, f"payload field '{name}'", raw_payload[LINE])
        if checked is None:
            continue
        kind = checked.get("type", "string")
        if kind not in PAYLOAD_TYPES:
            r.error(
                checked[LINE],
                f"payload field '{name}': type must be one of {', '.join(sorted(PAYLOAD_TYPES))}",
            )
            kind = "string"
        data_class = checked.get("class")
        if data_class is not None and not isinstance(data_class, str):
            r.error(checked[LINE], f"payload field '{name}': class must be a data class name")
            data_class = None
        payload.append(
            PayloadField(
                str(name),
                r.path(checked.get("path"), checked[LINE], f"payload field '{name}'"),
                kind,
                data_class,
            )
        )
    return EventMapping(
        event_id=r.path(spec.get("event_id", "eventId"), line, "mapping.event_id"),
        event_type=r.path(spec.get("event_type", "eventType"), line, "mapping.event_type"),
        occurred_at=r.path(spec.get("occurred_at", "eventTime"), line, "mapping.occurred_at"),
        types=types,
        customer=customer,
        subscriber=subscriber,
        payload=tuple(payload),
    )


def load_sources(folder: Path | None) -> EventSources:
    """Every ``events.yaml`` one level under ``folder``; DeclarationInvalid lists all problems."""
    if folder is None or not folder.exists():
        return EventSources()
    problems: list[Problem] = []
    found: dict[str, EventSourceSpec] = {}
    durables: dict[str, str] = {}
    for directory in sorted(p for p in folder.iterdir() if p.is_dir()):
        path = directory / EVENTS_FILE
        if not path.exists():
            continue
        try:
            spec = parse_source(path)
        except DeclarationInvalid as error:
            problems += error.problems
            continue
        if spec.name in found:
            problems.append(
                Problem(str(path), spec.line, f"source '{spec.name}' is declared twice")
            )
            continue
        if spec.nats is not None:
            if spec.nats.durable in durables:
                problems.append(
                    Problem(
                        str(path),
                        spec.line,
                        f"durable consumer '{spec.nats.durable}' is also used by source "
                        f"'{durables[spec.nats.durable]}'",
                    )
                )
            durables[spec.nats.durable] = spec.name
        found[spec.name] = spec
    if problems:
        raise DeclarationInvalid(problems)
    return EventSources(found)
