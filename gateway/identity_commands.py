"""`switchboard identity recheck SYSTEM [--customer HUB_ID]`: ask a system again.

A customer a system had no record for is settled "absent" there and asked again only after
``identity.absent_recheck_s`` (an hour by default). After a mapping fix (a number format, a
lookup path) or a system's own repair, this makes those outcomes unresolved now, for one
customer or all: the next request that needs the system asks it, in every gateway process
once it restarts (a running process keeps what it remembered until its own recheck falls
due). Links and conflicts are never touched: they are not re-guessed. SYSTEM is the name
``identity.links`` and ``identity.conflicts`` show (an instance: ``loyalty-north``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

from gateway.settings import load_settings

HUB_ID = re.compile(r"cus_[0-9a-f]{20}")


def _recheck(args: argparse.Namespace) -> int:
    from adapters.identity_store import IdentityStore
    from gateway.backends import load_systems
    from gateway.database import create_engine
    from gateway.migrate import require_head

    settings = load_settings()
    registry = load_systems(settings)
    known = sorted(registry.instance_names | {"billing", "care"})
    if args.system not in known:
        print(f"switchboard: no system '{args.system}' links customers (known: {', '.join(known)})")
        return 2
    if args.customer is not None and not HUB_ID.fullmatch(args.customer):
        print("switchboard: --customer must be a hub customer id (cus_ and 20 hex digits)")
        return 2

    async def run() -> int:
        engine = create_engine(settings.database_url)
        try:
            await require_head(engine)
            return await IdentityStore(engine).forget_absent(args.system, args.customer)
        finally:
            await engine.dispose()

    forgotten = asyncio.run(run())
    print(f"{forgotten} absent outcome(s) in {args.system} will be asked again")
    return 0


def add_identity_commands(commands: Any) -> None:
    identity = commands.add_parser(
        "identity", help="the cross-system identity: ask a system again after a fix"
    )
    actions = identity.add_subparsers(dest="identity_command", required=True, metavar="ACTION")
    recheck = actions.add_parser(
        "recheck",
        help="make 'absent in SYSTEM' outcomes unresolved now (links and conflicts stay)",
    )
    recheck.add_argument("system", help="the system as identity.links names it (loyalty-north)")
    recheck.add_argument("--customer", help="one customer's hub id (default: every customer)")
    recheck.set_defaults(run=_recheck)
