"""The SOAP BOSS through zeep, consuming the published WSDL unchanged, plus raw-XML attacks."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from lxml import etree
from zeep.exceptions import Fault

from simulators.dataset import CustomerBundle, Subscriber
from simulators.reference import OFFERINGS, OFFERINGS_BY_ID

TNS = "http://boss.simulator.switchboard/crm/v1"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def header(operation: str) -> dict[str, str]:
    return {
        "Version": "1.0",
        "BusinessCode": operation,
        "MessageSeq": f"seq-{uuid.uuid4().hex[:12]}",
        "LoginSystemCode": "SWITCHBOARD",
    }


def error_code(fault: Fault) -> str:
    return fault.detail.find(f"{{{TNS}}}ErrorCode").text


def _lines(bundles: list[CustomerBundle], status: str) -> list[Subscriber]:
    return [s for b in bundles for s in b.subscribers if s.status == status]


def test_wsdl_and_xsd_are_served(sims, http: httpx.Client) -> None:
    for path in ("/boss/services/BossService?wsdl", "/boss/services/BossService.wsdl"):
        wsdl = http.get(sims.boss + path)
        assert wsdl.status_code == 200 and b"wsdl:definitions" in wsdl.content
    xsd = http.get(sims.boss + "/boss/services/BossService.xsd")
    assert xsd.status_code == 200 and b"QueryCustomerRequestMsg" in xsd.content


def test_wsdl_declares_all_nine_operations(zeep_client) -> None:
    binding = zeep_client.wsdl.bindings[f"{{{TNS}}}BossServiceSoapBinding"]
    assert set(binding._operations) == {
        "QueryCustomer",
        "QuerySubscribers",
        "QuerySubscriberByMsisdn",
        "QueryCustomerList",
        "QueryOfferings",
        "CheckOfferingEligibility",
        "ChangeOffering",
        "CancelOrder",
        "QueryOrder",
    }


def test_query_customer_by_numbers_skips_unknown(boss, bundles) -> None:
    wanted = [bundles[3].customer, bundles[1].customer]
    answer = boss.QueryCustomer(
        RequestHeader=header("QueryCustomer"),
        QueryCustomerRequest={"CustomerNo": [c.customer_no for c in wanted] + ["1999999999"]},
    )
    assert answer.ResultHeader.ResultCode == "0"
    got = answer.QueryCustomerResult.Customer
    assert [c.CustomerNo for c in got] == [c.customer_no for c in wanted]
    first = got[0]
    expected = wanted[0]
    assert (first.CustomerName, first.CertificateNo, first.Gender) == (
        expected.name,
        expected.cert_no,
        expected.gender,
    )
    assert first.BirthDate.isoformat() == expected.birth_date
    assert first.CustLevel == expected.cust_level and first.Address == expected.address


def test_query_customer_by_certificate_and_unknown_certificate(boss, bundles) -> None:
    c = bundles[10].customer
    answer = boss.QueryCustomer(
        RequestHeader=header("QueryCustomer"), QueryCustomerRequest={"CertificateNo": c.cert_no}
    )
    assert [x.CustomerNo for x in answer.QueryCustomerResult.Customer] == [c.customer_no]
    missing = boss.QueryCustomer(
        RequestHeader=header("QueryCustomer"),
        QueryCustomerRequest={"CertificateNo": "11010519491231002X"},
    )
    assert missing.ResultHeader.ResultCode == "102010001"
    assert missing.QueryCustomerResult is None


def test_result_header_echoes_the_message_seq(boss) -> None:
    h = header("QueryOfferings")
    answer = boss.QueryOfferings(RequestHeader=h, QueryOfferingsRequest={})
    assert answer.ResultHeader.MessageSeq == h["MessageSeq"]
    assert answer.ResultHeader.Version == "1.0"


def test_query_subscribers_returns_every_line(boss, bundles) -> None:
    wanted = bundles[20:23]
    answer = boss.QuerySubscribers(
        RequestHeader=header("QuerySubscribers"),
        QuerySubscribersRequest={"CustomerNo": [b.customer.customer_no for b in wanted]},
    )
    got = answer.QuerySubscribersResult.Subscriber
    assert [s.MSISDN for s in got] == [s.msisdn for b in wanted for s in b.subscribers]
    line = got[0]
    source = wanted[0].subscribers[0]
    offering = OFFERINGS_BY_ID[source.offering_id]
    assert line.Usage.DataAllowanceMB == offering.data_mb
    assert line.Usage.DataUsedMB == source.data_used_mb
    assert str(line.ARPU) == f"{source.arpu_cents // 100}.{source.arpu_cents % 100:02d}"


def test_query_subscriber_by_msisdn(boss, bundles) -> None:
    line = bundles[30].subscribers[-1]
    answer = boss.QuerySubscriberByMsisdn(
        RequestHeader=header("QuerySubscriberByMsisdn"),
        QuerySubscriberByMsisdnRequest={"MSISDN": line.msisdn},
    )
    assert answer.QuerySubscriberByMsisdnResult.Subscriber.SubscriberNo == line.subscriber_no
    unknown = boss.QuerySubscriberByMsisdn(
        RequestHeader=header("QuerySubscriberByMsisdn"),
        QuerySubscriberByMsisdnRequest={"MSISDN": "19900000000"},
    )
    assert unknown.ResultHeader.ResultCode == "102010002"


def test_malformed_msisdn_is_a_client_fault(boss) -> None:
    with pytest.raises(Fault) as caught:
        boss.QuerySubscriberByMsisdn(
            RequestHeader=header("QuerySubscriberByMsisdn"),
            QuerySubscriberByMsisdnRequest={"MSISDN": "12345"},
        )
    assert caught.value.code == "soapenv:Client"
    assert "MSISDN" in caught.value.message
    assert error_code(caught.value) == "100000001"


def test_query_customer_list_pages_and_filters(boss, bundles) -> None:
    page = boss.QueryCustomerList(
        RequestHeader=header("QueryCustomerList"),
        QueryCustomerListRequest={"BeginRowNum": 10, "FetchRowNum": 5},
    )
    result = page.QueryCustomerListResult
    assert result.TotalRowNum == len(bundles)
    assert [c.CustomerNo for c in result.Customer] == [
        b.customer.customer_no for b in bundles[10:15]
    ]
    gold = boss.QueryCustomerList(
        RequestHeader=header("QueryCustomerList"),
        QueryCustomerListRequest={"BeginRowNum": 0, "FetchRowNum": 200, "CustLevel": "3"},
    ).QueryCustomerListResult
    expected = [b.customer.customer_no for b in bundles if b.customer.cust_level == "3"]
    assert gold.TotalRowNum == len(expected)
    assert [c.CustomerNo for c in gold.Customer] == expected[:200]
    surname = bundles[0].customer.family_name
    named = boss.QueryCustomerList(
        RequestHeader=header("QueryCustomerList"),
        QueryCustomerListRequest={
            "BeginRowNum": 0,
            "FetchRowNum": 200,
            "CustomerNameStartsWith": surname,
        },
    ).QueryCustomerListResult
    expected = [b.customer.customer_no for b in bundles if b.customer.name.startswith(surname)]
    assert [c.CustomerNo for c in named.Customer] == expected


def test_fetch_row_num_over_200_is_a_client_fault(boss) -> None:
    with pytest.raises(Fault) as caught:
        boss.QueryCustomerList(
            RequestHeader=header("QueryCustomerList"),
            QueryCustomerListRequest={"BeginRowNum": 0, "FetchRowNum": 201},
        )
    assert error_code(caught.value) == "100000001"


def test_query_offerings(boss) -> None:
    everything = boss.QueryOfferings(
        RequestHeader=header("QueryOfferings"), QueryOfferingsRequest={}
    ).QueryOfferingsResult.Offering
    assert [o.OfferingId for o in everything] == [o.offering_id for o in OFFERINGS]
    assert any(not o.Sellable for o in everything) and any(o.Sellable for o in everything)
    some = boss.QueryOfferings(
        RequestHeader=header("QueryOfferings"),
        QueryOfferingsRequest={"OfferingId": ["OF0007", "OF0999"]},
    ).QueryOfferingsResult.Offering
    assert [(o.OfferingId, str(o.MonthlyFee)) for o in some] == [("OF0007", "128.00")]


def test_check_offering_eligibility(boss, bundles) -> None:
    active = _lines(bundles, "A")[0]
    target = "OF0007" if active.offering_id != "OF0007" else "OF0006"
    ok = boss.CheckOfferingEligibility(
        RequestHeader=header("CheckOfferingEligibility"),
        CheckOfferingEligibilityRequest={
            "SubscriberNo": active.subscriber_no,
            "NewOfferingId": target,
        },
    ).CheckOfferingEligibilityResult
    assert ok.Eligible is True and ok.ReasonCode == "0"
    legacy = boss.CheckOfferingEligibility(
        RequestHeader=header("CheckOfferingEligibility"),
        CheckOfferingEligibilityRequest={
            "SubscriberNo": active.subscriber_no,
            "NewOfferingId": "OF0001",
        },
    ).CheckOfferingEligibilityResult
    assert legacy.Eligible is False and legacy.ReasonCode == "103020011"
    unknown = boss.CheckOfferingEligibility(
        RequestHeader=header("CheckOfferingEligibility"),
        CheckOfferingEligibilityRequest={"SubscriberNo": "S999999999999", "NewOfferingId": target},
    )
    assert unknown.ResultHeader.ResultCode == "102010003"


def test_change_offering_is_idempotent_and_cancel_switches_back(boss, bundles) -> None:
    line = _lines(bundles, "A")[5]
    target = "OF0009" if line.offering_id != "OF0009" else "OF0010"
    key = f"idem-{uuid.uuid4()}"
    request = {"SubscriberNo": line.subscriber_no, "NewOfferingId": target, "IdempotencyKey": key}
    first = boss.ChangeOffering(
        RequestHeader=header("ChangeOffering"), ChangeOfferingRequest=request
    )
    again = boss.ChangeOffering(
        RequestHeader=header("ChangeOffering"), ChangeOfferingRequest=request
    )
    assert first.ResultHeader.ResultCode == "0"
    assert first.ChangeOfferingResult.Status == "COMPLETED"
    assert again.ChangeOfferingResult.OrderId == first.ChangeOfferingResult.OrderId
    order_id = first.ChangeOfferingResult.OrderId

    order = boss.QueryOrder(
        RequestHeader=header("QueryOrder"), QueryOrderRequest={"OrderId": order_id}
    ).QueryOrderResult.Order
    assert (order.OldOfferingId, order.NewOfferingId, order.Status) == (
        line.offering_id,
        target,
        "COMPLETED",
    )
    changed = boss.QuerySubscriberByMsisdn(
        RequestHeader=header("QuerySubscriberByMsisdn"),
        QuerySubscriberByMsisdnRequest={"MSISDN": line.msisdn},
    ).QuerySubscriberByMsisdnResult.Subscriber
    assert changed.PrimaryOfferingId == target

    cancel_key = f"cancel-{uuid.uuid4()}"
    cancel = {"OrderId": order_id, "IdempotencyKey": cancel_key}
    cancelled = boss.CancelOrder(RequestHeader=header("CancelOrder"), CancelOrderRequest=cancel)
    repeated = boss.CancelOrder(RequestHeader=header("CancelOrder"), CancelOrderRequest=cancel)
    assert cancelled.CancelOrderResult.Status == "CANCELLED"
    assert repeated.CancelOrderResult.OrderId == order_id
    back = boss.QuerySubscriberByMsisdn(
        RequestHeader=header("QuerySubscriberByMsisdn"),
        QuerySubscriberByMsisdnRequest={"MSISDN": line.msisdn},
    ).QuerySubscriberByMsisdnResult.Subscriber
    assert back.PrimaryOfferingId == line.offering_id
    status = boss.QueryOrder(
        RequestHeader=header("QueryOrder"), QueryOrderRequest={"OrderId": order_id}
    ).QueryOrderResult.Order.Status
    assert status == "CANCELLED"


def test_one_order_per_idempotency_key(boss, bundles, sims) -> None:
    import sqlite3

    line = _lines(bundles, "A")[6]
    target = "OF0006" if line.offering_id != "OF0006" else "OF0007"
    key = f"once-{uuid.uuid4()}"
    for _ in range(3):
        boss.ChangeOffering(
            RequestHeader=header("ChangeOffering"),
            ChangeOfferingRequest={
                "SubscriberNo": line.subscriber_no,
                "NewOfferingId": target,
                "IdempotencyKey": key,
            },
        )
    conn = sqlite3.connect(sims.data_dir / "boss.db")
    count = conn.execute(
        "SELECT count(*) FROM offering_order WHERE subscriber_no = ?", (line.subscriber_no,)
    ).fetchone()[0]
    conn.close()
    assert count == 1


def test_change_offering_business_errors_are_result_codes(boss, bundles) -> None:
    active = _lines(bundles, "A")[7]
    not_sellable = boss.ChangeOffering(
        RequestHeader=header("ChangeOffering"),
        ChangeOfferingRequest={
            "SubscriberNo": active.subscriber_no,
            "NewOfferingId": "OF0001" if active.offering_id != "OF0001" else "OF0004",
            "IdempotencyKey": str(uuid.uuid4()),
        },
    )
    assert not_sellable.ResultHeader.ResultCode == "103020011"
    assert not_sellable.ChangeOfferingResult is None
    same = boss.ChangeOffering(
        RequestHeader=header("ChangeOffering"),
        ChangeOfferingRequest={
            "SubscriberNo": active.subscriber_no,
            "NewOfferingId": active.offering_id,
            "IdempotencyKey": str(uuid.uuid4()),
        },
    )
    assert same.ResultHeader.ResultCode == "103020011"
    inactive = (_lines(bundles, "S") + _lines(bundles, "D"))[0]
    refused = boss.ChangeOffering(
        RequestHeader=header("ChangeOffering"),
        ChangeOfferingRequest={
            "SubscriberNo": inactive.subscriber_no,
            "NewOfferingId": "OF0007" if inactive.offering_id != "OF0007" else "OF0006",
            "IdempotencyKey": str(uuid.uuid4()),
        },
    )
    assert refused.ResultHeader.ResultCode == "103020012"
    unknown = boss.ChangeOffering(
        RequestHeader=header("ChangeOffering"),
        ChangeOfferingRequest={
            "SubscriberNo": "S999999999999",
            "NewOfferingId": "OF0007",
            "IdempotencyKey": str(uuid.uuid4()),
        },
    )
    assert unknown.ResultHeader.ResultCode == "102010003"


def test_unknown_offering_and_unknown_order_are_client_faults(boss, bundles) -> None:
    line = _lines(bundles, "A")[8]
    with pytest.raises(Fault) as offering:
        boss.ChangeOffering(
            RequestHeader=header("ChangeOffering"),
            ChangeOfferingRequest={
                "SubscriberNo": line.subscriber_no,
                "NewOfferingId": "OF9999",
                "IdempotencyKey": str(uuid.uuid4()),
            },
        )
    assert offering.value.code == "soapenv:Client"
    assert error_code(offering.value) == "103020010"
    with pytest.raises(Fault) as order:
        boss.QueryOrder(RequestHeader=header("QueryOrder"), QueryOrderRequest={"OrderId": "ORD1"})
    assert error_code(order.value) == "103030004"
    with pytest.raises(Fault) as cancel:
        boss.CancelOrder(
            RequestHeader=header("CancelOrder"),
            CancelOrderRequest={"OrderId": "ORD1", "IdempotencyKey": str(uuid.uuid4())},
        )
    assert error_code(cancel.value) == "103030004"


def _post(http: httpx.Client, sims, body: bytes, action: str = "QueryCustomer") -> httpx.Response:
    return http.post(
        f"{sims.boss}/boss/services/BossService",
        content=body,
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'},
    )


def _fault_code(response: httpx.Response) -> tuple[str, str]:
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    return fault.findtext("faultcode"), fault.findtext(f"detail/{{{TNS}}}ErrorCode")


def test_billion_laughs_is_refused_quickly(http, sims) -> None:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{n} "{("&lol%s;" % (n - 1 if n > 1 else "")) * 10}">' for n in range(1, 10)
    )
    body = (
        f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:b="{TNS}"><soapenv:Body>'
        "<b:QueryCustomerRequestMsg><b:RequestHeader><b:Version>&lol9;</b:Version>"
        "</b:RequestHeader></b:QueryCustomerRequestMsg></soapenv:Body></soapenv:Envelope>"
    ).encode()
    started = time.monotonic()
    response = _post(http, sims, body)
    assert time.monotonic() - started < 2
    assert response.status_code == 500
    assert _fault_code(response) == ("soapenv:Client", "100000001")
    assert b"lollollol" not in response.content
    assert http.get(f"{sims.boss}/_sim/health").json() == {"status": "ok"}


def test_external_entities_are_not_resolved(http, sims) -> None:
    body = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:b="{TNS}"><soapenv:Body>'
        "<b:QueryOfferingsRequestMsg><b:RequestHeader><b:Version>&xxe;</b:Version>"
        "</b:RequestHeader></b:QueryOfferingsRequestMsg></soapenv:Body></soapenv:Envelope>"
    ).encode()
    response = _post(http, sims, body, "QueryOfferings")
    assert response.status_code == 500
    assert b"root:" not in response.content


def test_not_xml_and_not_an_envelope_are_client_faults(http, sims) -> None:
    for body in (b"hello", b"<a/>", f'<e:Envelope xmlns:e="{SOAP_ENV}"/>'.encode()):
        response = _post(http, sims, body)
        assert response.status_code == 500
        assert _fault_code(response) == ("soapenv:Client", "100000001")
