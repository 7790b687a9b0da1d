"""The generic REST engine on a real server: billing accounts declared over the billing
simulator's TMF API (tests/systems/billing_view), linked by certificate + MSISDN on first sight.
"""

from __future__ import annotations

import json
import sqlite3
import uuid

import pytest

from tests.harness import REPO, gateway_env, issue_key, post_graphql, running_gateway

FOLDER = REPO / "tests" / "systems"
QUERY = """
query View($m: String!) {
  customerByMsisdn(msisdn: $m) {
    billingAccounts { id }
    billingView {
      id holder state certificateNumber serviceNumbers creditLimit
      bills(first: 2) { totalCount items { id billDate amountDue state } }
    }
    identity { links { system key matchedOn } }
  }
}
"""


@pytest.fixture(scope="module")
def rest_gateway(sims, tmp_path_factory):
    state = tmp_path_factory.mktemp("rest-system")
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{state / 'hub.db'}",
        SWITCHBOARD_SYSTEMS_DIR=str(FOLDER),
        SWITCHBOARD_SYSTEM_URLS=json.dumps({"billing-view": sims.billing}),
        SWITCHBOARD_AUDIT__STATE_DIR=str(state),
    )
    key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
    writer = issue_key(env, channel="agent", role="agent", scopes=("billing:adjust",))
    with running_gateway(env, state / "gateway.log") as url:
        yield url, key, writer


def test_a_declared_rest_system_links_on_first_sight_and_reads_like_the_bundled_one(
    rest_gateway, customers
):
    url, key, _ = rest_gateway
    bundle = customers[11]
    msisdn = bundle.subscribers[0].msisdn
    body = post_graphql(url, key, QUERY, {"m": msisdn}, purpose="service").json()
    assert "errors" not in body, body
    customer = body["data"]["customerByMsisdn"]
    # first_sight: wait: linked with billing and care, so the first answer shows the link.
    links = {(x["system"], x["key"], x["matchedOn"]) for x in customer["identity"]["links"]}
    assert ("billing-view", bundle.account.id, "certificate+msisdn") in links
    (view,) = customer["billingView"]
    assert [a["id"] for a in customer["billingAccounts"]] == [view["id"]]
    # The agent sees ID cards clear only for identity checks (the policy's rule), here too.
    cert = bundle.customer.cert_no
    assert view["certificateNumber"] == cert[:6] + "*" * 8 + cert[-4:]
    checked = post_graphql(url, key, QUERY, {"m": msisdn}, purpose="identity_verification")
    (seen,) = checked.json()["data"]["customerByMsisdn"]["billingView"]
    assert seen["certificateNumber"] == cert
    # Numbers normalised to E.164, whatever the billing API writes.
    assert f"+86{msisdn}" in view["serviceNumbers"]
    assert view["bills"]["totalCount"] == 12 and len(view["bills"]["items"]) == 2

    masked = post_graphql(url, key, QUERY, {"m": msisdn}, purpose=None).json()
    (shown,) = masked["data"]["customerByMsisdn"]["billingView"]
    assert shown["certificateNumber"] == cert[:6] + "*" * 8 + cert[-4:]
    assert all("****" in number for number in shown["serviceNumbers"])
    assert shown["id"] != view["id"] and shown["id"].endswith(view["id"][-4:])


CREDIT = """
mutation Credit($id: ID!, $account: String!, $amount: Decimal!, $key: String!) {
  creditBillingView(customerId: $id, accountId: $account, amount: $amount,
                    idempotencyKey: $key) { id amount status }
}
"""
FIND = "query F($m: String!) { customerByMsisdn(msisdn: $m) { id billingView { id } } }"


def adjustments(data_dir, account_id: str) -> int:
    with sqlite3.connect(data_dir / "billing.db") as conn:
        return conn.execute(
            "SELECT count(*) FROM adjustment WHERE account_id = ?", (account_id,)
        ).fetchone()[0]


def test_a_declared_rest_write_sends_its_idempotency_key_in_a_header_once_per_key(
    rest_gateway, customers, hub_data_dir
):
    """idempotency: header:X-Idempotency-Key: the billing system recognises the repeat by
    that header (its own store counts one adjustment); another input under the key is
    refused by the hub; a decimal argument goes out as a JSON number."""
    url, key, writer = rest_gateway
    bundle = customers[12]
    found = post_graphql(url, key, FIND, {"m": bundle.subscribers[0].msisdn}, purpose="service")
    customer = found.json()["data"]["customerByMsisdn"]
    account = bundle.account.id
    before = adjustments(hub_data_dir, account)
    args = {"id": customer["id"], "account": account, "amount": "12.50", "key": uuid.uuid4().hex}

    first = post_graphql(url, writer, CREDIT, args, purpose="service").json()
    assert "errors" not in first, first
    done = first["data"]["creditBillingView"]
    assert done["status"] == "completed" and float(done["amount"]) == 12.5
    again = post_graphql(url, writer, CREDIT, args, purpose="service").json()
    assert again["data"]["creditBillingView"] == done
    assert adjustments(hub_data_dir, account) == before + 1

    reused = post_graphql(url, writer, CREDIT, {**args, "amount": "13"}, purpose="service").json()
    assert reused["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    unscoped = post_graphql(
        url, key, CREDIT, {**args, "key": uuid.uuid4().hex}, purpose="service"
    ).json()
    assert unscoped["errors"][0]["extensions"]["code"] == "SCOPE_REQUIRED"
    assert adjustments(hub_data_dir, account) == before + 1


CONFLICTS = """
query C($m: String!) {
  customerByMsisdn(msisdn: $m) {
    billingView { id }
    identity { links { system } conflicts { system kind } }
  }
}
"""


def test_a_record_serving_the_customers_number_under_another_id_card_is_a_conflict(
    rest_gateway, typo_customer
):
    """certificate+msisdn with msisdn_lookup: the account that carries the customer's number
    under a mistyped ID card is reported, not linked, and not silently missing."""
    url, key, _ = rest_gateway
    msisdn = typo_customer.subscribers[0].msisdn
    body = post_graphql(url, key, CONFLICTS, {"m": msisdn}, purpose="service").json()
    customer = body["data"]["customerByMsisdn"]
    conflicts = customer["identity"]["conflicts"]
    assert {"system": "billing-view", "kind": "msisdn_under_other_certificate"} in conflicts
    assert all(link["system"] != "billing-view" for link in customer["identity"]["links"])
    assert not customer["billingView"]
