"""Plan change (a product order) as a saga.

    eligibility (BOSS) -> arrears check (billing) -> order placed (BOSS ChangeOffering)
      -> proration adjustment (billing) -> order read back (BOSS QueryOrder)
      -> confirmed to the customer's channel

A failure after the order compensates in reverse: the adjustment is reversed if it was made,
then the order is cancelled, and the customer is told. Each of those writes carries the key
``<workflow id>:<step>``, so a step repeated after a crash places no second order and makes no
second adjustment. States: RECEIVED, ELIGIBLE | REJECTED, ARREARS_CLEAR | REJECTED,
ORDER_PLACED, ADJUSTED (or NO_ADJUSTMENT), CONFIRMED;
(order read back between the last two) or COMPENSATING, ADJUSTMENT_REVERSED,
ORDER_CANCELLED, COMPENSATED.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dbos import DBOS

from adapters.errors import AdapterError
from adapters.records import Money
from orchestration.runtime import current
from orchestration.steps import bind_request, call, failed, notify, record, step_key
from orchestration.timed import step

#: Share of the monthly fee difference charged or credited for the rest of the month.
PRORATION_SHARE = Decimal("0.5")


@step("plan_change.eligibility")
async def check_eligibility(subscriber_no: str, offering_id: str) -> dict[str, Any]:
    customer_system = current().customer_system
    try:
        eligible, reason = await call(
            lambda: customer_system.check_eligibility(subscriber_no, offering_id)
        )
    except AdapterError as error:
        return failed(error)
    return {"ok": True, "eligible": eligible, "reason": reason}


@step("plan_change.arrears")
async def check_arrears(account_id: str | None) -> dict[str, Any]:
    if not account_id:
        return {"ok": True, "overdue": "0"}
    billing = current().billing
    try:
        balances = await call(lambda: billing.get_balances([account_id]))
    except AdapterError as error:
        return failed(error)
    balance = balances.get(account_id)
    overdue = balance.overdue.amount if balance else Decimal(0)
    return {"ok": True, "overdue": str(overdue)}


@step("plan_change.order")
async def place_order(subscriber_no: str, offering_id: str) -> dict[str, Any]:
    runtime = current()
    try:
        order = await call(
            lambda: runtime.customer_system.change_offering(
                subscriber_no, offering_id, step_key("order")
            )
        )
        offerings = await call(
            lambda: runtime.customer_system.get_offerings(
                [order.old_offering_id, order.new_offering_id]
            )
        )
    except AdapterError as error:
        return failed(error)
    fees = {o.id: o.monthly_fee for o in offerings}
    difference = fees.get(order.new_offering_id, Decimal(0)) - fees.get(
        order.old_offering_id, Decimal(0)
    )
    # Moving up costs the rest of this month's difference (a debit); moving down credits it.
    proration = (-difference * PRORATION_SHARE).quantize(Decimal("0.01"))
    return {
        "ok": True,
        "order_id": order.id,
        "old_offering_id": order.old_offering_id,
        "proration": str(proration),
    }


@step("plan_change.adjust")
async def adjust(account_id: str, amount: str, step: str, reason: str) -> dict[str, Any]:
    billing = current().billing
    money = Money(Decimal(amount))
    try:
        adjustment_id = await call(
            lambda: billing.adjust_balance(account_id, money, reason, step_key(step))
        )
    except AdapterError as error:
        return failed(error)
    return {"ok": True, "adjustment_id": adjustment_id}


@step("plan_change.cancel_order")
async def cancel_order(order_id: str) -> dict[str, Any]:
    customer_system = current().customer_system
    try:
        order = await call(lambda: customer_system.cancel_order(order_id, step_key("cancel_order")))
    except AdapterError as error:
        return failed(error)
    return {"ok": True, "status": order.status}


@step("plan_change.verify_order")
async def verify_order(order_id: str) -> dict[str, Any]:
    """Read the order back from BOSS before confirming: it must stand as placed."""
    customer_system = current().customer_system
    try:
        placed = await call(lambda: customer_system.get_order(order_id))
    except AdapterError as error:
        return failed(error)
    if placed.status == "CANCELLED":
        return {"ok": False, "code": "ORDER_CANCELLED", "system": "boss"}
    return {"ok": True, "status": placed.status}


@step("plan_change.evict")
async def evict(customer_no: str, account_id: str | None) -> None:
    # The line's offering and the account's balance changed: cached copies must go.
    await current().evict(customer_no, [account_id] if account_id else [], [])


#: Errors after which the order certainly was not placed.
DEFINITE_REFUSALS = ("BUSINESS_REJECTED", "NOT_FOUND")

#: Compensation must happen: its steps are tried again on a durable timer until they pass.
COMPENSATION_ATTEMPTS = 8


async def _until_done(run: Any, *args: Any) -> dict[str, Any]:
    outcome: dict[str, Any] = {"ok": False}
    for attempt in range(COMPENSATION_ATTEMPTS):
        outcome = await run(*args)
        if outcome["ok"]:
            break
        # A durable sleep: a restart in between resumes the wait, it does not start over.
        await DBOS.sleep_async(min(2.0**attempt, 60.0))
    return outcome


async def _rejected(request_id: str, channel: str, key: str, code: str) -> dict[str, Any]:
    await notify(request_id, "rejected", channel, "PLAN_CHANGE_REJECTED", {"reason": code})
    await record(request_id, key, "REJECTED", status="REJECTED", detail={"reason": code})
    return {"outcome": "REJECTED", "reason": code}


@DBOS.workflow(name="plan_change")
async def plan_change(order: dict[str, Any]) -> dict[str, Any]:
    """``order``: request_id, channel, customer_no, subscriber_no, offering_id, account_id."""
    request_id = order["request_id"]
    bind_request(request_id)
    channel = order["channel"]
    account_id = order.get("account_id")

    eligibility = await check_eligibility(order["subscriber_no"], order["offering_id"])
    if not eligibility["ok"]:
        return await _rejected(request_id, channel, "eligibility", eligibility["code"])
    if not eligibility["eligible"]:
        return await _rejected(
            request_id, channel, "eligibility", f"NOT_ELIGIBLE:{eligibility['reason']}"
        )
    await record(request_id, "eligible", "ELIGIBLE")

    arrears = await check_arrears(account_id)
    if not arrears["ok"]:
        return await _rejected(request_id, channel, "arrears", arrears["code"])
    if Decimal(arrears["overdue"]) > 0:
        return await _rejected(request_id, channel, "arrears", "ARREARS")
    await record(request_id, "arrears", "ARREARS_CLEAR")

    placed = await place_order(order["subscriber_no"], order["offering_id"])
    if not placed["ok"] and placed["code"] not in DEFINITE_REFUSALS:
        # No clear answer (timed out, unreadable): the order may exist. The same key asks
        # again until BOSS answers; a placed order comes back as the first one.
        placed = await _until_done(place_order, order["subscriber_no"], order["offering_id"])
    if not placed["ok"]:
        await evict(order["customer_no"], account_id)
        return await _rejected(request_id, channel, "order", placed["code"])
    order_id = placed["order_id"]
    await record(
        request_id,
        "order",
        "ORDER_PLACED",
        detail={"orderId": order_id},
        merge={"orderId": order_id, "oldOfferingId": placed["old_offering_id"]},
    )

    proration = Decimal(placed["proration"])
    adjustment: dict[str, Any] = {"ok": True}
    if proration != 0 and account_id:
        adjustment = await adjust(account_id, str(proration), "proration", "plan change proration")
        if adjustment["ok"]:
            await record(
                request_id,
                "adjust",
                "ADJUSTED",
                detail={"adjustmentId": adjustment["adjustment_id"], "amount": str(proration)},
                merge={"adjustmentId": adjustment["adjustment_id"], "proration": str(proration)},
            )
    else:
        await record(request_id, "adjust", "NO_ADJUSTMENT")

    verified = await verify_order(order_id) if adjustment["ok"] else adjustment
    if verified["ok"]:
        await evict(order["customer_no"], account_id)
        # Notified before the final state: whoever sees CONFIRMED finds the notification too.
        await notify(request_id, "confirmed", channel, "PLAN_CHANGED", {"orderId": order_id})
        await record(request_id, "confirm", "CONFIRMED", status="DONE")
        return {"outcome": "CONFIRMED", "orderId": order_id}

    # --- compensation, in reverse order of what was done ---
    failure = verified["code"]
    await record(request_id, "compensating", "COMPENSATING", detail={"failed": failure})
    if adjustment.get("adjustment_id"):
        reversed_ = await _until_done(
            adjust, account_id or "", str(-proration), "reverse_proration", "plan change reversed"
        )
        await record(
            request_id,
            "reverse_adjust",
            "ADJUSTMENT_REVERSED" if reversed_["ok"] else "REVERSAL_FAILED",
            detail={"adjustmentId": reversed_.get("adjustment_id")},
        )
    cancelled = await _until_done(cancel_order, order_id)
    await record(
        request_id,
        "cancel_order",
        "ORDER_CANCELLED" if cancelled["ok"] else "CANCEL_FAILED",
        detail={"orderId": order_id},
    )
    await evict(order["customer_no"], account_id)
    await notify(request_id, "compensated", channel, "PLAN_CHANGE_FAILED", {"reason": failure})
    await record(
        request_id,
        "compensated",
        "COMPENSATED",
        status="COMPENSATED",
        detail={"failed": failure},
    )
    return {"outcome": "COMPENSATED", "reason": failure}
