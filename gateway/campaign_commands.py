"""``switchboard campaigns check [FILE]`` and ``switchboard campaigns explain --customer``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from adapters.declared.yaml_lines import DeclarationInvalid, Problem
from gateway.settings import CampaignSettings, load_settings
from marketing.campaigns import DEFAULT_CAMPAIGNS, CampaignBook, check_offerings, load_campaigns
from marketing.events import EVENT_TYPES

HUB_ID = "cus_"


def campaigns_file(settings: CampaignSettings) -> Path:
    # Not gateway.campaigns' own: importing it would load the workflow engine for every
    # command line the CLI parses.
    return settings.rules_file or DEFAULT_CAMPAIGNS


def _load(path: Path) -> CampaignBook | None:
    try:
        return load_campaigns(path)
    except DeclarationInvalid as invalid:
        for problem in invalid.problems:
            print(problem)
        return None


async def _catalogue() -> dict[str, bool] | None:
    """The BOSS catalogue (offering id -> sellable), or None when BOSS cannot be reached."""
    from adapters.errors import AdapterError
    from gateway.backends import build_backends
    from gateway.database import create_engine

    settings = load_settings()
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    wiring = build_backends(settings, engine)
    try:
        await wiring.backends.customer_system.start()
        offerings = await wiring.backends.customer_system.get_offerings()
        return {o.id: o.sellable for o in offerings}
    except AdapterError:
        return None
    finally:
        await wiring.close()
        await engine.dispose()


def _check(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else campaigns_file(load_settings().campaigns)
    book = _load(path)
    if book is None:
        return 1
    catalogue = None if args.offline else asyncio.run(_catalogue())
    problems: list[Problem] = check_offerings(book, catalogue)
    for problem in problems:
        print(problem)
    if catalogue is None:
        print(f"{path}:0: warning: offerings not checked (BOSS not reachable)")
    if problems:
        return 1
    print(f"{path}: ok, version {book.version}: {len(book.campaigns)} campaigns")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from gateway.database import create_engine
    from gateway.migrate import require_head
    from marketing.decide import GuardContext
    from marketing.explain import explain

    settings = load_settings()
    path = Path(args.file) if args.file else campaigns_file(settings.campaigns)
    book = _load(path)
    if book is None:
        return 1
    if not args.customer.startswith(HUB_ID) or len(args.customer) != 24:
        print(
            "switchboard: --customer must be a hub customer id (cus_ + 20 hex digits)",
            file=sys.stderr,
        )
        return 2
    if args.event is not None and args.event not in EVENT_TYPES:
        print(f"switchboard: --event must be one of {', '.join(EVENT_TYPES)}", file=sys.stderr)
        return 2
    try:
        payload: dict[str, Any] = json.loads(args.payload) if args.payload else {}
    except json.JSONDecodeError:
        payload = None  # type: ignore[assignment]
    if not isinstance(payload, dict):
        print("switchboard: --payload must be a JSON object", file=sys.stderr)
        return 2
    context = GuardContext(
        settings.campaigns.default_timezone, settings.campaigns.consent_default_granted
    )

    async def run() -> list[str]:
        engine = create_engine(settings.database_url)
        try:
            await require_head(engine)  # read only: the schema is `switchboard migrate`'s
            return await explain(engine, book, context, args.customer, args.event, payload)
        finally:
            await engine.dispose()

    for line in asyncio.run(run()):
        print(line)
    return 0


def add_campaign_commands(commands: Any) -> None:
    campaigns = commands.add_parser("campaigns", help="check and explain the campaigns")
    actions = campaigns.add_subparsers(dest="campaigns_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate a campaigns file",
        description="Validate a campaigns file (keys, event types, conditions, channels, "
        "dates, guards), each problem with file and line, and the offerings it names against "
        "the BOSS catalogue when BOSS is reachable. Exit code 1 when it would be refused.",
    )
    check.add_argument("file", nargs="?", help="campaigns file (default: the configured one)")
    check.add_argument("--offline", action="store_true", help="do not ask BOSS")
    check.set_defaults(run=_check)
    explain = actions.add_parser(
        "explain",
        help="would this customer get each campaign now, and if not, what stops it",
        description="For each campaign (of one event type, or all), whether the customer "
        "would get it now, through which channel, or which rule or guard stops it. Reads the "
        "hub's database; changes nothing.",
    )
    explain.add_argument("--customer", required=True, help="hub customer id (cus_...)")
    explain.add_argument("--event", help="event type, e.g. usage.threshold_crossed")
    explain.add_argument("--payload", help='the event payload as JSON, e.g. {"percent": 85}')
    explain.add_argument("--file", help="campaigns file (default: the configured one)")
    explain.set_defaults(run=_explain)
