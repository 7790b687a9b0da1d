"""The access log's probes of issue 13 (points 9 and 11), against a real gateway and the CLI.

11: a key over its rate limit, and a caller sending bad keys, refused hundreds of times: the
log grows by a small bounded number of records whose counts add up to the refusals, and
still verifies. 9: the gateway signs checkpoints on its own schedule into a file outside
the database; an edited checkpoint row, deleted rows, rows re-signed with another key and a
forged tail are each found by `switchboard audit verify`; without a trusted key it says the
signatures are UNTRUSTED.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.audit.checkpoint import SigningKey
from gateway.audit.record import AuditRecord, chain_hash
from gateway.policy_store import DEFAULT_POLICY_FILE
from tests.harness import REPO, SWITCHBOARD, gateway_env, issue_key, running_gateway

SMS_LIMIT = 3
WINDOW_S = 2.0
INDIVIDUAL = 5
CHECKPOINT_EVERY = 5
OFFERS = "query Offers { offerings { id } }"


@dataclass(frozen=True)
class Probe:
    url: str
    env: dict[str, str]  # audit.trusted_public_key_file pinned
    keys: dict[str, str]
    database: Path
    state: Path  # the hub's key files and checkpoint file
    auditor_public_key: Path  # the auditor's own copy, outside the hub's state

    def post(self, key: str, document: str = OFFERS, **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/graphql",
            json={"query": document},
            headers={"X-Api-Key": key, "X-Purpose": "service", **headers},
            timeout=30,
        )

    def rows(self, after_seq: int = 0) -> list[sqlite3.Row]:
        with sqlite3.connect(self.database) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(
                "SELECT * FROM audit_record WHERE seq > ? ORDER BY seq", (after_seq,)
            ).fetchall()

    def head(self) -> int:
        with sqlite3.connect(self.database) as conn:
            return conn.execute("SELECT seq FROM audit_head").fetchone()[0]

    def verify(self, *argv: str, pinned: bool = True) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if not pinned:
            del env["SWITCHBOARD_AUDIT__TRUSTED_PUBLIC_KEY_FILE"]
        return subprocess.run(
            [*SWITCHBOARD, "audit", "verify", "--quiet", *argv],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def probe(sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    tmp = tmp_path_factory.mktemp("probe")
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["channels"]["sms"]["rate_limit_per_minute"] = SMS_LIMIT
    policy["channels"]["sms"]["operations"].append("offerings")
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    state = tmp / "state"
    hub_key = SigningKey(state / "audit-signing.key")
    hub_key.public_key  # noqa: B018 -- generates the pair, as the hub would on first use
    auditor_copy = tmp / "auditor" / "hub.pub"
    auditor_copy.parent.mkdir()
    shutil.copy(hub_key.public_path, auditor_copy)
    database = tmp / "hub.db"
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_POLICY_FILE=str(tmp / "policy.yaml"),
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(state),
        SWITCHBOARD_AUDIT__CUSTOMER_KEY="probe-tests-customer-key-0123456789",
        SWITCHBOARD_AUDIT__TRUSTED_PUBLIC_KEY_FILE=str(auditor_copy),
        SWITCHBOARD_AUDIT__REFUSAL_WINDOW_S=str(WINDOW_S),
        # These probes count refusals in the log; the failed-key throttle has its own tests.
        SWITCHBOARD_AUTH__MAX_FAILURES_PER_SOURCE="100000",
        SWITCHBOARD_AUTH__MAX_FAILURES_PER_KEY_ID="100000",
        SWITCHBOARD_AUDIT__REFUSAL_INDIVIDUAL_RECORDS=str(INDIVIDUAL),
        SWITCHBOARD_AUDIT__CHECKPOINT_EVERY_RECORDS=str(CHECKPOINT_EVERY),
        SWITCHBOARD_AUDIT__CHECKPOINT_EVERY_S="1",
        SWITCHBOARD_AUDIT__CHECKPOINT_POLL_S="0.2",
    )
    keys = {
        channel: issue_key(env, channel=channel, role=role, scopes=("customer:read",))
        for channel, role in (("agent", "agent"), ("sms", "sms"), ("audit", "auditor"))
    }
    with running_gateway(env, tmp / "gateway.log") as url:
        yield Probe(url, env, keys, database, state, auditor_copy)


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def flood(probe: Probe, key: str, count: int, threads: int = 4) -> list[int]:
    """``count`` requests from ``threads`` connections at once; their statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def client(share: int) -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(share):
                status = http.post(
                    f"{probe.url}/graphql",
                    json={"query": OFFERS},
                    headers={"X-Api-Key": key, "X-Purpose": "service"},
                ).status_code
                with lock:
                    statuses.append(status)

    workers = [threading.Thread(target=client, args=(count // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def refusals_in(rows: list[sqlite3.Row], code: str) -> tuple[list, list, int]:
    """Individual records, aggregate records, and the refusals they account for together."""
    mine = [r for r in rows if r["code"] == code]
    individual = [r for r in mine if r["refused_count"] is None]
    aggregates = [r for r in mine if r["refused_count"] is not None]
    return individual, aggregates, len(individual) + sum(r["refused_count"] for r in aggregates)


def test_a_key_over_its_rate_limit_leaves_a_bounded_count_of_records(probe: Probe):
    before = probe.head()
    started = time.monotonic()
    statuses = flood(probe, probe.keys["sms"], 500)
    elapsed = time.monotonic() - started
    refused = statuses.count(429)
    assert len(statuses) == 500 and refused >= 500 - 2 * SMS_LIMIT  # a minute may turn
    # Every refusal is accounted for once its window has ended and its aggregate is written.
    wait_for(lambda: refusals_in(probe.rows(before), "RATE_LIMITED")[2] == refused)
    rows = probe.rows(before)
    individual, aggregates, _ = refusals_in(rows, "RATE_LIMITED")
    windows = int(elapsed // WINDOW_S) + 2
    assert len(individual) <= INDIVIDUAL * windows and len(aggregates) <= windows
    assert len(rows) == statuses.count(200) + len(individual) + len(aggregates)
    assert len(rows) < 60, len(rows)  # not 500
    sms = {r["credential_id"] for r in individual}
    for aggregate in aggregates:
        assert {aggregate["credential_id"]} == sms and aggregate["subject"] == "test-sms"
        assert aggregate["outcome"] == "refused" and aggregate["channel"] == "sms"
        assert 0 < aggregate["window_end_us"] - aggregate["time_us"] <= WINDOW_S * 1_000_000
    # The auditor sees them as such, and the chain (aggregates included) verifies.
    log = probe.post(
        probe.keys["audit"],
        '{ auditLog(filter: {principal: "test-sms", decision: REFUSED}, first: 200) '
        "{ nodes { seq code refusedCount time windowEnd } } }",
    ).json()["data"]["auditLog"]["nodes"]
    counted = [n for n in log if n["refusedCount"] is not None]
    assert sum(n["refusedCount"] for n in counted) == sum(r["refused_count"] for r in aggregates)
    assert all(n["windowEnd"] > n["time"] for n in counted)
    done = probe.verify("--public-key", str(probe.auditor_public_key))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit log ok:" in done.stdout and "UNTRUSTED" not in done.stdout


def test_a_caller_sending_bad_keys_is_counted_by_a_keyed_hash_of_its_address(probe: Probe):
    before = probe.head()
    statuses = flood(probe, "sb_deadbeef.not-a-real-secret", 200)
    assert statuses == [401] * 200
    wait_for(lambda: refusals_in(probe.rows(before), "UNAUTHENTICATED")[2] == 200)
    individual, aggregates, _ = refusals_in(probe.rows(before), "UNAUTHENTICATED")
    assert len(individual) + len(aggregates) < 30
    sources = {r["source"] for r in individual + aggregates}
    (source,) = sources  # one caller, whom the log can name without its address
    assert len(source) == 64 and "127.0.0.1" not in source
    assert all(r["subject"] is None and r["credential_id"] is None for r in aggregates)


def test_the_graph_reports_signatures_checked_with_the_pinned_key(probe: Probe):
    verification = probe.post(
        probe.keys["audit"],
        "{ auditVerification(full: true) { ok signatures keyId checkpointsChecked } }",
    ).json()["data"]["auditVerification"]
    assert verification["ok"] and verification["signatures"] == "TRUSTED"
    assert verification["checkpointsChecked"] >= 1  # the gateway's own, at least


def stored_record(row: sqlite3.Row) -> dict:
    data = dict(row)
    for name in ("customers", "disclosed", "backends"):
        data[name] = json.loads(data[name])
    return data


def table(probe: Probe) -> list[dict]:
    with sqlite3.connect(probe.database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM audit_checkpoint ORDER BY id")]


def sql(probe: Probe, statement: str, *args: object) -> None:
    with sqlite3.connect(probe.database) as conn:
        conn.execute(statement, args)


def test_checkpoint_tampering_and_a_forged_tail_are_found(probe: Probe, tmp_path: Path):
    # The gateway signs a checkpoint every few records by itself, into its file.
    for _ in range(CHECKPOINT_EVERY + 1):
        assert probe.post(probe.keys["agent"]).status_code == 200
    checkpoint_file = probe.state / "audit-checkpoints.jsonl"

    def filed_seqs() -> list[int]:
        lines = checkpoint_file.read_text().splitlines() if checkpoint_file.exists() else []
        return [json.loads(line)["seq"] for line in lines]

    wait_for(lambda: filed_seqs() and filed_seqs()[-1] == probe.head())
    assert [c["seq"] for c in table(probe)] == filed_seqs()
    saved = tmp_path / "saved.json"  # the auditor keeps one, as `audit checkpoint` prints it
    saved.write_text(json.dumps(table(probe)[-1]))
    pub = ("--public-key", str(probe.auditor_public_key))
    done = probe.verify(*pub, "--checkpoint", str(saved))
    assert done.returncode == 0, done.stdout
    assert f"kept in {checkpoint_file}" in done.stdout

    # 1. A checkpoint row's head hash edited.
    first = table(probe)[0]
    sql(probe, "UPDATE audit_checkpoint SET head_hash = ? WHERE id = ?", "ab" * 32, first["id"])
    done = probe.verify(*pub)
    assert done.returncode == 1 and "FORGED_CHECKPOINT" in done.stdout, done.stdout
    sql(
        probe,
        "UPDATE audit_checkpoint SET head_hash = ? WHERE id = ?",
        first["head_hash"],
        first["id"],
    )

    # 2. Every checkpoint row deleted: the saved checkpoint and the gateway's file know.
    rows = table(probe)
    sql(probe, "DELETE FROM audit_checkpoint")
    done = probe.verify(*pub, "--checkpoint", str(saved), "--no-checkpoint-file")
    assert done.returncode == 1 and "CHECKPOINT_DELETED" in done.stdout, done.stdout
    assert "the checkpoint you kept" in done.stdout
    done = probe.verify(*pub)  # the gateway's checkpoint file, read by default
    assert done.stdout.count("CHECKPOINT_DELETED") == len(rows), done.stdout

    # 3. The hub's key replaced and the rows put back re-signed with it: without a trusted
    # key the walk passes, and says its signatures are UNTRUSTED; with the auditor's it fails.
    (probe.state / "audit-signing.key").unlink()
    (probe.state / "audit-signing.pub").unlink()
    attacker = SigningKey(probe.state / "audit-signing.key")
    # In one transaction: meanwhile the gateway has signed the head again (its table was
    # empty), and the attacker replaces that one too.
    with sqlite3.connect(probe.database) as conn:
        conn.execute("DELETE FROM audit_checkpoint")
        for row in rows:
            forged = attacker.sign(row["kind"], row["seq"], row["head_hash"], row["time_us"])
            conn.execute(
                "INSERT INTO audit_checkpoint (kind, seq, head_hash, time_us, key_id, signature) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    forged.kind,
                    forged.seq,
                    forged.head_hash,
                    forged.time_us,
                    forged.key_id,
                    forged.signature,
                ),
            )
    done = probe.verify("--no-checkpoint-file", pinned=False)
    assert done.returncode == 0 and "signatures UNTRUSTED" in done.stdout, done.stdout
    assert "WARNING" in done.stdout
    strict = probe.verify("--no-checkpoint-file", "--require-trusted-key", pinned=False)
    assert strict.returncode == 3
    done = probe.verify(*pub, "--no-checkpoint-file")
    assert done.returncode == 1 and done.stdout.count("FORGED_CHECKPOINT") == len(rows)
    assert "names another key" in done.stdout

    # 4. A forged tail: the last record the gateway's latest checkpoint covers is rewritten,
    # re-hashed, and the head fixed up. The chain alone is consistent; the file is not.
    # The record at the file's latest checkpoint is rewritten and every record after it
    # re-chained up to the head (records past the last checkpoint are the window the schedule
    # bounds, so the forgery starts where a checkpoint covers it).
    filed = (probe.state / "audit-checkpoints.jsonl").read_text().splitlines()
    covered = max(json.loads(line)["seq"] for line in filed)
    after = probe.rows(covered - 1)
    last = after[0]
    changed = AuditRecord.from_dict({**stored_record(last), "purpose": "fraud"})
    digest = chain_hash(last["prev_hash"], changed)
    sql(
        probe,
        "UPDATE audit_record SET purpose = 'fraud', hash = ? WHERE seq = ?",
        digest,
        last["seq"],
    )
    for row in after[1:]:
        following = chain_hash(digest, AuditRecord.from_dict(stored_record(row)))
        sql(
            probe,
            "UPDATE audit_record SET prev_hash = ?, hash = ? WHERE seq = ?",
            digest,
            following,
            row["seq"],
        )
        digest = following
    sql(probe, "UPDATE audit_head SET hash = ?", digest)
    sql(probe, "DELETE FROM audit_checkpoint")
    done = probe.verify(*pub, "--no-checkpoint-file")
    assert done.returncode == 0, done.stdout  # nothing in the database disagrees ...
    done = probe.verify(*pub)
    assert done.returncode == 1 and f"REWRITTEN    seq {last['seq']}" in done.stdout, done.stdout
