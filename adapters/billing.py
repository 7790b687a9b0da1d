"""The billing system: REST in the TM Forum TMF678/666/654/676 style."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.parsing import reading, to_date, to_datetime, to_money, unique
from adapters.records import Balance, Bill, BillingAccount, Money, Page, Payment
from adapters.rest import RestBackend, operation_of

ACCOUNTS = "/tmf-api/accountManagement/v4/billingAccount"
BILLS = "/tmf-api/customerBillManagement/v4/customerBill"
BALANCES = "/tmf-api/prepayBalanceManagement/v4/accountBalance"
ADJUSTMENTS = "/tmf-api/prepayBalanceManagement/v4/adjustBalance"
PAYMENTS = "/tmf-api/paymentManagement/v4/payment"


class BillingAdapter(RestBackend):
    """Implements adapters.contract.BillingSystem over the billing REST API."""

    name = "billing"
    ping_path = f"{ACCOUNTS}?id=BA0000000000&limit=1"

    async def find_accounts(
        self, *, certificate_nos: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[BillingAccount]:
        found: dict[str, BillingAccount] = {}
        for filter_name, values in (
            ("certificateNumber", certificate_nos),
            ("serviceNumber", msisdns),
        ):
            for account in await self._list_accounts(filter_name, unique(values)):
                found.setdefault(account.id, account)
        return list(found.values())

    async def get_accounts(self, account_ids: Sequence[str]) -> Mapping[str, BillingAccount]:
        return {a.id: a for a in await self._list_accounts("id", unique(account_ids))}

    async def get_balances(self, account_ids: Sequence[str]) -> Mapping[str, Balance]:
        balances: dict[str, Balance] = {}
        for item in await self._read_filtered(BALANCES, "billingAccount.id", account_ids):
            balance = _balance(item)
            balances.setdefault(balance.account_id, balance)
        return balances

    async def list_bills(self, account_id: str, offset: int, limit: int) -> Page[Bill]:
        items, total = await self._policy.read(
            operation_of("GET", BILLS),
            self._rest.get_list,
            BILLS,
            {"billingAccount.id": account_id, "offset": offset, "limit": limit},
        )
        return Page(total, tuple(_bill(i) for i in items))

    async def list_payments(self, account_id: str, offset: int, limit: int) -> Page[Payment]:
        items, total = await self._policy.read(
            operation_of("GET", PAYMENTS),
            self._rest.get_list,
            PAYMENTS,
            {"account.id": account_id, "offset": offset, "limit": limit},
        )
        return Page(total, tuple(_payment(i) for i in items))

    async def adjust_balance(
        self, account_id: str, amount: Money, reason: str, idempotency_key: str
    ) -> str:
        body = {
            "billingAccount": {"id": account_id},
            "amount": {"unit": amount.currency, "value": float(abs(amount.amount))},
            "adjustType": "credit" if amount.amount >= 0 else "debit",
            "reason": reason,
        }
        created = await self._policy.write(
            operation_of("POST", ADJUSTMENTS),
            self._rest.post,
            ADJUSTMENTS,
            body,
            {"X-Idempotency-Key": idempotency_key},
        )
        with reading(self.name, "balance adjustment"):
            return str(created["id"])

    async def _list_accounts(self, filter_name: str, values: list[str]) -> list[BillingAccount]:
        return [_account(i) for i in await self._read_filtered(ACCOUNTS, filter_name, values)]


def _account(item: dict[str, Any]) -> BillingAccount:
    with reading("billing", "billing account"):
        return BillingAccount(
            id=str(item["id"]),
            holder_name=str(item.get("name", "")),
            state=str(item["state"]),
            account_type=str(item.get("accountType", "postpaid")),
            certificate_no=str(item.get("certificateNumber", "")),
            service_numbers=tuple(str(n) for n in item.get("serviceNumbers", ())),
            credit_limit=to_money(item.get("creditLimit")),
            payment_method=str(item.get("paymentMethod", "")),
            bank_card_no=item.get("bankCardNumber"),
        )


def _balance(item: dict[str, Any]) -> Balance:
    with reading("billing", "balance"):
        return Balance(
            account_id=str(item["billingAccount"]["id"]),
            amount=to_money(item["amount"]),
            overdue=to_money(item.get("overdueAmount")),
            as_of=to_datetime((item.get("validFor") or {}).get("startDateTime")),
        )


def _bill(item: dict[str, Any]) -> Bill:
    with reading("billing", "bill"):
        period = item.get("billingPeriod") or {}
        return Bill(
            id=str(item["id"]),
            account_id=str(item["billingAccount"]["id"]),
            bill_no=str(item.get("billNo", item["id"])),
            bill_date=to_date(item.get("billDate")),
            period_start=to_datetime(period.get("startDateTime")),
            period_end=to_datetime(period.get("endDateTime")),
            amount_due=to_money(item["amountDue"]),
            remaining=to_money(item.get("remainingAmount")),
            due_date=to_date(item.get("paymentDueDate")),
            state=str(item["state"]),
        )


def _payment(item: dict[str, Any]) -> Payment:
    with reading("billing", "payment"):
        return Payment(
            id=str(item["id"]),
            account_id=str(item["account"]["id"]),
            paid_at=to_datetime(item.get("paymentDate")),
            amount=to_money(item["totalAmount"]),
            status=str(item.get("status", "")),
            channel=str((item.get("channel") or {}).get("name", "")),
            method=str((item.get("paymentMethod") or {}).get("name", "")),
        )
