"""Helpers for the audit tests: a gateway of their own, and the log read straight from disk."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import httpx

CUSTOMER_KEY = "audit-tests-customer-key-0123456789abcdef"


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
