"""GET /audit/export, the auditors' page's export, over HTTP against a real gateway.

Same authorisation as the page (auditor role, a channel that may read the log), itself an
audited access committed before the first byte, every filter of the API, bounded by
audit.export_max_records (here from the environment; TOML below), nothing personal in it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime

import pytest

from gateway.audit.export_format import EXPORT_COLUMNS
from gateway.settings import load_settings
from tests.audit_support import AuditedGateway, audited_gateway, customer_hash

MAX_RECORDS = 60


@pytest.fixture(scope="module")
def audited(sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedGateway]:
    with audited_gateway(
        sims,
        tmp_path_factory.mktemp("auditexport"),
        SWITCHBOARD_AUDIT__EXPORT_MAX_RECORDS=str(MAX_RECORDS),
        SWITCHBOARD_AUDIT__EXPORT_BATCH_RECORDS="7",  # several batches per export
    ) as gateway:
        yield gateway


def exports(audited: AuditedGateway) -> list[dict]:
    return [r for r in audited.records() if r["operation_type"] == "export"]


def test_an_auditor_exports_a_filter_as_csv_and_jsonl_and_the_export_is_recorded(
    audited, customers
):
    bundle = customers[7]
    msisdn = next(s.msisdn for s in bundle.subscribers if s.status != "D")
    looked = audited.post(
        "query($m: String!) { customerByMsisdn(msisdn: $m) { id profile { name } } }",
        {"m": msisdn},
    ).json()
    hub_id = looked["data"]["customerByMsisdn"]["id"]
    for _ in range(3):
        audited.post("query Offers { offerings { id } }", channel="app", purpose=None)

    before = len(exports(audited))
    csv_answer = audited.export(format="csv", customerId=hub_id)
    assert csv_answer.status_code == 200, csv_answer.text
    assert csv_answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_answer.text)))
    assert tuple(rows[0].keys()) == EXPORT_COLUMNS
    stored = [r for r in audited.records() if customer_hash(hub_id) in r["customers"]]
    stored = [r for r in stored if r["operation_type"] != "export"]
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in stored]
    assert rows[0]["subject"] == "test-agent"
    assert "customerByMsisdn.profile.name=clear" in rows[0]["disclosed"]
    for row in rows:  # RFC 3339 with the offset, in UTC
        assert row["time"].endswith("+00:00") and datetime.fromisoformat(row["time"])
    # No personal data: the customer is a keyed hash; neither the id, name nor MSISDN shows.
    for text in (hub_id, bundle.customer.name, msisdn):
        assert text not in csv_answer.text

    # The export is an audited access of its own, naming the customer as a keyed hash.
    (record,) = exports(audited)[before:]
    assert record["operation_name"] == "auditExport"
    assert record["subject"] == "test-audit" and record["role"] == "auditor"
    assert record["outcome"] == "ok"
    assert record["customers"] == [customer_hash(hub_id)]
    assert record["request_id"] == csv_answer.headers["x-request-id"]

    # Every filter of the API: principal, role, channel, operation, outcome, purpose, times.
    jsonl = audited.export(
        format="jsonl",
        principal="test-app",
        role="customer",
        channel="app",
        operation="Offers",
        decision="ok",
        **{"from": "2020-01-01T08:00:00+08:00", "to": "2999-01-01T00:00:00Z"},
    )
    assert jsonl.status_code == 200, jsonl.text
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert len(lines) >= 3
    assert {(r["subject"], r["operation_name"], r["outcome"]) for r in lines} == {
        ("test-app", "Offers", "ok")
    }
    seqs = [r["seq"] for r in lines]
    assert seqs == sorted(seqs)  # oldest first
    by_request = audited.export(format="jsonl", requestId=lines[0]["request_id"])
    assert [json.loads(x)["seq"] for x in by_request.text.splitlines()] == [lines[0]["seq"]]
    purpose = audited.export(format="jsonl", purpose="service", code="FORBIDDEN")
    assert purpose.status_code == 200 and purpose.text == ""


def test_others_are_refused_with_a_code_and_recorded(audited):
    forbidden = audited.export(key=audited.keys["agent"], format="csv")
    assert forbidden.status_code == 403
    assert forbidden.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    (refused,) = audited.records(forbidden.headers["x-request-id"])
    assert (refused["outcome"], refused["code"], refused["subject"]) == (
        "refused",
        "FORBIDDEN",
        "test-agent",
    )
    unknown = audited.export(key="sb_deadbeef.not-a-key", format="csv")
    assert unknown.status_code == 401
    assert audited.records(unknown.headers["x-request-id"])[0]["code"] == "UNAUTHENTICATED"

    for params in (
        {"format": "xml"},
        {"format": "csv", "decision": "maybe"},
        {"format": "csv", "from": "yesterday"},
        {"format": "csv", "principal": "x" * 129},
        {"format": "csv", "customerid": "cus_typo"},  # names are exact
        {"format": "csv", "clearOnly": "yes"},
    ):
        bad = audited.export(**params)
        assert bad.status_code == 400, params
        error = bad.json()["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "cus_typo" not in error["message"]
        assert audited.records(bad.headers["x-request-id"])[0]["code"] == "BAD_USER_INPUT"


def test_an_export_past_the_limit_is_refused_before_anything_is_sent(audited):
    while len(audited.records()) <= MAX_RECORDS:
        audited.post("{ offerings { id } }", channel="app", purpose=None)
    too_large = audited.export(format="jsonl")
    assert too_large.status_code == 413
    error = too_large.json()["errors"][0]
    assert error["extensions"]["code"] == "EXPORT_TOO_LARGE"
    assert str(MAX_RECORDS) in error["message"]
    (record,) = audited.records(too_large.headers["x-request-id"])
    assert (record["outcome"], record["code"]) == ("refused", "EXPORT_TOO_LARGE")
    # A narrower filter still goes out, in batches of 7, whole.
    narrow = audited.export(format="jsonl", principal="test-audit")
    assert narrow.status_code == 200
    assert int(narrow.headers["x-export-records"]) == len(narrow.text.splitlines())


def test_the_export_limits_reach_the_settings_from_toml_and_environment(tmp_path, monkeypatch):
    config = tmp_path / "switchboard.toml"
    config.write_text("[audit]\nexport_max_records = 1234\nexport_batch_records = 50\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    settings = load_settings()
    assert (settings.audit.export_max_records, settings.audit.export_batch_records) == (1234, 50)
    monkeypatch.setenv("SWITCHBOARD_AUDIT__EXPORT_MAX_RECORDS", "99")
    assert load_settings().audit.export_max_records == 99
    assert load_settings().audit.export_batch_records == 50
    config.write_text("[audit]\nexport_max_records = 0\n")
    monkeypatch.delenv("SWITCHBOARD_AUDIT__EXPORT_MAX_RECORDS")
    with pytest.raises(ValueError, match=r"audit\.export_max_records"):
        load_settings()
