"""The access log through the real gateway: one record per operation, refusals included, and
the auditor's view of it (auditLog, auditVerification) open to auditors only."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from gateway.policy_store import DEFAULT_POLICY_FILE
from tests.audit_support import SMS_LIMIT, AuditedGateway, audited_gateway, customer_hash

PROFILE = """
query Profile($msisdn: String!) {
  customerByMsisdn(msisdn: $msisdn) {
    id
    profile { name certificateNumber }
    subscriptions { msisdn }
    billingAccounts { accountType }
  }
}
"""
AUDIT_LOG = """
query Log($filter: AuditFilter, $first: Int!, $after: String) {
  auditLog(filter: $filter, first: $first, after: $after) {
    nodes { seq requestId subject role channel purpose operationType operationName outcome
            code customers backends policyVersion latencyMs documentSha256
            disclosed { path level } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


@pytest.fixture(scope="module")
def audited(sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedGateway]:
    with audited_gateway(sims, tmp_path_factory.mktemp("auditstate")) as gateway:
        yield gateway


def rid() -> str:
    return uuid.uuid4().hex


def msisdn_of(bundle) -> str:
    return next(s.msisdn for s in bundle.subscribers if s.status != "D")


def only_record(audited: AuditedGateway, request_id: str) -> dict:
    found = audited.records(request_id)
    assert len(found) == 1, found
    return found[0]


def test_a_query_leaves_one_record_with_who_why_what_and_how(audited, customers):
    bundle = customers[3]
    # The first look-up also links the customer in billing and care (identity resolution);
    # the second asks only the backends its fields need.
    audited.post(PROFILE, {"msisdn": msisdn_of(bundle)})
    request_id = rid()
    response = audited.post(PROFILE, {"msisdn": msisdn_of(bundle)}, request_id=request_id)
    assert response.status_code == 200 and "errors" not in response.json()
    hub_id = response.json()["data"]["customerByMsisdn"]["id"]
    record = only_record(audited, request_id)
    assert record["subject"] == "test-agent"
    assert (record["role"], record["channel"], record["purpose"]) == ("agent", "agent", "service")
    assert len(record["credential_id"]) == 8
    assert (record["operation_type"], record["operation_name"]) == ("query", "Profile")
    assert record["document_sha256"] == hashlib.sha256(PROFILE.encode()).hexdigest()
    assert record["customers"] == [customer_hash(hub_id)]
    assert record["disclosed"]["customerByMsisdn.profile.name"] == "clear"
    assert record["disclosed"]["customerByMsisdn.profile.certificateNumber"] == "masked"
    assert set(record["backends"]) == {"boss", "billing"}
    assert record["policy_version"] == yaml.safe_load(DEFAULT_POLICY_FILE.read_text())["version"]
    assert (record["outcome"], record["code"]) == ("ok", None)
    assert record["latency_us"] > 0


def test_a_partial_answer_is_recorded_as_partial(audited, customers):
    found = audited.post(PROFILE, {"msisdn": msisdn_of(customers[4])}).json()
    hub_id = found["data"]["customerByMsisdn"]["id"]
    request_id = rid()
    # A partner never sees identity documents: that field is denied, the rest answers.
    response = audited.post(
        "query($id: ID!) { customer(id: $id) { id profile { name certificateNumber } } }",
        {"id": hub_id},
        channel="partner",
        request_id=request_id,
    )
    body = response.json()
    assert body["data"]["customer"]["profile"]["name"]
    assert body["errors"][0]["extensions"]["code"] == "FIELD_DENIED"
    record = only_record(audited, request_id)
    assert (record["outcome"], record["code"]) == ("partial", "FIELD_DENIED")
    assert record["disclosed"]["customer.profile.certificateNumber"] == "denied"
    assert record["customers"] == [customer_hash(hub_id)]


def test_a_failed_operation_is_recorded_with_its_code(audited):
    request_id = rid()
    response = audited.post(
        'query { customer(id: "cus_00000000000000000000") { id } }', request_id=request_id
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    record = only_record(audited, request_id)
    assert (record["outcome"], record["code"]) == ("error", "NOT_FOUND")
    assert record["customers"] == [customer_hash("cus_00000000000000000000")]


@pytest.mark.parametrize(
    ("how", "status", "code"),
    [
        ("no key", 401, "UNAUTHENTICATED"),
        ("unknown key", 401, "UNAUTHENTICATED"),
        ("other channel claimed", 403, "CHANNEL_MISMATCH"),
        ("unknown purpose", 400, "BAD_PURPOSE"),
        ("operation not in the channel profile", 200, "OPERATION_NOT_ALLOWED"),
        ("introspection", 200, "INTROSPECTION_NOT_ALLOWED"),
    ],
)
def test_refused_requests_leave_one_record_each(audited, how, status, code):
    request_id = rid()
    document, kwargs = "query { offerings { id } }", {}
    if how == "no key":
        kwargs = {"key": ""}
    elif how == "unknown key":
        kwargs = {"key": "sb_deadbeef.not-a-real-secret"}
    elif how == "other channel claimed":
        kwargs = {"channel": "app", "headers": {"X-Channel": "agent"}}
    elif how == "unknown purpose":
        kwargs = {"purpose": "curiosity"}
    elif how == "operation not in the channel profile":
        document, kwargs = "query { customers(first: 1) { totalCount } }", {"channel": "app"}
    elif how == "introspection":
        document, kwargs = "query { __schema { queryType { name } } }", {"channel": "app"}
    response = audited.post(document, request_id=request_id, **kwargs)
    assert response.status_code == status
    assert response.json()["errors"][0]["extensions"]["code"] == code
    record = only_record(audited, request_id)
    assert (record["outcome"], record["code"]) == ("refused", code)
    if how.startswith(("no key", "unknown key")):
        assert record["subject"] is None
    else:
        assert record["subject"] in {"test-agent", "test-app"}
    assert record["customers"] == [] and record["disclosed"] == {}


def test_rate_limited_requests_are_recorded(audited):
    ids = [rid() for _ in range(SMS_LIMIT + 2)]
    statuses = [
        audited.post("query { offerings { id } }", channel="sms", request_id=i).status_code
        for i in ids
    ]
    assert 429 in statuses
    for request_id, status in zip(ids, statuses, strict=True):
        record = only_record(audited, request_id)
        assert record["channel"] == "sms"
        if status == 429:
            assert (record["outcome"], record["code"]) == ("refused", "RATE_LIMITED")
        else:
            assert (status, record["outcome"]) == (200, "ok")


def test_unparsable_and_other_operation_types_are_recorded_generically(audited):
    request_id = rid()
    response = audited.post("query {", request_id=request_id)
    assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    record = only_record(audited, request_id)
    assert (record["outcome"], record["code"], record["operation_type"]) == (
        "error",
        "GRAPHQL_PARSE_FAILED",
        None,
    )
    # The type comes from the parsed document, whatever root types exist.
    request_id = rid()
    audited.post("mutation Renew { renew }", request_id=request_id)
    record = only_record(audited, request_id)
    assert (record["operation_type"], record["operation_name"]) == ("mutation", "Renew")
    assert record["outcome"] == "error"


def test_concurrent_requests_each_leave_exactly_one_record(audited):
    ids = [rid() for _ in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda i: audited.post("query { offerings { id } }", request_id=i).status_code,
                ids,
            )
        )
    assert set(statuses) == {200}
    for request_id in ids:
        record = only_record(audited, request_id)
        assert (record["outcome"], record["backends"]) == ("ok", ["boss"])


def test_non_auditors_are_refused_and_the_refusal_is_recorded(audited):
    for channel in ("agent", "app"):
        request_id = rid()
        response = audited.post(AUDIT_LOG, {"first": 5}, channel=channel, request_id=request_id)
        body = response.json()
        assert body["data"] is None
        code = body["errors"][0]["extensions"]["code"]
        # The agent channel may use every root field but its role is not auditor; the app
        # channel's profile does not even list the field.
        assert code == ("FORBIDDEN" if channel == "agent" else "OPERATION_NOT_ALLOWED")
        record = only_record(audited, request_id)
        assert (record["outcome"], record["code"]) == ("refused", code)
        assert record["operation_name"] == "Log"
    request_id = rid()
    response = audited.post("query { auditVerification { ok } }", request_id=request_id)
    assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert only_record(audited, request_id)["code"] == "FORBIDDEN"


def test_an_auditor_finds_who_looked_at_a_customer_and_is_audited_too(audited, customers):
    bundle = customers[7]
    looked = rid()
    response = audited.post(PROFILE, {"msisdn": msisdn_of(bundle)}, request_id=looked)
    hub_id = response.json()["data"]["customerByMsisdn"]["id"]
    search = rid()
    response = audited.post(
        AUDIT_LOG,
        {"filter": {"customerId": hub_id}, "first": 10},
        channel="audit",
        purpose=None,
        request_id=search,
    )
    body = response.json()
    assert "errors" not in body, body
    nodes = body["data"]["auditLog"]["nodes"]
    assert [n["requestId"] for n in nodes] == [looked]
    node = nodes[0]
    assert (node["subject"], node["channel"], node["purpose"]) == ("test-agent", "agent", "service")
    assert {"path": "customerByMsisdn.profile.name", "level": "CLEAR"} in node["disclosed"]
    # No personal data in what the auditor gets: hashes, paths and codes only.
    text = response.text
    assert bundle.customer.name not in text and msisdn_of(bundle) not in text
    assert hub_id not in text and bundle.customer.cert_no not in text
    # The auditor's own search is in the log.
    mine = only_record(audited, search)
    assert (mine["role"], mine["channel"], mine["operation_name"]) == ("auditor", "audit", "Log")
    assert mine["outcome"] == "ok"


def test_auditor_filters_and_pages(audited):
    request_ids = [rid() for _ in range(3)]
    for request_id in request_ids:
        audited.post("query { offerings { id } }", channel="app", request_id=request_id)
    seen: list[str] = []
    after = None
    for _ in range(3):
        response = audited.post(
            AUDIT_LOG,
            {
                "filter": {"principal": "test-app", "decision": "OK"},
                "first": 1,
                "after": after,
            },
            channel="audit",
            purpose=None,
        )
        log = response.json()["data"]["auditLog"]
        seen += [n["requestId"] for n in log["nodes"]]
        after = log["pageInfo"]["endCursor"]
    assert seen == list(reversed(request_ids))  # newest first, one per page
    clear = audited.post(
        AUDIT_LOG, {"filter": {"clearOnly": True}, "first": 50}, channel="audit", purpose=None
    ).json()["data"]["auditLog"]["nodes"]
    assert clear and all(any(d["level"] == "CLEAR" for d in n["disclosed"]) for n in clear)
    bad = audited.post(AUDIT_LOG, {"first": 0}, channel="audit", purpose=None).json()
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_the_auditor_role_sees_no_customer_data(audited, customers):
    response = audited.post(
        PROFILE, {"msisdn": msisdn_of(customers[3])}, channel="audit", purpose="service"
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
    assert response.json()["data"] is None


def test_the_chain_verifies_through_the_graph(audited):
    response = audited.post(
        "query { auditVerification { ok checked lastSeq findings { kind seq } } }",
        channel="audit",
        purpose=None,
    )
    verification = response.json()["data"]["auditVerification"]
    assert verification["ok"] and verification["findings"] == []
    assert verification["checked"] == verification["lastSeq"] > 10


def test_the_graph_verifies_from_the_latest_checkpoint_and_fully_on_request(audited):
    checkpoint = audited.publish_checkpoint()
    for _ in range(3):
        audited.post("query { __typename }")
    document = (
        "query($full: Boolean!) { auditVerification(full: $full) { ok full checked firstSeq "
        "lastSeq startedFrom { kind seq time } findings { kind seq } } }"
    )
    response = audited.post(document, {"full": False}, channel="audit", purpose=None)
    verification = response.json()["data"]["auditVerification"]
    assert verification["ok"] and not verification["full"], verification
    started = verification["startedFrom"]
    assert (started["kind"], started["seq"]) == ("published", checkpoint["seq"])
    assert started["time"].startswith("20")
    assert verification["firstSeq"] == checkpoint["seq"] + 1
    assert verification["checked"] == verification["lastSeq"] - checkpoint["seq"] >= 3
    response = audited.post(document, {"full": True}, channel="audit", purpose=None)
    full = response.json()["data"]["auditVerification"]
    assert full["ok"] and full["full"] and full["startedFrom"] is None
    assert full["checked"] == full["lastSeq"] > verification["checked"]


def test_no_personal_data_in_the_stored_log(audited, customers):
    for bundle in customers[3:9]:
        audited.post(PROFILE, {"msisdn": msisdn_of(bundle)})
    with sqlite3.connect(audited.database) as conn:
        dump = "\n".join(
            "|".join(str(v) for v in row)
            for table in ("audit_record", "audit_customer")
            for row in conn.execute(f"SELECT * FROM {table}")
        )
    for bundle in customers[3:9]:
        secrets = [bundle.customer.name, bundle.customer.cert_no, bundle.customer.customer_no]
        secrets += [s.msisdn for s in bundle.subscribers]
        for secret in secrets:
            assert secret not in dump
    assert "cus_" not in dump  # hub ids only as keyed hashes


def test_without_a_pinned_key_the_graph_says_the_signatures_are_untrusted(audited):
    for full in (False, True):
        response = audited.post(
            "query($full: Boolean!) { auditVerification(full: $full) { ok signatures keyId } }",
            {"full": full},
            channel="audit",
            purpose=None,
        )
        verification = response.json()["data"]["auditVerification"]
        assert verification["ok"] and verification["signatures"] == "UNTRUSTED", verification
        assert len(verification["keyId"]) == 16
