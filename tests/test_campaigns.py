"""Campaigns end to end: the real simulators emit signed events, the real gateway stores them,
the campaigns decide, DBOS delivers; sends are counted in the care simulator's message store.

A campaigns file of the test's own (the bundled one without quiet hours and control group, so
that what is tested does not depend on the time of day; both have unit tests of their own in
tests/test_campaign_guards.py) reaches the gateway through ``campaigns.rules_file``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from marketing.campaigns import DEFAULT_CAMPAIGNS
from marketing.offer_store import offer_id
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

SECRET = "campaigns-test-secret-" + uuid.uuid4().hex
SECRETS = {
    "SWITCHBOARD_EVENTS_BOSS_SECRET": SECRET,
    "SWITCHBOARD_EVENTS_BILLING_SECRET": SECRET,
    "SWITCHBOARD_EVENTS_CARE_SECRET": SECRET,
}
KILL_EVENTS = 200
PUMP_EVENTS = 30


@dataclass
class CampaignHub:
    url: str
    database: Path
    sims: SimulatorUrls
    env: dict[str, str]
    process: subprocess.Popen
    log: Path
    agent: str = ""

    def rows(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.database, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def offer(self, campaign: str, customer_id: str) -> sqlite3.Row | None:
        found = self.rows(
            "SELECT * FROM hub_offer WHERE id = ?", (offer_id(campaign, customer_id),)
        )
        return found[0] if found else None

    def graphql(self, document: str, variables: dict | None = None, purpose: str = "marketing"):
        return post_graphql(self.url, self.agent, document, variables, purpose=purpose).json()


def _messages(sims: SimulatorUrls, msisdn: str) -> list[dict]:
    return httpx.get(f"{sims.care}/_sim/messages", params={"msisdn": msisdn}).json()


def _care_sent(sims: SimulatorUrls) -> int:
    """How many messages the care store holds in all (one request, however many lines)."""
    return int(httpx.get(f"{sims.care}/_sim/messages/stats").json()["sent"])


def _until(check, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _start_on(env: dict[str, str], log: Path, url: str) -> subprocess.Popen:
    """The gateway on the port of ``url`` (the callback the simulators hold names it)."""
    return start_gateway(env, log, append=True, port=int(url.rsplit(":", 1)[1]))[1]


def _test_campaigns(path: Path) -> Path:
    text = DEFAULT_CAMPAIGNS.read_text()
    text = text.replace('  quiet_hours: {start: "21:00", end: "08:00"}\n', "")
    text = text.replace("control_share: 0.1", "control_share: 0.0")
    assert "quiet_hours: {" not in text and "control_share: 0.1" not in text
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def campaign_sims(hub_data_dir: Path) -> Iterator[SimulatorUrls]:
    os.environ["SIMULATORS_EVENTS_SECRET"] = SECRET  # the child reads it
    try:
        with running_simulators(hub_data_dir) as urls:
            yield urls
    finally:
        os.environ.pop("SIMULATORS_EVENTS_SECRET", None)


@pytest.fixture(scope="module")
def hub(
    campaign_sims: SimulatorUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CampaignHub]:
    state = tmp_path_factory.mktemp("campaignhub")
    database = state / "hub.db"
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    env = gateway_env(
        campaign_sims,
        f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_EVENTS__DISPATCH_POLL_S="0.1",
        SWITCHBOARD_EVENTS__REGISTER_RETRY_S="0.5",
        SWITCHBOARD_EVENTS__CALLBACK_BASE_URL=url,
        SWITCHBOARD_CAMPAIGNS__RULES_FILE=str(_test_campaigns(state / "campaigns.yaml")),
        **SECRETS,
    )
    process = _start_on(env, state / "gateway.log", url)
    hub = CampaignHub(url, database, campaign_sims, env, process, state / "gateway.log")
    hub.agent = issue_key(env, channel="agent", role="agent")
    _until(
        lambda: all(
            httpx.get(f"{campaign_sims.of(s)}/hub").json() for s in ("boss", "billing", "care")
        ),
        20,
    )
    _see_every_customer(hub)
    try:
        yield hub
    finally:
        stop(hub.process)


def _see_every_customer(hub: CampaignHub) -> None:
    """Page through the customers once: the hub links them (the crosswalk), so events name
    them by hub id at intake."""
    after = None
    while True:
        page = hub.graphql(
            "query($a: String) { customers(first: 100, after: $a) { nodes { id }"
            " pageInfo { hasNextPage endCursor } } }",
            {"a": after},
            "service",
        )
        assert "errors" not in page, page
        info = page["data"]["customers"]["pageInfo"]
        if not info["hasNextPage"]:
            return
        after = info["endCursor"]


def _emit(hub: CampaignHub, system: str, event_type: str, msisdn: str, **extra: object) -> None:
    response = httpx.post(
        f"{hub.sims.of(system)}/_sim/events",
        json={"eventType": event_type, "msisdn": msisdn, **extra},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def _line(customer: CustomerBundle) -> str:
    return next(s.msisdn for s in customer.subscribers if s.status == "A")


def _with_lines(customers: list[CustomerBundle]) -> list[CustomerBundle]:
    return [c for c in customers if any(s.status == "A" for s in c.subscribers)]


def _hub_id(hub: CampaignHub, msisdn: str) -> str:
    answer = hub.graphql(
        "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }", {"m": msisdn}, "service"
    )
    return answer["data"]["customerByMsisdn"]["id"]


def _event_customer(hub: CampaignHub, event_type: str, before: set[str]) -> str:
    rows = _until(
        lambda: [
            r
            for r in hub.rows("SELECT * FROM hub_event WHERE event_type = ?", (event_type,))
            if r["event_id"] not in before and r["handled_at"]
        ]
    )
    return rows[0]["customer_id"]


CASES = [
    (
        "boss",
        "UsageThresholdCrossedEvent",
        {"percent": 85},
        "usage.threshold_crossed",
        "data-topup-80",
        "sms",
    ),
    ("boss", "RoamingStartedEvent", {}, "roaming.started", "roaming-welcome", "sms"),
    ("boss", "LineSuspendedEvent", {}, "line.suspended", "suspended-winback", "nbo"),
    ("billing", "BillIssuedEvent", {}, "bill.issued", "bill-issued-autopay", "app"),
    ("billing", "PaymentReceivedEvent", {}, "payment.received", "thanks-for-paying", "app"),
    ("care", "TroubleTicketResolvedEvent", {}, "ticket.resolved", "ticket-resolved-care", "app"),
]


@pytest.mark.parametrize(("system", "theirs", "extra", "ours", "campaign", "channel"), CASES)
def test_each_event_type_triggers_its_campaign(
    hub: CampaignHub,
    customers: list[CustomerBundle],
    system: str,
    theirs: str,
    extra: dict,
    ours: str,
    campaign: str,
    channel: str,
) -> None:
    customer = _with_lines(customers)[10 + [c[1] for c in CASES].index(theirs)]
    msisdn = _line(customer)
    before = {r["event_id"] for r in hub.rows("SELECT event_id FROM hub_event")}
    _emit(hub, system, theirs, msisdn, **extra)
    customer_id = _event_customer(hub, ours, before)
    expected_state = "AVAILABLE" if channel == "nbo" else "SENT"
    offer = _until(
        lambda: (
            (o := hub.offer(campaign, customer_id)) is not None
            and o["state"] == expected_state
            and o
        )
    )
    assert offer["channel"] == channel and offer["event_type"] == ours
    sms = [m for m in _messages(hub.sims, msisdn)]
    if channel == "sms":
        assert len(sms) == 1
    if channel == "app":
        notices = hub.rows(
            "SELECT kind, channel FROM hub_notification WHERE request_id = ?", (offer["id"],)
        )
        assert [tuple(n) for n in notices] == [("OFFER", "app")]
    # The agent console sees it among the customer's next best offers.
    answer = hub.graphql(
        "query($id: ID!) { customer(id: $id) { nextBestOffers(first: 5) { offerId campaign"
        " offer channel } } }",
        {"id": customer_id},
    )
    offers = answer["data"]["customer"]["nextBestOffers"]
    assert {
        "offerId": offer["id"],
        "campaign": campaign,
        "offer": offer["offer_ref"],
        "channel": channel,
    } in offers


def test_a_second_event_of_a_campaign_sends_nothing_more(
    hub: CampaignHub, customers: list[CustomerBundle]
) -> None:
    customer = _with_lines(customers)[30]
    msisdn = _line(customer)
    before = {r["event_id"] for r in hub.rows("SELECT event_id FROM hub_event")}
    _emit(hub, "boss", "UsageThresholdCrossedEvent", msisdn, percent=90)
    customer_id = _event_customer(hub, "usage.threshold_crossed", before)
    _until(lambda: (o := hub.offer("data-topup-80", customer_id)) and o["state"] == "SENT")
    assert len(_messages(hub.sims, msisdn)) == 1
    seen = {r["event_id"] for r in hub.rows("SELECT event_id FROM hub_event")}
    _emit(hub, "boss", "UsageThresholdCrossedEvent", msisdn, percent=95)
    _event_customer(hub, "usage.threshold_crossed", seen)  # stored and handled
    time.sleep(0.5)  # a second delivery would have started by now
    assert len(_messages(hub.sims, msisdn)) == 1


def test_consent_withdrawn_on_sms_is_honoured_on_the_next_event(
    hub: CampaignHub, customers: list[CustomerBundle]
) -> None:
    customer = _with_lines(customers)[31]
    msisdn = _line(customer)
    customer_id = _hub_id(hub, msisdn)
    answer = hub.graphql(
        'mutation($c: ID!) { setContactConsent(customerId: $c, channel: "sms",'
        ' purpose: "marketing", granted: false) { channel granted } }',
        {"c": customer_id},
        "service",
    )
    assert answer["data"]["setContactConsent"] == {"channel": "sms", "granted": False}
    before = {r["event_id"] for r in hub.rows("SELECT event_id FROM hub_event")}
    _emit(hub, "boss", "RoamingStartedEvent", msisdn)
    _event_customer(hub, "roaming.started", before)
    offer = _until(
        lambda: (o := hub.offer("roaming-welcome", customer_id)) and o["state"] == "SENT" and o
    )
    assert offer["channel"] == "app"  # sms refused by consent, the app was next
    assert _messages(hub.sims, msisdn) == []
    # Bad input is refused with a code and changes nothing.
    bad = hub.graphql(
        'mutation($c: ID!) { setContactConsent(customerId: $c, channel: "fax",'
        ' purpose: "marketing", granted: true) { granted } }',
        {"c": customer_id},
        "service",
    )
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    consent = hub.rows(
        "SELECT channel, granted, changed_in FROM hub_consent WHERE customer_id = ?",
        (customer_id,),
    )
    assert [tuple(r) for r in consent] == [("sms", 0, "agent")]


def test_accepting_an_offering_offer_runs_the_plan_change_saga(
    hub: CampaignHub, customers: list[CustomerBundle]
) -> None:
    customer = _with_lines(customers)[32]
    msisdn = _line(customer)
    before = {r["event_id"] for r in hub.rows("SELECT event_id FROM hub_event")}
    _emit(hub, "boss", "UsageThresholdCrossedEvent", msisdn, percent=99)
    customer_id = _event_customer(hub, "usage.threshold_crossed", before)
    offer = _until(
        lambda: (o := hub.offer("data-topup-80", customer_id)) and o["state"] == "SENT" and o
    )
    answer = hub.graphql(
        'mutation($o: ID!) { acceptOffer(offerId: $o, idempotencyKey: "accept-0001")'
        " { state requestId } }",
        {"o": offer["id"]},
        "service",
    )
    accepted = answer["data"]["acceptOffer"]
    assert accepted["state"] == "ACCEPTED" and accepted["requestId"].startswith("plan_change-")
    request = _until(
        lambda: (
            (r := hub.rows("SELECT state FROM hub_request WHERE id = ?", (accepted["requestId"],)))
            and r[0]["state"] in ("CONFIRMED", "REJECTED", "COMPENSATED")
            and r[0]
        )
    )
    assert request["state"] in ("CONFIRMED", "REJECTED")  # the saga ran to an end
    report = hub.graphql(
        '{ campaignReport(campaignId: "data-topup-80") { matched sent accepted'
        " suppressed suppressedBy { guard count } convertedTreated uplift } }",
        purpose="service",
    )["data"]["campaignReport"]
    assert report["accepted"] >= 1 and report["convertedTreated"] >= 1
    assert report["matched"] >= report["sent"] >= 1
    # Not open any more: a second acceptance with another key is refused.
    again = hub.graphql(
        'mutation($o: ID!) { acceptOffer(offerId: $o, idempotencyKey: "accept-0002") { state } }',
        {"o": offer["id"]},
        "service",
    )
    assert again["data"]["acceptOffer"]["state"] == "ACCEPTED"


def _roaming_with_the_pump_off(
    hub: CampaignHub, customers: list[CustomerBundle], first: int
) -> tuple[list[str], list[str], dict]:
    """PUMP_EVENTS customers from ``first`` on: the hub restarted with its delivery pump off
    and a roaming event emitted for each line; (lines, their offer ids, the care store's
    message stats before)."""
    chosen = _with_lines(customers)[first : first + PUMP_EVENTS]
    assert len(chosen) == PUMP_EVENTS
    lines = [_line(c) for c in chosen]
    stats_before = httpx.get(f"{hub.sims.care}/_sim/messages/stats").json()
    stop(hub.process)
    hub.process = _start_on(
        {**hub.env, "SWITCHBOARD_CAMPAIGNS__DELIVERY_PUMP": "false"}, hub.log, hub.url
    )
    ids = [offer_id("roaming-welcome", _hub_id(hub, m)) for m in lines]
    for msisdn in lines:
        _emit(hub, "boss", "RoamingStartedEvent", msisdn)
    return lines, ids, stats_before


def test_sigkill_with_offers_reserved_but_not_started_delivers_each_once_after_restart(
    hub: CampaignHub, customers: list[CustomerBundle]
) -> None:
    """The decision commits and the events are marked handled without a workflow started: the
    gateway killed then loses no send. Here the pump is off until the kill (delivery_pump =
    false), so every offer is held RESERVED and not started when it dies."""
    lines, ids, stats_before = _roaming_with_the_pump_off(hub, customers, 300)
    marks = ",".join("?" * len(ids))
    held = _until(
        lambda: (
            (
                rows := hub.rows(
                    f"SELECT o.state, o.delivery_started_at, e.handled_at FROM hub_offer o"
                    f" JOIN hub_event e ON e.event_id = o.event_id WHERE o.id IN ({marks})",
                    tuple(ids),
                )
            )
            and len(rows) == PUMP_EVENTS
            and all(r["handled_at"] for r in rows)
            and rows
        ),
        60,
    )
    assert {(r["state"], r["delivery_started_at"]) for r in held} == {("RESERVED", None)}
    assert all(_messages(hub.sims, m) == [] for m in lines)
    hub.process.send_signal(signal.SIGKILL)
    hub.process.wait(timeout=10)
    hub.process = _start_on(hub.env, hub.log, hub.url)
    _each_sent_once(hub, ids, lines, stats_before, timeout_s=60)


def _each_sent_once(
    hub: CampaignHub, ids: list[str], lines: list[str], stats_before: dict, *, timeout_s: float
) -> None:
    """Every offer SENT, one message per line, and the care store's count of new messages
    the number of offers (no repeat, also after waiting for one)."""
    marks = ",".join("?" * len(ids))
    _until(
        lambda: (
            (rows := hub.rows(f"SELECT state FROM hub_offer WHERE id IN ({marks})", tuple(ids)))
            and all(r["state"] == "SENT" for r in rows)
        ),
        timeout_s,
    )
    for msisdn in lines:
        assert len(_messages(hub.sims, msisdn)) == 1, msisdn
    time.sleep(0.5)  # a second send would have come by now
    stats = httpx.get(f"{hub.sims.care}/_sim/messages/stats").json()
    assert stats["sent"] - stats_before["sent"] == len(ids)


def test_sigkill_in_the_middle_of_a_batch_delivery_sends_each_once_after_restart(
    hub: CampaignHub, customers: list[CustomerBundle]
) -> None:
    """One workflow delivers a claimed batch (marketing/delivery.py): killed while its send
    step is under way (the care system slowed, some of the batch's messages stored, not all),
    DBOS resumes it after the restart and the step sends again under the same keys: every
    line still has one message, and the care store counts no more new ones than offers."""
    lines, ids, stats_before = _roaming_with_the_pump_off(hub, customers, 250)
    marks = ",".join("?" * len(ids))
    _until(
        lambda: (
            len(
                hub.rows(
                    f"SELECT o.id FROM hub_offer o JOIN hub_event e ON e.event_id = o.event_id"
                    f" WHERE o.id IN ({marks}) AND o.state = 'RESERVED'"
                    f" AND e.handled_at IS NOT NULL",
                    tuple(ids),
                )
            )
            == PUMP_EVENTS
        ),
        60,
    )
    control = f"{hub.sims.care}/_sim/control"
    # Every care call slow, and the pump's yield off so that its batches are whole (16 and
    # 14 offers): the first message lands while the rest of its batch is still being sent,
    # never after a one-offer batch has already been recorded (which made the kill miss the
    # middle of the step in a busy CI run). Every call is slow but within the hub's timeout
    # for care (raised for this run: at its 2 s default, calls of 1.5-4 s mostly timed out,
    # so the step ended a moment after its first message and a loaded machine, running the
    # whole suite, killed too late). Between the first message and the end of the first
    # whole batch there are now seconds; the first message is seen in the care store's
    # count, one cheap request a poll.
    httpx.post(control, json={"latency_ms": [1500, 8000]}).raise_for_status()
    try:
        stop(hub.process)
        slow_care = {
            **hub.env,
            "SWITCHBOARD_CAMPAIGNS__DELIVERY_BUSY_WINDOW_S": "0",
            "SWITCHBOARD_CARE__TIMEOUT_S": "15",
        }
        hub.process = _start_on(slow_care, hub.log, hub.url)  # the pump on: batches start
        _until(lambda: _care_sent(hub.sims) > stats_before["sent"], 60)
        hub.process.send_signal(signal.SIGKILL)
        hub.process.wait(timeout=10)
    finally:
        httpx.post(control, json={"latency_ms": None}).raise_for_status()
    delivered = sum(bool(_messages(hub.sims, m)) for m in lines)
    assert delivered < PUMP_EVENTS, "all sent before the kill: the test proves nothing"
    assert not hub.rows(
        f"SELECT id FROM hub_offer WHERE id IN ({marks}) AND state = 'SENT'", tuple(ids)
    ), "a batch recorded before the kill: not the middle of its send step"
    hub.process = _start_on(hub.env, hub.log, hub.url)
    _each_sent_once(hub, ids, lines, stats_before, timeout_s=90)


def test_sigkill_with_200_events_in_flight_loses_none_and_sends_none_twice(
    hub: CampaignHub, customers: list[CustomerBundle]
) -> None:
    chosen = _with_lines(customers)[40 : 40 + KILL_EVENTS]
    assert len(chosen) == KILL_EVENTS
    lines = [_line(c) for c in chosen]
    stats_before = httpx.get(f"{hub.sims.care}/_sim/messages/stats").json()
    # BOSS keeps retrying while the gateway is down (a loaded machine restarts it slowly).
    policy = {"max_attempts": 1000, "backoff_s": 0.2, "max_backoff_s": 2.0}
    assert httpx.post(f"{hub.sims.boss}/_sim/events/control", json=policy).status_code == 200
    events_before = httpx.get(f"{hub.sims.boss}/_sim/events/stats").json()
    for msisdn in lines:
        _emit(hub, "boss", "LineResumedEvent", msisdn, days_off=120)
    _until(
        lambda: (
            len(
                hub.rows(
                    "SELECT id FROM hub_offer WHERE campaign = 'welcome-back' AND state = 'SENT'"
                )
            )
            >= 5
        ),
        60,
    )
    hub.process.send_signal(signal.SIGKILL)
    hub.process.wait(timeout=10)
    sent_at_kill = len(
        hub.rows("SELECT id FROM hub_offer WHERE campaign = 'welcome-back' AND state = 'SENT'")
    )
    assert sent_at_kill < KILL_EVENTS, "all sent before the kill: the test proves nothing"
    time.sleep(1.0)
    hub.process = _start_on(hub.env, hub.log, hub.url)
    _until(lambda: httpx.get(f"{hub.sims.boss}/_sim/events/stats").json()["pending"] == 0, 90)
    events_after = httpx.get(f"{hub.sims.boss}/_sim/events/stats").json()
    assert events_after["given_up"] == events_before["given_up"]
    stored = _until(
        lambda: (
            len(
                hub.rows(
                    "SELECT 1 FROM hub_event WHERE event_type = 'line.resumed'"
                    " AND handled_at IS NOT NULL"
                )
            )
            == KILL_EVENTS
        ),
        60,
    )
    assert stored
    done = _until(
        lambda: (
            (rows := hub.rows("SELECT state FROM hub_offer WHERE campaign = 'welcome-back'"))
            and len(rows) == KILL_EVENTS
            and all(r["state"] in ("SENT", "SUPPRESSED", "FAILED") for r in rows)
            and rows
        ),
        120,
    )
    states = [r["state"] for r in done]
    assert states.count("SENT") == KILL_EVENTS, states  # none lost, none refused
    # Every line got exactly one welcome-back SMS, whatever was repeated around the kill.
    for msisdn in lines:
        welcome = [m for m in _messages(hub.sims, msisdn) if "Welcome back" in m["content"]]
        assert len(welcome) == 1, msisdn
    stats = httpx.get(f"{hub.sims.care}/_sim/messages/stats").json()
    assert stats["sent"] - stats_before["sent"] == KILL_EVENTS
