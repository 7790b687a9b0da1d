"""The billing and care REST simulators: paging, filters, errors, idempotent writes."""

from __future__ import annotations

import uuid

import httpx
import pytest

from simulators.dataset import has_certificate_typo

ACCOUNTS = "/tmf-api/accountManagement/v4/billingAccount"
BILLS = "/tmf-api/customerBillManagement/v4/customerBill"
BALANCES = "/tmf-api/prepayBalanceManagement/v4/accountBalance"
ADJUST = "/tmf-api/prepayBalanceManagement/v4/adjustBalance"
PAYMENTS = "/tmf-api/paymentManagement/v4/payment"
INDIVIDUALS = "/tmf-api/partyManagement/v4/individual"
TICKETS = "/tmf-api/troubleTicket/v4/troubleTicket"
INTERACTIONS = "/tmf-api/partyInteraction/v4/partyInteraction"


def assert_tmf_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and body["status"] == str(status)
    assert body["reason"] and body["message"]


# Billing


def test_account_by_service_number_certificate_and_id(sims, http, bundles) -> None:
    b = next(b for b in bundles[40:] if len(b.account.service_numbers) > 1)
    by_number = http.get(
        sims.billing + ACCOUNTS, params={"serviceNumber": b.account.service_numbers[1]}
    )
    assert by_number.status_code == 200
    [item] = by_number.json()
    assert item["id"] == b.account.id and item["@type"] == "BillingAccount"
    assert item["serviceNumbers"] == list(b.account.service_numbers)
    assert item["certificateNumber"] == b.account.certificate_number
    assert item["creditLimit"]["unit"] == "CNY"
    assert item["href"].endswith(b.account.id)
    by_cert = http.get(
        sims.billing + ACCOUNTS, params={"certificateNumber": b.account.certificate_number}
    )
    assert [a["id"] for a in by_cert.json()] == [b.account.id]
    one = http.get(f"{sims.billing}{ACCOUNTS}/{b.account.id}")
    assert one.status_code == 200 and one.json() == item


def test_account_list_pages_with_comma_separated_ids(sims, http, bundles) -> None:
    ids = sorted(b.account.id for b in bundles[:7])
    page = http.get(sims.billing + ACCOUNTS, params={"id": ",".join(ids), "offset": 2, "limit": 3})
    assert page.headers["X-Total-Count"] == "7"
    assert page.headers["X-Result-Count"] == "3"
    assert [a["id"] for a in page.json()] == ids[2:5]


def test_account_filters_are_required_and_exclusive(sims, http, bundles) -> None:
    assert_tmf_error(http.get(sims.billing + ACCOUNTS), 400, "22")
    both = http.get(
        sims.billing + ACCOUNTS,
        params={
            "id": bundles[0].account.id,
            "serviceNumber": bundles[0].account.service_numbers[0],
        },
    )
    assert_tmf_error(both, 400, "22")
    hundred = ",".join(f"BA{n:010d}" for n in range(100))
    assert http.get(sims.billing + ACCOUNTS, params={"id": hundred}).status_code == 200
    distinct = ",".join(f"BA{n:010d}" for n in range(101))
    assert_tmf_error(http.get(sims.billing + ACCOUNTS, params={"id": distinct}), 400, "22")
    assert_tmf_error(
        http.get(sims.billing + ACCOUNTS, params={"id": "BA1", "limit": 201}), 400, "22"
    )
    assert_tmf_error(
        http.get(sims.billing + ACCOUNTS, params={"id": "BA1", "offset": "x"}), 400, "22"
    )


def test_unknown_account_and_unknown_path_are_tmf_404(sims, http) -> None:
    assert_tmf_error(http.get(f"{sims.billing}{ACCOUNTS}/BA0000000000"), 404, "60")
    assert_tmf_error(http.get(f"{sims.billing}/tmf-api/nothing"), 404, "60")


def test_conflict_anomaly_is_visible_between_boss_and_billing(
    sims, http, bundles, boss, dataset_seed
) -> None:
    def header(operation: str) -> dict[str, str]:
        return {
            "Version": "1.0",
            "BusinessCode": operation,
            "MessageSeq": "anomaly-1",
            "LoginSystemCode": "SWITCHBOARD",
        }

    anomalous = [b for b in bundles if has_certificate_typo(dataset_seed, b.customer.index)]
    assert anomalous, "one customer in 200 carries a typo"
    b = anomalous[0]
    msisdn = b.subscribers[0].msisdn
    line = boss.QuerySubscriberByMsisdn(
        RequestHeader=header("QuerySubscriberByMsisdn"),
        QuerySubscriberByMsisdnRequest={"MSISDN": msisdn},
    ).QuerySubscriberByMsisdnResult.Subscriber
    customer = boss.QueryCustomer(
        RequestHeader=header("QueryCustomer"),
        QueryCustomerRequest={"CustomerNo": [line.CustomerNo]},
    ).QueryCustomerResult.Customer[0]
    [account] = http.get(sims.billing + ACCOUNTS, params={"serviceNumber": msisdn}).json()
    assert account["certificateNumber"] != customer.CertificateNo
    by_cert = http.get(
        sims.billing + ACCOUNTS, params={"certificateNumber": customer.CertificateNo}
    )
    assert by_cert.json() == []
    clean = next(x for x in bundles if not has_certificate_typo(dataset_seed, x.customer.index))
    [ok] = http.get(
        sims.billing + ACCOUNTS, params={"serviceNumber": clean.subscribers[0].msisdn}
    ).json()
    assert ok["certificateNumber"] == clean.customer.cert_no


def test_bills_newest_first_twelve_per_account(sims, http, bundles) -> None:
    account = bundles[50].account
    first = http.get(sims.billing + BILLS, params={"billingAccount.id": account.id})
    assert first.headers["X-Total-Count"] == "12" and len(first.json()) == 12
    dates = [bill["billDate"] for bill in first.json()]
    assert dates == sorted(dates, reverse=True)
    bill = first.json()[0]
    assert bill["@type"] == "CustomerBill" and bill["billingAccount"] == {"id": account.id}
    assert bill["state"] in ("new", "settled", "partiallyPaid")
    assert set(bill["billingPeriod"]) == {"startDateTime", "endDateTime"}
    two = http.get(
        sims.billing + BILLS,
        params={"billingAccount.id": f"{account.id},{bundles[51].account.id}", "limit": 5},
    )
    assert two.headers["X-Total-Count"] == "24" and two.headers["X-Result-Count"] == "5"
    assert_tmf_error(http.get(sims.billing + BILLS), 400, "22")


def test_balance_and_payments(sims, http, bundles) -> None:
    account = bundles[52].account
    [balance] = http.get(sims.billing + BALANCES, params={"billingAccount.id": account.id}).json()
    assert balance["amount"] == {"unit": "CNY", "value": round(account.balance_cents / 100, 2)}
    assert balance["balanceType"] == "main" and balance["billingAccount"]["id"] == account.id
    payments = http.get(sims.billing + PAYMENTS, params={"account.id": account.id})
    assert payments.status_code == 200 and payments.json()
    dates = [p["paymentDate"] for p in payments.json()]
    assert dates == sorted(dates, reverse=True)
    assert {p["status"] for p in payments.json()} == {"succeeded"}
    assert_tmf_error(http.get(sims.billing + PAYMENTS), 400, "22")


def test_adjust_balance_is_idempotent_and_moves_the_balance(sims, http, bundles) -> None:
    account = bundles[53].account
    key = str(uuid.uuid4())
    body = {
        "billingAccount": {"id": account.id},
        "amount": {"unit": "CNY", "value": 12.5},
        "reason": "goodwill credit",
        "adjustType": "credit",
    }
    first = http.post(sims.billing + ADJUST, json=body, headers={"X-Idempotency-Key": key})
    assert first.status_code == 201
    again = http.post(sims.billing + ADJUST, json=body, headers={"X-Idempotency-Key": key})
    assert again.status_code == 200 and again.json() == first.json()
    [balance] = http.get(sims.billing + BALANCES, params={"billingAccount.id": account.id}).json()
    assert balance["amount"]["value"] == round((account.balance_cents + 1250) / 100, 2)
    missing_key = http.post(sims.billing + ADJUST, json=body)
    assert_tmf_error(missing_key, 400, "22")
    bad_amount = http.post(
        sims.billing + ADJUST,
        json={**body, "amount": {"unit": "CNY", "value": -1}},
        headers={"X-Idempotency-Key": str(uuid.uuid4())},
    )
    assert_tmf_error(bad_amount, 400, "22")
    unknown = http.post(
        sims.billing + ADJUST,
        json={**body, "billingAccount": {"id": "BA0000000000"}},
        headers={"X-Idempotency-Key": str(uuid.uuid4())},
    )
    assert_tmf_error(unknown, 404, "60")


# Care


def test_individual_by_identification_phone_and_id(sims, http, bundles) -> None:
    p = bundles[60].party
    for params in (
        {"identificationId": p.id_card},
        {"phoneNumber": p.phone},
        {"id": p.id},
    ):
        response = http.get(sims.care + INDIVIDUALS, params=params)
        assert response.status_code == 200 and response.headers["X-Total-Count"] == "1"
        [item] = response.json()
        assert item["id"] == p.id and item["fullName"] == p.full_name
        assert item["familyName"] + item["givenName"] == p.full_name
        assert item["individualIdentification"] == [
            {"identificationType": "IDCard", "identificationId": p.id_card}
        ]
        assert item["contactMedium"][0] == {
            "mediumType": "mobile",
            "characteristic": {"phoneNumber": p.phone},
        }
    assert_tmf_error(http.get(sims.care + INDIVIDUALS), 400, "22")


def test_tickets_and_interactions_newest_first_with_paging(sims, http, bundles) -> None:
    b = next(b for b in bundles if len(b.tickets) >= 2 and len(b.interactions) >= 3)
    tickets = http.get(sims.care + TICKETS, params={"relatedParty.id": b.party.id, "limit": 1})
    assert tickets.headers["X-Total-Count"] == str(len(b.tickets))
    assert tickets.headers["X-Result-Count"] == "1"
    newest = max(b.tickets, key=lambda t: (t.creation_date, t.id))
    [item] = tickets.json()
    assert item["id"] == newest.id and item["description"] == newest.description
    assert item["relatedParty"][0]["id"] == b.party.id
    interactions = http.get(sims.care + INTERACTIONS, params={"relatedParty.id": b.party.id})
    starts = [i["interactionDate"]["startDateTime"] for i in interactions.json()]
    assert len(starts) == len(b.interactions) and starts == sorted(starts, reverse=True)
    assert_tmf_error(http.get(sims.care + TICKETS), 400, "22")


def test_create_ticket_with_idempotency_key_then_patch(sims, http, bundles) -> None:
    party = bundles[70].party
    key = str(uuid.uuid4())
    body = {
        "name": "网络故障",
        "description": "客户反映无法上网",
        "ticketType": "fault",
        "severity": "major",
        "relatedParty": [{"id": party.id, "role": "customer", "@referredType": "Individual"}],
    }
    created = http.post(sims.care + TICKETS, json=body, headers={"X-Idempotency-Key": key})
    assert created.status_code == 201
    ticket = created.json()
    assert ticket["status"] == "acknowledged" and ticket["id"].startswith("TT")
    again = http.post(sims.care + TICKETS, json=body, headers={"X-Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["id"] == ticket["id"]
    listed = http.get(sims.care + TICKETS, params={"relatedParty.id": party.id}).json()
    assert [t["id"] for t in listed].count(ticket["id"]) == 1
    assert listed[0]["id"] == ticket["id"]  # the newest

    patched = http.patch(
        f"{sims.care}{TICKETS}/{ticket['id']}",
        json={"status": "inProgress", "note": [{"text": "已转二线"}]},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200
    assert patched.json()["status"] == "inProgress"
    assert patched.json()["note"][-1]["text"] == "已转二线"
    assert_tmf_error(
        http.patch(f"{sims.care}{TICKETS}/{ticket['id']}", json={"status": "lost"}), 400, "22"
    )
    assert_tmf_error(
        http.patch(f"{sims.care}{TICKETS}/TT9999999999", json={"status": "closed"}), 404, "60"
    )


@pytest.mark.parametrize("missing", ["description", "ticketType", "relatedParty"])
def test_create_ticket_requires_fields(sims, http, bundles, missing) -> None:
    body = {
        "description": "x",
        "ticketType": "inquiry",
        "relatedParty": [{"id": bundles[0].party.id, "role": "customer"}],
    }
    del body[missing]
    assert_tmf_error(http.post(sims.care + TICKETS, json=body), 400, "22")


def test_create_interaction(sims, http, bundles) -> None:
    party = bundles[71].party
    created = http.post(
        sims.care + INTERACTIONS,
        json={
            "reason": "套餐咨询",
            "description": "客户咨询升级套餐",
            "channel": [{"name": "app"}],
            "direction": "inbound",
            "relatedParty": [{"id": party.id, "role": "customer"}],
        },
    )
    assert created.status_code == 201
    item = created.json()
    assert item["id"].startswith("PI") and item["status"] == "completed"
    listed = http.get(sims.care + INTERACTIONS, params={"relatedParty.id": party.id}).json()
    assert item["id"] in [i["id"] for i in listed]
