"""`switchboard audit ...`: verify, export, checkpoint and prune, for auditors and operators."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from gateway.audit.export_format import EXPORT_COLUMNS, export_row, flat_row
from gateway.settings import load_settings
from schema.audit_reader import AuditSearch


def _with_log(action: Callable[[Any], Awaitable[int]]) -> int:
    from gateway.audit.service import AuditLog
    from gateway.database import create_engine
    from gateway.migrate import require_head

    settings = load_settings()

    async def run() -> int:
        engine = create_engine(settings.database_url)
        try:
            await require_head(engine)  # on an old schema: one line, `switchboard migrate`
            audit = AuditLog(engine, settings.audit)
            return await action(audit)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _moment(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _search(args: argparse.Namespace) -> AuditSearch:
    return AuditSearch(
        customer_id=args.customer_id,
        principal=args.principal,
        channel=args.channel,
        time_from_us=args.time_from,
        time_to_us=args.time_to,
        outcome=args.decision,
        clear_only=args.clear_only,
        role=args.role,
        operation=args.operation,
        code=args.code,
        purpose=args.purpose,
        request_id=args.request_id,
    )


UNTRUSTED_EXIT = 3  # --require-trusted-key without a trusted key


def _verify(args: argparse.Namespace) -> int:
    from gateway.audit.checkpoint import Checkpoint

    against = Checkpoint.from_json(Path(args.checkpoint).read_text()) if args.checkpoint else None

    async def action(audit: Any) -> int:
        key = audit.verifying_key(Path(args.public_key) if args.public_key else None)
        files = [Path(f) for f in args.checkpoints]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            print(f"no such checkpoint file: {', '.join(missing)}", file=sys.stderr)
            return 2
        kept = [] if args.no_checkpoint_file and not files else audit.kept_checkpoints(files)
        with tqdm(desc="verifying", unit=" records", file=sys.stderr, disable=args.quiet) as bar:
            report = await audit.verify(against, bar.update, key=key, kept=kept)
        for finding in report.findings:
            print(f"{finding.kind.upper():<12} seq {finding.seq}: {finding.detail}")
        if not report.key_trusted:
            print(
                f"WARNING      checkpoint signatures were checked only with {key.source}: "
                "UNTRUSTED (whoever can rewrite the hub's state can replace that key too). "
                "Pass --public-key with the key you keep, or pin audit.trusted_public_key_file."
            )
        against_text = f", against the checkpoint at seq {report.checkpoint_seq}" if against else ""
        sources = ", ".join(str(f) for f in files or [audit.checkpoint_file])
        file_text = f", {len(kept)} kept in {sources}" if kept else ""
        verdict = "ok" if report.ok else f"NOT OK ({len(report.findings)} finding(s))"
        trust = "" if report.key_trusted else " (signatures UNTRUSTED)"
        print(
            f"audit log {verdict}{trust}: {report.checked} records walked from the "
            f"{report.anchor}{against_text}; {report.checkpoints_checked} checkpoint(s) "
            f"checked{file_text}; last seq {report.last_seq}, head {report.head_hash}"
        )
        if not report.ok:
            return 1
        return UNTRUSTED_EXIT if args.require_trusted_key and not report.key_trusted else 0

    return _with_log(action)


def _export(args: argparse.Namespace) -> int:
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            return _export_to(args, out)
    return _export_to(args, sys.stdout)


def _export_to(args: argparse.Namespace, out: TextIO) -> int:
    async def action(audit: Any) -> int:
        search = _search(args)
        total = await audit.reader.count(search)
        writer = csv.DictWriter(out, EXPORT_COLUMNS) if args.format == "csv" else None
        if writer is not None:
            writer.writeheader()
        with tqdm(total=total, desc="exporting", unit=" records", file=sys.stderr) as bar:
            async for entry in audit.reader.iterate(search):
                row = export_row(entry)
                if writer is not None:
                    writer.writerow(flat_row(row))
                else:
                    out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                bar.update(1)
        print(f"exported {total} record(s)", file=sys.stderr)
        return 0

    return _with_log(action)


def _checkpoint(args: argparse.Namespace) -> int:
    published: list[str] = []

    async def action(audit: Any) -> int:
        checkpoint = await audit.publish_checkpoint()
        published.append(checkpoint.to_json(audit.signing_key.public_key))
        print(f"public key: {audit.signing_key.public_path}", file=sys.stderr)
        return 0

    code = _with_log(action)
    if args.output:
        Path(args.output).write_text(published[0])
        print(f"checkpoint written to {args.output}", file=sys.stderr)
    print(published[0], end="")
    return code


def _prune(args: argparse.Namespace) -> int:
    from gateway.audit import checkpoint_file
    from gateway.audit.retention import prune

    async def action(audit: Any) -> int:
        days = args.retention_days or audit.settings.retention_days
        result = await prune(audit.engine, audit.signing_key, days)
        if result.checkpoint is not None:
            checkpoint_file.append(audit.checkpoint_file, result.checkpoint)
        if result.checkpoint is None:
            print(f"nothing older than {days:g} days")
        else:
            print(
                f"pruned {result.deleted} record(s) older than {days:g} days; "
                f"prune checkpoint at seq {result.checkpoint.seq}"
            )
        return 0

    return _with_log(action)


def add_audit_commands(commands: Any) -> None:
    """Add `audit verify|export|checkpoint|prune` to the `switchboard` command."""
    audit = commands.add_parser("audit", help="verify, export, checkpoint and prune the access log")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    verify = actions.add_parser(
        "verify",
        help="walk the chain; report edited, deleted, inserted, reordered records and a cut tail",
        description="Verify the access log's hash chain from its genesis (or the latest prune "
        "checkpoint) and every checkpoint in the checkpoint table. With --checkpoint, also "
        "check it against a signed checkpoint you kept, and with --checkpoints against every "
        "checkpoint of a checkpoint file (default: the hub's audit.checkpoint_file, if it "
        "exists): a truncated or rewritten log, or deleted checkpoints, no longer match. "
        "Signatures are trusted only with --public-key or audit.trusted_public_key_file; "
        "otherwise a WARNING line says they are UNTRUSTED. Exit code 1 when not ok, 3 with "
        "--require-trusted-key and no trusted key.",
    )
    verify.add_argument("--checkpoint", help="a checkpoint file from `audit checkpoint`")
    verify.add_argument(
        "--checkpoints",
        action="append",
        default=[],
        metavar="FILE",
        help="a JSON lines checkpoint file the gateway wrote (repeatable; default: "
        "audit.checkpoint_file when it exists)",
    )
    verify.add_argument(
        "--no-checkpoint-file",
        action="store_true",
        help="do not read audit.checkpoint_file (when no --checkpoints is given)",
    )
    verify.add_argument("--public-key", help="the hub's public key (PEM) you hold")
    verify.add_argument(
        "--require-trusted-key",
        action="store_true",
        help=f"exit {UNTRUSTED_EXIT} when no trusted key checked the signatures",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(run=_verify)

    export = actions.add_parser(
        "export",
        help="export records (csv or jsonl) with filters",
        description="Export matching records, oldest first, with a progress bar on stderr.",
    )
    export.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    export.add_argument("--output", help="file to write (default: stdout)")
    export.add_argument("--customer-id", help="hub customer id (cus_...); hashed to search")
    export.add_argument("--principal", help="principal subject")
    export.add_argument("--channel")
    export.add_argument("--from", dest="time_from", type=_moment, help="ISO time, inclusive")
    export.add_argument("--to", dest="time_to", type=_moment, help="ISO time, exclusive")
    export.add_argument("--decision", choices=("ok", "partial", "refused", "error"))
    export.add_argument("--clear-only", action="store_true", help="only clear disclosures")
    export.add_argument("--role", help="the principal's role")
    export.add_argument("--operation", help="the operation's name (customerByMsisdn, ...)")
    export.add_argument("--code", help="the refusal's or error's code (FORBIDDEN, ...)")
    export.add_argument("--purpose", help="the stated purpose")
    export.add_argument("--request-id", help="one request's records")
    export.set_defaults(run=_export)

    checkpoint = actions.add_parser(
        "checkpoint",
        help="sign the current head (seq, hash, time) and print it; keep it elsewhere",
        description="Publish a signed checkpoint of the log's head (Ed25519) and print it as "
        "JSON (with the public key). Keep the file outside the hub.",
    )
    checkpoint.add_argument("--output", help="also write the checkpoint to this file")
    checkpoint.set_defaults(run=_checkpoint)

    prune = actions.add_parser(
        "prune",
        help="delete records older than the retention period, behind a signed checkpoint",
    )
    prune.add_argument("--retention-days", type=float, help="default: the audit settings")
    prune.set_defaults(run=_prune)
