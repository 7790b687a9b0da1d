"""One timestamp style in every answer: RFC 3339 with an offset, normalised to UTC (+00:00).

Walks the answers of the main queries (the 360 view with backend times that the simulators
send as +08:00, a verification, a workflow request with its history and notifications, the
access log) and checks every date-time string in them, JSON details included.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.audit_support import AuditedGateway, audited_gateway

# RFC 3339 date-time (section 5.6), offset required.
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z", re.IGNORECASE
)
LOOKS_LIKE_A_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")

CUSTOMER_360 = """
query($m: String!) { customerByMsisdn(msisdn: $m) {
  id
  subscriptions { msisdn }
  billingAccounts {
    balance { asOf }
    bills(first: 3) { items { periodStart periodEnd } }
    payments(first: 3) { items { paidAt } }
  }
  tickets(first: 5) { createdAt updatedAt notes { date } }
  interactions(first: 5) { startedAt endedAt }
} }"""
FILE_COMPLAINT = """mutation($input: FileComplaintInput!) {
  fileComplaint(input: $input) { id createdAt updatedAt } }"""
REQUEST = """query($id: ID!) { request(id: $id) {
  createdAt updatedAt detail history { at detail } notifications { at detail } } }"""
OPEN = """query($c: ID!) { openRequests(customerId: $c) { createdAt updatedAt history { at } } }"""
START = """mutation($id: ID!) { startOtp(customerId: $id) { challengeId expiresAt } }"""
AUDIT = """{ auditLog(first: 50) { nodes { time windowEnd } }
  auditVerification { startedFrom { time } } }"""


@pytest.fixture(scope="module")
def hub(sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedGateway]:
    with audited_gateway(sims, tmp_path_factory.mktemp("timestamps")) as gateway:
        yield gateway


def timestamps(value: Any) -> Iterator[str]:
    """Every string in an answer that looks like a date and time, wherever it is."""
    if isinstance(value, dict):
        for item in value.values():
            yield from timestamps(item)
    elif isinstance(value, list):
        for item in value:
            yield from timestamps(item)
    elif isinstance(value, str) and LOOKS_LIKE_A_TIME.match(value):
        yield value


def data(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def assert_one_style(answer: dict, at_least: int) -> list[str]:
    found = list(timestamps(answer))
    assert len(found) >= at_least, found
    for text in found:
        assert RFC3339.match(text), f"not RFC 3339 with an offset: {text}"
        moment = datetime.fromisoformat(text)
        assert moment.utcoffset() is not None
        assert text.endswith("+00:00"), f"not normalised to UTC: {text}"
        assert moment.astimezone(UTC).year >= 2020
    return found


def test_the_main_answers_carry_one_timestamp_style(hub, customers):
    bundle = next(b for b in customers[20:] if any(s.status == "A" for s in b.subscribers))
    msisdn = next(s.msisdn for s in bundle.subscribers if s.status == "A")
    view = data(hub.post(CUSTOMER_360, {"m": msisdn}))
    # Bills, payments and tickets come from the simulators with +08:00: now in UTC.
    assert_one_style(view, at_least=3)
    customer_id = view["customerByMsisdn"]["id"]

    filed = data(
        hub.post(
            FILE_COMPLAINT,
            {
                "input": {
                    "customerId": customer_id,
                    "category": "network",
                    "description": "No signal at home since Monday.",
                    "idempotencyKey": f"ts-{uuid.uuid4().hex[:12]}",
                }
            },
        )
    )
    assert_one_style(filed, at_least=2)
    request_id = filed["fileComplaint"]["id"]
    # history.at came back from SQLite without its offset before.
    answer = data(hub.post(REQUEST, {"id": request_id}))
    assert answer["request"]["history"], answer
    assert_one_style(answer, at_least=3)
    assert_one_style(data(hub.post(OPEN, {"c": customer_id})), at_least=2)

    otp = hub.post(START, {"id": customer_id}, channel="app", purpose=None)
    assert_one_style(data(otp), at_least=1)

    hub.publish_checkpoint()
    hub.post("{ offerings { id } }", channel="app", purpose=None)
    audit = data(hub.post(AUDIT, channel="audit", purpose=None))
    assert_one_style(audit, at_least=4)


def test_a_datetime_input_with_an_offset_is_the_same_instant(hub):
    """The audit filter's times: +08:00 and the UTC they mean select the same records."""
    query = """query($f: AuditFilter) { auditLog(filter: $f, first: 200) { nodes { seq } } }"""
    hub.post("{ offerings { id } }", channel="app", purpose=None)
    # Up to now: the auditor's own queries below, recorded after it, stay out of both.
    until = datetime.now(UTC)
    shanghai = timezone(timedelta(hours=8))
    local = {"from": "2020-01-01T08:00:00+08:00", "to": until.astimezone(shanghai).isoformat()}
    utc = {"from": "2020-01-01T00:00:00+00:00", "to": until.isoformat()}
    first = data(hub.post(query, {"f": local}, channel="audit", purpose=None))
    second = data(hub.post(query, {"f": utc}, channel="audit", purpose=None))
    assert first["auditLog"]["nodes"] and first == second
    # Without an offset: UTC.
    naive = {"from": "2020-01-01T00:00:00", "to": until.replace(tzinfo=None).isoformat()}
    assert data(hub.post(query, {"f": naive}, channel="audit", purpose=None)) == first
