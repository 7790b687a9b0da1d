"""Complaint handling across channels.

    RECEIVED -> CLASSIFIED (category rules, SLA) -> INVESTIGATED (facts from BOSS and billing)
      -> [WAITING for an agent, ESCALATED on an SLA breach] -> RESOLVED (billing credit and/or
      care ticket) -> FEEDBACK_REQUESTED -> FEEDBACK_RECEIVED | FEEDBACK_TIMED_OUT -> ARCHIVED

The care ticket is the complaint's record in the care system: created first, and every state
change is mirrored to it with a keyed patch (a repeat after a crash appends no second note).
SLA timers are recv timeouts (a cancelled or timed-out workflow would not wake from recv): an
agent action arrives on topic ``agent``, the customer's feedback on topic ``feedback``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dbos import DBOS

from adapters.errors import AdapterError
from adapters.records import Money
from orchestration.rules_loader import load_categories
from orchestration.runtime import current
from orchestration.steps import bind_request, call, failed, mirror_ticket, notify, record, step_key
from orchestration.timed import step

AGENT_TOPIC = "agent"
FEEDBACK_TOPIC = "feedback"


@step("complaint.open_ticket")
async def open_ticket(
    party_id: str | None, category: str, severity: str, channel: str, description: str
) -> dict[str, Any]:
    if not party_id:
        return {"ok": True, "ticket_id": None}
    care = current().care
    care_channel = channel if channel in ("app", "web", "store", "agent", "ivr", "sms") else "web"
    try:
        ticket = await call(
            lambda: care.create_ticket(
                party_id,
                ticket_type="complaint",
                name=f"Complaint: {category}",
                description=description,
                severity=severity,
                channel=care_channel,
                idempotency_key=step_key("open_ticket"),
            )
        )
    except AdapterError as error:
        return failed(error)
    return {"ok": True, "ticket_id": ticket.id}


@step("complaint.classify")
async def classify(category: str) -> dict[str, Any]:
    """The category's rule, checkpointed: a rules change later does not alter this complaint."""
    rule = load_categories().get(category)
    timings = current().timings
    if rule is None:
        return {"severity": "minor", "sla_s": timings.complaint_sla_s or 72 * 3600.0}
    sla_s = timings.complaint_sla_s or rule.sla_hours * 3600.0
    return {
        "severity": rule.severity,
        "sla_s": sla_s,
        "auto_credit": str(rule.auto_credit) if rule.auto_credit is not None else None,
    }


@step("complaint.investigate")
async def investigate(customer_no: str, account_id: str | None) -> dict[str, Any]:
    """Facts for the agent, without personal data: line count and state, balance, overdue."""
    runtime = current()
    facts: dict[str, Any] = {}
    try:
        lines = (await call(lambda: runtime.customer_system.get_subscriptions([customer_no]))).get(
            customer_no, ()
        )
        facts["lines"] = len(lines)
        facts["activeLines"] = sum(1 for line in lines if line.status in ("A", "active"))
        if account_id:
            balance = (await call(lambda: runtime.billing.get_balances([account_id]))).get(
                account_id
            )
            if balance is not None:
                facts["balance"] = str(balance.amount.amount)
                facts["overdue"] = str(balance.overdue.amount)
    except AdapterError as error:
        facts["unavailable"] = error.system
    return facts


@step("complaint.credit")
async def credit(account_id: str | None, amount: str) -> dict[str, Any]:
    if not account_id:
        return {"ok": False, "code": "NO_BILLING_ACCOUNT", "system": "billing"}
    billing = current().billing
    try:
        adjustment_id = await call(
            lambda: billing.adjust_balance(
                account_id, Money(Decimal(amount)), "complaint credit", step_key("credit")
            )
        )
    except AdapterError as error:
        return failed(error)
    return {"ok": True, "adjustment_id": adjustment_id}


@step("complaint.evict")
async def evict(customer_no: str, account_id: str | None, party_id: str | None) -> None:
    await current().evict(
        customer_no, [account_id] if account_id else [], [party_id] if party_id else []
    )


async def _escalate(request_id: str, ticket_id: str | None, n: int, reason: str) -> None:
    await mirror_ticket(ticket_id, f"escalate_{n}", f"escalated: {reason}", priority="high")
    # The agents' notice first: whoever sees ESCALATED finds it.
    await notify(request_id, f"escalated_{n}", "agent", "COMPLAINT_ESCALATED", {"reason": reason})
    await record(
        request_id,
        f"escalated_{n}",
        "ESCALATED",
        status="WAITING",
        waiting_for="AGENT",
        detail={"reason": reason},
        merge={"escalations": n},
    )


@DBOS.workflow(name="complaint")
async def complaint(case: dict[str, Any]) -> dict[str, Any]:
    """``case``: request_id, channel, customer_no, account_id, party_id, category, description."""
    request_id = case["request_id"]
    bind_request(request_id)
    channel = case["channel"]
    account_id = case.get("account_id")
    party_id = case.get("party_id")

    rule = await classify(case["category"])
    opened = await open_ticket(
        party_id, case["category"], rule["severity"], channel, case["description"]
    )
    ticket_id = opened.get("ticket_id")
    await record(
        request_id,
        "classified",
        "CLASSIFIED",
        detail={"category": case["category"], "slaSeconds": rule["sla_s"]},
        merge={"ticketId": ticket_id, "category": case["category"], "slaSeconds": rule["sla_s"]},
    )
    await mirror_ticket(
        ticket_id, "m_classified", f"classified: {case['category']}", status="inProgress"
    )

    facts = await investigate(case["customer_no"], account_id)
    await record(request_id, "investigated", "INVESTIGATED", detail=facts)
    await mirror_ticket(ticket_id, "m_investigated", "investigated: facts gathered")

    resolution: dict[str, Any]
    if rule.get("auto_credit"):
        granted = await credit(account_id, rule["auto_credit"])
        resolution = {"by": "rule", "credit": rule["auto_credit"] if granted["ok"] else None}
    else:
        await record(request_id, "waiting_agent", "WAITING", status="WAITING", waiting_for="AGENT")
        escalations = 0
        while True:
            action = await DBOS.recv_async(AGENT_TOPIC, timeout_seconds=rule["sla_s"])
            if action is None:
                escalations += 1
                await _escalate(request_id, ticket_id, escalations, "SLA_BREACHED")
                continue
            if action.get("action") == "escalate":
                escalations += 1
                await _escalate(request_id, ticket_id, escalations, "AGENT")
                continue
            resolution = {"by": action.get("actor", "agent"), "credit": None}
            if action.get("credit"):
                granted = await credit(account_id, action["credit"])
                resolution["credit"] = action["credit"] if granted["ok"] else None
            break
    await evict(case["customer_no"], account_id, party_id)
    await record(
        request_id, "resolved", "RESOLVED", detail=resolution, merge={"resolution": resolution}
    )
    await mirror_ticket(ticket_id, "m_resolved", "resolved", status="resolved")

    await notify(request_id, "feedback_request", channel, "FEEDBACK_REQUESTED", {})
    await record(
        request_id,
        "feedback_requested",
        "FEEDBACK_REQUESTED",
        status="WAITING",
        waiting_for="FEEDBACK",
    )
    timings = current().timings
    feedback = await DBOS.recv_async(FEEDBACK_TOPIC, timeout_seconds=timings.feedback_wait_s)
    if feedback is None:
        await record(request_id, "feedback", "FEEDBACK_TIMED_OUT")
    else:
        rating = int(feedback.get("rating", 0))
        await record(
            request_id,
            "feedback",
            "FEEDBACK_RECEIVED",
            detail={"rating": rating},
            merge={"rating": rating},
        )
        await mirror_ticket(ticket_id, "m_feedback", f"customer feedback: {rating}/5")
    await mirror_ticket(ticket_id, "m_archived", "archived", status="closed")
    await record(request_id, "archived", "ARCHIVED", status="DONE")
    return {"outcome": "ARCHIVED", "ticketId": ticket_id}
