"""The churn model's holdout AUC, for the benchmark's report.

The model the gateway scores with is data (``insight/rules/churn-model.json``, written by
``switchboard insight train``). Its file records the AUC it was trained to; the benchmark
trains it again with the same recorded parameters (seed, customers, as-of date, holdout
share) and reports what it measures now beside what the file says, so a change to the
features or the dataset that moves the model shows in ``make bench``. About 15 s of one core
for 20,000 customers; skipped (with the reason) when scikit-learn is not installed.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from insight.rules import DEFAULT_RULES_FILE, load_rules


def churn_row() -> dict[str, Any]:
    trained = dict(load_rules(DEFAULT_RULES_FILE).churn.model.trained)
    row: dict[str, Any] = {
        "shipped_holdout_auc": trained.get("holdout_auc"),
        "seed": trained.get("seed"),
        "customers": trained.get("customers"),
        "as_of": trained.get("as_of"),
    }
    from insight.train import train

    try:
        fitted = train(
            int(trained.get("seed", 42)),
            int(trained.get("customers", 20_000)),
            date.fromisoformat(str(trained.get("as_of", "2026-11-20"))),
            float(trained.get("holdout_share", 0.25)),
        )
    except ImportError:  # scikit-learn (the lock file's `train` group) is missing
        return {**row, "holdout_auc": None, "skipped": "scikit-learn is not installed"}
    return {**row, "holdout_auc": round(fitted.holdout_auc, 4)}
