"""A starting pair of files for a new system, read off its WSDL or OpenAPI document.

The scaffold lists every operation of the contract with a request template of its inputs, and
a record for each list of structures it returns, with field types from the schema. Fields
whose names look personal get a suggested data class marked ``# check``; everything else is
for the integration engineer to decide (keys, batches, identity, graph). The output is meant
to pass ``switchboard systems check`` after that review, not before.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

XSD_TYPES = {
    "int": "int", "integer": "int", "long": "int", "short": "int", "unsignedInt": "int",
    "decimal": "decimal", "double": "float", "float": "float", "boolean": "bool",
    "date": "date", "dateTime": "datetime", "number": "float",
}  # fmt: skip
PERSONAL = (
    (re.compile(r"msisdn|mobile|phone|servicenumber", re.I), "mobile"),
    (re.compile(r"cert|idcard|idnumber|passport", re.I), "id_card"),
    (re.compile(r"birth", re.I), "birth_date"),
    (re.compile(r"email|mail", re.I), "email"),
    (re.compile(r"address|addr", re.I), "address"),
    (re.compile(r"bank|cardno", re.I), "bank_card"),
    (re.compile(r"imsi|iccid|imei", re.I), "device_id"),
    (re.compile(r"name", re.I), "name"),
    (re.compile(r"description|note|remark|comment|reason|text", re.I), "free_text"),
)


#: Operation names that say they change something: such an operation is a write (sent once,
#: never retried), not a read; the scaffold says so where it lists it.
CHANGE = re.compile(
    r"^(add|apply|cancel|change|create|delete|modify|pay|post|redeem|register|remove|reset|"
    r"set|submit|top_?up|transfer|update|upsert)",
    re.I,
)
#: Where no contract says where the system lives: a port nothing listens on, so that a
#: forgotten base_url fails loudly rather than calling something else (8000 is the hub's).
UNKNOWN_BASE_URL = "http://127.0.0.1:1"


def _origin(url: str) -> str | None:
    """``http://host:port`` of an absolute URL, None for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _suggest(name: str) -> str | None:
    return next((cls for pattern, cls in PERSONAL if pattern.search(name)), None)


def _field(name: str, kind: str) -> tuple[dict[str, Any], bool]:
    spec: dict[str, Any] = {"path": name}
    data_class = _suggest(name)
    if data_class == "mobile":
        spec["type"] = "msisdn"
    elif kind != "string":
        spec["type"] = kind
    if data_class:
        spec["class"] = data_class
    return spec, data_class is not None


def _camel(text: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", text)
    return words[0][:1].lower() + words[0][1:] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def _xsd_kind(xsd_type: Any) -> str:
    name = getattr(getattr(xsd_type, "qname", None), "localname", None) or ""
    base = xsd_type
    while name not in XSD_TYPES and getattr(base, "base_class", None) is not None:
        base = base.base_class
        name = getattr(getattr(base, "qname", None), "localname", "") or name
    return XSD_TYPES.get(name, "string")


def _simple_fields(complex_type: Any) -> dict[str, Any] | None:
    elements = getattr(complex_type, "elements", None)
    if not elements:
        return None
    fields = {}
    for name, element in elements:
        if getattr(element.type, "elements", None):
            return None  # nested structure: not a flat record
        fields[name] = _xsd_kind(element.type)
    return fields


def _find_list(complex_type: Any, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], Any] | None:
    for name, element in getattr(complex_type, "elements", None) or ():
        repeats = element.max_occurs == "unbounded" or (
            isinstance(element.max_occurs, int) and element.max_occurs > 1
        )
        if repeats and _simple_fields(element.type):
            return (*path, name), element.type
        if getattr(element.type, "elements", None) and len(path) < 3:
            found = _find_list(element.type, (*path, name))
            if found:
                return found
    return None


def scaffold_wsdl(
    location: str, name: str, contract: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    import zeep

    client = zeep.Client(location)
    binding = next(iter(client.wsdl.bindings.values()))
    records: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for op_name, operation in sorted(binding._operations.items()):
        inputs = getattr(getattr(operation.input, "body", None), "type", None)
        request = {part: f"<{part}>" for part, _ in getattr(inputs, "elements", None) or ()}
        entry: dict[str, Any] = {"call": op_name, "request": request}
        output = getattr(getattr(operation.output, "body", None), "type", None)
        found = _find_list(output) if output is not None else None
        if found is not None:
            path, item_type = found
            record = getattr(getattr(item_type, "qname", None), "localname", None) or path[-1]
            record = record[:1].upper() + record[1:]
            records.setdefault(record, _simple_fields(item_type))
            entry["list"] = "/".join(path)
            entry["record"] = record
        operations[_camel(op_name)] = entry
    service = next(iter(client.wsdl.services.values()))
    port = next(iter(service.ports.values()))
    address = getattr(port.binding_options, "get", lambda _k: None)("address") or ""
    return _files(
        name, "soap", contract or location, records, operations, address, _origin(address)
    )


def scaffold_openapi(document: dict[str, Any], location: str, name: str):  # type: ignore[no-untyped-def]
    servers = [s.get("url", "") for s in document.get("servers") or [] if isinstance(s, dict)]
    base_url = next((o for url in servers if (o := _origin(str(url)))), None)
    schemas = (document.get("components") or {}).get("schemas") or document.get("definitions") or {}
    records: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def properties(schema: Any) -> dict[str, Any]:
        if not isinstance(schema, dict):
            return {}
        target = str(schema.get("$ref", "")).rpartition("/")[2]
        found = (schemas.get(target) or {}) if target else schema
        return found.get("properties") or {}

    def page_of(schema: Any) -> tuple[str, Any] | None:
        """A page wrapper ({items: [Contact], total}): the list's key and its item schema."""
        for prop, prop_schema in properties(schema).items():
            if (prop_schema or {}).get("type") == "array" and "$ref" in (
                prop_schema.get("items") or {}
            ):
                return prop, prop_schema["items"]
        return None

    def record_of(schema: Any) -> str | None:
        if not isinstance(schema, dict):
            return None
        if schema.get("type") == "array":
            schema = schema.get("items") or {}
        ref = schema.get("$ref", "")
        target = ref.rpartition("/")[2]
        props = (schemas.get(target) or {}).get("properties") if target else None
        if not props:
            return None
        fields = {}
        for prop, prop_schema in props.items():
            kind = (prop_schema or {}).get("type", "string")
            fmt = (prop_schema or {}).get("format", "")
            if kind in ("object", "array") or "$ref" in (prop_schema or {}):
                continue
            fields[prop] = XSD_TYPES.get({"date-time": "dateTime"}.get(fmt, fmt) or kind, "string")
        records.setdefault(target, fields)
        return target

    def answer_schema(operation: dict[str, Any]) -> Any:
        responses = operation.get("responses") or {}
        ok = responses.get("200") or responses.get("201") or {}
        content = (ok.get("content") or {}).get("application/json") or {}
        return content.get("schema") or ok.get("schema")

    for path, methods in sorted((document.get("paths") or {}).items()):
        for method in ("post", "put", "patch"):
            change = (methods or {}).get(method)
            if not isinstance(change, dict):
                continue
            # A change: listed with its body's fields, to be moved under writes:.
            body = ((change.get("requestBody") or {}).get("content") or {}).get(
                "application/json"
            ) or {}
            entry = {
                "method": method.upper(),
                "path": re.sub(r"\{[^}]+\}", "{key}", path),
                "request": {p: f"<{p}>" for p in properties(body.get("schema"))},
            }
            record = record_of(answer_schema(change))
            if record:
                entry["record"] = record
            operations[_camel(change.get("operationId") or f"{method} {path}")] = entry
        get = (methods or {}).get("get")
        if not isinstance(get, dict):
            continue
        schema = answer_schema(get)
        entry = {"method": "GET", "path": re.sub(r"\{[^}]+\}", "{key}", path)}
        page = page_of(schema)
        if page is not None:
            entry["list"], schema = page
        record = record_of(schema)
        if record:
            entry["record"] = record
        queries = [p["name"] for p in get.get("parameters") or [] if p.get("in") == "query"]
        if queries:
            entry["query"] = {q: f"<{q}>" for q in queries}
        operations[_camel(get.get("operationId") or path)] = entry
    return _files(name, "rest", location, records, operations, base_url=base_url)


def _files(
    name: str,
    protocol: str,
    location: str,
    records: dict[str, Any],
    operations: dict[str, Any],
    address: str = "",
    base_url: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    instance = {"name": name.replace("_", "-")[:16], "base_url": base_url or UNKNOWN_BASE_URL}
    system: dict[str, Any] = {
        "name": name,
        "title": name,
        "protocol": protocol,
        "contract": location,
        "instances": [instance],
        "call": {"timeout_s": 2.0, "retry_attempts": 3, "max_concurrency": 20},
        "readiness": "optional",
        "first_sight": "lazy",
    }
    if protocol == "soap" and address:
        system["soap"] = {"address": re.sub(r"^https?://[^/]+", "", address)}
    mapping_records = {}
    for record, fields in records.items():
        mapping_records[record] = {"fields": {f: _field(f, k)[0] for f, k in fields.items()}}
    mapping = {
        "system": name,
        "records": mapping_records,
        "operations": operations,
        # SOAP systems here answer result codes ("0" is success); REST ones say it by status.
        "errors": {"ok": ["0"], "not_found": [], "rejected": []}
        if protocol == "soap"
        else {"not_found": ["404"], "rejected": []},
    }
    return system, mapping


def render(document: dict[str, Any], header: str) -> str:
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    # Suggested classes are guesses from field names: say so where the engineer reads them.
    text = re.sub(r"(class: \w+)(\})?$", r"\1\2  # check", text, flags=re.M)
    text = re.sub(r"^(  base_url: .*)$", r"\1  # where the system listens: check", text, flags=re.M)
    text = re.sub(r"^(\s+\w+: )(<[\w.-]+>)$", r"\1\2  # a variable or a value", text, flags=re.M)
    operations = (document.get("operations") or {}) if "system" in document else {}
    for name, entry in operations.items():
        if CHANGE.match(name) or entry.get("method", "GET") != "GET":
            text = re.sub(
                rf"^(  {re.escape(name)}:)$",
                r"\1  # a change? move it under writes: (sent once; docs/systems.md, Writes)",
                text,
                flags=re.M,
            )
    return header + text


def scaffold(source: str, name: str, out: Path) -> list[Path]:
    """Write system.yaml and mapping.yaml for ``source`` (a WSDL or OpenAPI URL or file)."""
    is_url = source.startswith(("http://", "https://"))
    text = httpx.get(source, timeout=10).text if is_url else Path(source).read_text("utf-8")
    out.mkdir(parents=True, exist_ok=True)
    # A contract on disk is copied beside the files it describes and named relatively, so
    # that the folder works wherever it is moved (a URL stays a URL).
    contract = source
    if not is_url:
        contract = Path(source).name
        if Path(source).resolve() != (out / contract).resolve():
            shutil.copyfile(source, out / contract)
    if "definitions" in text[:2000] and "wsdl" in text[:2000].lower():
        location = source if is_url else str(Path(source).resolve())
        system, mapping = scaffold_wsdl(location, name, contract)
    else:
        document = yaml.safe_load(text)
        system, mapping = scaffold_openapi(document, contract, name)
    header = (
        f"# Scaffolded by `switchboard systems scaffold` from {source}.\n"
        "# Review every line (docs/systems.md), then run `switchboard systems check`.\n"
    )
    written = []
    for file_name, document in (("system.yaml", system), ("mapping.yaml", mapping)):
        path = out / file_name
        path.write_text(render(document, header), encoding="utf-8")
        written.append(path)
    return written
