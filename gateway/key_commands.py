"""`switchboard keys create | list | revoke`: the API keys callers present.

A key is printed once, when it is created; only its SHA-256 is stored (gateway/auth.py).
``list`` shows what each key stands for (id, subject, role, channel, scopes, partner, label,
when it was created and revoked), never a secret. ``revoke KEY_ID`` ends a key: every
gateway process stops accepting it within ``auth.key_cache_s`` (30 s by default); exit code
1 if no unrevoked key has that id. Each runs with the gateway's settings (its database) and
refuses a database that is not migrated to head.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

from gateway.auth import ApiKeyStore, KeyListing
from gateway.settings import load_settings

T = TypeVar("T")


def _with_store(work: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    from gateway.database import create_engine
    from gateway.migrate import require_head

    async def run() -> T:
        engine = create_engine(load_settings().database_url)
        try:
            await require_head(engine)
            return await work(ApiKeyStore(engine, cache_s=0))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _create(args: argparse.Namespace) -> int:
    issued = _with_store(
        lambda store: store.issue(
            subject=args.subject,
            role=args.role,
            channel=args.channel,
            scopes=args.scope,
            partner=args.partner,
            label=args.label,
        )
    )
    print(issued.key)
    print("Store this key now: only its hash is kept.", file=sys.stderr)
    return 0


def _row(key: KeyListing) -> dict[str, Any]:
    row = asdict(key)
    row["scopes"] = list(key.scopes)
    row["created_at"] = key.created_at.isoformat()
    row["revoked_at"] = key.revoked_at.isoformat() if key.revoked_at else None
    return row


def _list(args: argparse.Namespace) -> int:
    keys = _with_store(lambda store: store.listing(include_revoked=args.all))
    if args.json:
        print(json.dumps([_row(k) for k in keys], indent=2))
        return 0
    columns = ("key_id", "subject", "role", "channel", "partner", "scopes", "label", "created")
    lines = [columns]
    for key in keys:
        created = key.created_at.strftime("%Y-%m-%d %H:%M")
        revoked = f" (revoked {key.revoked_at:%Y-%m-%d %H:%M})" if key.revoked_at else ""
        lines.append(
            (
                key.key_id,
                key.subject,
                key.role,
                key.channel,
                key.partner or "-",
                ",".join(key.scopes) or "-",
                key.label or "-",
                created + revoked,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    revoked = _with_store(lambda store: store.revoke(args.key_id))
    if not revoked:
        print(f"switchboard keys revoke: no unrevoked key {args.key_id!r}", file=sys.stderr)
        return 1
    cache_s = load_settings().auth.key_cache_s
    print(
        f"revoked {args.key_id}: every gateway process refuses it within {cache_s:g} s "
        "(auth.key_cache_s)",
        file=sys.stderr,
    )
    return 0


def add_key_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="issue an API key for a principal (prints it once)",
        description="Issue an API key. The key is printed once; only its hash is stored.",
    )
    create.add_argument("--subject", required=True, help="who holds the key")
    create.add_argument("--role", required=True, help="e.g. agent, clerk, partner, auditor")
    create.add_argument("--channel", required=True, help="e.g. app, web, store, agent, partner")
    create.add_argument("--scope", action="append", default=[], help="repeatable")
    create.add_argument("--partner", help="partner organisation, for partner keys")
    create.add_argument("--label", default="", help="free label for operators")
    create.set_defaults(run=_create)
    listing = actions.add_parser(
        "list",
        help="the issued keys: what each stands for, never its secret",
        description="The unrevoked keys, oldest first: id, subject, role, channel, partner, "
        "scopes, label and when it was created.",
    )
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true", help="as a JSON array")
    listing.set_defaults(run=_list)
    revoke = actions.add_parser(
        "revoke",
        help="end a key: every gateway process refuses it within auth.key_cache_s",
        description="Revoke the key whose public id is KEY_ID (sb_<KEY_ID>.<secret>). Exit "
        "code 1 if no unrevoked key has that id.",
    )
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's public id")
    revoke.set_defaults(run=_revoke)
