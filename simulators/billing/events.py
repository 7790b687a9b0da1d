"""Billing business events: a bill issued or overdue, a payment received.

A /_sim/events request names the line (``msisdn``, one of an account's service numbers), the
account (``accountId``) or asks for a random account; the event carries the billing account
id, as the billing system keys its customers.
"""

from __future__ import annotations

import random
from typing import Any

from simulators import event_requests as req
from simulators import ledger
from simulators.billing.store import AccountRow, BillingStore
from simulators.events import Builder, EventRequestError

TYPES = ("BillIssuedEvent", "BillOverdueEvent", "PaymentReceivedEvent")


def _account(store: BillingStore, body: dict[str, Any], rng: random.Random) -> AccountRow:
    msisdn = req.msisdn(body)
    found: AccountRow | None = None
    if msisdn is not None:
        page = store.accounts("msisdn", [msisdn], 0, 1)[1]
        found = page[0] if page else None
    elif isinstance(body.get("accountId"), str):
        found = store.account(body["accountId"])
    elif body.get("random") is True:
        found = store.account_at(rng.randrange(store.account_count() + 1))
    else:
        raise EventRequestError("name the line (msisdn), the account (accountId) or random: true")
    if found is None:
        raise EventRequestError("no such billing account")
    return found


def _money(cents: int) -> dict[str, Any]:
    return {"unit": "CNY", "value": round(cents / 100, 2)}


def builder(store: BillingStore, seed: int) -> Builder:
    def build(body: dict[str, Any], rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
        kind = req.event_type(body, TYPES)
        account = _account(store, body, rng)
        numbers = account.service_numbers.split(",") if account.service_numbers else []
        msisdn = req.msisdn(body) or (numbers[0] if numbers else None)
        bill = ledger.bills(
            seed, account.idx, account.id, account.base_fee_cents, account.account_type,
            account.arrears,
        )[0]  # fmt: skip
        event: dict[str, Any] = {"billingAccount": {"id": account.id}, "serviceNumber": msisdn}
        if kind == "PaymentReceivedEvent":
            event["payment"] = {
                "id": f"PM{account.id[2:]}{rng.randrange(10**6):06d}",
                "totalAmount": _money(
                    req.integer(body, "amountCents", bill.amount_cents, 1, 10**9)
                ),
                "channel": {"name": req.text(body, "channel", "alipay")},
            }
        else:
            event["customerBill"] = {
                "id": bill.id,
                "billNo": bill.bill_no,
                "amountDue": _money(bill.amount_cents),
                "paymentDueDate": bill.due_date,
            }
            if kind == "BillOverdueEvent":
                event["customerBill"]["daysOverdue"] = req.integer(body, "daysOverdue", 15, 1, 3650)
        return [(kind, event)]

    return build
