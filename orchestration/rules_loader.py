"""Complaint category rules as data (orchestration/rules/complaints.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

DEFAULT_RULES = Path(__file__).with_name("rules") / "complaints.yaml"
SEVERITIES = ("minor", "major", "critical")


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    severity: str
    sla_hours: float
    auto_credit: Decimal | None = None


def load_categories(path: Path = DEFAULT_RULES) -> dict[str, Category]:
    """The categories of a rules file; ValueError naming the category on a bad entry."""
    data = yaml.safe_load(path.read_text()) or {}
    found: dict[str, Category] = {}
    for name, spec in (data.get("categories") or {}).items():
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: category {name} must be a mapping")
        severity = spec.get("severity", "minor")
        if severity not in SEVERITIES:
            raise ValueError(f"{path}: category {name}: severity must be one of {SEVERITIES}")
        sla = spec.get("sla_hours")
        if not isinstance(sla, int | float) or sla <= 0:
            raise ValueError(f"{path}: category {name}: sla_hours must be a positive number")
        credit = spec.get("auto_credit")
        try:
            amount = Decimal(str(credit)) if credit is not None else None
        except InvalidOperation:
            raise ValueError(f"{path}: category {name}: auto_credit must be an amount") from None
        if amount is not None and amount <= 0:
            raise ValueError(f"{path}: category {name}: auto_credit must be positive")
        found[str(name)] = Category(str(name), severity, float(sla), amount)
    return found
