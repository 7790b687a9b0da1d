"""Business events from the real simulators into the real gateway (docs/marketing.md, Events).

One simulator process and one gateway of their own (the events secrets, the recording
handler), on SQLite. What is checked is in the hub's tables: ``hub_event`` (stored once, with
the customer) and ``event_decision`` (handed to the handler).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from simulators.dataset import CustomerBundle
from tests.harness import (
    SimulatorUrls,
    free_ports,
    gateway_env,
    issue_key,
    post_graphql,
    running_simulators,
    start_gateway,
    stop,
)

SECRET = "events-test-secret-" + uuid.uuid4().hex
SECRETS = {
    "SWITCHBOARD_EVENTS_BOSS_SECRET": SECRET,
    "SWITCHBOARD_EVENTS_BILLING_SECRET": SECRET,
    "SWITCHBOARD_EVENTS_CARE_SECRET": SECRET,
}


@dataclass
class EventHub:
    url: str
    database: Path
    sims: SimulatorUrls
    env: dict[str, str]
    process: object
    log: Path

    def rows(self, where: str = "1=1", params: tuple = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.database)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(f"SELECT * FROM hub_event WHERE {where}", params).fetchall()
        finally:
            conn.close()

    def decisions(self) -> dict[str, int]:
        conn = sqlite3.connect(self.database)
        try:
            return dict(conn.execute("SELECT event_id, times_handed FROM event_decision"))
        finally:
            conn.close()


@pytest.fixture(scope="module")
def event_sims(hub_data_dir: Path) -> Iterator[SimulatorUrls]:
    os.environ["SIMULATORS_EVENTS_SECRET"] = SECRET  # the child reads it
    try:
        with running_simulators(hub_data_dir) as urls:
            yield urls
    finally:
        os.environ.pop("SIMULATORS_EVENTS_SECRET", None)


def _env(sims: SimulatorUrls, database: Path, **extra: str) -> dict[str, str]:
    return gateway_env(
        sims,
        f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_EVENTS__HANDLER="record",
        SWITCHBOARD_EVENTS__DISPATCH_POLL_S="0.1",
        SWITCHBOARD_EVENTS__REGISTER_RETRY_S="0.5",
        SWITCHBOARD_WORKFLOWS__ENABLED="false",
        **SECRETS,
        **extra,
    )


@pytest.fixture(scope="module")
def hub(event_sims: SimulatorUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventHub]:
    state = tmp_path_factory.mktemp("eventhub")
    database = state / "hub.db"
    env = _env(event_sims, database)
    # The callback the simulators are given names the port the gateway will listen on.
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    env["SWITCHBOARD_EVENTS__CALLBACK_BASE_URL"] = url
    url, process = _start_on(env, state / "gateway.log", url)
    hub = EventHub(url, database, event_sims, env, process, state / "gateway.log")
    _wait_registered(event_sims)
    try:
        yield hub
    finally:
        stop(hub.process)  # type: ignore[arg-type]


def _start_on(env: dict[str, str], log: Path, url: str) -> tuple[str, object]:
    """The gateway on the port of ``url`` (callbacks registered with the simulators name it)."""
    return start_gateway(env, log, append=True, port=int(url.rsplit(":", 1)[1]))


def _wait_registered(sims: SimulatorUrls, count: int = 1) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(
            len(httpx.get(f"{sims.of(s)}/hub").json()) >= count for s in ("boss", "billing", "care")
        ):
            return
        time.sleep(0.1)
    raise AssertionError("the gateway did not register with every event hub")


def _emit(sims: SimulatorUrls, system: str, **body: object) -> None:
    response = httpx.post(f"{sims.of(system)}/_sim/events", json=body, timeout=10)
    assert response.status_code == 202, response.text


def _until(check, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _signed(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Hub-Timestamp": ts,
        "X-Hub-Signature-256": f"sha256={digest}",
    }


def _notification(event_type: str = "RoamingStartedEvent", **event: object) -> bytes:
    return json.dumps(
        {
            "eventId": uuid.uuid4().hex,
            "eventTime": "2026-12-02T10:00:00+08:00",
            "eventType": event_type,
            "event": event
            or {"customer": {"customerNo": "9"}, "subscriber": {"msisdn": "13800000000"}},
        }
    ).encode()


def _known_customer(hub: EventHub, customer: CustomerBundle) -> str:
    """The customer's hub id, after the hub has seen them (identity resolution links them)."""
    key = issue_key(hub.env, channel="agent", role="agent", scopes=("customer:read",))
    msisdn = customer.subscribers[0][2]
    answer = post_graphql(
        hub.url, key, "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }", {"m": msisdn}
    ).json()
    return answer["data"]["customerByMsisdn"]["id"]


CASES = [
    ("boss", "UsageThresholdCrossedEvent", "usage.threshold_crossed", {"percent": 80}),
    ("boss", "RoamingStartedEvent", "roaming.started", {"country": "JP"}),
    ("boss", "LineSuspendedEvent", "line.suspended", {"reason": "arrears"}),
    ("boss", "LineResumedEvent", "line.resumed", {"days_off": 95}),
    ("billing", "BillIssuedEvent", "bill.issued", {}),
    ("billing", "BillOverdueEvent", "bill.overdue", {"days_overdue": 15}),
    ("billing", "PaymentReceivedEvent", "payment.received", {"payment_channel": "alipay"}),
    ("care", "TroubleTicketResolvedEvent", "ticket.resolved", {}),
]


@pytest.mark.parametrize(("system", "their_type", "our_type", "payload"), CASES)
def test_each_event_type_is_stored_once_with_its_customer_and_handed(
    hub: EventHub,
    customers: list[CustomerBundle],
    system: str,
    their_type: str,
    our_type: str,
    payload: dict,
) -> None:
    customer = customers[[c[0] for c in CASES].index(system) + len(CASES) * 2 + 7]
    hub_id = _known_customer(hub, customer)
    msisdn = customer.subscribers[0][2]
    before = {r["event_id"] for r in hub.rows("event_type = ?", (our_type,))}
    _emit(hub.sims, system, eventType=their_type, msisdn=msisdn)
    rows = _until(
        lambda: [r for r in hub.rows("event_type = ?", (our_type,)) if r["event_id"] not in before]
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["source"] == system and row["event_id"].startswith(f"{system}:")
    assert row["customer_id"] == hub_id
    assert row["subscriber"] in (f"+86{msisdn}", None if system == "care" else f"+86{msisdn}")
    stored = json.loads(row["payload"])
    for name, value in payload.items():
        assert stored[name] == value
    _until(lambda: hub.decisions().get(row["event_id"]) == 1)
    assert _until(lambda: hub.rows("event_id = ?", (row["event_id"],))[0]["handled_at"])


def test_a_replay_stores_nothing_and_is_acknowledged(hub: EventHub) -> None:
    body = _notification()
    first = httpx.post(f"{hub.url}/events/boss", content=body, headers=_signed(body))
    assert first.status_code == 201, first.text
    event_id = "boss:" + json.loads(body)["eventId"]
    again = httpx.post(f"{hub.url}/events/boss", content=body, headers=_signed(body))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(hub.rows("event_id = ?", (event_id,))) == 1
    _until(lambda: hub.decisions().get(event_id) == 1)
    time.sleep(0.3)  # a second hand-out would have happened by now
    assert hub.decisions()[event_id] == 1


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Content-Type": "application/json"}, "SIGNATURE_MISSING"),
        ("wrong-secret", "SIGNATURE_INVALID"),
        ("stale", "SIGNATURE_STALE"),
        ("tampered", "SIGNATURE_INVALID"),
    ],
)
def test_bad_signatures_are_refused_and_nothing_stored(
    hub: EventHub, headers: object, code: str
) -> None:
    body = _notification()
    if headers == "wrong-secret":
        headers = _signed(body, secret="not-the-secret")
    elif headers == "stale":
        headers = _signed(body, timestamp=int(time.time()) - 3600)
    elif headers == "tampered":
        headers = _signed(body)
        body = body.replace(b"13800000000", b"13900000000")
    response = httpx.post(f"{hub.url}/events/boss", content=body, headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == code
    assert not hub.rows("event_id = ?", ("boss:" + json.loads(body)["eventId"],))


def test_bad_bodies_are_refused_with_codes_and_nothing_stored(hub: EventHub) -> None:
    count = len(hub.rows())
    cases = [
        (b"{not json", 400, "EVENT_INVALID"),
        (b"[" * 100 + b"]" * 100, 400, "EVENT_INVALID"),
        (_notification("SomethingElseEvent"), 400, "EVENT_TYPE_UNKNOWN"),
        (json.dumps({"eventType": "RoamingStartedEvent"}).encode(), 400, "EVENT_INVALID"),
        (b'{"x": "' + b"a" * 70_000 + b'"}', 413, "PAYLOAD_TOO_LARGE"),
    ]
    for body, status, code in cases:
        response = httpx.post(f"{hub.url}/events/boss", content=body, headers=_signed(body))
        assert response.status_code == status, (code, response.text)
        assert response.json()["errors"][0]["extensions"]["code"] == code
    unknown = httpx.post(f"{hub.url}/events/nosuch", content=b"{}", headers=_signed(b"{}"))
    assert unknown.status_code == 404
    assert len(hub.rows()) == count


def test_the_webhook_path_answers_as_the_router_would(hub: EventHub) -> None:
    """POST /events/{source} is served before Starlette's router (gateway/events.py): the
    request id is echoed, other methods get 405, other paths go on to the router, and a
    body that is not JSON by its type is refused before anything is read."""
    body = _notification()
    headers = {**_signed(body), "X-Request-Id": "webhook-test-1"}
    response = httpx.post(f"{hub.url}/events/boss", content=body, headers=headers)
    assert response.status_code == 201 and response.json()["status"] == "stored"
    assert response.headers["x-request-id"] == "webhook-test-1"
    assert response.headers["content-type"] == "application/json"
    typed = {**_signed(body), "Content-Type": "text/plain"}
    refused = httpx.post(f"{hub.url}/events/boss", content=body, headers=typed)
    assert refused.status_code == 415
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert httpx.get(f"{hub.url}/events/boss").status_code == 405
    deeper = httpx.post(f"{hub.url}/events/boss/x", content=body, headers=_signed(body))
    assert deeper.status_code == 404
    assert len(hub.rows("event_id = ?", ("boss:" + json.loads(body)["eventId"],))) == 1


def test_an_unknown_customer_is_stored_without_one(hub: EventHub) -> None:
    body = _notification(
        "LineSuspendedEvent",
        customer={"customerNo": "1"},  # no such BOSS customer
        subscriber={"msisdn": "13000000001"},
        line={"reason": "request"},
    )
    assert httpx.post(f"{hub.url}/events/boss", content=body, headers=_signed(body)).is_success
    (row,) = hub.rows("event_id = ?", ("boss:" + json.loads(body)["eventId"],))
    assert row["customer_id"] is None


def test_sigkill_while_delivering_loses_nothing_and_stores_nothing_twice(hub: EventHub) -> None:
    """The simulator keeps retrying while the gateway is dead; after the restart every event
    it emitted is stored exactly once, and handed."""
    # Retries for up to ~5 minutes: a loaded machine restarts a gateway slowly.
    policy = {"max_attempts": 300, "backoff_s": 0.1, "max_backoff_s": 1.0}
    httpx.post(f"{hub.sims.boss}/_sim/events/control", json=policy).raise_for_status()
    stats = httpx.get(f"{hub.sims.boss}/_sim/events/stats").json()
    before = len(hub.rows("source = 'boss'"))
    count = 300
    response = httpx.post(
        f"{hub.sims.boss}/_sim/events",
        json={"eventType": "RoamingStartedEvent", "random": True, "count": count},
    )
    assert response.status_code == 202
    _until(lambda: len(hub.rows("source = 'boss'")) > before + 20, 20)
    hub.process.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    hub.process.wait()  # type: ignore[attr-defined]
    mid = len(hub.rows("source = 'boss'")) - before
    assert mid < count, "all delivered before the kill: the test proves nothing"
    time.sleep(1.0)  # deliveries fail meanwhile, and are retried
    hub.url, hub.process = _start_on(hub.env, hub.log, hub.url)
    _until(lambda: httpx.get(f"{hub.sims.boss}/_sim/events/stats").json()["pending"] == 0, 300)
    after = httpx.get(f"{hub.sims.boss}/_sim/events/stats").json()
    assert after["given_up"] == stats["given_up"]
    assert after["failed_attempts"] > stats["failed_attempts"]
    rows = hub.rows("source = 'boss'")
    assert len(rows) - before == count
    assert len({r["event_id"] for r in rows}) == len(rows)
    ids = {r["event_id"] for r in rows}
    # Events the killed process had claimed are handed again when their lease (claim_lease_s,
    # 60 s) ends: wait longer than that.
    _until(lambda: ids <= set(hub.decisions()), 90)


def test_registration_is_idempotent_and_removed_on_clean_shutdown(
    event_sims: SimulatorUrls, tmp_path: Path, hub: EventHub
) -> None:
    """A second gateway registers its own callback once, even restarted; a clean stop
    (SIGTERM) unregisters it."""
    env = _env(event_sims, tmp_path / "hub.db")
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    env["SWITCHBOARD_EVENTS__CALLBACK_BASE_URL"] = url
    mine = f"{url}/events/boss"

    def registered() -> list[dict]:
        return [r for r in httpx.get(f"{event_sims.boss}/hub").json() if r["callback"] == mine]

    for _ in range(2):  # the second start registers the same callback: still one
        url, process = _start_on(env, tmp_path / "gw.log", url)
        try:
            _until(registered)
            assert len(registered()) == 1
        finally:
            if _ == 0:
                process.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
                process.wait()  # type: ignore[attr-defined]
    assert len(registered()) == 1
    stop(process)  # type: ignore[arg-type]
    assert registered() == []
