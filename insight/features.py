"""What insight is computed from: one customer's legacy records, reduced to named figures.

The same function turns records into figures at request time (schema), in a workflow step
(``InsightEngine.facts``) and when the churn model is trained (``insight.train``), so the model
sees exactly the figures it is later asked to score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from adapters.records import (
    Balance,
    Bill,
    CustomerProfile,
    Interaction,
    Payment,
    Subscription,
    Ticket,
)

#: Every figure a rule or the churn model may name, with the words ``explain`` uses for it.
FEATURES: Mapping[str, str] = {
    "active_lines": "active lines",
    "suspended_lines": "suspended lines",
    "terminated_lines": "terminated lines",
    "arpu": "monthly revenue of the active lines (yuan)",
    "mou": "minutes of use last month",
    "data_usage_ratio": "share of the data allowance used this month (highest line)",
    "tenure_months": "months as a customer",
    "newest_line_months": "months since the newest line was activated",
    "overdue": "overdue balance (yuan)",
    "unpaid_bills": "bills not fully paid",
    "recency_days": "days since the last payment",
    "frequency": "payments in the last 12 months",
    "monetary": "yuan paid in the last 12 months",
    "tickets_90d": "tickets in the last 90 days",
    "open_tickets": "open tickets",
    "complaints_12m": "complaints in the last 12 months",
    "interactions_90d": "contacts with the operator in the last 90 days",
}

OPEN_TICKET = frozenset({"acknowledged", "inProgress", "pending", "held", "submitted"})
SETTLED = "settled"
#: Recency when the customer never paid (or paid more than a year ago): a year and a day.
NO_PAYMENT_DAYS = 366


@dataclass(frozen=True, slots=True)
class CustomerRecords:
    """Everything the legacy systems hold about one customer that insight reads."""

    profile: CustomerProfile | None
    lines: Sequence[Subscription] = ()
    balances: Sequence[Balance] = ()
    bills: Sequence[Bill] = ()
    payments: Sequence[Payment] = ()
    tickets: Sequence[Ticket] = ()
    interactions: Sequence[Interaction] = ()


def _months(since: date | None, today: date) -> float:
    if since is None:
        return 0.0
    return round(max(0, (today - since).days) / 30.44, 1)


def _day(value: datetime | date | None) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    return value


def _yuan(value: Decimal) -> float:
    return float(round(value, 2))


def compute_features(records: CustomerRecords, today: date) -> dict[str, float]:
    """The named figures of one customer, as of ``today`` (the customer's local date)."""
    lines = records.lines
    active = [line for line in lines if line.status == "A"]
    year_ago = today - timedelta(days=365)
    quarter_ago = today - timedelta(days=90)
    paid = [
        p
        for p in records.payments
        if (d := _day(p.paid_at)) is not None and year_ago < d <= today and p.status != "failed"
    ]
    last_paid = max((d for p in paid if (d := _day(p.paid_at)) is not None), default=None)
    ticket_days = [(t, _day(t.created_at)) for t in records.tickets]
    ratios = [
        line.usage.data_used_mb / line.usage.data_allowance_mb
        for line in active
        if line.usage.data_allowance_mb > 0
    ]
    activations = [line.activated_on for line in lines if line.activated_on is not None]
    profile = records.profile
    return {
        "active_lines": float(len(active)),
        "suspended_lines": float(sum(1 for line in lines if line.status == "S")),
        "terminated_lines": float(sum(1 for line in lines if line.status == "D")),
        "arpu": _yuan(sum((line.arpu for line in active), Decimal(0))),
        "mou": float(sum(line.mou for line in active)),
        "data_usage_ratio": round(max(ratios, default=0.0), 4),
        "tenure_months": _months(profile.customer_since if profile else None, today),
        "newest_line_months": _months(max(activations, default=None), today),
        "overdue": _yuan(sum((b.overdue.amount for b in records.balances), Decimal(0))),
        "unpaid_bills": float(sum(1 for b in records.bills if b.state != SETTLED)),
        "recency_days": float((today - last_paid).days if last_paid else NO_PAYMENT_DAYS),
        "frequency": float(len(paid)),
        "monetary": _yuan(sum((p.amount.amount for p in paid), Decimal(0))),
        "tickets_90d": float(sum(1 for _, d in ticket_days if d and d > quarter_ago)),
        "open_tickets": float(sum(1 for t, _ in ticket_days if t.status in OPEN_TICKET)),
        "complaints_12m": float(
            sum(1 for t, d in ticket_days if t.ticket_type == "complaint" and d and d > year_ago)
        ),
        "interactions_90d": float(
            sum(1 for i in records.interactions if (d := _day(i.started_at)) and d > quarter_ago)
        ),
    }
