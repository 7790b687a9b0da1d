"""No acknowledged record is lost: the gateway is SIGKILLed under load and restarted; every
response a client received has its record, and the chain verifies (with the CLI, as an
auditor would). Also the CLI's export, checkpoint and verify-against-a-checkpoint."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.audit_support import CUSTOMER_KEY
from tests.harness import REPO, SWITCHBOARD, gateway_env, issue_key, start_gateway, stop

QUERY = "query Offers { offerings { id } }"


@contextmanager
def gateway_process(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """Like harness.running_gateway, but hands back the process (to kill it)."""
    base, process = start_gateway(env, log_path, append=True)
    try:
        yield base, process
    finally:
        stop(process)


def switchboard(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SWITCHBOARD, *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def hub(sims, tmp_path: Path) -> dict:
    database = tmp_path / "hub.db"
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(tmp_path / "keys"),
        SWITCHBOARD_AUDIT__CUSTOMER_KEY=CUSTOMER_KEY,
    )
    key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
    return {"env": env, "key": key, "database": database, "dir": tmp_path}


def stored_request_ids(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        return {row[0] for row in conn.execute("SELECT request_id FROM audit_record")}


def test_a_killed_gateway_loses_no_acknowledged_record(hub):
    acknowledged: list[str] = []
    lock = threading.Lock()
    stopping = threading.Event()

    def client(base: str) -> None:
        with httpx.Client(timeout=5) as http:
            while not stopping.is_set():
                request_id = uuid.uuid4().hex
                try:
                    response = http.post(
                        f"{base}/graphql",
                        json={"query": QUERY},
                        headers={"X-Api-Key": hub["key"], "X-Request-Id": request_id},
                    )
                except httpx.HTTPError:
                    continue  # the gateway is gone: this request was never acknowledged
                if response.status_code == 200 and "errors" not in response.json():
                    with lock:
                        acknowledged.append(request_id)

    with gateway_process(hub["env"], hub["dir"] / "gateway.log") as (base, process):
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        # Kill in the middle of the load: once plenty of answers have come back.
        while True:
            with lock:
                if len(acknowledged) >= 150:
                    break
            assert process.poll() is None
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        with lock:
            answered_before_kill = list(acknowledged)
        stopping.set()
        for thread in threads:
            thread.join()
    assert len(acknowledged) == len(answered_before_kill)  # nothing answered after the kill

    # Restart on the same database: the log is intact and goes on from where it was.
    with gateway_process(hub["env"], hub["dir"] / "gateway.log") as (base, _):
        after = uuid.uuid4().hex
        response = httpx.post(
            f"{base}/graphql",
            json={"query": QUERY},
            headers={"X-Api-Key": hub["key"], "X-Request-Id": after},
            timeout=10,
        )
        assert response.status_code == 200
    stored = stored_request_ids(hub["database"])
    missing = [r for r in answered_before_kill if r not in stored]
    assert not missing, f"{len(missing)} acknowledged request(s) have no record"
    assert after in stored
    verified = switchboard(hub["env"], "audit", "verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit log ok" in verified.stdout


def test_cli_checkpoint_export_and_verify_against_a_kept_checkpoint(hub):
    with gateway_process(hub["env"], hub["dir"] / "gateway.log") as (base, _):
        for _ in range(5):
            httpx.post(
                f"{base}/graphql",
                json={"query": QUERY},
                headers={"X-Api-Key": hub["key"], "X-Purpose": "service"},
                timeout=10,
            ).raise_for_status()
        httpx.post(f"{base}/graphql", json={"query": QUERY}, timeout=10)  # 401, recorded
    kept = hub["dir"] / "kept-checkpoint.json"
    done = switchboard(hub["env"], "audit", "checkpoint", "--output", str(kept))
    assert done.returncode == 0, done.stderr
    checkpoint = json.loads(kept.read_text())
    assert checkpoint["seq"] == 6 and checkpoint["kind"] == "published"
    assert checkpoint["public_key"] and checkpoint["signature"]

    # Export: jsonl and csv, filtered, with the progress bar on stderr.
    done = switchboard(
        hub["env"], "audit", "export", "--format", "jsonl", "--principal", "test-agent"
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["operation_name"] == "Offers" and r["purpose"] == "service" for r in rows)
    assert "exporting" in done.stderr
    out = hub["dir"] / "refused.csv"
    done = switchboard(
        hub["env"],
        "audit",
        "export",
        "--format",
        "csv",
        "--decision",
        "refused",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    refused = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["seq"], r["code"]) for r in refused] == [("6", "UNAUTHENTICATED")]
    bad = switchboard(hub["env"], "audit", "export", "--from", "yesterday")
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr

    ok = switchboard(hub["env"], "audit", "verify", "--quiet", "--checkpoint", str(kept))
    assert ok.returncode == 0 and "against the checkpoint at seq 6" in ok.stdout

    # Cut the tail (and fix up the head, as a careful forger would): the chain alone cannot
    # tell; the checkpoint's copies in the table and the hub's checkpoint file now do too.
    with sqlite3.connect(hub["database"]) as conn:
        conn.execute("DELETE FROM audit_record WHERE seq > 4")
        conn.execute(
            "UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_record WHERE seq = 4)"
        )
    plain = switchboard(hub["env"], "audit", "verify", "--quiet")
    assert plain.returncode == 1 and "TRUNCATED    seq 5" in plain.stdout
    cut = switchboard(hub["env"], "audit", "verify", "--quiet", "--checkpoint", str(kept))
    assert cut.returncode == 1
    assert "TRUNCATED    seq 5: the log ends at seq 4; the checkpoint covers seq 6" in cut.stdout

    # Nothing is old enough to prune in a log written a moment ago.
    pruned = switchboard(hub["env"], "audit", "prune")
    assert pruned.returncode == 0 and "nothing older than 183 days" in pruned.stdout
