"""Training the churn model on the simulators' labelled history (``switchboard insight train``).

The history is the simulators' own seeded dataset (``simulators.dataset.generate``, a pure
function of seed and index), turned into the canonical records the adapters return and then
into figures by ``insight.features.compute_features``, the very function the gateway scores
with. A customer is labelled churned when one of their lines is terminated (``D``) or
suspended (``S``); the line statuses themselves are not features (they are the label).

scikit-learn fits a logistic regression on standardised figures over a seeded train split;
the holdout AUC is measured on the rest. What ships is data: means, scales, coefficients and
the intercept (``insight/rules/churn-model.json``), so the gateway scores without scikit-learn.
This module is the only one that imports it (and the simulators' generator), and only here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.records import (
    Balance,
    Bill,
    CustomerProfile,
    Interaction,
    Money,
    Payment,
    StarLevel,
    Subscription,
    Ticket,
    Usage,
)
from insight.features import CustomerRecords, compute_features

#: The figures the model learns from. Line counts by status are left out: they are the label.
MODEL_FEATURES: tuple[str, ...] = (
    "arpu",
    "mou",
    "data_usage_ratio",
    "tenure_months",
    "overdue",
    "unpaid_bills",
    "tickets_90d",
    "open_tickets",
    "complaints_12m",
    "interactions_90d",
)
LEVELS = {"1": StarLevel.NORMAL, "2": StarLevel.SILVER, "3": StarLevel.GOLD}
LEVELS.update({"4": StarLevel.DIAMOND, "5": StarLevel.PREMIUM})


def _yuan(cents: int) -> Money:
    return Money(Decimal(cents) / 100)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def history_records(seed: int, index: int) -> tuple[CustomerRecords, bool]:
    """Customer ``index`` of the dataset ``seed`` as records, and whether they churned."""
    from simulators import ledger
    from simulators.dataset import generate
    from simulators.reference import OFFERINGS_BY_ID

    bundle = generate(seed, index)
    c, a = bundle.customer, bundle.account
    profile = CustomerProfile(
        customer_no=c.customer_no,
        name=c.name,
        gender=c.gender,
        certificate_type="ID_CARD",
        certificate_no=c.cert_no,
        birth_date=date.fromisoformat(c.birth_date),
        address=c.address,
        email=c.email,
        star_level=LEVELS[c.cust_level],
        segment=c.cust_segment,
        customer_since=date.fromisoformat(c.create_date),
        status=c.status,
    )
    lines = []
    for s in bundle.subscribers:
        offering = OFFERINGS_BY_ID[s.offering_id]
        lines.append(
            Subscription(
                subscriber_no=s.subscriber_no,
                customer_no=s.customer_no,
                msisdn=s.msisdn,
                imsi=s.imsi,
                iccid=s.iccid,
                status=s.status,
                activated_on=date.fromisoformat(s.activation_date),
                offering_id=s.offering_id,
                offering_name=offering.name,
                arpu=Decimal(s.arpu_cents) / 100,
                mou=s.mou,
                usage=Usage(
                    s.data_used_mb,
                    offering.data_mb,
                    s.voice_used_min,
                    offering.voice_min,
                    s.sms_used,
                    offering.sms,
                ),
            )
        )
    bills = ledger.bills(seed, a.index, a.id, a.base_fee_cents, a.account_type, a.arrears)
    payments = ledger.payments(seed, a.index, a.payment_method, bills)
    records = CustomerRecords(
        profile=profile,
        lines=tuple(lines),
        balances=(Balance(a.id, _yuan(a.balance_cents), _yuan(a.overdue_cents), None),),
        bills=tuple(
            Bill(
                b.id,
                a.id,
                b.bill_no,
                date.fromisoformat(b.bill_date),
                _when(b.period_start),
                _when(b.period_end),
                _yuan(b.amount_cents),
                _yuan(b.remaining_cents),
                date.fromisoformat(b.due_date),
                b.state,
            )
            for b in bills
        ),
        payments=tuple(
            Payment(p.id, a.id, _when(p.date), _yuan(p.amount_cents), "succeeded", p.channel, "")
            for p in payments
        ),
        tickets=tuple(
            Ticket(
                t.id,
                t.party_id,
                t.name,
                t.description,
                t.ticket_type,
                t.severity,
                t.priority,
                t.status,
                _when(t.creation_date),
                _when(t.last_update),
                t.channel,
            )
            for t in bundle.tickets
        ),
        interactions=tuple(
            Interaction(
                i.id,
                i.party_id,
                _when(i.start),
                _when(i.end),
                i.channel,
                i.direction,
                i.reason,
                i.description,
                i.status,
            )
            for i in bundle.interactions
        ),
    )
    churned = c.status == "S" or any(s.status != "A" for s in bundle.subscribers)
    return records, churned


def labelled_history(
    seed: int, customers: int, as_of: date
) -> Iterator[tuple[dict[str, float], bool]]:
    for index in range(customers):
        records, churned = history_records(seed, index)
        yield compute_features(records, as_of), churned


@dataclass(frozen=True, slots=True)
class Trained:
    model: dict[str, Any]
    holdout_auc: float


def train(
    seed: int,
    customers: int,
    as_of: date,
    holdout_share: float = 0.25,
    features: Sequence[str] = MODEL_FEATURES,
) -> Trained:
    """Fit the model on a seeded split of the history; the coefficients and the holdout AUC."""
    import numpy as np
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    rows = list(labelled_history(seed, customers, as_of))
    x = np.array([[figures[name] for name in features] for figures, _ in rows], dtype=float)
    y = np.array([1 if churned else 0 for _, churned in rows])
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=holdout_share, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    # Constant columns have scale 0 in sklearn's sense; it reports 1 for them, which we keep.
    fitted = LogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y_train)
    auc = float(roc_auc_score(y_test, fitted.predict_proba(scaler.transform(x_test))[:, 1]))
    model = {
        "about": "Churn model for insight/rules: logistic regression on standardised figures "
        "(insight/features.py). Produced by `switchboard insight train`; do not edit by hand.",
        "intercept": round(float(fitted.intercept_[0]), 6),
        "features": [
            {
                "name": name,
                "mean": round(float(mean), 6),
                "scale": round(float(scale), 6),
                "coefficient": round(float(coefficient), 6),
            }
            for name, mean, scale, coefficient in zip(
                features, scaler.mean_, scaler.scale_, fitted.coef_[0], strict=True
            )
        ],
        "trained": {
            "history": "simulators dataset",
            "seed": seed,
            "customers": customers,
            "as_of": as_of.isoformat(),
            "label": "a line terminated (D) or suspended (S)",
            "churn_rate": round(float(y.mean()), 4),
            "holdout_share": holdout_share,
            "holdout_auc": round(auc, 4),
            "scikit_learn": sklearn.__version__,
        },
    }
    return Trained(model, auc)


def write_model(trained: Trained, path: Path) -> None:
    path.write_text(
        json.dumps(trained.model, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
