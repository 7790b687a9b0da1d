"""A gateway subprocess the workflow tests can SIGKILL and restart on the same databases,
plus the simulators' own records (their SQLite files) to count side effects."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from simulators.dataset import CustomerBundle, generate, has_certificate_typo
from tests.harness import post_graphql, start_gateway, stop

WAIT_S = 60.0


def eventually(probe: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll until ``probe`` returns something truthy (no timing is asserted, only an outcome)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


@dataclass
class Hub:
    env: dict[str, str]
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    url: str = ""
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"--- start {self.starts} ---\n")
        self.url, self.process = start_gateway(self.env, self.log_path, append=True, timeout_s=60)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; DBOS must recover from its checkpoints."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def query(
        self,
        document: str,
        variables: dict | None = None,
        *,
        channel: str = "agent",
        purpose: str | None = "service",
        verification: str | None = None,
    ) -> httpx.Response:
        """The raw answer (tests/verification_helpers.py obtains OTPs through this)."""
        return post_graphql(
            self.url,
            self.keys[channel],
            document,
            variables,
            purpose=purpose,
            headers={"X-Verification": verification} if verification else None,
        )

    def post(
        self,
        document: str,
        variables: dict | None = None,
        *,
        channel: str = "agent",
        verification: str | None = None,
    ) -> dict[str, Any]:
        return self.query(document, variables, channel=channel, verification=verification).json()

    def data(
        self,
        document: str,
        variables: dict | None = None,
        *,
        channel: str = "agent",
        verification: str | None = None,
    ):
        body = self.post(document, variables, channel=channel, verification=verification)
        assert "errors" not in body, body["errors"]
        return body["data"]


REQUEST_FIELDS = "id kind customerId channel state status waitingFor detail"


def request_state(hub: Hub, request_id: str) -> dict[str, Any]:
    return hub.data(
        f"query($id: ID!) {{ request(id: $id) {{ {REQUEST_FIELDS}"
        " history { state channel actor detail } notifications { channel kind detail } } }",
        {"id": request_id},
    )["request"]


def wait_state(hub: Hub, request_id: str, *states: str) -> dict[str, Any]:
    return eventually(
        lambda: (r := request_state(hub, request_id))["state"] in states and r,
        f"request {request_id} in {states}",
    )


def hub_id(hub: Hub, msisdn: str) -> str:
    return hub.data("query($m: String!) { customerByMsisdn(msisdn: $m) { id } }", {"m": msisdn})[
        "customerByMsisdn"
    ]["id"]


# --- the simulators' own records ----------------------------------------------------------------


def _rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def boss_orders(data_dir: Path, subscriber_no: str) -> list[tuple[str, str]]:
    return _rows(
        data_dir / "boss.db",
        "SELECT order_id, status FROM offering_order WHERE subscriber_no = ? ORDER BY seq",
        (subscriber_no,),
    )


def billing_adjustments(data_dir: Path, request_id: str) -> list[tuple[str, str]]:
    return _rows(
        data_dir / "billing.db",
        "SELECT idem_key, doc FROM adjustment WHERE idem_key LIKE ? ORDER BY seq",
        (f"{request_id}:%",),
    )


def care_tickets(data_dir: Path, request_id: str) -> list[tuple[str]]:
    return _rows(
        data_dir / "care.db",
        "SELECT resource_id FROM idempotency WHERE kind = 'ticket' AND idem_key LIKE ?",
        (f"{request_id}:%",),
    )


def care_ticket(data_dir: Path, ticket_id: str) -> tuple[str, str, str]:
    """(status, priority, notes JSON) of a care ticket."""
    return _rows(
        data_dir / "care.db",
        "SELECT status, priority, notes FROM ticket WHERE id = ?",
        (ticket_id,),
    )[0]


# --- customers that fit a workflow --------------------------------------------------------------


def clean_customers(seed: int, count: int) -> Iterator[CustomerBundle]:
    """Customers whose three systems agree, with an active line billed on an account in
    good standing: every workflow can run for them end to end."""
    for index in range(count):
        bundle = generate(seed, index)
        if has_certificate_typo(seed, index):
            continue
        account = bundle.account
        if account.overdue_cents != 0 or account.arrears != 0 or account.state != "active":
            continue
        if bundle.party.id_card != bundle.customer.cert_no:
            continue
        lines = [
            s for s in bundle.subscribers if s.status == "A" and s.msisdn in account.service_numbers
        ]
        if lines:
            yield bundle


def active_line(bundle: CustomerBundle):
    return next(
        s
        for s in bundle.subscribers
        if s.status == "A" and s.msisdn in bundle.account.service_numbers
    )


def other_offering(current: str) -> str:
    return "OF0007" if current != "OF0007" else "OF0006"
