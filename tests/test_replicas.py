"""The scaled mode end to end: two `switchboard serve` replicas (A with one worker, B with two)
on one PostgreSQL database and one Redis, behind a round-robin HTTP + websocket proxy
(tests/replica_proxy.py), with the real simulators.

Checks, in order (the module shares one world; A is killed last): a rate limit counted across
replicas, an eviction made on A reaching B's workers' memory caches, the breaker summary
naming both replicas (and a circuit open on A only), a workflow started on A followed from B
(openRequests, requestUpdates over graphql-transport-ws) and signalled from B, and A
SIGKILLed for good: `switchboard workflows recover` refused while A lives, then, with B's
settings, handing A's workflows to B, where they finish with each side effect once in the
simulators' own stores.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from websockets.sync.client import connect

from gateway.policy_store import DEFAULT_POLICY_FILE
from simulators.dataset import CustomerBundle
from simulators.seed import seed_dataset
from tests.conftest import fresh_postgres_database
from tests.harness import (
    REPO,
    SWITCHBOARD,
    SimulatorUrls,
    gateway_env,
    issue_key,
    running_simulators,
)
from tests.replica_proxy import RoundRobinProxy
from tests.workflow_hub import (
    Hub,
    active_line,
    billing_adjustments,
    boss_orders,
    care_tickets,
    clean_customers,
    eventually,
    hub_id,
    other_offering,
    request_state,
    wait_state,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SEED = 6262
CUSTOMERS = 60
IVR_LIMIT = 6  # requests per minute of the ivr channel in this module's policy
ADJUST = "POST /tmf-api/prepayBalanceManagement/v4/adjustBalance"

CHANGE_PLAN = """
mutation($input: ChangePlanInput!) { changePlan(input: $input) { id state } }"""
FILE_COMPLAINT = """
mutation($input: FileComplaintInput!) { fileComplaint(input: $input) { id state } }"""
FEEDBACK = """
mutation($id: ID!, $rating: Int!, $key: String!) {
  submitComplaintFeedback(requestId: $id, rating: $rating, idempotencyKey: $key) { id state }
}"""
LINES = """
query($id: ID!) { customer(id: $id) { subscriptions { msisdn offering { id } } } }"""


def new_key() -> str:
    return f"rep-{uuid.uuid4().hex[:16]}"


@dataclass
class World:
    sims: SimulatorUrls
    data_dir: Path
    a: Hub
    b: Hub
    proxy: RoundRobinProxy
    prefix: str
    redis_url: str
    customers: Iterator[CustomerBundle]
    http: httpx.Client

    def customer(self) -> CustomerBundle:
        return next(self.customers)

    def control(self, system: str, **state: object) -> None:
        self.http.post(f"{self.sims.of(system)}/_sim/control", json=state).raise_for_status()

    def calls(self, system: str) -> dict[str, int]:
        return self.http.get(f"{self.sims.of(system)}/_sim/stats").json()["calls"]

    def via_proxy(self, document: str, variables: dict | None = None, *, key: str, **kw):
        return self.http.post(
            f"{self.proxy.url}/graphql",
            json={"query": document, "variables": variables or {}},
            headers={"X-Api-Key": key, **kw.get("headers", {})},
            timeout=30,
        )


def _policy(path: Path) -> None:
    """The bundled policy with the ivr channel's rate limit lowered to IVR_LIMIT."""
    text = DEFAULT_POLICY_FILE.read_text()
    start = text.index("\n  ivr:\n") + 1
    limit = "    rate_limit_per_minute: 600\n"
    at = text.index(limit, start)
    assert text.index("\n  ", start + 1) > start, "the bundled policy has no ivr channel"
    assert "\n  " not in text[start + 7 : at].replace("\n    ", "").replace("\n      ", ""), (
        "the bundled policy's ivr channel has no rate limit of 600: adapt this test"
    )
    path.write_text(text[:at] + limit.replace("600", str(IVR_LIMIT)) + text[at + len(limit) :])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[World]:
    state = tmp_path_factory.mktemp("replicas")
    data_dir = state / "simdata"
    data_dir.mkdir()
    seed_dataset(data_dir, CUSTOMERS, SEED)
    policy_file = state / "policy.yaml"
    _policy(policy_file)
    prefix = f"sbtest-rep-{uuid.uuid4().hex[:12]}"
    with (
        fresh_postgres_database("switchboard_replicas") as database_url,
        running_simulators(data_dir) as sims,
    ):
        common = gateway_env(
            sims,
            database_url,
            SWITCHBOARD_POLICY_FILE=str(policy_file),
            SWITCHBOARD_AUDIT__STATE_DIR=str(state / "audit-keys"),
            # The same customer key on every replica (docs/operations.md, "Replicas").
            SWITCHBOARD_AUDIT__CUSTOMER_KEY=uuid.uuid4().hex,
            SWITCHBOARD_SCALED__REDIS_URL=redis_url,
            SWITCHBOARD_SCALED__KEY_PREFIX=prefix,
            SWITCHBOARD_SCALED__HEARTBEAT_S="0.5",
            # A loaded test machine must not turn a slow Redis call into the local fallback.
            SWITCHBOARD_SCALED__OPERATION_TIMEOUT_S="2",
            SWITCHBOARD_SCALED__REPLICA_TTL_S="3",
            # The memory cache stays on: the eviction feed is what is under test.
            SWITCHBOARD_CACHE__NAMESPACE=prefix,
            SWITCHBOARD_BOSS__TIMEOUT_S="5",
            SWITCHBOARD_BILLING__TIMEOUT_S="5",
            SWITCHBOARD_CARE__TIMEOUT_S="5",
            SWITCHBOARD_BILLING__BREAKER_FAILURE_THRESHOLD="3",
            SWITCHBOARD_BILLING__BREAKER_RESET_S="1",
            SWITCHBOARD_BILLING__RETRY_ATTEMPTS="1",
            SWITCHBOARD_WORKFLOWS__FEEDBACK_WAIT_S="600",
        )
        keys = {
            channel: issue_key(common, channel=channel, role=role, scopes=("customer:read",))
            for channel, role in (("agent", "agent"), ("ivr", "ivr"))
        }
        a = Hub(
            env={**common, "SWITCHBOARD_WORKFLOWS__EXECUTOR_ID": "rep-a"},
            log_path=state / "replica-a.log",
            keys=keys,
        )
        b = Hub(
            env={
                **common,
                "SWITCHBOARD_WORKFLOWS__EXECUTOR_ID": "rep-b",
                "SWITCHBOARD_WORKERS": "2",
            },
            log_path=state / "replica-b.log",
            keys=keys,
        )
        a.start()  # first alone: it creates the tables and DBOS's schema
        proxy = None
        try:
            b.start()
            proxy = RoundRobinProxy({"a": a.url, "b": b.url})
            proxy.start()
            with httpx.Client(timeout=30) as http:
                yield World(
                    sims,
                    data_dir,
                    a,
                    b,
                    proxy,
                    prefix,
                    redis_url,
                    clean_customers(SEED, CUSTOMERS),
                    http,
                )
        finally:
            if proxy is not None:
                proxy.stop()
            b.stop()
            a.stop()
            client = redis_sync.Redis.from_url(redis_url)
            try:
                for key in client.scan_iter(match=f"{prefix}:*"):
                    client.delete(key)
            finally:
                client.close()


def _serving_workers(world: World) -> set[str]:
    """The workers on the replica board (read through the proxy)."""
    summary = world.http.get(f"{world.proxy.url}/replicas").json()
    return {w["worker"] for r in summary["replicas"] for w in r["workers"]}


def test_the_rate_limit_is_counted_across_replicas(world: World) -> None:
    # Both of B's workers must be up, or the limit could not be spread over three processes.
    eventually(lambda: _serving_workers(world) >= {"rep-a", "rep-b-w0", "rep-b-w1"}, "3 workers")
    answers = [
        world.via_proxy("{ __typename }", key=world.a.keys["ivr"]) for _ in range(IVR_LIMIT + 1)
    ]
    served_by = {r.headers["X-Upstream"] for r in answers}
    assert served_by == {"a", "b"}
    # Within the limit: answered (whatever GraphQL makes of the document), not refused.
    assert all(r.status_code != 429 for r in answers[:IVR_LIMIT]), [r.status_code for r in answers]
    refused = answers[IVR_LIMIT]
    assert refused.status_code == 429, refused.text
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Refused on the other replica too: one count, not one per process.
    again = world.via_proxy("{ __typename }", key=world.a.keys["ivr"])
    assert again.headers["X-Upstream"] != refused.headers["X-Upstream"]
    assert again.status_code == 429


def test_an_eviction_on_a_reaches_the_memory_caches_of_b(world: World) -> None:
    bundle = world.customer()
    line = active_line(bundle)
    customer_id = hub_id(world.a, line.msisdn)
    target = other_offering(line.offering_id)

    def offerings_through_b() -> list[str]:
        lines = world.b.data(LINES, {"id": customer_id})["customer"]["subscriptions"]
        return [s["offering"]["id"] for s in lines if s["msisdn"] == line.msisdn]

    # Several reads, so that both of B's workers hold the line in their memory caches.
    for _ in range(8):
        assert offerings_through_b() == [line.offering_id]
    request_id = world.a.data(
        CHANGE_PLAN,
        {
            "input": {
                "customerId": customer_id,
                "msisdn": line.msisdn,
                "offeringId": target,
                "idempotencyKey": new_key(),
            }
        },
    )["changePlan"]["id"]
    done = wait_state(world.a, request_id, "CONFIRMED", "REJECTED", "COMPENSATED")
    assert done["state"] == "CONFIRMED", done["history"]
    # The lines' TTL is 60 s: without the feed B's workers would still serve the old plan.
    for _ in range(8):
        assert offerings_through_b() == [target]


def test_the_breaker_summary_lists_both_replicas(world: World) -> None:
    summary = eventually(
        lambda: (
            (s := world.http.get(f"{world.proxy.url}/replicas").json())["backends"]
            .get("billing", {})
            .get("closed")
            == 3
            and s
        ),
        "every worker's billing circuit closed",
    )
    assert summary["shared"] is True
    replicas = {r["replica"]: {w["worker"] for w in r["workers"]} for r in summary["replicas"]}
    assert replicas == {"rep-a": {"rep-a"}, "rep-b": {"rep-b-w0", "rep-b-w1"}}
    assert {"boss", "billing", "care"} <= set(summary["backends"])
    bundle = world.customer()
    customer_id = hub_id(world.a, active_line(bundle).msisdn)
    # Billing fails; only A's calls meet it: A's circuit opens, B's workers stay closed.
    world.control("billing", down=True)
    try:
        document = "query($id: ID!) { customer(id: $id) { billingAccounts { id } } }"

        def a_open() -> bool:
            world.a.post(document, {"id": customer_id})
            return _breaker(world, "rep-a", "billing")["state"] == "open"

        eventually(a_open, "A's billing circuit open on the board")
        with world.proxy.pin("b"):
            seen = world.http.get(f"{world.proxy.url}/replicas")
        assert seen.headers["X-Upstream"] == "b"  # B reports A's circuit
        assert _breaker(world, "rep-b", "billing", seen.json())["state"] == "closed"
        assert seen.json()["backends"]["billing"]["open"] >= 1
    finally:
        world.control("billing", down=False)
    # Readiness probes the half-open circuit back to closed before the workflows need it.
    eventually(
        lambda: (
            world.http.get(f"{world.a.url}/readyz").json()["backends"]["billing"]["circuit"]
            == "closed"
        ),
        "A's billing circuit closed again",
    )


def _breaker(world: World, replica: str, backend: str, summary: dict | None = None) -> dict:
    summary = summary or world.http.get(f"{world.b.url}/replicas").json()
    workers = next(r["workers"] for r in summary["replicas"] if r["replica"] == replica)
    return workers[0]["breakers"][backend]


def _file_complaint(world: World, hub: Hub, customer_id: str) -> str:
    return hub.data(
        FILE_COMPLAINT,
        {
            "input": {
                "customerId": customer_id,
                "category": "outage_credit",
                "description": "No signal at home since Monday.",
                "idempotencyKey": new_key(),
            }
        },
    )["fileComplaint"]["id"]


def _subscribe(ws, request_id: str) -> None:
    ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
    ws.send(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {
                    "query": "subscription($r: ID!) { requestUpdates(requestId: $r) { state } }",
                    "variables": {"r": request_id},
                },
            }
        )
    )


def test_a_workflow_started_on_a_is_followed_and_signalled_from_b(world: World) -> None:
    bundle = world.customer()
    customer_id = hub_id(world.a, active_line(bundle).msisdn)
    with world.proxy.pin("a"):
        request_id = _file_complaint(world, world.a, customer_id)
    wait_state(world.a, request_id, "FEEDBACK_REQUESTED")
    open_on_b = world.b.data(
        "query($c: ID!) { openRequests(customerId: $c) { id state } }", {"c": customer_id}
    )["openRequests"]
    assert {"id": request_id, "state": "FEEDBACK_REQUESTED"} in open_on_b
    with world.proxy.pin("b"):
        ws = connect(
            world.proxy.url.replace("http://", "ws://") + "/graphql",
            subprotocols=["graphql-transport-ws"],
            additional_headers={"X-Api-Key": world.a.keys["agent"], "X-Purpose": "service"},
            open_timeout=10,
        )
    with ws:
        assert ws.response.headers["X-Upstream"] == "b"
        _subscribe(ws, request_id)
        seen: list[str] = []
        while "ARCHIVED" not in seen:
            message = json.loads(ws.recv(timeout=30))
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["requestUpdates"]["state"])
            if seen[-1] == "FEEDBACK_REQUESTED":
                with world.proxy.pin("b"):
                    signalled = world.via_proxy(
                        FEEDBACK,
                        {"id": request_id, "rating": 4, "key": new_key()},
                        key=world.a.keys["agent"],
                    )
                assert signalled.headers["X-Upstream"] == "b"
                assert "errors" not in signalled.json(), signalled.json()
    assert seen[0] == "RECEIVED"
    assert seen[-2:] == ["FEEDBACK_RECEIVED", "ARCHIVED"]


def _recover(world: World, executor: str) -> subprocess.CompletedProcess[str]:
    """`switchboard workflows recover` with B's settings."""
    return subprocess.run(
        [*SWITCHBOARD, "workflows", "recover", "--executor", executor],
        env=world.b.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_killed_replica_s_workflows_are_recovered_by_b_and_finish_once(world: World) -> None:
    # A complaint waiting on A for feedback, and a plan change on A in the middle of a step.
    waiting = world.customer()
    waiting_customer = hub_id(world.a, active_line(waiting).msisdn)
    complaint = _file_complaint(world, world.a, waiting_customer)
    wait_state(world.a, complaint, "FEEDBACK_REQUESTED")
    bundle = world.customer()
    line = active_line(bundle)
    customer_id = hub_id(world.a, line.msisdn)
    refused = _recover(world, "rep-a")  # A is alive: nothing is taken from it
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "alive" in refused.stderr
    world.control("billing", latency_ms=[2000, 2000])
    try:
        plan = world.a.data(
            CHANGE_PLAN,
            {
                "input": {
                    "customerId": customer_id,
                    "msisdn": line.msisdn,
                    "offeringId": other_offering(line.offering_id),
                    "idempotencyKey": new_key(),
                }
            },
        )["changePlan"]["id"]
        eventually(lambda: world.calls("billing").get(ADJUST, 0) >= 1, "the adjustment call")
        world.a.kill()  # for good: A never comes back
    finally:
        world.control("billing", latency_ms=None)
    # Nothing moves the killed replica's workflows until they are recovered.
    assert request_state(world.b, plan)["state"] not in ("CONFIRMED", "COMPENSATED")
    done = eventually(
        lambda: (r := _recover(world, "rep-a")).returncode == 0 and r,
        "the recover verb to find A gone",
        timeout=30,
    )
    assert plan in done.stdout and complaint in done.stdout, done.stdout
    confirmed = wait_state(world.b, plan, "CONFIRMED", "COMPENSATED", "REJECTED")
    assert confirmed["state"] == "CONFIRMED", confirmed["history"]
    # The complaint waits on B now; a signal through B ends it.
    world.b.data(FEEDBACK, {"id": complaint, "rating": 5, "key": new_key()})
    wait_state(world.b, complaint, "ARCHIVED")
    # Once each, from the systems' own records.
    assert boss_orders(world.data_dir, line.subscriber_no) == [
        (confirmed["detail"]["orderId"], "COMPLETED")
    ]
    assert len(billing_adjustments(world.data_dir, plan)) == 1
    assert [e["state"] for e in confirmed["history"]].count("ORDER_PLACED") == 1
    assert len(care_tickets(world.data_dir, complaint)) == 1
    # A second run finds nothing left of A.
    again = _recover(world, "rep-a")
    assert again.returncode == 0 and "no pending workflows" in again.stdout
