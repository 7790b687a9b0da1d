"""The unified customer graph, end to end: real gateway, real simulators, over loopback."""

from __future__ import annotations

import sqlite3

import httpx

from simulators.dataset import CustomerBundle

QUERY_360 = """
query Customer360($msisdn: String!) {
  customerByMsisdn(msisdn: $msisdn) {
    id
    profile { customerNo name certificateNumber starLevel segment }
    subscriptions { msisdn status offering { id name } arpu usage { dataUsedMb dataAllowanceMb } }
    billingAccounts {
      id state
      balance { amount { amount currency } }
      bills(first: 3) { totalCount items { billNo amountDue { amount } state } }
      payments(first: 2) { totalCount }
    }
    tickets { id type status }
    interactions(first: 3) { id channel }
    identity { hubId links { system key matchedOn } conflicts { system kind } unresolvedSystems }
  }
}
"""

PAGE = """
query Page($first: Int!, $after: String) {
  customers(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes {
      id
      profile { name starLevel }
      subscriptions { msisdn }
      billingAccounts { id balance { amount { amount } } }
      tickets(first: 3) { id status }
    }
  }
}
"""


def active_msisdn(bundle: CustomerBundle) -> str:
    return next(s.msisdn for s in bundle.subscribers if s.status != "D")


def data_of(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_360_query_assembles_one_customer_from_all_three_systems(gateway, control, customers):
    bundle = customers[5]
    body = data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(bundle)}))
    assert "errors" not in body, body
    customer = body["data"]["customerByMsisdn"]

    assert customer["id"].startswith("cus_")
    assert customer["profile"]["customerNo"] == bundle.customer.customer_no
    assert customer["profile"]["name"] == bundle.customer.name
    assert {s["msisdn"] for s in customer["subscriptions"]} == {
        s.msisdn for s in bundle.subscribers
    }
    (account,) = customer["billingAccounts"]
    assert account["id"] == bundle.account.id
    assert account["bills"]["totalCount"] == 12
    assert account["balance"]["amount"]["currency"] == "CNY"
    assert {(link["system"], link["key"]) for link in customer["identity"]["links"]} == {
        ("billing", bundle.account.id),
        ("care", bundle.party.id),
    }
    assert customer["tickets"] is not None and customer["interactions"] is not None
    for system in ("boss", "billing", "care"):
        assert control.total(system) > 0, f"{system} was not called"


def test_customer_by_hub_id_returns_the_same_customer(gateway, customers):
    bundle = customers[7]
    first = data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(bundle)}))
    hub_id = first["data"]["customerByMsisdn"]["id"]
    again = data_of(
        gateway.query(
            "query($id: ID!) { customer(id: $id) { id profile { customerNo } } }", {"id": hub_id}
        )
    )
    assert again["data"]["customer"] == {
        "id": hub_id,
        "profile": {"customerNo": bundle.customer.customer_no},
    }


def test_a_page_of_50_customers_costs_a_handful_of_calls_per_system(gateway, control):
    first_page = data_of(gateway.query(PAGE, {"first": 50}))
    # The dataset plants one billing ID-card typo per 200 customers: reported, not guessed.
    codes = {e["extensions"]["code"] for e in first_page.get("errors", [])}
    assert codes <= {"IDENTITY_CONFLICT"}, first_page["errors"]
    connection = first_page["data"]["customers"]
    assert len(connection["nodes"]) == 50
    assert connection["pageInfo"]["hasNextPage"] is True
    # First sight of these customers includes identity resolution (lookups by ID card, and by
    # MSISDN only for customers whose ID card found nothing).
    assert control.total("boss") <= 2, control.calls("boss")
    assert control.total("billing") <= 4, control.calls("billing")
    assert control.total("care") <= 3, control.calls("care")

    control.reset()
    data_of(gateway.query(PAGE, {"first": 50}))
    # Known customers: the crosswalk answers, so one call per kind of data.
    assert control.total("boss") <= 2, control.calls("boss")
    assert control.total("billing") <= 2, control.calls("billing")
    assert control.total("care") <= 1, control.calls("care")


def test_paging_walks_forward_without_overlap(gateway):
    first = data_of(gateway.query(PAGE, {"first": 20}))["data"]["customers"]
    second = data_of(gateway.query(PAGE, {"first": 20, "after": first["pageInfo"]["endCursor"]}))[
        "data"
    ]["customers"]
    assert not {n["id"] for n in first["nodes"]} & {n["id"] for n in second["nodes"]}


def test_a_downed_billing_system_yields_partial_data_and_a_coded_error(gateway, control, customers):
    bundle = customers[311]  # not seen by earlier tests: its billing link is not known yet
    control.set("billing", down=True)
    body = data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(bundle)}))
    customer = body["data"]["customerByMsisdn"]
    assert customer["profile"]["customerNo"] == bundle.customer.customer_no
    assert customer["subscriptions"]
    assert customer["tickets"] is not None
    assert customer["billingAccounts"] is None
    (error,) = body["errors"]
    assert error["path"] == ["customerByMsisdn", "billingAccounts"]
    assert error["extensions"]["code"] == "BACKEND_UNAVAILABLE"
    assert error["extensions"]["system"] == "billing"
    assert "Traceback" not in error["message"] and "httpx" not in error["message"]
    assert "billing" in customer["identity"]["unresolvedSystems"]

    control.set("billing", down=False)
    healed = data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(bundle)}))
    assert "errors" not in healed
    assert healed["data"]["customerByMsisdn"]["billingAccounts"][0]["id"] == bundle.account.id


def test_a_known_customer_still_answers_from_billing_and_care_when_boss_is_down(
    gateway, control, customers
):
    bundle = customers[13]
    hub_id = data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(bundle)}))["data"][
        "customerByMsisdn"
    ]["id"]
    control.set("boss", down=True)
    body = data_of(
        gateway.query(
            "query($id: ID!) { customer(id: $id) { profile { name } billingAccounts { id } } }",
            {"id": hub_id},
        )
    )
    assert body["data"]["customer"]["billingAccounts"] == [{"id": bundle.account.id}]
    assert body["data"]["customer"]["profile"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BACKEND_UNAVAILABLE"]


def test_conflicting_records_are_reported_not_guessed(gateway, typo_customer):
    body = data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(typo_customer)}))
    customer = body["data"]["customerByMsisdn"]
    identity = customer["identity"]
    assert {"system": "billing", "kind": "msisdn_under_other_certificate"} in identity["conflicts"]
    assert all(link["system"] != "billing" for link in identity["links"])
    assert customer["billingAccounts"] is None
    codes = {e["path"][-1]: e["extensions"]["code"] for e in body["errors"]}
    assert codes == {"billingAccounts": "IDENTITY_CONFLICT"}
    assert body["errors"][0]["extensions"]["system"] == "billing"
    # Care agrees with BOSS for this customer and stays linked.
    assert any(link["system"] == "care" for link in identity["links"])


def _crosswalk_rows(gateway) -> int:
    with sqlite3.connect(gateway.database_path) as db:
        return db.execute("select count(*) from identity_customer").fetchone()[0]


def test_bad_input_gets_a_clear_coded_error_and_changes_nothing(gateway, control):
    before = _crosswalk_rows(gateway)

    malformed = gateway.query("{ customers(first: 2) { nodes { id }")
    assert malformed.status_code in (200, 400)
    assert malformed.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"

    unknown_field = data_of(gateway.query("{ customers { nodes { nope } } }"))
    assert unknown_field["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"

    bad_msisdn = data_of(gateway.query(QUERY_360, {"msisdn": "1380013800"}))
    (error,) = bad_msisdn["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "1380013800" not in error["message"]

    unknown_msisdn = data_of(gateway.query(QUERY_360, {"msisdn": "13000000000"}))
    assert unknown_msisdn["data"]["customerByMsisdn"] is None
    assert unknown_msisdn["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    bad_id = data_of(gateway.query('{ customer(id: "42") { id } }'))
    assert bad_id["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    unknown_id = data_of(gateway.query('{ customer(id: "cus_00000000000000000000") { id } }'))
    assert unknown_id["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    bad_page = data_of(gateway.query("{ customers(first: 100000) { totalCount } }"))
    assert bad_page["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    bad_cursor = data_of(gateway.query('{ customers(after: "zzz") { totalCount } }'))
    assert bad_cursor["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    assert _crosswalk_rows(gateway) == before


def test_a_billing_answer_that_is_not_json_is_a_bad_response(gateway, control, customers):
    bundle = customers[17]
    data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(bundle)}))  # resolve first
    control.set("billing", bad_response=True)
    body = data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(bundle)}))
    assert body["data"]["customerByMsisdn"]["profile"] is not None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"BACKEND_BAD_RESPONSE"}


def test_soap_faults_from_boss_become_coded_errors(gateway, control, customers):
    control.set("boss", failure_rate=1.0)
    body = data_of(gateway.query(QUERY_360, {"msisdn": active_msisdn(customers[19])}))
    assert body["data"]["customerByMsisdn"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BACKEND_UNAVAILABLE"
    assert error["extensions"]["backendCode"] == "100000002"
    # A read is retried (three attempts by default), never more.
    assert control.calls("boss") == {"QuerySubscriberByMsisdn": 3}


def test_callers_without_a_valid_key_are_refused(gateway):
    document = {"query": "{ offerings { id } }"}
    missing = httpx.post(f"{gateway.url}/graphql", json=document)
    assert missing.status_code == 401
    assert missing.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    wrong = httpx.post(
        f"{gateway.url}/graphql", json=document, headers={"X-Api-Key": "sb_0000.nope"}
    )
    assert wrong.status_code == 401
    bearer = httpx.post(
        f"{gateway.url}/graphql",
        json=document,
        headers={"Authorization": f"Bearer {gateway.keys['app']}"},
    )
    assert bearer.status_code == 200
    assert len(bearer.json()["data"]["offerings"]) == 12


def test_queries_work_over_get_too(gateway):
    response = httpx.get(
        f"{gateway.url}/graphql",
        params={"query": "{ offerings { id sellable } }"},
        headers={"X-Api-Key": gateway.keys["agent"]},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"]


def test_readiness_reports_each_backend(gateway, control):
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200
    assert {
        name: (backend["status"], backend["circuit"])
        for name, backend in ready.json()["backends"].items()
    } == {
        "boss": ("up", "closed"),
        "billing": ("up", "closed"),
        "care": ("up", "closed"),
    }
    control.set("care", down=True)
    degraded = httpx.get(f"{gateway.url}/readyz")
    assert degraded.status_code == 503
    care = degraded.json()["backends"]["care"]
    assert (care["status"], care["code"]) == ("down", "BACKEND_UNAVAILABLE")
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_graphiql_page_is_served_but_its_queries_need_a_key(gateway):
    page = httpx.get(f"{gateway.url}/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    query = httpx.get(f"{gateway.url}/graphql", params={"query": "{ offerings { id } }"})
    assert query.status_code == 401
