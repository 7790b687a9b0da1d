"""Durable workflows end to end: real gateway (with DBOS inside), real simulators, on SQLite and
on PostgreSQL. Each backend gets its own simulators (the workflows change their data) and its
own gateway subprocess, which the crash tests SIGKILL and restart on the same databases."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from gateway.policy_store import DEFAULT_POLICY_FILE
from orchestration.engine import system_database_url
from simulators.dataset import CustomerBundle
from simulators.seed import seed_dataset
from tests.conftest import fresh_postgres_database
from tests.harness import SimulatorUrls, gateway_env, issue_key, running_simulators
from tests.verification_helpers import otp_token
from tests.workflow_hub import (
    Hub,
    active_line,
    billing_adjustments,
    boss_orders,
    care_ticket,
    care_tickets,
    clean_customers,
    eventually,
    hub_id,
    other_offering,
    request_state,
    wait_state,
)

SEED = 5151
CUSTOMERS = 80
ADJUST = "POST /tmf-api/prepayBalanceManagement/v4/adjustBalance"
TICKET_POST = "POST /tmf-api/troubleTicket/v4/troubleTicket"

# Channels that act for their OTP-verified customer only (rows: verified_customer).
SELF_SERVICE = ("app", "web")

CHANGE_PLAN = """
mutation($input: ChangePlanInput!) {
  changePlan(input: $input) { id kind state status customerId }
}"""
FILE_COMPLAINT = """
mutation($input: FileComplaintInput!) {
  fileComplaint(input: $input) { id kind state status }
}"""
FEEDBACK = """
mutation($id: ID!, $rating: Int!, $key: String!) {
  submitComplaintFeedback(requestId: $id, rating: $rating, idempotencyKey: $key) { id state }
}"""
RESOLVE = """
mutation($id: ID!, $key: String!, $credit: String) {
  resolveComplaint(requestId: $id, idempotencyKey: $key, credit: $credit) { id state }
}"""
START_SERVICE = """
mutation($input: StartServiceRequestInput!) {
  startServiceRequest(input: $input) { id kind state status }
}"""
CONTINUE = """
mutation($id: ID!, $card: String!, $key: String!) {
  continueRequest(requestId: $id, idCardNumber: $card, idempotencyKey: $key) { id state }
}"""


def new_key() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


class Flows:
    """One backend's world: its simulators, their data dir, its hub, its customers."""

    def __init__(self, sims: SimulatorUrls, data_dir: Path, hub: Hub) -> None:
        self.sims = sims
        self.data_dir = data_dir
        self.hub = hub
        self._customers = clean_customers(SEED, CUSTOMERS)
        self._verifications: dict[tuple[str, str], str] = {}
        self.http = httpx.Client(timeout=10)

    def customer(self) -> CustomerBundle:
        """A customer no other test of this module has used."""
        return next(self._customers)

    def verify(self, bundle: CustomerBundle, channel: str = "app") -> str:
        """An OTP verification of this customer in this channel (X-Verification), obtained as
        the customer would: the code read off the care simulator's outbox. The app and the web
        act only for the customer they verified (rows: verified_customer)."""
        customer_id = hub_id(self.hub, active_line(bundle).msisdn)
        if (customer_id, channel) not in self._verifications:
            self._verifications[customer_id, channel] = otp_token(
                self.hub, self.sims, bundle, customer_id, channel
            )
        return self._verifications[customer_id, channel]

    def control(self, system: str, **state: object) -> None:
        self.http.post(f"{self.sims.of(system)}/_sim/control", json=state).raise_for_status()

    def calls(self, system: str) -> dict[str, int]:
        return self.http.get(f"{self.sims.of(system)}/_sim/stats").json()["calls"]

    def reset(self) -> None:
        for system in ("boss", "billing", "care"):
            self.http.post(f"{self.sims.of(system)}/_sim/reset").raise_for_status()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def flows(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flows]:
    state = tmp_path_factory.mktemp(f"flows-{request.param}")
    data_dir = state / "simdata"
    data_dir.mkdir()
    seed_dataset(data_dir, CUSTOMERS, SEED)
    policy_file = state / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY_FILE.read_text())
    with ExitStack() as stack:
        if request.param == "postgres":
            database_url = stack.enter_context(fresh_postgres_database("switchboard_flows"))
        else:
            database_url = f"sqlite+aiosqlite:///{state / 'hub.db'}"
        with running_simulators(data_dir) as sims:
            env = gateway_env(
                sims,
                database_url,
                SWITCHBOARD_POLICY_FILE=str(policy_file),
                SWITCHBOARD_CACHE__ENABLED="false",
                SWITCHBOARD_BOSS__TIMEOUT_S="5",
                SWITCHBOARD_BILLING__TIMEOUT_S="5",
                SWITCHBOARD_CARE__TIMEOUT_S="5",
                # Injected failures must not open a circuit the compensation then needs.
                SWITCHBOARD_BOSS__BREAKER_FAILURE_THRESHOLD="100",
                SWITCHBOARD_BILLING__BREAKER_FAILURE_THRESHOLD="100",
                SWITCHBOARD_WORKFLOWS__COMPLAINT_SLA_S="3",
                SWITCHBOARD_WORKFLOWS__FEEDBACK_WAIT_S="120",
                SWITCHBOARD_WORKFLOWS__EXECUTOR_ID=f"test-{request.param}",
            )
            hub = Hub(env=env, log_path=state / "gateway.log")
            hub.keys = {
                channel: issue_key(env, channel=channel, role=role, scopes=scopes)
                for channel, role, scopes in (
                    ("agent", "agent", ("customer:read",)),
                    ("app", "customer", ("customer:read",)),
                    ("store", "clerk", ("customer:read",)),
                    ("web", "customer", ("customer:read",)),
                    ("partner", "partner", ("customer:read",)),
                    ("audit", "auditor", ()),
                )
            }
            hub.keys["partner_writer"] = issue_key(
                env,
                channel="partner",
                role="partner",
                scopes=("customer:read", "complaints:write", "orders:write"),
            )
            hub.start()
            try:
                yield Flows(sims, data_dir, hub)
            finally:
                hub.stop()


@pytest.fixture
def world(flows: Flows) -> Iterator[Flows]:
    flows.reset()
    yield flows
    flows.reset()


def start_plan_change(world: Flows, bundle: CustomerBundle, *, channel: str = "app") -> str:
    line = active_line(bundle)
    customer_id = hub_id(world.hub, line.msisdn)
    answer = world.hub.data(
        CHANGE_PLAN,
        {
            "input": {
                "customerId": customer_id,
                "msisdn": line.msisdn,
                "offeringId": other_offering(line.offering_id),
                "idempotencyKey": new_key(),
            }
        },
        channel=channel,
        verification=world.verify(bundle, channel) if channel in SELF_SERVICE else None,
    )["changePlan"]
    assert answer["kind"] == "plan_change"
    assert answer["customerId"] == customer_id
    return answer["id"]


# --- plan change ------------------------------------------------------------------------------


def test_plan_change_happy_path(world: Flows) -> None:
    bundle = world.customer()
    line = active_line(bundle)
    request_id = start_plan_change(world, bundle)
    done = wait_state(world.hub, request_id, "CONFIRMED", "COMPENSATED", "REJECTED")
    assert done["state"] == "CONFIRMED", done["history"]
    assert done["status"] == "DONE"
    states = [e["state"] for e in done["history"]]
    assert states[:4] == ["RECEIVED", "ELIGIBLE", "ARREARS_CLEAR", "ORDER_PLACED"]
    assert states[-1] == "CONFIRMED"
    assert done["notifications"][-1]["kind"] == "PLAN_CHANGED"
    assert done["notifications"][-1]["channel"] == "app"
    orders = boss_orders(world.data_dir, line.subscriber_no)
    assert orders == [(done["detail"]["orderId"], "COMPLETED")]
    assert len(billing_adjustments(world.data_dir, request_id)) == 1
    # The line now shows the new offering through the graph (nothing stale).
    lines = world.hub.data(
        "query($m: String!) { customerByMsisdn(msisdn: $m) {"
        " subscriptions { msisdn offering { id } } } }",
        {"m": line.msisdn},
    )["customerByMsisdn"]["subscriptions"]
    moved = next(s for s in lines if s["msisdn"] == line.msisdn)
    assert moved["offering"]["id"] == other_offering(line.offering_id)


def test_plan_change_compensates_when_a_later_step_fails(world: Flows) -> None:
    bundle = world.customer()
    line = active_line(bundle)
    # Billing answers slowly; once the order is placed, BOSS starts failing to read orders
    # back: the step after the proration fails, and the saga compensates both.
    world.control("billing", latency_ms=[2500, 2500])
    request_id = start_plan_change(world, bundle)
    wait_state(world.hub, request_id, "ORDER_PLACED")
    world.control("boss", fail_operations=["QueryOrder"])
    world.control("billing", latency_ms=None)
    eventually(
        lambda: (
            "COMPENSATING" in [e["state"] for e in request_state(world.hub, request_id)["history"]]
        ),
        "the compensation to start",
    )
    # BOSS recovers: the compensation's cancel (retried on a durable timer) goes through.
    world.control("boss", fail_operations=[])
    done = wait_state(world.hub, request_id, "COMPENSATED")
    states = [e["state"] for e in done["history"]]
    assert states.index("ORDER_PLACED") < states.index("ADJUSTED") < states.index("COMPENSATING")
    assert states[-3:] == ["ADJUSTMENT_REVERSED", "ORDER_CANCELLED", "COMPENSATED"]
    assert done["status"] == "COMPENSATED"
    assert done["notifications"][-1]["kind"] == "PLAN_CHANGE_FAILED"
    # The simulators' own records: the order is cancelled, the adjustment reversed.
    assert boss_orders(world.data_dir, line.subscriber_no) == [
        (done["detail"]["orderId"], "CANCELLED")
    ]
    adjustments = [json.loads(doc) for _, doc in billing_adjustments(world.data_dir, request_id)]
    assert [a["adjustType"] for a in adjustments] == ["debit", "credit"]
    assert adjustments[0]["amount"] == adjustments[1]["amount"]


def test_plan_change_survives_a_kill_mid_step(world: Flows) -> None:
    bundle = world.customer()
    line = active_line(bundle)
    # Billing answers slowly: the kill lands while the proration call is in flight.
    world.control("billing", latency_ms=[1500, 1500])
    request_id = start_plan_change(world, bundle)
    eventually(lambda: world.calls("billing").get(ADJUST, 0) >= 1, "the adjustment call")
    world.hub.kill()
    world.control("billing", latency_ms=None)
    world.hub.start()
    done = wait_state(world.hub, request_id, "CONFIRMED", "COMPENSATED", "REJECTED")
    assert done["state"] == "CONFIRMED", done["history"]
    # Exactly once, from the systems' own records: one order, one adjustment.
    assert boss_orders(world.data_dir, line.subscriber_no) == [
        (done["detail"]["orderId"], "COMPLETED")
    ]
    assert len(billing_adjustments(world.data_dir, request_id)) == 1
    assert [e["state"] for e in done["history"]].count("ORDER_PLACED") == 1


# --- complaints -------------------------------------------------------------------------------


def file_complaint(
    world: Flows, bundle: CustomerBundle, category: str, *, channel: str = "app", key: str = ""
) -> str:
    customer_id = hub_id(world.hub, active_line(bundle).msisdn)
    return world.hub.data(
        FILE_COMPLAINT,
        {
            "input": {
                "customerId": customer_id,
                "category": category,
                "description": "No signal at home since Monday.",
                "idempotencyKey": key or new_key(),
            }
        },
        channel=channel,
        verification=world.verify(bundle, channel) if channel in SELF_SERVICE else None,
    )["fileComplaint"]["id"]


def ticket_notes(world: Flows, ticket_id: str) -> list[str]:
    return [n["text"] for n in json.loads(care_ticket(world.data_dir, ticket_id)[2])]


def test_complaint_resolved_by_rule_waits_for_feedback_then_archives(world: Flows) -> None:
    bundle = world.customer()
    request_id = file_complaint(world, bundle, "outage_credit")
    waiting = wait_state(world.hub, request_id, "FEEDBACK_REQUESTED")
    assert waiting["status"] == "WAITING"
    assert waiting["waitingFor"] == "FEEDBACK"
    assert waiting["notifications"][-1] == {
        "channel": "app",
        "kind": "FEEDBACK_REQUESTED",
        "detail": {},
    }
    # Any channel serving the customer sees it open, without asking the customer.
    open_ids = [
        r["id"]
        for r in world.hub.data(
            "query($c: ID!) { openRequests(customerId: $c) { id waitingFor } }",
            {"c": waiting["customerId"]},
            channel="store",
        )["openRequests"]
    ]
    assert request_id in open_ids
    world.hub.data(
        FEEDBACK,
        {"id": request_id, "rating": 4, "key": new_key()},
        channel="app",
        verification=world.verify(bundle),
    )
    done = wait_state(world.hub, request_id, "ARCHIVED")
    assert done["status"] == "DONE"
    states = [e["state"] for e in done["history"]]
    assert states == [
        "RECEIVED",
        "CLASSIFIED",
        "INVESTIGATED",
        "RESOLVED",
        "FEEDBACK_REQUESTED",
        "FEEDBACK_RECEIVED",
        "ARCHIVED",
    ]
    # Care's ticket mirrors every state change once; billing granted the rule's credit once.
    ticket_id = done["detail"]["ticketId"]
    status, _priority, _ = care_ticket(world.data_dir, ticket_id)
    assert status == "closed"
    assert ticket_notes(world, ticket_id) == [
        "classified: outage_credit",
        "investigated: facts gathered",
        "resolved",
        "customer feedback: 4/5",
        "archived",
    ]
    credits = [json.loads(doc) for _, doc in billing_adjustments(world.data_dir, request_id)]
    assert [(c["adjustType"], c["amount"]["value"]) for c in credits] == [("credit", 10.0)]


def test_complaint_sla_breach_escalates_then_an_agent_resolves(world: Flows) -> None:
    bundle = world.customer()
    request_id = file_complaint(world, bundle, "network")
    # Nobody acts within the (3 s, test-configured) SLA: the recv times out and escalates.
    escalated = wait_state(world.hub, request_id, "ESCALATED")
    assert escalated["waitingFor"] == "AGENT"
    assert {
        "channel": "agent",
        "kind": "COMPLAINT_ESCALATED",
        "detail": {"reason": "SLA_BREACHED"},
    } in escalated["notifications"]
    ticket_id = escalated["detail"]["ticketId"]
    assert care_ticket(world.data_dir, ticket_id)[1] == "high"
    # The agent console resolves it with a credit.
    world.hub.data(RESOLVE, {"id": request_id, "key": new_key(), "credit": "5.00"})
    resolved = wait_state(world.hub, request_id, "FEEDBACK_REQUESTED")
    resolution = next(e for e in resolved["history"] if e["state"] == "RESOLVED")["detail"]
    assert resolution["credit"] == "5.00"
    credits = [json.loads(doc) for _, doc in billing_adjustments(world.data_dir, request_id)]
    assert [(c["adjustType"], c["amount"]["value"]) for c in credits] == [("credit", 5.0)]
    assert care_ticket(world.data_dir, ticket_id)[0] == "resolved"


def test_complaint_survives_a_kill_mid_step(world: Flows) -> None:
    bundle = world.customer()
    world.verify(bundle)  # before care (which sends the OTP) is slowed down
    # Care answers slowly: the kill lands while the ticket is being opened.
    world.control("care", latency_ms=[1500, 1500])
    request_id = file_complaint(world, bundle, "outage_credit")
    eventually(lambda: world.calls("care").get(TICKET_POST, 0) >= 1, "the ticket call")
    world.hub.kill()
    world.control("care", latency_ms=None)
    world.hub.start()
    waiting = wait_state(world.hub, request_id, "FEEDBACK_REQUESTED")
    world.hub.data(
        FEEDBACK,
        {"id": request_id, "rating": 5, "key": new_key()},
        channel="app",
        verification=world.verify(bundle),
    )
    done = wait_state(world.hub, request_id, "ARCHIVED")
    assert waiting["detail"]["ticketId"] == done["detail"]["ticketId"]
    # One ticket in care, one credit in billing, each note once.
    assert care_tickets(world.data_dir, request_id) == [(done["detail"]["ticketId"],)]
    assert len(billing_adjustments(world.data_dir, request_id)) == 1
    notes = ticket_notes(world, done["detail"]["ticketId"])
    assert len(notes) == len(set(notes))


# --- hand-off between channels ----------------------------------------------------------------


def start_service_request(world: Flows, bundle: CustomerBundle) -> str:
    customer_id = hub_id(world.hub, active_line(bundle).msisdn)
    return world.hub.data(
        START_SERVICE,
        {
            "input": {
                "customerId": customer_id,
                "service": "SIM_REPLACEMENT",
                "idempotencyKey": new_key(),
            }
        },
        channel="app",
        verification=world.verify(bundle),
    )["startServiceRequest"]["id"]


def test_handoff_from_app_to_store(world: Flows) -> None:
    bundle = world.customer()
    stranger = world.customer()
    request_id = start_service_request(world, bundle)
    waiting = wait_state(world.hub, request_id, "AWAITING_ID_CHECK")
    assert waiting["waitingFor"] == "STORE_ID_CHECK"
    assert waiting["notifications"][-1]["kind"] == "VISIT_STORE"
    # The store sees the request and its context without asking the customer again: the
    # clerk presents the verification the customer obtained in the app (continuity: the store
    # accepts the app's OTP for half an hour).
    app_verification = world.verify(bundle)
    seen = world.hub.data(
        "query($c: ID!) { openRequests(customerId: $c) { id kind channel waitingFor"
        " history { state channel } } }",
        {"c": waiting["customerId"]},
        channel="store",
        verification=app_verification,
    )["openRequests"]
    mine = next(r for r in seen if r["id"] == request_id)
    assert (mine["kind"], mine["channel"]) == ("handoff", "app")
    assert mine["waitingFor"] == "STORE_ID_CHECK"
    assert [e["state"] for e in mine["history"]][-1] == "AWAITING_ID_CHECK"
    # Only the store may continue it.
    refused = world.hub.post(
        CONTINUE,
        {"id": request_id, "card": bundle.customer.cert_no, "key": new_key()},
        channel="app",
    )
    assert refused["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
    # Another person's ID card is refused, and the request keeps waiting.
    wrong = world.hub.post(
        CONTINUE,
        {"id": request_id, "card": stranger.customer.cert_no, "key": new_key()},
        channel="store",
    )
    assert wrong["errors"][0]["extensions"]["code"] == "ID_CHECK_FAILED"
    assert stranger.customer.cert_no not in json.dumps(wrong)
    assert request_state(world.hub, request_id)["state"] == "AWAITING_ID_CHECK"
    world.hub.data(
        CONTINUE,
        {"id": request_id, "card": bundle.customer.cert_no, "key": new_key()},
        channel="store",
        verification=app_verification,
    )
    done = wait_state(world.hub, request_id, "FULFILLED")
    verified = next(e for e in done["history"] if e["state"] == "ID_VERIFIED")
    assert verified["channel"] == "store"
    assert done["notifications"][-1] == {
        "channel": "app",
        "kind": "REQUEST_FULFILLED",
        "detail": {},
    }
    assert care_ticket(world.data_dir, done["detail"]["ticketId"])[0] == "resolved"


def test_handoff_survives_a_kill_mid_step(world: Flows) -> None:
    bundle = world.customer()
    world.verify(bundle)  # before care (which sends the OTP) is slowed down
    world.control("care", latency_ms=[1500, 1500])
    request_id = start_service_request(world, bundle)
    eventually(lambda: world.calls("care").get(TICKET_POST, 0) >= 1, "the ticket call")
    world.hub.kill()
    world.control("care", latency_ms=None)
    world.hub.start()
    wait_state(world.hub, request_id, "AWAITING_ID_CHECK")
    world.hub.data(
        CONTINUE,
        {"id": request_id, "card": bundle.customer.cert_no, "key": new_key()},
        channel="store",
    )
    done = wait_state(world.hub, request_id, "FULFILLED")
    assert care_tickets(world.data_dir, request_id) == [(done["detail"]["ticketId"],)]


# --- idempotency, validation, scopes ----------------------------------------------------------


def test_same_key_same_input_same_request_other_input_refused(world: Flows) -> None:
    bundle = world.customer()
    line = active_line(bundle)
    customer_id = hub_id(world.hub, line.msisdn)
    key = new_key()
    variables = {
        "input": {
            "customerId": customer_id,
            "msisdn": line.msisdn,
            "offeringId": other_offering(line.offering_id),
            "idempotencyKey": key,
        }
    }
    on_web = world.verify(bundle, "web")
    first = world.hub.data(CHANGE_PLAN, variables, channel="web", verification=on_web)
    again = world.hub.data(CHANGE_PLAN, variables, channel="web", verification=on_web)
    first, again = first["changePlan"]["id"], again["changePlan"]["id"]
    assert again == first
    variables["input"]["offeringId"] = "OF0009" if line.offering_id != "OF0009" else "OF0010"
    reused = world.hub.post(CHANGE_PLAN, variables, channel="web", verification=on_web)
    assert reused["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    wait_state(world.hub, first, "CONFIRMED")
    assert len(boss_orders(world.data_dir, line.subscriber_no)) == 1
    # Another credential's identical key is its own.
    other = world.hub.data(
        CHANGE_PLAN, variables, channel="app", verification=world.verify(bundle)
    )["changePlan"]["id"]
    assert other != first


def test_bad_input_is_refused_with_a_code_and_starts_nothing(world: Flows) -> None:
    bundle = world.customer()
    stranger = world.customer()
    line = active_line(bundle)
    customer_id = hub_id(world.hub, line.msisdn)
    good = {
        "customerId": customer_id,
        "msisdn": line.msisdn,
        "offeringId": other_offering(line.offering_id),
        "idempotencyKey": new_key(),
    }
    for change in (
        {"msisdn": "12345"},
        {"msisdn": active_line(stranger).msisdn},
        {"offeringId": "OF9999"},
        {"customerId": "cus_nothex"},
        {"idempotencyKey": "short"},
    ):
        answer = world.hub.post(
            CHANGE_PLAN,
            {"input": {**good, **change}},
            channel="app",
            verification=world.verify(bundle),
        )
        assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", change
        assert line.msisdn not in answer["errors"][0]["message"]
    complaint = world.hub.post(
        FILE_COMPLAINT,
        {
            "input": {
                "customerId": customer_id,
                "category": "weather",
                "description": "x",
                "idempotencyKey": new_key(),
            }
        },
        channel="app",
        verification=world.verify(bundle),
    )
    assert complaint["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    for credit in ("NaN", "5.001", "-3", "9999"):
        resolved = world.hub.post(
            RESOLVE, {"id": "complaint-" + "0" * 24, "key": new_key(), "credit": credit}
        )
        assert resolved["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", credit
    open_requests = world.hub.data(
        "query($c: ID!) { openRequests(customerId: $c) { id } }", {"c": customer_id}
    )["openRequests"]
    assert open_requests == []
    assert boss_orders(world.data_dir, line.subscriber_no) == []


def test_partner_needs_the_scope_of_each_mutation(world: Flows) -> None:
    bundle = world.customer()
    line = active_line(bundle)
    customer_id = hub_id(world.hub, line.msisdn)
    plan = {
        "input": {
            "customerId": customer_id,
            "msisdn": line.msisdn,
            "offeringId": other_offering(line.offering_id),
            "idempotencyKey": new_key(),
        }
    }
    refused = world.hub.post(CHANGE_PLAN, plan, channel="partner")
    assert refused["errors"][0]["extensions"]["code"] == "SCOPE_REQUIRED"
    assert "orders:write" in refused["errors"][0]["message"]
    started = world.hub.data(CHANGE_PLAN, plan, channel="partner_writer")["changePlan"]["id"]
    # A partner follows its own requests, and no other credential's.
    read = "query($id: ID!) { request(id: $id) { id state } }"
    assert world.hub.data(read, {"id": started}, channel="partner_writer")["request"]["id"]
    other = world.hub.post(read, {"id": started}, channel="partner")
    assert other["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # Agent-console actions and store steps are not the partner's, whatever its scopes.
    for document, variables in (
        (RESOLVE, {"id": "complaint-" + "0" * 24, "key": new_key()}),
        (CONTINUE, {"id": "handoff-" + "0" * 24, "card": "1" * 18, "key": new_key()}),
    ):
        answer = world.hub.post(document, variables, channel="partner_writer")
        assert answer["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"


# --- row scope and verification: the app and the web act for their verified customer only ----


def code_of(answer: dict) -> str:
    return answer["errors"][0]["extensions"]["code"]


@pytest.mark.parametrize("channel", SELF_SERVICE)
def test_a_self_service_channel_acts_only_for_the_customer_it_verified(
    world: Flows, channel: str
) -> None:
    bundle = world.customer()
    stranger = world.customer()
    mine = world.verify(bundle, channel)
    stranger_id = hub_id(world.hub, active_line(stranger).msisdn)
    # The stranger has a complaint waiting for feedback, filed at the store (no row scope), so
    # that the channel under test has nothing of the stranger's in the access log but refusals.
    theirs = file_complaint(world, stranger, "outage_credit", channel="store")
    wait_state(world.hub, theirs, "FEEDBACK_REQUESTED")
    line = active_line(stranger)
    refusals = {
        "changePlan": world.hub.post(
            CHANGE_PLAN,
            {
                "input": {
                    "customerId": stranger_id,
                    "msisdn": line.msisdn,
                    "offeringId": other_offering(line.offering_id),
                    "idempotencyKey": new_key(),
                }
            },
            channel=channel,
            verification=mine,
        ),
        "fileComplaint": world.hub.post(
            FILE_COMPLAINT,
            {
                "input": {
                    "customerId": stranger_id,
                    "category": "network",
                    "description": "Not mine to file.",
                    "idempotencyKey": new_key(),
                }
            },
            channel=channel,
            verification=mine,
        ),
        "startServiceRequest": world.hub.post(
            START_SERVICE,
            {
                "input": {
                    "customerId": stranger_id,
                    "service": "SIM_REPLACEMENT",
                    "idempotencyKey": new_key(),
                }
            },
            channel=channel,
            verification=mine,
        ),
        "openRequests": world.hub.post(
            "query($c: ID!) { openRequests(customerId: $c) { id } }",
            {"c": stranger_id},
            channel=channel,
            verification=mine,
        ),
        "request": world.hub.post(
            "query($id: ID!) { request(id: $id) { id detail } }",
            {"id": theirs},
            channel=channel,
            verification=mine,
        ),
        "submitComplaintFeedback": world.hub.post(
            FEEDBACK,
            {"id": theirs, "rating": 1, "key": new_key()},
            channel=channel,
            verification=mine,
        ),
    }
    for operation, answer in refusals.items():
        assert code_of(answer) == "CUSTOMER_NOT_IN_SCOPE", (operation, answer)
        assert answer["data"] is None or not any(answer["data"].values()), operation
    # Nothing moved: the stranger has only the store complaint, still waiting for feedback.
    left = world.hub.data(
        "query($c: ID!) { openRequests(customerId: $c) { id state } }", {"c": stranger_id}
    )["openRequests"]
    assert left == [{"id": theirs, "state": "FEEDBACK_REQUESTED"}]
    assert boss_orders(world.data_dir, line.subscriber_no) == []
    # The access log names the stranger (as a keyed hash) on each refused attempt.
    logged = world.hub.data(
        "query($f: AuditFilter) { auditLog(filter: $f, first: 50) { nodes { code outcome } } }",
        {"f": {"customerId": stranger_id, "channel": channel}},
        channel="audit",
    )["auditLog"]["nodes"]
    assert [n["code"] for n in logged] == ["CUSTOMER_NOT_IN_SCOPE"] * len(refusals)
    # Reading the stranger is refused at its path too (the rule the workflow roots share).
    read = world.hub.post(
        "query($c: ID!) { customer(id: $c) { id } }",
        {"c": stranger_id},
        channel=channel,
        verification=mine,
    )
    assert code_of(read) == "CUSTOMER_NOT_IN_SCOPE", read
    assert read["data"] == {"customer": None}
    # The channel's own customer is served with the same verification.
    own_id = hub_id(world.hub, active_line(bundle).msisdn)
    assert (
        world.hub.data(
            "query($c: ID!) { openRequests(customerId: $c) { id } }",
            {"c": own_id},
            channel=channel,
            verification=mine,
        )["openRequests"]
        == []
    )


@pytest.mark.parametrize("channel", SELF_SERVICE)
def test_a_self_service_channel_needs_a_verification(world: Flows, channel: str) -> None:
    bundle = world.customer()
    line = active_line(bundle)
    customer_id = hub_id(world.hub, line.msisdn)
    for document, variables in (
        (
            CHANGE_PLAN,
            {
                "input": {
                    "customerId": customer_id,
                    "msisdn": line.msisdn,
                    "offeringId": other_offering(line.offering_id),
                    "idempotencyKey": new_key(),
                }
            },
        ),
        (
            FILE_COMPLAINT,
            {
                "input": {
                    "customerId": customer_id,
                    "category": "network",
                    "description": "No signal.",
                    "idempotencyKey": new_key(),
                }
            },
        ),
        ("query($c: ID!) { openRequests(customerId: $c) { id } }", {"c": customer_id}),
        ("query($id: ID!) { request(id: $id) { id } }", {"id": "complaint-" + "0" * 24}),
        ("query($c: ID!) { customer(id: $c) { id } }", {"c": customer_id}),
    ):
        answer = world.hub.post(document, variables, channel=channel)
        assert code_of(answer) == "VERIFICATION_REQUIRED", answer
        assert answer["errors"][0]["extensions"]["required"] == "otp"
    # An unknown verification is refused outright, like on every other root.
    forged = world.hub.post(
        "query($c: ID!) { openRequests(customerId: $c) { id } }",
        {"c": customer_id},
        channel=channel,
        verification="sbv_" + "x" * 32,
    )
    assert code_of(forged) == "VERIFICATION_INVALID"
    # Nothing started.
    assert (
        world.hub.data(
            "query($c: ID!) { openRequests(customerId: $c) { id } }", {"c": customer_id}
        )["openRequests"]
        == []
    )
    assert boss_orders(world.data_dir, line.subscriber_no) == []


# --- subscriptions ----------------------------------------------------------------------------


def _ws_url(world: Flows) -> str:
    return world.hub.url.replace("http://", "ws://") + "/graphql"


def test_subscription_sees_the_request_move(world: Flows) -> None:
    bundle = world.customer()
    customer_id = hub_id(world.hub, active_line(bundle).msisdn)
    # The app's verification on the upgrade request, next to its key.
    with connect(
        _ws_url(world),
        subprotocols=["graphql-transport-ws"],
        additional_headers={
            "X-Api-Key": world.hub.keys["app"],
            "X-Verification": world.verify(bundle),
        },
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription($c: ID!) { requestUpdates(customerId: $c)"
                        " { requestId state channel } }",
                        "variables": {"c": customer_id},
                    },
                }
            )
        )
        request_id = ""
        seen: list[str] = []
        while "ARCHIVED" not in seen:
            if not request_id:
                request_id = file_complaint(world, bundle, "outage_credit")
            message = json.loads(ws.recv(timeout=30))
            assert message["type"] == "next", message
            update = message["payload"]["data"]["requestUpdates"]
            assert update["requestId"] == request_id
            seen.append(update["state"])
            if update["state"] == "FEEDBACK_REQUESTED":
                world.hub.data(
                    FEEDBACK,
                    {"id": request_id, "rating": 3, "key": new_key()},
                    channel="app",
                    verification=world.verify(bundle),
                )
    # Where the request stood when the subscription went live, then every change, in order.
    every_state = [
        "RECEIVED",
        "CLASSIFIED",
        "INVESTIGATED",
        "RESOLVED",
        "FEEDBACK_REQUESTED",
        "FEEDBACK_RECEIVED",
        "ARCHIVED",
    ]
    assert seen == every_state[every_state.index(seen[0]) :]


def test_websocket_without_a_valid_key_is_refused(world: Flows) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    with pytest.raises(InvalidStatus):
        connect(
            _ws_url(world),
            subprotocols=["graphql-transport-ws"],
            additional_headers={"X-Api-Key": "sb_nope.nothing"},
            open_timeout=10,
        )
    with connect(_ws_url(world), subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": "sb_nope.x"}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    # The key in connection_init works, and the channel's rules still apply.
    with connect(_ws_url(world), subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"apiKey": world.hub.keys["partner"]}}
            )
        )
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": 'subscription { requestUpdates(requestId: "x") { state } }'
                    },
                }
            )
        )
        message = json.loads(ws.recv(timeout=10))
        assert message["type"] in ("error", "next")
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"


def _first_answer(ws, operation_id: str, query: str, variables: dict) -> dict:
    """Subscribe and return the first message about this operation."""
    ws.send(
        json.dumps(
            {
                "id": operation_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables},
            }
        )
    )
    while True:
        message = json.loads(ws.recv(timeout=10))
        if message.get("id") == operation_id:
            return message


def _ws_error_code(message: dict) -> str:
    assert message["type"] in ("error", "next"), message
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    return errors[0]["extensions"]["code"]


UPDATES_OF_CUSTOMER = "subscription($c: ID!) { requestUpdates(customerId: $c) { state } }"
UPDATES_OF_REQUEST = "subscription($r: ID!) { requestUpdates(requestId: $r) { state } }"
NOTICES_OF_CUSTOMER = "subscription($c: ID!) { channelNotifications(customerId: $c) { kind } }"


def test_an_app_subscription_follows_its_verified_customer_only(world: Flows) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    bundle = world.customer()
    stranger = world.customer()
    mine = world.verify(bundle)
    own_id = hub_id(world.hub, active_line(bundle).msisdn)
    stranger_id = hub_id(world.hub, active_line(stranger).msisdn)
    theirs = file_complaint(world, stranger, "outage_credit", channel="web")
    with connect(
        _ws_url(world),
        subprotocols=["graphql-transport-ws"],
        additional_headers={"X-Api-Key": world.hub.keys["app"], "X-Verification": mine},
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        for operation_id, (query, variables) in enumerate(
            (
                (UPDATES_OF_CUSTOMER, {"c": stranger_id}),
                (UPDATES_OF_REQUEST, {"r": theirs}),
                (NOTICES_OF_CUSTOMER, {"c": stranger_id}),
            ),
            start=1,
        ):
            answer = _first_answer(ws, str(operation_id), query, variables)
            assert _ws_error_code(answer) == "CUSTOMER_NOT_IN_SCOPE", (query, answer)
    # Without a verification the app may not subscribe at all, not even to a customer.
    with connect(
        _ws_url(world),
        subprotocols=["graphql-transport-ws"],
        additional_headers={"X-Api-Key": world.hub.keys["app"]},
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        for operation_id, (query, variables) in enumerate(
            ((UPDATES_OF_CUSTOMER, {"c": own_id}), (NOTICES_OF_CUSTOMER, {"c": own_id})),
            start=1,
        ):
            answer = _first_answer(ws, str(operation_id), query, variables)
            assert _ws_error_code(answer) == "VERIFICATION_REQUIRED", (query, answer)
    # A verification that is not one: refused on the upgrade with the coded answer...
    forged = "sbv_" + "x" * 32
    with pytest.raises(InvalidStatus) as refused:
        connect(
            _ws_url(world),
            subprotocols=["graphql-transport-ws"],
            additional_headers={"X-Api-Key": world.hub.keys["app"], "X-Verification": forged},
            open_timeout=10,
        )
    assert refused.value.response.status_code == 401
    assert b"VERIFICATION_INVALID" in refused.value.response.body
    # ...and in connection_init, by closing the connection (4403, as for a bad key).
    with connect(_ws_url(world), subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "connection_init",
                    "payload": {"apiKey": world.hub.keys["app"], "X-Verification": forged},
                }
            )
        )
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    # The key and the verification both in connection_init: the app follows its customer.
    with connect(_ws_url(world), subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "connection_init",
                    "payload": {"apiKey": world.hub.keys["app"], "X-Verification": mine},
                }
            )
        )
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        request_id = file_complaint(world, bundle, "outage_credit")
        answer = _first_answer(ws, "1", UPDATES_OF_REQUEST, {"r": request_id})
        assert answer["type"] == "next", answer
        assert answer["payload"]["data"]["requestUpdates"]["state"] == "RECEIVED"


def test_agent_console_is_notified_of_a_breached_sla(world: Flows) -> None:
    bundle = world.customer()
    with connect(
        _ws_url(world),
        subprotocols=["graphql-transport-ws"],
        additional_headers={"X-Api-Key": world.hub.keys["agent"]},
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription { channelNotifications"
                        " { requestId customerId kind detail } }"
                    },
                }
            )
        )
        request_id = file_complaint(world, bundle, "network")
        while True:
            message = json.loads(ws.recv(timeout=30))
            assert message["type"] == "next", message
            notice = message["payload"]["data"]["channelNotifications"]
            if notice["requestId"] == request_id:
                break
    assert notice["kind"] == "COMPLAINT_ESCALATED"
    assert notice["detail"] == {"reason": "SLA_BREACHED"}
    world.hub.data(RESOLVE, {"id": request_id, "key": new_key()})
    wait_state(world.hub, request_id, "FEEDBACK_REQUESTED")


def test_a_second_replica_follows_and_signals_the_first_ones_workflow(world: Flows) -> None:
    """Two gateways on one database, each with its own executor id: B streams a request that
    runs on A from the shared history table, and a signal sent through B reaches A's workflow."""
    bundle = world.customer()
    env = {
        **world.hub.env,
        "SWITCHBOARD_WORKFLOWS__EXECUTOR_ID": world.hub.env["SWITCHBOARD_WORKFLOWS__EXECUTOR_ID"]
        + "-b",
    }
    replica = Hub(env=env, log_path=world.hub.log_path.with_name("replica-b.log"))
    replica.keys = world.hub.keys
    replica.start()
    try:
        customer_id = hub_id(world.hub, active_line(bundle).msisdn)
        with connect(
            replica.url.replace("http://", "ws://") + "/graphql",
            subprotocols=["graphql-transport-ws"],
            additional_headers={"X-Api-Key": world.hub.keys["app"]},
            open_timeout=10,
        ) as ws:
            # The key on the upgrade, the verification in connection_init: both count.
            ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"X-Verification": world.verify(bundle)},
                    }
                )
            )
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            request_id = file_complaint(world, bundle, "outage_credit")  # on A
            ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {
                            "query": "subscription($r: ID!) { requestUpdates(requestId: $r)"
                            " { state } }",
                            "variables": {"r": request_id},
                        },
                    }
                )
            )
            seen: list[str] = []
            while "ARCHIVED" not in seen:
                message = json.loads(ws.recv(timeout=30))
                assert message["type"] == "next", message
                seen.append(message["payload"]["data"]["requestUpdates"]["state"])
                if seen[-1] == "FEEDBACK_REQUESTED":
                    replica.data(
                        FEEDBACK,
                        {"id": request_id, "rating": 5, "key": new_key()},
                        channel="app",
                        verification=world.verify(bundle),
                    )
        assert seen[0] == "RECEIVED"
        assert seen[-2:] == ["FEEDBACK_RECEIVED", "ARCHIVED"]
        assert customer_id == request_state(replica, request_id)["customerId"]
    finally:
        replica.stop()


def _dbos(*args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dbos")), "workflow", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_a_forked_plan_change_repeats_no_side_effect(world: Flows) -> None:
    """What a release does to move a workflow onto new code: fork it at a step. The fork has a
    new workflow id, but its legacy keys come from the request id: BOSS and billing answer it
    with their first results and hold each side effect once."""
    bundle = world.customer()
    line = active_line(bundle)
    request_id = start_plan_change(world, bundle)
    wait_state(world.hub, request_id, "CONFIRMED")
    system_db = system_database_url(world.hub.env["SWITCHBOARD_DATABASE_URL"], None)
    fork_id = f"{request_id}-fork"
    # Step 5 is the order (1 eligibility, 2 record, 3 arrears, 4 record).
    _dbos("fork", request_id, "--step", "5", "--forked-workflow-id", fork_id, "-s", system_db)
    eventually(lambda: '"SUCCESS"' in _dbos("get", fork_id, "-s", system_db), "the fork to finish")
    # The fork ran the order and the proration again (after the original's) and was answered
    # with the original order and adjustment: same keys. (A new key would have been refused:
    # the line already has the offering.)
    original = {
        s["function_name"]: s for s in json.loads(_dbos("steps", request_id, "-s", system_db))
    }
    forked = {s["function_name"]: s for s in json.loads(_dbos("steps", fork_id, "-s", system_db))}
    for step in ("plan_change.order", "plan_change.adjust"):
        assert forked[step]["started_at_epoch_ms"] > original[step]["completed_at_epoch_ms"]
        assert forked[step]["output"] == original[step]["output"]
        assert forked[step]["output"]["ok"] is True
    assert len(boss_orders(world.data_dir, line.subscriber_no)) == 1
    assert len(billing_adjustments(world.data_dir, request_id)) == 1
    states = [e["state"] for e in request_state(world.hub, request_id)["history"]]
    assert states.count("ORDER_PLACED") == 1 and states.count("CONFIRMED") == 1
