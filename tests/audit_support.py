"""Helpers for the audit tests: a gateway of their own, and the log read straight from disk."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from gateway.policy_store import DEFAULT_POLICY_FILE
from tests.harness import (
    REPO,
    SWITCHBOARD,
    SimulatorUrls,
    gateway_env,
    issue_key,
    running_gateway,
)

CUSTOMER_KEY = "audit-tests-customer-key-0123456789abcdef"
SMS_LIMIT = 3


def customer_hash(hub_id: str) -> str:
    return hmac.new(CUSTOMER_KEY.encode(), hub_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditedGateway:
    url: str
    keys: dict[str, str]
    database: Path
    env: dict[str, str]

    def post(
        self,
        document: str,
        variables: dict | None = None,
        *,
        key: str | None = None,
        channel: str = "agent",
        purpose: str | None = "service",
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if key is None:
            key = self.keys.get(channel)
        if key:
            sent["X-Api-Key"] = key
        if purpose:
            sent["X-Purpose"] = purpose
        if request_id:
            sent["X-Request-Id"] = request_id
        return httpx.post(
            f"{self.url}/graphql",
            json={"query": document, "variables": variables or {}},
            headers=sent,
            timeout=30,
        )

    def export(self, key: str | None = None, **params: str) -> httpx.Response:
        """GET /audit/export (the page's export) with the auditor's key unless told."""
        return httpx.get(
            f"{self.url}/audit/export",
            params=params,
            headers={"X-Api-Key": key or self.keys["audit"]},
            timeout=60,
        )

    def publish_checkpoint(self) -> dict:
        """`switchboard audit checkpoint` on this gateway's log, as an operator's cron would."""
        done = subprocess.run(
            [*SWITCHBOARD, "audit", "checkpoint"],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(done.stdout)

    def records(self, request_id: str | None = None) -> list[dict]:
        """The stored rows (all, or one request's), as the database holds them."""
        with sqlite3.connect(self.database) as conn:
            conn.row_factory = sqlite3.Row
            if request_id is None:
                rows = conn.execute("SELECT * FROM audit_record ORDER BY seq").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM audit_record WHERE request_id = ? ORDER BY seq", (request_id,)
                ).fetchall()
        found = []
        for row in rows:
            data = dict(row)
            for name in ("customers", "disclosed", "backends"):
                data[name] = json.loads(data[name])
            found.append(data)
        return found


@contextmanager
def audited_gateway(sims: SimulatorUrls, state: Path, **extra: str) -> Iterator[AuditedGateway]:
    """A gateway of the audit tests' own: known customer key, an SMS channel limited to
    SMS_LIMIT requests a minute (to see 429s), and keys for agent, app, sms, partner and audit.
    ``extra``: more environment variables (settings) for it."""
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["channels"]["sms"]["rate_limit_per_minute"] = SMS_LIMIT  # a 429 within a few calls
    policy["channels"]["sms"]["operations"].append("offerings")
    policy_file = state / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    database = state / "hub.db"
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_POLICY_FILE=str(policy_file),
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(state / "keys"),
        SWITCHBOARD_AUDIT__CUSTOMER_KEY=CUSTOMER_KEY,
        **extra,
    )
    keys = {
        channel: issue_key(env, channel=channel, role=role, scopes=("customer:read",))
        for channel, role in (
            ("agent", "agent"),
            ("app", "customer"),
            ("sms", "sms"),
            ("partner", "partner"),
            ("audit", "auditor"),
        )
    }
    with running_gateway(env, state / "gateway.log") as url:
        yield AuditedGateway(url=url, keys=keys, database=database, env=env)
