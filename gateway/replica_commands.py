"""`switchboard workflows recover` and `switchboard status`: operating N replicas.

``workflows recover --executor ID`` hands the pending workflows of an executor that is gone
for good (a replica SIGKILLed, its host lost) to the replicas still running. It refuses unless
it can take the executor's liveness lock (orchestration/executor_lock.py), which proves no
process runs under that id; it holds the lock while it works, so the executor cannot come back
half-way. The workflows are put on DBOS's internal queue (``resume``): any live executor of
their application version dequeues each one and continues it from its last checkpoint, the
step in flight running again with the same idempotency keys (side effects once, docs/
workflows.md). Run it with the settings of any live replica (same databases).

``status`` prints the replica summary of the scaled mode (gateway/replica_board.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.settings import load_settings

#: Worker slot ids tried when an executor id has no workflows of its own (``<id>-w<n>``).
SLOT_HINTS = 128


def _recover(args: argparse.Namespace) -> int:
    from dbos import DBOSClient

    from gateway.settings import replica_state_dir
    from orchestration.engine import system_database_url
    from orchestration.executor_lock import ExecutorLock, try_lock

    settings = load_settings()
    url = system_database_url(settings.database_url, settings.workflows.database_url)
    lock_dir = replica_state_dir(settings.database_url)
    executors = list(dict.fromkeys(args.executor))
    held: list[ExecutorLock] = []
    try:
        for executor in executors:
            lock = try_lock(executor, url, lock_dir)
            if lock is None:
                print(
                    f"switchboard workflows recover: executor {executor!r} is alive (its "
                    "liveness lock is held); nothing recovered. Stop it, or wait until its "
                    "process is gone.",
                    file=sys.stderr,
                )
                return 1
            held.append(lock)
        client = DBOSClient(system_database_url=url)
        try:
            pending = client.list_workflows(
                status="PENDING", executor_id=executors, load_input=False, load_output=False
            )
            if pending:
                client.resume_workflows([w.workflow_id for w in pending])
            else:
                slots = [f"{e}-w{n}" for e in executors for n in range(SLOT_HINTS)]
                others = client.list_workflows(
                    status="PENDING", executor_id=slots, load_input=False, load_output=False
                )
        finally:
            client.destroy()
    finally:
        for lock in held:
            lock.release()
    if not pending:
        print(f"no pending workflows of {', '.join(executors)}")
        hinted = sorted({str(w.executor_id) for w in others})
        if hinted:
            print(f"pending under worker slots of it: {', '.join(hinted)} (recover those ids)")
        return 0
    version = settings.workflows.application_version
    for workflow in pending:
        note = "" if workflow.app_version == version else f" (version {workflow.app_version})"
        print(f"{workflow.workflow_id} {workflow.name} from {workflow.executor_id}{note}")
    print(
        f"{len(pending)} workflow(s) handed to the live executors: each continues from its "
        f"last checkpoint on an executor of its version (this replica: {version})"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from gateway.replica_board import SummaryLimits, read_summary
    from gateway.scaled import redis_client

    settings = load_settings()
    scaled = settings.scaled
    if scaled.redis_url is None:
        print(
            "switchboard status: the scaled mode is off (scaled.redis_url unset): each "
            "process's breakers are in its own /replicas and /metrics",
            file=sys.stderr,
        )
        return 1

    async def read() -> dict[str, Any]:
        assert scaled.redis_url is not None
        redis = redis_client(scaled.redis_url, scaled.operation_timeout_s)
        try:
            timeout_s = max(2.0, scaled.operation_timeout_s)
            return await read_summary(redis, scaled.key_prefix, timeout_s, SummaryLimits.of(scaled))
        finally:
            await redis.aclose()

    try:
        summary = asyncio.run(read())
    except Exception as error:
        print(f"switchboard status: Redis unavailable: {type(error).__name__}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(_table(summary))
    return 0


def _table(summary: dict[str, Any]) -> str:
    now = datetime.now(UTC)
    lines = []
    for replica in summary["replicas"]:
        lines.append(f"replica {replica['replica']}")
        for worker in replica["workers"]:
            try:
                age = (now - datetime.fromisoformat(worker["updated_at"])).total_seconds()
                seen = f"{age:.0f}s ago"
            except (KeyError, TypeError, ValueError):
                seen = "?"
            circuits = " ".join(
                f"{name}={b.get('state')}"
                + (f"({b['consecutive_failures']})" if b.get("consecutive_failures") else "")
                for name, b in sorted(worker["breakers"].items())
            )
            lines.append(f"  {worker['worker']} pid {worker.get('pid')} {seen}: {circuits}")
    if not summary["replicas"]:
        lines.append("no live replica on this Redis and prefix")
    for name, counts in sorted(summary["backends"].items()):
        lines.append(
            f"{name}: {counts['closed']} closed, {counts['half_open']} half-open, "
            f"{counts['open']} open"
        )
    return "\n".join(lines)


def add_replica_commands(commands: Any) -> None:
    workflows = commands.add_parser("workflows", help="operate the durable workflows")
    actions = workflows.add_subparsers(dest="workflows_command", required=True, metavar="ACTION")
    recover = actions.add_parser(
        "recover",
        help="hand the pending workflows of an executor gone for good to the live replicas",
        description="Refuses unless the executor's liveness lock can be taken (no process "
        "runs under that id). Its pending workflows go on the workflow queue; a live executor "
        "of their version continues each from its last checkpoint. Run it with the settings "
        "of a live replica. Exit code 1 when the executor is alive.",
    )
    recover.add_argument(
        "--executor",
        action="append",
        required=True,
        metavar="ID",
        help="the executor id (workflows.executor_id, or <id>-w<slot> with several workers); "
        "repeatable",
    )
    recover.set_defaults(run=_recover)
    status = commands.add_parser(
        "status",
        help="every live replica's workers and breakers (scaled mode, from Redis)",
        description="Reads the replica board in Redis (scaled.redis_url): per replica its "
        "workers, per backend the circuit each worker sees. Exit code 1 without Redis.",
    )
    status.add_argument("--json", action="store_true", help="the summary as JSON")
    status.set_defaults(run=_status)
