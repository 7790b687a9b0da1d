"""The access log and the workflows together: mutations over HTTP, and every operation carried
by a websocket (subscriptions, queries), against a real gateway with the workflow engine on and
real simulators of its own (the workflows change the simulators' data)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from simulators.dataset import CustomerBundle
from simulators.seed import seed_dataset
from tests.audit_support import AuditedGateway, audited_gateway, customer_hash
from tests.harness import REPO, SWITCHBOARD, issue_key, running_simulators
from tests.workflow_hub import active_line, clean_customers, eventually, other_offering

SEED = 6262
CUSTOMERS = 60

CHANGE_PLAN = """
mutation ChangePlan($input: ChangePlanInput!) {
  changePlan(input: $input) { id kind state customerId }
}"""
FILE_COMPLAINT = """
mutation FileComplaint($input: FileComplaintInput!) {
  fileComplaint(input: $input) { id kind state customerId }
}"""
FINAL = {"CONFIRMED", "COMPENSATED", "REJECTED"}


@dataclass
class Streams:
    gateway: AuditedGateway
    customers: Iterator[CustomerBundle]

    def customer(self) -> tuple[CustomerBundle, str]:
        """A customer no other test here has used, and its hub id."""
        bundle = next(self.customers)
        found = self.gateway.post(
            "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }",
            {"m": active_line(bundle).msisdn},
        ).json()
        return bundle, found["data"]["customerByMsisdn"]["id"]

    @property
    def ws_url(self) -> str:
        return self.gateway.url.replace("http://", "ws://") + "/graphql"

    def records_named(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.gateway.records() if r["operation_name"] == name]


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streams]:
    state = tmp_path_factory.mktemp("auditstreams")
    data_dir = state / "simdata"
    data_dir.mkdir()
    seed_dataset(data_dir, CUSTOMERS, SEED)
    with running_simulators(data_dir) as sims, audited_gateway(sims, state) as gateway:
        # The workflow engine is on by default; a partner that may write as well.
        gateway.keys["partner_writer"] = issue_key(
            gateway.env,
            channel="partner",
            role="partner",
            scopes=("customer:read", "complaints:write", "orders:write"),
        )
        yield Streams(gateway, clean_customers(SEED, CUSTOMERS))


def op_name(prefix: str) -> str:
    """A unique operation name: how a test finds its websocket operations' records."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def only(records: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(records) == 1, records
    return records[0]


def plan_input(bundle: CustomerBundle, hub_id: str, **change: str) -> dict[str, Any]:
    line = active_line(bundle)
    return {
        "input": {
            "customerId": hub_id,
            "msisdn": line.msisdn,
            "offeringId": other_offering(line.offering_id),
            "idempotencyKey": f"test-{uuid.uuid4().hex[:16]}",
            **change,
        }
    }


@contextmanager
def open_socket(streams: Streams, key: str) -> Iterator[ClientConnection]:
    with connect(
        streams.ws_url,
        subprotocols=["graphql-transport-ws"],
        additional_headers={"X-Api-Key": key, "X-Purpose": "service"},
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        yield ws


def subscribe(ws: ClientConnection, op_id: str, query: str, variables: dict | None = None) -> None:
    payload = {"query": query, "variables": variables or {}}
    ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))


def until_complete(ws: ClientConnection, op_id: str) -> list[dict[str, Any]]:
    """The operation's messages up to (without) its `complete`."""
    seen = []
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message.get("id") != op_id:
            continue
        if message["type"] == "complete":
            return seen
        seen.append(message)


def change_plan(streams: Streams, bundle: CustomerBundle, hub_id: str) -> str:
    answer = streams.gateway.post(CHANGE_PLAN, plan_input(bundle, hub_id)).json()
    assert "errors" not in answer, answer
    return answer["data"]["changePlan"]["id"]


# --- mutations over HTTP ----------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["agent", "partner_writer"])
def test_a_mutation_leaves_one_record_naming_its_customer(streams, channel):
    bundle, hub_id = streams.customer()
    request_id = uuid.uuid4().hex
    if channel == "agent":
        document = FILE_COMPLAINT
        variables = {
            "input": {
                "customerId": hub_id,
                "category": "network",
                "description": f"no signal at home {bundle.customer.name}",
                "idempotencyKey": f"test-{uuid.uuid4().hex[:16]}",
            }
        }
    else:
        document, variables = CHANGE_PLAN, plan_input(bundle, hub_id)
    response = streams.gateway.post(document, variables, channel=channel, request_id=request_id)
    assert "errors" not in response.json(), response.json()
    record = only(streams.gateway.records(request_id))
    name = "FileComplaint" if channel == "agent" else "ChangePlan"
    assert (record["operation_type"], record["operation_name"]) == ("mutation", name)
    assert (record["outcome"], record["code"]) == ("ok", None)
    assert record["channel"] == ("agent" if channel == "agent" else "partner")
    assert record["customers"] == [customer_hash(hub_id)]
    # The free text and the customer's data are not in the record.
    dump = json.dumps(record)
    assert bundle.customer.name not in dump and "no signal" not in dump and hub_id not in dump


def test_refused_and_bad_mutations_leave_one_record_with_their_code(streams):
    bundle, hub_id = streams.customer()
    cases = [
        ("partner", plan_input(bundle, hub_id), "refused", "SCOPE_REQUIRED"),
        ("agent", plan_input(bundle, hub_id, offeringId="OF9999"), "error", "BAD_USER_INPUT"),
        ("agent", plan_input(bundle, hub_id, msisdn="12345"), "error", "BAD_USER_INPUT"),
    ]
    for channel, variables, outcome, code in cases:
        request_id = uuid.uuid4().hex
        response = streams.gateway.post(
            CHANGE_PLAN, variables, channel=channel, request_id=request_id
        )
        assert response.json()["errors"][0]["extensions"]["code"] == code
        record = only(streams.gateway.records(request_id))
        assert (record["operation_type"], record["operation_name"]) == ("mutation", "ChangePlan")
        assert (record["outcome"], record["code"]) == (outcome, code), channel
        assert active_line(bundle).msisdn not in json.dumps(record)
    open_requests = streams.gateway.post(
        "query($c: ID!) { openRequests(customerId: $c) { id } }", {"c": hub_id}
    ).json()["data"]["openRequests"]
    assert open_requests == []  # nothing started


# --- operations over a websocket --------------------------------------------------------------


def test_a_subscription_that_completes_leaves_one_record(streams):
    bundle, hub_id = streams.customer()
    request_id = change_plan(streams, bundle, hub_id)
    name = op_name("Follow")
    with open_socket(streams, streams.gateway.keys["agent"]) as ws:
        subscribe(
            ws,
            "1",
            f"subscription {name}($id: ID!) {{ requestUpdates(requestId: $id) {{ state }} }}",
            {"id": request_id},
        )
        messages = until_complete(ws, "1")
        # The record is committed before the server says `complete`.
        record = only(streams.records_named(name))
    states = [m["payload"]["data"]["requestUpdates"]["state"] for m in messages]
    assert states[-1] in FINAL
    assert (record["operation_type"], record["outcome"], record["code"]) == (
        "subscription",
        "ok",
        None,
    )
    assert (record["subject"], record["channel"], record["purpose"]) == (
        "test-agent",
        "agent",
        "service",
    )
    assert record["customers"] == [customer_hash(hub_id)]
    assert record["latency_us"] > 0


def test_each_operation_on_a_socket_has_its_own_record(streams):
    """A query over the socket, a subscription the client stops, another query: one record
    each, each naming only what that operation touched (the socket's context is shared)."""
    (_, first), (_, second) = streams.customer(), streams.customer()
    query = "query {name}($id: ID!) {{ customer(id: $id) {{ id profile {{ name }} }} }}"
    names = [op_name("Look"), op_name("Watch"), op_name("Look")]
    with open_socket(streams, streams.gateway.keys["agent"]) as ws:
        subscribe(ws, "q1", query.format(name=names[0]), {"id": first})
        (answer,) = until_complete(ws, "q1")
        assert answer["payload"]["data"]["customer"]["id"] == first
        subscribe(
            ws,
            "s1",
            f"subscription {names[1]}($c: ID!) {{ requestUpdates(customerId: $c) {{ state }} }}",
            {"c": second},
        )
        subscribe(ws, "q2", query.format(name=names[2]), {"id": second})
        (answer,) = until_complete(ws, "q2")
        assert answer["payload"]["data"]["customer"]["id"] == second
        # q2 was answered, so s1 (started before it) is running: now the client stops it.
        ws.send(json.dumps({"id": "s1", "type": "complete"}))
        stopped = eventually(lambda: streams.records_named(names[1]), "the stopped subscription")
    looked_first, looked_second = (
        only(streams.records_named(names[0])),
        only(streams.records_named(names[2])),
    )
    assert only(stopped)["operation_type"] == "subscription"
    assert only(stopped)["outcome"] == "ok"
    for record, hub_id in ((looked_first, first), (looked_second, second)):
        assert (record["operation_type"], record["outcome"]) == ("query", "ok")
        assert record["customers"] == [customer_hash(hub_id)]
        assert record["disclosed"]["customer.profile.name"] == "clear"
        assert record["backends"] == ["boss"]


def test_a_subscription_cut_by_the_client_leaving_is_recorded(streams):
    _, hub_id = streams.customer()
    name = op_name("Leave")
    with open_socket(streams, streams.gateway.keys["agent"]) as ws:
        subscribe(
            ws,
            "1",
            f"subscription {name}($c: ID!) {{ channelNotifications(customerId: $c) {{ kind }} }}",
            {"c": hub_id},
        )
        # The subscription is live once a query sent after it has been answered.
        subscribe(ws, "2", "query { offerings { id } }")
        until_complete(ws, "2")
    record = only(eventually(lambda: streams.records_named(name), "the cut subscription"))
    assert (record["operation_type"], record["outcome"]) == ("subscription", "ok")


def test_a_refused_subscription_is_recorded_with_its_code(streams):
    name = op_name("Peek")
    with open_socket(streams, streams.gateway.keys["partner"]) as ws:
        subscribe(ws, "1", f'subscription {name} {{ requestUpdates(requestId: "x") {{ state }} }}')
        message = json.loads(ws.recv(timeout=10))
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
    record = only(eventually(lambda: streams.records_named(name), "the refused subscription"))
    assert (record["operation_type"], record["channel"]) == ("subscription", "partner")
    assert (record["outcome"], record["code"]) == ("refused", "OPERATION_NOT_ALLOWED")


def test_a_websocket_refused_at_connection_leaves_a_record(streams):
    before = len(streams.gateway.records())
    with pytest.raises(InvalidStatus):
        connect(
            streams.ws_url,
            subprotocols=["graphql-transport-ws"],
            additional_headers={"X-Api-Key": "sb_nope.nothing"},
            open_timeout=10,
        )
    with connect(streams.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": "sb_nope.x"}}))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    refused = eventually(
        lambda: (r := streams.gateway.records()[before:]) and len(r) >= 2 and r,
        "two refusal records",
    )
    assert len(refused) == 2
    for record in refused:
        assert (record["outcome"], record["code"]) == ("refused", "UNAUTHENTICATED")
        assert record["subject"] is None and record["operation_type"] is None


def test_the_chain_verifies_after_mutations_and_streams(streams):
    done = subprocess.run(
        [*SWITCHBOARD, "audit", "verify", "--quiet"],
        env=streams.gateway.env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {r["operation_type"] for r in streams.gateway.records()}
    assert {"query", "mutation", "subscription"} <= kinds
