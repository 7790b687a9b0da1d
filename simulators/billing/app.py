"""The billing simulator: TMF666 accounts, TMF678 bills, TMF654 balances, TMF676 payments.

Accounts and balances come from billing.db; bills and payments are computed on read from the
dataset seed (see ``simulators.ledger``), so they cost no storage.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from simulators import ledger
from simulators.billing.events import builder as event_builder
from simulators.billing.store import AccountRow, BillingStore
from simulators.control import SimControl, TraceparentRecorder
from simulators.events import EventHub
from simulators.rest import (
    GARBLED_BODY,
    JSON,
    bad_request,
    business_route,
    http_exception,
    injected_failure,
    json_body,
    json_response,
    list_response,
    money,
    not_found,
    one_filter,
    paging,
    required_filter,
)
from simulators.storage import open_for_serving, read_meta, store_path

ACCOUNTS = "/tmf-api/accountManagement/v4/billingAccount"
BILLS = "/tmf-api/customerBillManagement/v4/customerBill"
BALANCES = "/tmf-api/prepayBalanceManagement/v4/accountBalance"
ADJUST = "/tmf-api/prepayBalanceManagement/v4/adjustBalance"
PAYMENTS = "/tmf-api/paymentManagement/v4/payment"
BALANCE_VALID_FROM = f"{ledger.AS_OF.replace(day=1).isoformat()}T00:00:00{ledger.TZ}"

_ACCOUNT_FILTERS = {"id": "id", "certificateNumber": "cert", "serviceNumber": "msisdn"}


def account_item(a: AccountRow) -> dict[str, Any]:
    return {
        "id": a.id,
        "href": f"{ACCOUNTS}/{a.id}",
        "@type": "BillingAccount",
        "name": a.name,
        "state": a.state,
        "accountType": a.account_type,
        "certificateNumber": a.cert_no,
        "serviceNumbers": a.service_numbers.split(",") if a.service_numbers else [],
        "creditLimit": money(a.credit_limit_cents),
        "paymentMethod": a.payment_method,
        "bankCardNumber": a.bank_card,
    }


def _bills(seed: int, a: AccountRow) -> list[ledger.Bill]:
    return ledger.bills(seed, a.idx, a.id, a.base_fee_cents, a.account_type, a.arrears)


def bill_item(account_id: str, b: ledger.Bill) -> dict[str, Any]:
    return {
        "id": b.id,
        "href": f"{BILLS}/{b.id}",
        "@type": "CustomerBill",
        "billNo": b.bill_no,
        "billDate": b.bill_date,
        "billingPeriod": {"startDateTime": b.period_start, "endDateTime": b.period_end},
        "amountDue": money(b.amount_cents),
        "remainingAmount": money(b.remaining_cents),
        "paymentDueDate": b.due_date,
        "state": b.state,
        "billingAccount": {"id": account_id},
    }


def payment_item(account_id: str, p: ledger.Payment) -> dict[str, Any]:
    return {
        "id": p.id,
        "href": f"{PAYMENTS}/{p.id}",
        "@type": "Payment",
        "paymentDate": p.date,
        "totalAmount": money(p.amount_cents),
        "status": "succeeded",
        "channel": {"name": p.channel},
        "paymentMethod": {"@type": p.method_type, "name": p.method_name},
        "account": {"id": account_id},
    }


def balance_item(a: AccountRow) -> dict[str, Any]:
    return {
        "id": f"AB{a.id[2:]}",
        "@type": "AccountBalance",
        "balanceType": "main",
        "amount": money(a.balance_cents),
        "overdueAmount": money(a.overdue_cents),
        "validFor": {"startDateTime": BALANCE_VALID_FROM},
        "billingAccount": {"id": a.id},
    }


def _page(items: list[dict[str, Any]], request: Request) -> Response:
    offset, limit = paging(request)
    return list_response(items[offset : offset + limit], len(items))


def _cents(amount: Any) -> int:
    """Positive cents of a Money object, or 400."""
    if not isinstance(amount, dict) or amount.get("unit", "CNY") != "CNY":
        raise bad_request("amount must be a Money object in CNY")
    value = amount.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request("amount.value must be a number")
    cents = round(value * 100)
    if cents <= 0 or abs(value * 100 - cents) > 1e-6:
        raise bad_request("amount.value must be positive with at most two decimals")
    return cents


class BillingApi:
    def __init__(self, store: BillingStore, seed: int) -> None:
        self._store = store
        self._seed = seed

    def _accounts(self, ids: list[str]) -> list[AccountRow]:
        return self._store.accounts("id", ids, 0, len(ids))[1]

    async def list_accounts(self, request: Request) -> Response:
        name, values = one_filter(request, list(_ACCOUNT_FILTERS))
        offset, limit = paging(request)
        total, rows = self._store.accounts(_ACCOUNT_FILTERS[name], values, offset, limit)
        return list_response([account_item(a) for a in rows], total)

    async def get_account(self, request: Request) -> Response:
        account_id = request.path_params["id"]
        account = self._store.account(account_id)
        if account is None:
            raise not_found(f"billing account {account_id} does not exist")
        return json_response(account_item(account))

    async def list_bills(self, request: Request) -> Response:
        items = [
            bill_item(a.id, b)
            for a in self._accounts(required_filter(request, "billingAccount.id"))
            for b in _bills(self._seed, a)
        ]
        items.sort(key=lambda item: item["billDate"], reverse=True)  # newest first, stable
        return _page(items, request)

    async def list_balances(self, request: Request) -> Response:
        accounts = self._accounts(required_filter(request, "billingAccount.id"))
        return _page([balance_item(a) for a in accounts], request)

    async def list_payments(self, request: Request) -> Response:
        items = [
            payment_item(a.id, p)
            for a in self._accounts(required_filter(request, "account.id"))
            for p in ledger.payments(self._seed, a.idx, a.payment_method, _bills(self._seed, a))
        ]
        items.sort(key=lambda item: item["paymentDate"], reverse=True)
        return _page(items, request)

    async def adjust_balance(self, request: Request) -> Response:
        key = request.headers.get("x-idempotency-key", "").strip()
        if not key or len(key) > 128:
            raise bad_request("header X-Idempotency-Key is required (at most 128 characters)")
        first = self._store.adjustment_for_key(key)
        if first is not None:
            return json_response(first, 200)
        body = await json_body(request)
        account_ref = body.get("billingAccount")
        if not isinstance(account_ref, dict) or not isinstance(account_ref.get("id"), str):
            raise bad_request("billingAccount.id is required")
        adjust_type = body.get("adjustType")
        if adjust_type not in ("credit", "debit"):
            raise bad_request("adjustType must be credit or debit")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            raise bad_request("reason must be a string of at most 500 characters")
        cents = _cents(body.get("amount"))
        account = self._store.account(account_ref["id"])
        if account is None:
            raise not_found(f"billing account {account_ref['id']} does not exist")
        return json_response(self._store.adjust(account, cents, reason, adjust_type, key), 201)


def create_app(data_dir: Path) -> Starlette:
    """The billing app over ``data_dir/billing.db``."""
    path = store_path(data_dir, "billing")
    meta = read_meta(path)
    if meta is None:
        raise RuntimeError(f"{path} is not a seeded billing store")
    conn = open_for_serving(path)
    control = SimControl(injected_failure, GARBLED_BODY, JSON)
    store = BillingStore(conn)
    api = BillingApi(store, meta.seed)
    events = EventHub("billing", event_builder(store, meta.seed))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await events.start()
        yield
        await events.stop()
        conn.close()

    app = Starlette(
        routes=[
            business_route(control, "GET", ACCOUNTS, api.list_accounts),
            business_route(control, "GET", ACCOUNTS + "/{id}", api.get_account),
            business_route(control, "GET", BILLS, api.list_bills),
            business_route(control, "GET", BALANCES, api.list_balances),
            business_route(control, "POST", ADJUST, api.adjust_balance),
            business_route(control, "GET", PAYMENTS, api.list_payments),
            *control.routes(),
            *events.routes(),
        ],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    app.state.control = control
    app.state.events = events
    app.add_middleware(TraceparentRecorder, control=control)
    return app
