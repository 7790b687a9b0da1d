"""The /_sim control surface of all three systems: counts, latency, failures, down, garbage."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from lxml import etree
from zeep.exceptions import Fault

ACCOUNTS = "/tmf-api/accountManagement/v4/billingAccount"
TICKETS = "/tmf-api/troubleTicket/v4/troubleTicket"
BOSS_PATH = "/boss/services/BossService"


def header(operation: str) -> dict[str, str]:
    return {
        "Version": "1.0",
        "BusinessCode": operation,
        "MessageSeq": "ctl-1",
        "LoginSystemCode": "SWITCHBOARD",
    }


def set_control(http: httpx.Client, base: str, **state) -> dict:
    response = http.post(f"{base}/_sim/control", json=state)
    assert response.status_code == 200, response.text
    return response.json()


def stats(http: httpx.Client, base: str) -> dict:
    return http.get(f"{base}/_sim/stats").json()


def offerings_envelope() -> bytes:
    return (
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        b'xmlns:b="http://boss.simulator.switchboard/crm/v1"><soapenv:Body>'
        b"<b:QueryOfferingsRequestMsg><b:RequestHeader><b:Version>1.0</b:Version>"
        b"<b:BusinessCode>QueryOfferings</b:BusinessCode><b:MessageSeq>1</b:MessageSeq>"
        b"<b:LoginSystemCode>T</b:LoginSystemCode></b:RequestHeader>"
        b"<b:QueryOfferingsRequest/></b:QueryOfferingsRequestMsg></soapenv:Body>"
        b"</soapenv:Envelope>"
    )


def test_health_is_ok_and_not_counted(control, http) -> None:
    for base in control.all():
        http.post(f"{base}/_sim/reset")
        assert http.get(f"{base}/_sim/health").json() == {"status": "ok"}
        assert stats(http, base) == {"calls": {}, "total": 0}


def test_stats_count_operations_and_route_templates(control, http, boss, bundles) -> None:
    for base in control.all():
        http.post(f"{base}/_sim/reset")
    for _ in range(2):
        boss.QueryOfferings(RequestHeader=header("QueryOfferings"), QueryOfferingsRequest={})
    boss.QueryCustomer(
        RequestHeader=header("QueryCustomer"),
        QueryCustomerRequest={"CustomerNo": [bundles[0].customer.customer_no]},
    )
    account = bundles[0].account.id
    http.get(control.billing + ACCOUNTS, params={"id": account})
    http.get(f"{control.billing}{ACCOUNTS}/{account}")
    http.get(f"{control.billing}{ACCOUNTS}/BA0000000000")  # a 404 is still a call
    assert stats(http, control.boss) == {
        "calls": {"QueryOfferings": 2, "QueryCustomer": 1},
        "total": 3,
    }
    assert stats(http, control.billing) == {
        "calls": {f"GET {ACCOUNTS}": 1, f"GET {ACCOUNTS}/{{id}}": 2},
        "total": 3,
    }
    http.post(f"{control.billing}/_sim/reset")
    assert stats(http, control.billing) == {"calls": {}, "total": 0}


def test_down_answers_503_with_an_empty_body_and_counts(control, http, bundles) -> None:
    for base in control.all():
        http.post(f"{base}/_sim/reset")
        assert set_control(http, base, down=True)["down"] is True
    billing = http.get(control.billing + ACCOUNTS, params={"id": bundles[0].account.id})
    care = http.get(control.care + TICKETS, params={"relatedParty.id": bundles[0].party.id})
    soap = http.post(control.boss + BOSS_PATH, content=offerings_envelope())
    for response in (billing, care, soap):
        assert response.status_code == 503 and response.content == b""
    assert stats(http, control.boss)["calls"] == {"QueryOfferings": 1}
    assert stats(http, control.care)["total"] == 1
    assert http.get(f"{control.care}/_sim/health").status_code == 200


def test_bad_response_is_200_and_unparseable(control, http, bundles) -> None:
    for base in control.all():
        set_control(http, base, bad_response=True)
    rest = http.get(control.billing + ACCOUNTS, params={"id": bundles[0].account.id})
    assert rest.status_code == 200
    with pytest.raises(ValueError):
        json.loads(rest.content)
    care = http.get(control.care + TICKETS, params={"relatedParty.id": bundles[0].party.id})
    with pytest.raises(ValueError):
        json.loads(care.content)
    soap = http.post(control.boss + BOSS_PATH, content=offerings_envelope())
    assert soap.status_code == 200
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(soap.content)


def test_failure_rate_one_fails_every_call(control, http, boss, bundles) -> None:
    for base in control.all():
        set_control(http, base, failure_rate=1.0)
    rest = http.get(control.billing + ACCOUNTS, params={"id": bundles[0].account.id})
    assert rest.status_code == 500
    assert rest.json()["code"] == "1" and rest.json()["status"] == "500"
    care = http.get(control.care + TICKETS, params={"relatedParty.id": bundles[0].party.id})
    assert care.status_code == 500
    with pytest.raises(Fault) as caught:
        boss.QueryOfferings(RequestHeader=header("QueryOfferings"), QueryOfferingsRequest={})
    assert caught.value.code == "soapenv:Server"


def test_latency_delays_business_calls_only(control, http, bundles) -> None:
    set_control(http, control.billing, latency_ms=[150, 160])
    started = time.monotonic()
    http.get(control.billing + ACCOUNTS, params={"id": bundles[0].account.id})
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    http.get(f"{control.billing}/_sim/health")
    assert time.monotonic() - started < 0.15


def test_control_state_round_trip_validation_and_reset(control, http) -> None:
    state = set_control(http, control.care, latency_ms=[1, 2], failure_rate=0.25)
    assert state == {
        "latency_ms": [1, 2],
        "failure_rate": 0.25,
        "down": False,
        "bad_response": False,
        "fail_operations": [],
    }
    for bad in ({"failure_rate": 2}, {"latency_ms": [5, 1]}, {"down": "yes"}, {"speed": 1}):
        response = http.post(f"{control.care}/_sim/control", json=bad)
        assert response.status_code == 400
    assert http.post(f"{control.care}/_sim/control", json={}).json()["failure_rate"] == 0.25
    http.post(f"{control.care}/_sim/reset")
    assert http.post(f"{control.care}/_sim/control", json={}).json() == {
        "latency_ms": None,
        "failure_rate": 0.0,
        "down": False,
        "bad_response": False,
        "fail_operations": [],
    }
