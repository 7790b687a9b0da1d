"""The `switchboard` command: demo, serve, simulators, seed and keys (gateway/key_commands.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.audit.commands import add_audit_commands
from gateway.campaign_commands import add_campaign_commands
from gateway.identity_commands import add_identity_commands
from gateway.insight_commands import add_insight_commands
from gateway.key_commands import add_key_commands
from gateway.migrate import DatabaseNotMigrated
from gateway.migrate_commands import DatabaseUnreachable, add_migrate_command
from gateway.replica_commands import add_replica_commands
from gateway.schema_commands import add_schema_commands
from gateway.settings import (
    ENV_PREFIX,
    STATE_DIR,
    Settings,
    SettingsInvalid,
    load_settings,
    replica_state_dir,
)
from gateway.systems_commands import add_systems_commands
from telemetry import logs

DEFAULT_DATA_DIR = STATE_DIR / "sim-data"
DEMO_CUSTOMERS = 2000
DEMO_SEED = 42


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags (--host, --port, --workers, --log-format, --trace,
    --otlp-endpoint)."""
    overrides: dict[str, object] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if getattr(args, "workers", None):
        overrides["workers"] = args.workers
    if getattr(args, "campaigns_file", None):
        overrides["campaigns"] = {"rules_file": args.campaigns_file}
    if getattr(args, "insight_rules", None):
        overrides["insight_rules_file"] = args.insight_rules
    if getattr(args, "log_format", None):
        overrides["log_format"] = args.log_format
    telemetry: dict[str, object] = {}
    if getattr(args, "trace", False):
        telemetry["enabled"] = True
    if getattr(args, "otlp_endpoint", None):
        telemetry["otlp_endpoint"] = args.otlp_endpoint
    if telemetry:
        overrides["telemetry"] = telemetry
    return overrides


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(**_overrides(args))


def _export(overrides: dict[str, object], prefix: str = ENV_PREFIX) -> None:
    """Flags into the environment the workers inherit (nested tables with ``__``)."""
    for name, value in overrides.items():
        if isinstance(value, dict):
            _export(value, f"{prefix}{name.upper()}__")
        else:
            os.environ[f"{prefix}{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )


def _app_or_refusal(settings: Settings) -> Any:
    """The hub's app, or SettingsInvalid listing what is wrong in a file it reads at start-up
    (a declared system, the policy, campaigns, insight rules, trusted documents, a JWKS)."""
    from adapters.declared.yaml_lines import DeclarationInvalid
    from gateway.app import create_app
    from gateway.jwt_auth import JwksInvalid
    from gateway.trusted_documents import ManifestInvalid
    from policies.loader import PolicyInvalid

    try:
        return create_app(settings)
    except (DeclarationInvalid, PolicyInvalid, ManifestInvalid, JwksInvalid) as error:
        raise SettingsInvalid(f"cannot start:\n{error}") from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.metrics import prepare_multiprocess_dir
    from gateway.migrate_commands import prepare_database

    settings = _settings(args)
    logs.configure(settings.log_format)
    # Before any worker starts: an old schema stops the start with one line (or, with
    # database.migrate_on_start, is migrated here, once, so workers never race to do it).
    prepare_database(settings)
    # Each uvicorn worker imports gateway.asgi and reads the settings anew, from the
    # environment and the TOML file: a flag reaches the workers only through the environment
    # they inherit. Without this, `--workers 2` left each worker believing it was alone, so
    # both ran under the bare executor id and could recover each other's workflows.
    _export(_overrides(args))
    if settings.workers > 1:
        # Before any worker starts: each writes its metrics there, /metrics sums them.
        prepare_multiprocess_dir(replica_state_dir(settings.database_url), settings.port)
    # The app built here first: a mistake in a file it reads stops the start with its
    # problems (file:line each) instead of a traceback from inside uvicorn or every worker.
    # One worker serves this very app; several import gateway.asgi and build their own.
    app = _app_or_refusal(settings)
    uvicorn.run(
        app if settings.workers == 1 else "gateway.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        timeout_worker_healthcheck=settings.worker_healthcheck_s,
        # uvloop: with several workers the default loop stalls keep-alive requests ~45 ms.
        loop="uvloop",
        http="httptools",
        # uvicorn's access log prints the query string (GET /graphql?query=... holds the
        # caller's variables): RequestIds logs each request instead, without it.
        access_log=False,
        log_level="info",
        # No logging set-up of uvicorn's own: its lines go to the hub's handler (JSON).
        log_config=None,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import DemoOptions, run_demo

    configured = _settings(args)
    logs.configure(configured.log_format)
    # The demo always serves GraphiQL, whatever the configuration says.
    settings = configured.model_copy(
        update={"graphql": configured.graphql.model_copy(update={"graphiql": True})}
    )
    return run_demo(
        settings,
        DemoOptions(customers=args.customers, seed=args.seed, data_dir=Path(args.data_dir)),
    )


def _simulators(args: argparse.Namespace) -> int:
    from simulators.cli import main as simulators_main

    return simulators_main(
        [
            "serve",
            "--data-dir",
            args.data_dir,
            "--host",
            args.host,
            "--boss-port",
            str(args.boss_port),
            "--billing-port",
            str(args.billing_port),
            "--care-port",
            str(args.care_port),
            "--loyalty-north-port",
            str(args.loyalty_north_port),
            "--loyalty-south-port",
            str(args.loyalty_south_port),
        ]
    )


def _seed(args: argparse.Namespace) -> int:
    from simulators.cli import main as simulators_main

    argv = ["seed", "--data-dir", args.data_dir, "--customers", str(args.customers)]
    argv += ["--seed", str(args.seed)] + (["--force"] if args.force else [])
    return simulators_main(argv)


def _policy_path(args: argparse.Namespace) -> Path:
    from gateway.policy_store import DEFAULT_POLICY_FILE

    if args.file:
        return Path(args.file)
    return load_settings().policy_file or DEFAULT_POLICY_FILE


def _policy_check(args: argparse.Namespace) -> int:
    from gateway.backends import load_systems
    from policies.loader import PolicyInvalid, load_policy
    from policies.masks import BUILTIN_CLASSES
    from schema.build import build_schema, operation_names

    path = _policy_path(args)
    registry = load_systems(load_settings())
    try:
        policy, warnings = load_policy(path, operation_names(build_schema(0, registry)))
        # Every class a declared system uses must be built in or declared by this policy.
        known = {str(c) for c in policy.data_classes} | {str(c) for c in BUILTIN_CLASSES}
        missing = registry.class_problems(known)
        if "insight" not in known:
            # Customer.insight's class (schema/insight.py): the gateway would refuse to start.
            from adapters.declared.yaml_lines import Problem

            missing.append(
                Problem(
                    str(path),
                    1,
                    "data class 'insight' (Customer.insight) is not declared "
                    "(add it under data_classes: with its mask)",
                )
            )
        if missing:
            raise PolicyInvalid(missing)
    except PolicyInvalid as invalid:
        for problem in invalid.problems:
            print(problem)
        print(f"{path}: refused ({len(invalid.problems)} error(s))")
        return 1
    for warning in warnings:
        print(warning)
    print(
        f"{path}: ok, version {policy.version}: {len(policy.channels)} channels, "
        f"{len(policy.rules)} rules, {len(policy.search)} search grants, "
        f"{len(warnings)} warning(s)"
    )
    return 0


def _policy_explain(args: argparse.Namespace) -> int:
    from gateway.backends import load_systems
    from policies.loader import PolicyInvalid, load_policy
    from policies.principal import Principal
    from schema.build import build_schema, operation_names
    from schema.explain import explain, operation_report

    # With the declared systems' fields: explain covers them like every other field.
    schema = build_schema(0, load_systems(load_settings()))
    path = _policy_path(args)
    try:
        policy, _ = load_policy(path, operation_names(schema))
    except PolicyInvalid as invalid:
        print(invalid, file=sys.stderr)
        return 1
    unknown = policy.unknown_terms(args.channel, args.purpose)
    if unknown is not None:
        print(unknown)
        return 2
    principal = Principal(subject="explain", role=args.role, channel=args.channel)
    if args.verified and args.verified not in policy.verification_levels:
        known = ", ".join(policy.verification_levels)
        print(f"unknown verification level '{args.verified}' (known: {known})")
        return 2
    refusals, verdicts = explain(
        schema,
        policy,
        principal,
        args.purpose,
        Path(args.query).read_text(encoding="utf-8"),
        args.verified,
    )
    purpose = args.purpose or "none stated"
    print(
        f"policy {policy.version} ({path}); channel {args.channel}, role {args.role}, "
        f"purpose {purpose}, verified {args.verified or policy.unverified}"
    )
    for refusal in refusals:
        print(f"REFUSED  {refusal}")
    width = max((len(v.path) for v in verdicts), default=10)
    for verdict in verdicts:
        print(f"  {verdict.path:<{width}}  {verdict.outcome:<17}  {verdict.reason}")
    text = Path(args.query).read_text(encoding="utf-8")
    report = operation_report(schema, policy, principal, args.purpose, text)
    if report is not None:
        mode = " (dry run: logged, not refused)" if report.dry_run else ""
        print(f"limits of channel {args.channel}{mode}:")
        for check in report.limits:
            state = "EXCEEDED" if check.exceeded else "ok"
            print(f"  {check.name:<16} {check.found:>6} of {check.limit:<6} {state}")
        # Where the estimated backend calls go, costliest first.
        for costed, calls in sorted(report.figures.paths.items(), key=lambda p: -p[1])[:10]:
            print(f"  cost {calls:>6}  {costed}")
        for search in report.searches:
            outcome = f"refused: {search.refusal}" if search.refusal else "allowed"
            print(f"search {search.where} on class {search.data_class}: {outcome}")
    return 1 if refusals else 0


def gateway_url(settings: Settings) -> str:
    """Where a local client reaches the gateway these settings serve."""
    import ipaddress

    host = settings.host
    try:
        if ipaddress.ip_address(host).is_unspecified:  # listening everywhere: loopback too
            host = "127.0.0.1"
    except ValueError:
        pass  # a host name
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _compare(args: argparse.Namespace) -> int:
    from gateway.compare import CompareFailed, compare, load_keys

    purposes = dict(item.split("=", 1) for item in args.purpose)
    settings = load_settings()
    try:
        table = compare(
            (args.url or gateway_url(settings)).rstrip("/"),
            load_keys(Path(args.keys)),
            args.msisdn,
            args.channels.split(","),
            purposes,
            verify_by_otp_in=tuple(c for c in args.verify_by_otp.split(",") if c),
            phone_url=args.phone or settings.care.base_url,
        )
    except CompareFailed as failed:
        print(f"switchboard compare: {failed}", file=sys.stderr)
        return 1
    print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="GraphQL integration hub in front of an operator's BOSS, billing and care.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="seed a demo dataset, start the simulators and the gateway with GraphiQL",
        description="Seed the demo dataset (once), start the three legacy simulators and the "
        "gateway on loopback, print GraphiQL's address and one API key per demo channel "
        f"(also written to {STATE_DIR / 'demo-keys.json'}).",
    )
    demo.add_argument("--customers", type=int, default=DEMO_CUSTOMERS, help="dataset size")
    demo.add_argument("--seed", type=int, default=DEMO_SEED, help="dataset seed")
    demo.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="simulator stores")
    demo.add_argument("--host", help="gateway address (default from settings: 127.0.0.1)")
    demo.add_argument("--port", type=int, help="gateway port (default from settings: 8000)")
    demo.add_argument("--insight-rules", help="insight rules file (setting insight_rules_file)")
    demo.set_defaults(run=_demo)

    serve = commands.add_parser(
        "serve",
        help="run the gateway (settings from SWITCHBOARD_* and switchboard.toml)",
        description="Run the gateway with uvicorn. Backends, database and limits come from "
        "environment variables (SWITCHBOARD_*) and the config file (switchboard.toml or "
        "SWITCHBOARD_CONFIG).",
    )
    serve.add_argument("--host", help="listen address")
    serve.add_argument("--port", type=int, help="listen port")
    serve.add_argument("--workers", type=int, help="worker processes")
    serve.add_argument("--campaigns-file", help="campaigns file (campaigns.rules_file)")
    serve.add_argument("--insight-rules", help="insight rules file (setting insight_rules_file)")
    serve.add_argument(
        "--log-format", choices=("json", "text"), help="log lines (default from settings: json)"
    )
    serve.add_argument(
        "--trace", action="store_true", help="export traces over OTLP (telemetry.enabled)"
    )
    serve.add_argument(
        "--otlp-endpoint", help="OTLP/HTTP traces endpoint (telemetry.otlp_endpoint)"
    )
    serve.set_defaults(run=_serve)

    sims = commands.add_parser(
        "simulators",
        help="run the BOSS (SOAP), billing and care (REST) and loyalty (SOAP 1.2) simulators",
        description="Run the legacy simulators (BOSS, billing, care and the two loyalty "
        "instances) in one process over a seeded data dir.",
    )
    sims.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="seeded stores")
    sims.add_argument("--host", default="127.0.0.1")
    sims.add_argument("--boss-port", type=int, default=8101)
    sims.add_argument("--billing-port", type=int, default=8102)
    sims.add_argument("--care-port", type=int, default=8103)
    sims.add_argument(
        "--loyalty-north-port", type=int, default=8104, help="loyalty of MSISDNs 130-159"
    )
    sims.add_argument(
        "--loyalty-south-port", type=int, default=8105, help="loyalty of MSISDNs 160-199"
    )
    sims.set_defaults(run=_simulators)

    seed = commands.add_parser(
        "seed",
        help="generate the simulators' dataset (deterministic from a seed)",
        description="Generate the deterministic dataset into the simulators' stores, with a "
        "progress bar. Skips a data dir that already holds the same seed and size.",
    )
    seed.add_argument("--customers", type=int, default=DEMO_CUSTOMERS)
    seed.add_argument("--seed", type=int, default=DEMO_SEED)
    seed.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    seed.add_argument("--force", action="store_true", help="re-seed even if it matches")
    seed.set_defaults(run=_seed)

    policy = commands.add_parser("policy", help="check and explain the channel and privacy rules")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    check = policy_commands.add_parser(
        "check",
        help="validate a policy file",
        description="Validate a policy file: unknown keys, classes, channels, purposes and "
        "operations, unreachable rules (errors) and overlapping rules (warnings), each with "
        "file and line. Exit code 1 when the file would be refused.",
    )
    check.add_argument("file", nargs="?", help="policy file (default: the configured one)")
    check.set_defaults(run=_policy_check)
    explain = policy_commands.add_parser(
        "explain",
        help="show, per field of a query, what a caller would get and which rule decided",
        description="Print, for each field of the query, whether a caller of this channel and "
        "role (and stated purpose) would get it clear, masked or denied, and which rule "
        "decided; and whether the operation itself is refused.",
    )
    explain.add_argument("--channel", required=True)
    explain.add_argument("--role", required=True)
    explain.add_argument("--purpose", help="the purpose the caller states (X-Purpose)")
    explain.add_argument("--query", required=True, help="file holding the GraphQL document")
    explain.add_argument(
        "--verified",
        help="the verification level held for the customer read (X-Verification); "
        "other customers' data is decided as unverified",
    )
    explain.add_argument("--file", help="policy file (default: the configured one)")
    explain.set_defaults(run=_policy_explain)

    compare = commands.add_parser(
        "compare",
        help="the same 360 query through several channels, side by side (what differs)",
        description="Ask a running gateway for one customer's 360 view through each channel's "
        "key and print the fields whose answers differ.",
    )
    compare.add_argument("--msisdn", default="18899407311", help="a line of the customer")
    compare.add_argument("--channels", default="app,store,partner")
    compare.add_argument(
        "--purpose",
        action="append",
        default=["store=identity_verification", "agent=service"],
        metavar="CHANNEL=PURPOSE",
        help="purpose a channel states (repeatable)",
    )
    compare.add_argument(
        "--url",
        help="the gateway's base URL (default: host and port from the settings, "
        "http://127.0.0.1:8000 unless SWITCHBOARD_PORT or switchboard.toml says otherwise)",
    )
    compare.add_argument("--keys", default=str(STATE_DIR / "demo-keys.json"))
    compare.add_argument(
        "--verify-by-otp",
        default="app",
        metavar="CHANNELS",
        help="channels that first verify the customer by an OTP read off the simulated phone "
        "(self-service channels act for their verified customer only)",
    )
    compare.add_argument(
        "--phone", help="the care simulator whose outbox shows the OTP (default: settings)"
    )
    compare.set_defaults(run=_compare)

    add_migrate_command(commands)
    add_audit_commands(commands)
    add_systems_commands(commands)
    add_insight_commands(commands)
    add_schema_commands(commands)
    add_campaign_commands(commands)
    add_replica_commands(commands)

    add_key_commands(commands)
    add_identity_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # The configured format once the settings are read (serve, demo); until then, and for
    # the other commands, plain lines. httpx logs every request URL at INFO, and backend
    # URLs carry MSISDNs and ID-card numbers in their filters: logs.QUIET keeps it (and the
    # other chatty clients) at WARNING, since personal data never goes to logs.
    logs.configure("text")
    # alembic narrates each step at INFO; `migrate` prints its one line of outcome itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SettingsInvalid as error:
        print(f"switchboard: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        print(f"switchboard: invalid settings:\n{error}", file=sys.stderr)
        return 2
    except (DatabaseNotMigrated, DatabaseUnreachable) as error:
        print(f"switchboard: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head and the like
        return 141


if __name__ == "__main__":
    sys.exit(main())
