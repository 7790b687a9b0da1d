"""Durable workflows end to end: real gateway (with DBOS inside), real simulators, on SQLite and
on PostgreSQL. Each backend gets its own simulators (the workflows change their data) and its
own gateway subprocess, which the crash tests SIGKILL and restart on the same databases."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.policy_store import DEFAULT_POLICY_FILE
from simulators.dataset import CustomerBundle
from simulators.seed import seed_dataset
from tests.conftest import (
    POSTGRES_ADMIN_URL,
    REQUIRE_SERVICES,
    _postgres_unavailable_reason,
    _run_aside,
)
from tests.harness import SimulatorUrls, gateway_env, issue_key, running_simulators
from tests.workflow_hub import (
    Hub,
    active_line,
    billing_adjustments,
    boss_orders,
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


def _own_postgres_database() -> Iterator[str]:
    import asyncpg

    reason = _postgres_unavailable_reason()
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (SWITCHBOARD_REQUIRE_SERVICES=1: CI must not skip)")
        pytest.skip(reason)
    name = f"switchboard_flows_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run_aside(lambda: admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        _run_aside(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Flows:
    """One backend's world: its simulators, their data dir, its hub, its customers."""

    def __init__(self, sims: SimulatorUrls, data_dir: Path, hub: Hub) -> None:
        self.sims = sims
        self.data_dir = data_dir
        self.hub = hub
        self._customers = clean_customers(SEED, CUSTOMERS)
        self.http = httpx.Client(timeout=10)

    def customer(self) -> CustomerBundle:
        """A customer no other test of this module has used."""
        return next(self._customers)

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
    if request.param == "postgres":
        database_gen = _own_postgres_database()
        database_url = next(database_gen)
    else:
        database_gen = None
        database_url = f"sqlite+aiosqlite:///{state / 'hub.db'}"
    policy_file = state / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY_FILE.read_text())
    try:
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
    finally:
        if database_gen is not None:
            next(database_gen, None)


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
    world.control("billing", latency_ms=[1500, 1500])
    request_id = start_plan_change(world, bundle)
    wait_state(world.hub, request_id, "ORDER_PLACED", "ADJUSTED", "COMPENSATING")
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
