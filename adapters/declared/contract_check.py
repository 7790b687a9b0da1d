"""Checks a system's mapping against its contract: the WSDL or OpenAPI document it names.

Every mapped operation and every declared write must exist in the contract (the WSDL
binding's operations; the OpenAPI document's paths and methods), and a SOAP request template
may only use the operation's input parts. Problems name the mapping file and the line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml

from adapters.declared.soap import binding_of, contract_location, load_client
from adapters.declared.spec import OperationSpec, SystemSpec
from adapters.declared.yaml_lines import Problem


def _calls(spec: SystemSpec) -> list[tuple[str, OperationSpec]]:
    """What the mapping sends: its operations and its writes, each with how to name it."""
    calls = [(f"operation '{op.name}'", op) for op in spec.operations.values()]
    calls += [(f"write '{w.name}'", w.operation) for w in spec.writes.values()]
    return calls


def check_contract(spec: SystemSpec, base_url: str, timeout_s: float = 5.0) -> list[Problem]:
    """Problems of one system against its contract, read from ``base_url`` or a file."""
    if spec.protocol == "plugin":
        return []  # no contract document: the plugin speaks the wire
    try:
        if spec.protocol == "soap":
            return _check_wsdl(spec, base_url, timeout_s)
        return _check_openapi(spec, base_url, timeout_s)
    except Exception as error:
        return [
            Problem(
                spec.system_file,
                1,
                f"cannot read the contract {spec.contract!r} ({type(error).__name__}); "
                "is the system up?",
            )
        ]


def _check_wsdl(spec: SystemSpec, base_url: str, timeout_s: float) -> list[Problem]:
    http = httpx.AsyncClient(timeout=timeout_s)
    client = load_client(contract_location(spec, base_url), http, timeout_s)
    binding = binding_of(client, spec.soap_binding)
    operations = binding._operations
    problems: list[Problem] = []
    for label, op in _calls(spec):
        found = operations.get(str(op.call))
        if found is None:
            problems.append(
                Problem(
                    spec.mapping_file,
                    op.line,
                    f"{label}: the WSDL has no "
                    f"operation '{op.call}' (it has: {', '.join(sorted(operations))})",
                )
            )
            continue
        parts = _input_parts(found)
        if isinstance(op.request, dict) and parts is not None:
            for name in sorted(set(op.request) - parts):
                problems.append(
                    Problem(
                        spec.mapping_file,
                        op.line,
                        f"{label}: '{name}' is "
                        f"not an input of {op.call} (inputs: {', '.join(sorted(parts))})",
                    )
                )
    return problems


def _input_parts(operation: Any) -> set[str] | None:
    body = getattr(operation.input, "body", None)
    element_type = getattr(body, "type", None)
    elements = getattr(element_type, "elements", None)
    if elements is None:
        return None
    return {name for name, _ in elements}


def _load_document(spec: SystemSpec, base_url: str, timeout_s: float) -> Any:
    contract = spec.contract
    if contract.startswith(("http://", "https://", "/")):
        url = contract if not contract.startswith("/") else base_url + contract
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
        text = response.text
    else:
        text = (Path(spec.system_file).parent / contract).read_text(encoding="utf-8")
    return json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)


def _check_openapi(spec: SystemSpec, base_url: str, timeout_s: float) -> list[Problem]:
    document = _load_document(spec, base_url, timeout_s)
    paths = document.get("paths") or {}
    # /tmf-api/x/{id} in the contract matches /tmf-api/x/{key} in a mapping.
    shapes = {re.sub(r"\{[^}]+\}", "{}", p): p for p in paths}
    prefixes = [s.get("url", "") for s in document.get("servers") or [] if isinstance(s, dict)]
    problems: list[Problem] = []
    for label, op in _calls(spec):
        path = re.sub(r"\{[^}]+\}", "{}", str(op.path))
        found = shapes.get(path)
        if found is None:
            for prefix in prefixes:
                tail = re.sub(r"^https?://[^/]+", "", prefix).rstrip("/")
                if tail and path.startswith(tail):
                    found = shapes.get(path[len(tail) :])
                    if found is not None:
                        break
        if found is None:
            problems.append(
                Problem(
                    spec.mapping_file,
                    op.line,
                    f"{label}: the OpenAPI document has no path {op.path}",
                )
            )
        elif op.method.lower() not in paths[found]:
            problems.append(
                Problem(
                    spec.mapping_file,
                    op.line,
                    f"{label}: {op.path} has no {op.method} in the OpenAPI document",
                )
            )
        else:
            problems += _query_problems(spec, label, op, paths[found])
    return problems


def _query_problems(
    spec: SystemSpec, label: str, op: OperationSpec, path_item: dict[str, Any]
) -> list[Problem]:
    """Query parameters the contract does not declare for this path and method: a system
    that ignores an unknown filter answers everything, which reads like a lookup."""
    operation = path_item.get(op.method.lower()) or {}
    declared = [
        p
        for p in [*(path_item.get("parameters") or []), *(operation.get("parameters") or [])]
        if isinstance(p, dict)
    ]
    if any("$ref" in p for p in declared):
        return []  # parameters defined elsewhere: not followed, so not judged
    names = {str(p.get("name")) for p in declared if p.get("in") == "query"}
    if not declared:
        return []  # the contract lists no parameters at all: nothing to compare with
    return [
        Problem(
            spec.mapping_file,
            op.line,
            f"{label}: query parameter '{name}' is not one of {op.method} {op.path}'s in the "
            f"OpenAPI document ({', '.join(sorted(names)) or 'none'})",
        )
        for name in op.query
        if name not in names
    ]
