"""`switchboard systems check | try | scaffold`: the integration engineer's tools.

- ``check``: both files of every declared system (file:line for each problem), the data
  classes they use against the policy, the graph they add, and every mapped operation and
  path against the live WSDL/OpenAPI (``--offline`` skips that part).
- ``try``: one operation against the live system, its answer mapped and shown as a channel
  would see it (masked by the policy unless the channel, role and purpose let it out).
- ``scaffold``: a starting pair of files from a WSDL or OpenAPI document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.declared.yaml_lines import DeclarationInvalid, Problem

if TYPE_CHECKING:
    from adapters.declared.spec import FieldSpec, OperationSpec

PERSONAL_NAME_HINT = ("name", "msisdn", "phone", "mobile", "email", "address", "cert", "birth")


def _registry(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from adapters.declared.registry import load_registry
    from gateway.backends import load_systems
    from gateway.settings import load_settings

    if getattr(args, "dir", None):
        return load_registry(Path(args.dir))
    return load_systems(load_settings())


def _policy():  # type: ignore[no-untyped-def]
    from gateway.policy_store import DEFAULT_POLICY_FILE
    from gateway.settings import load_settings
    from policies.loader import load_policy

    path = load_settings().policy_file or DEFAULT_POLICY_FILE
    return load_policy(path)[0], path


def _base_url(spec: Any, instance: Any) -> str:
    from gateway.settings import load_settings

    overrides = load_settings().instance_urls
    return overrides.get(instance.name, instance.base_url).rstrip("/")


def _check(args: argparse.Namespace) -> int:
    from adapters.declared.contract_check import check_contract
    from policies.loader import PolicyInvalid
    from policies.masks import BUILTIN_CLASSES
    from schema.build import build_schema

    try:
        registry = _registry(args)
    except DeclarationInvalid as invalid:
        for problem in invalid.problems:
            print(problem)
        print(f"refused: {len(invalid.problems)} problem(s)")
        return 1
    problems: list[Problem] = []
    warnings: list[Problem] = []
    try:
        policy, _ = _policy()
        known = {str(c) for c in policy.data_classes} | {str(c) for c in BUILTIN_CLASSES}
        problems += registry.class_problems(known)
    except PolicyInvalid as invalid:
        problems += invalid.problems
    from gateway.settings import load_settings

    for name in registry.unknown_instances(load_settings().instance_urls):
        warnings.append(
            Problem(
                str(registry.folder),
                0,
                f"system_urls names '{name}', which no declared system has as an instance "
                f"(instances: {', '.join(sorted(registry.instance_names))})",
                "warning",
            )
        )
    for spec in registry:
        for record in spec.records.values():
            for field in record.fields:
                if field.type == "msisdn" and not field.data_class:
                    problems.append(
                        Problem(
                            spec.mapping_file,
                            field.line,
                            f"field '{record.name}."
                            f"{field.name}' is an MSISDN: it needs a data class",
                        )
                    )
                elif (
                    not field.data_class
                    and field.personal is not False
                    and any(hint in field.name.lower() for hint in PERSONAL_NAME_HINT)
                ):
                    warnings.append(
                        Problem(
                            spec.mapping_file,
                            field.line,
                            f"field '{record.name}.{field.name}' looks personal but has no "
                            "data class (give it one, or say personal: false)",
                            "warning",
                        )
                    )
        if spec.graph is None and spec.role is None:
            warnings.append(
                Problem(
                    spec.mapping_file,
                    1,
                    f"system '{spec.name}' adds nothing to the graph: declare identity: and "
                    "graph: (or role:) for its records to be read (docs/systems.md)",
                    "warning",
                )
            )
        if not args.offline:
            first = spec.instances[0]
            problems += check_contract(spec, _base_url(spec, first))
    try:
        build_schema(0, registry)
    except Exception as error:
        problems.append(Problem(str(registry.folder), 0, f"the graph cannot be built: {error}"))
    for problem in [*problems, *warnings]:
        print(problem)
    names = ", ".join(s.name for s in registry) or "none"
    if problems:
        print(f"refused: {len(problems)} problem(s), {len(warnings)} warning(s) (systems: {names})")
        return 1
    print(f"ok: {len(registry)} system(s) ({names}), {len(warnings)} warning(s)")
    return 0


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):  # as the graph answers it: RFC 3339 in UTC
        from schema.timestamps import rfc3339

        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _try(args: argparse.Namespace) -> int:
    from adapters.errors import AdapterError
    from adapters.phone import in_format
    from gateway.backends import build_systems
    from gateway.settings import load_settings
    from policies.masks import DataClass
    from policies.model import Level
    from policies.principal import Principal

    registry = _registry(args)
    spec = registry.systems.get(args.system)
    if spec is None:
        print(f"switchboard: no system '{args.system}' (declared: {', '.join(registry.systems)})")
        return 2
    operation = spec.operations.get(args.operation)
    if operation is None:
        if args.operation in spec.writes:
            print(
                f"switchboard: '{args.operation}' is a write: try reads only (a write changes "
                "the system; send it through the gateway's mutation, docs/systems.md)"
            )
        else:
            print(f"switchboard: {args.system} has no operation '{args.operation}'")
        return 2
    refusal = _keys_refusal(operation, args.key)
    if refusal is not None:
        print(f"switchboard: {args.operation} {refusal}")
        return 2
    instance = args.instance or spec.instances[0].name
    if instance not in spec.instance_names:
        print(f"switchboard: {args.system} has no instance '{instance}'")
        return 2
    policy, _ = _policy()
    unknown = policy.unknown_terms(args.channel, args.purpose)
    if unknown is not None:
        print(f"switchboard: {unknown}")
        return 2
    principal = Principal(subject="systems-try", role=args.role, channel=args.channel)
    systems, _ = build_systems(registry, load_settings(), None)
    system = systems[spec.name]
    keys = list(args.key)
    if operation.msisdn_format is not None:
        # As the gateway sends them: the numbers in the form the system writes them.
        keys = [in_format(k, operation.msisdn_format) or k for k in keys]
    values: dict[str, Any] = {"$keys": keys, "$offset": args.offset, "$limit": args.limit}
    if keys:
        values["$key"] = keys[0]

    async def run() -> Any:
        try:
            return await system.call_raw(instance, operation.name, values)
        finally:
            await system.close()

    try:
        result = asyncio.run(run())
    except AdapterError as error:
        code = f" ({error.backend_code})" if error.backend_code else ""
        print(f"{error.code}: {error.system} {error.message}{code}")
        return 1
    if operation.record is None:
        print("ok (the operation maps no record)")
        return 0
    total, records = result

    def masked(record: Mapping[str, Any], spec_fields: tuple[FieldSpec, ...]) -> dict[str, Any]:
        # As the graph would show it to this principal (nested records field by field).
        row: dict[str, Any] = {}
        for field in spec_fields:
            raw = record.get(field.name)
            if field.nested is not None and raw is not None:
                inner = field.nested.fields
                row[field.name] = (
                    [masked(r, inner) for r in raw] if field.many else masked(raw, inner)
                )
                continue
            value = _json_value(raw)
            if field.data_class and value is not None:
                decision = policy.decide(DataClass(field.data_class), principal, args.purpose)
                if decision.level is Level.DENIED:
                    value = "<denied>"
                elif decision.level is Level.MASKED:
                    value = policy.mask(DataClass(field.data_class), value)
            row[field.name] = value
        return row

    fields = spec.records[operation.record].fields
    shown = [masked(record, fields) for record in records]
    print(
        json.dumps(
            {"instance": instance, "total": total, "records": shown},
            ensure_ascii=False,
            indent=2,
        )
    )
    for note in _path_notes(spec.mapping_file, operation, fields, records):
        print(note, file=sys.stderr)
    return 0


def _keys_refusal(operation: OperationSpec, keys: list[str]) -> str | None:
    """Why these --key values cannot be tried as one call, or None."""
    from adapters.declared.spec import uses_variable

    request = [operation.path, operation.request, dict(operation.query), dict(operation.headers)]
    takes_key = any(uses_variable(t, "$key") for t in request)
    takes_keys = any(uses_variable(t, "$keys") for t in request)
    if (takes_key or takes_keys) and not keys:
        return "needs a key: give --key"
    if takes_key and not takes_keys and len(keys) > 1:
        return "takes one key per call ($key): give one --key"
    return None


def _path_notes(
    mapping_file: str,
    operation: OperationSpec,
    fields: tuple[FieldSpec, ...],
    records: list[Mapping[str, Any]],
) -> list[str]:
    """Hints at paths that found nothing in this answer (a typo reads as "empty"): no
    record at all, or a field empty in every record. Hints, not errors: a system may well
    leave a field empty for these keys."""
    if not records:
        where = "/".join(operation.list_path) or "the answer itself"
        return [
            f"note: no records; if the system holds some for these keys, check the "
            f"operation's list: path ({where}) at {mapping_file}:{operation.line}"
        ]
    return [
        f"note: field '{field.name}' was empty in all {len(records)} record(s): check its "
        f"path ({'/'.join(field.path)}) at {mapping_file}:{field.line}"
        for field in fields
        if all(record.get(field.name) in (None, (), []) for record in records)
    ]


def _scaffold(args: argparse.Namespace) -> int:
    from adapters.declared.scaffold import scaffold

    out = Path(args.out) if args.out else Path("systems") / args.name
    if (out / "system.yaml").exists() and not args.force:
        print(f"switchboard: {out} already holds a system (use --force to overwrite)")
        return 2
    for path in scaffold(args.source, args.name, out):
        print(f"wrote {path}")
    print("next: review both files (docs/systems.md), then `switchboard systems check`")
    return 0


def add_systems_commands(commands: Any) -> None:
    systems = commands.add_parser(
        "systems", help="check, try and scaffold the legacy systems declared by files"
    )
    actions = systems.add_subparsers(dest="systems_command", required=True, metavar="ACTION")

    check = actions.add_parser(
        "check",
        help="validate every system's files, classes and contract (file:line per problem)",
    )
    check.add_argument("--dir", help="the systems folder (default: settings' systems_dir)")
    check.add_argument(
        "--offline", action="store_true", help="skip the check against the live WSDL/OpenAPI"
    )
    check.set_defaults(run=_check)

    attempt = actions.add_parser(
        "try", help="call one operation against the live system and show the mapped records"
    )
    attempt.add_argument("system")
    attempt.add_argument("operation")
    attempt.add_argument("--key", action="append", default=[], help="a key ($keys), repeatable")
    attempt.add_argument("--offset", type=int, default=0)
    attempt.add_argument("--limit", type=int, default=10)
    attempt.add_argument("--instance", help="which instance (default: the first)")
    attempt.add_argument("--channel", default="agent", help="show as this channel (agent)")
    attempt.add_argument("--role", default="agent", help="show as this role (agent)")
    attempt.add_argument("--purpose", help="the stated purpose (none: masked as without)")
    attempt.add_argument("--dir", help="the systems folder (default: settings' systems_dir)")
    attempt.set_defaults(run=_try)

    scaffold = actions.add_parser(
        "scaffold", help="write a starting system.yaml + mapping.yaml from a WSDL or OpenAPI"
    )
    scaffold.add_argument("source", help="WSDL or OpenAPI document: URL or file")
    scaffold.add_argument("--name", required=True, help="the system's name (e.g. crm)")
    scaffold.add_argument("--out", help="folder to write (default: systems/NAME)")
    scaffold.add_argument("--force", action="store_true", help="overwrite existing files")
    scaffold.set_defaults(run=_scaffold)
