"""From a customer's figures to their insight, with the reason for every part of it.

Pure: figures and rules in, ``Insight`` out. The order is fixed so that later parts may test
earlier ones: value tier, RFM, churn risk, then the lifecycle stage (which may test the churn
level), then the tags (which may test all of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from insight.features import FEATURES
from insight.rules import Condition, InsightRules, RfmRules

NOT_MATCHED = "no rule above it matched"


@dataclass(frozen=True, slots=True)
class Rfm:
    recency: int
    frequency: int
    monetary: int
    segment: str


@dataclass(frozen=True, slots=True)
class ChurnRisk:
    score: float
    level: str
    #: The features that raise the score most, in words, largest first.
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Insight:
    tags: tuple[str, ...]
    value_tier: str
    rfm: Rfm
    lifecycle_stage: str
    churn_risk: ChurnRisk
    figures: Mapping[str, float]
    #: Why: part ("tag loyal_multi_line", "value_tier", ...) -> the rule and the figures.
    why: Mapping[str, str]


def _figure(name: str, figures: Mapping[str, Any]) -> str:
    value = figures.get(name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{name} = {value}"


def _because(conditions: tuple[Condition, ...], facts: Mapping[str, Any]) -> str:
    return "; ".join(f"{c} ({_figure(c.fact, facts)})" for c in conditions)


def _score_low(value: float, ladder: tuple[float, ...]) -> int:
    """5 at or below the first threshold, ..., 1 above the last (recency: lower is better)."""
    for position, threshold in enumerate(ladder):
        if value <= threshold:
            return 5 - position
    return 1


def _score_high(value: float, ladder: tuple[float, ...]) -> int:
    for position, threshold in enumerate(ladder):
        if value >= threshold:
            return 5 - position
    return 1


def rfm_of(rfm: RfmRules, figures: Mapping[str, float]) -> tuple[Rfm, str]:
    scores = {
        "r": _score_low(figures["recency_days"], rfm.recency_days),
        "f": _score_high(figures["frequency"], rfm.frequency),
        "m": _score_high(figures["monetary"], rfm.monetary),
    }
    shown = (
        f"R{scores['r']} ({_figure('recency_days', figures)}), "
        f"F{scores['f']} ({_figure('frequency', figures)}), "
        f"M{scores['m']} ({_figure('monetary', figures)})"
    )
    for segment in rfm.segments:
        if all(low <= scores[s] <= high for s, (low, high) in segment.bounds.items()):
            bounds = ", ".join(
                f"{s} {low}..{high}"
                for s, (low, high) in segment.bounds.items()
                if (low, high) != (1, 5)
            )
            rule = f"segment rule line {segment.line}" + (f" ({bounds})" if bounds else "")
            return (
                Rfm(scores["r"], scores["f"], scores["m"], segment.name),
                f"{shown}; {rule}",
            )
    raise AssertionError("the rules' last segment takes everyone")  # checked by the loader


def evaluate(rules: InsightRules, figures: Mapping[str, float]) -> Insight:
    why: dict[str, str] = {}
    facts: dict[str, Any] = dict(figures)

    for band in rules.value_tiers:
        if figures["arpu"] >= band.arpu_min and figures["mou"] >= band.mou_min:
            tier = band.tier
            why["value_tier"] = (
                f"{tier}: arpu {figures['arpu']:g} >= {band.arpu_min:g} and "
                f"mou {figures['mou']:g} >= {band.mou_min:g} (line {band.line})"
            )
            break
    else:
        # Below every band's minimum (a negative ARPU after refunds): the lowest tier.
        tier = rules.value_tiers[-1].tier
        why["value_tier"] = f"{tier}: below every band (line {rules.value_tiers[-1].line})"
    facts["value_tier"] = tier

    rfm, rfm_why = rfm_of(rules.rfm, figures)
    why["rfm"] = f"{rfm.segment}: {rfm_why}"
    facts["rfm_segment"] = rfm.segment

    churn = rules.churn
    score = round(churn.model.score(figures), 4)
    level = churn.level(score)
    raising = sorted(
        (
            (value, name)
            for name, value in churn.model.contributions(figures).items()
            if value >= 0.005
        ),
        reverse=True,
    )[: churn.reasons]
    reasons = tuple(
        f"{FEATURES[name]}: {_figure(name, figures).split(' = ')[1]} (+{value:.2f})"
        for value, name in raising
    )
    why["churn_risk"] = (
        f"{level}: score {score:.4f} from the model {churn.model.file} "
        f"(high >= {churn.high:g}, medium >= {churn.medium:g}); "
        + ("raised most by " + ", ".join(reasons) if reasons else "nothing raises it")
    )
    facts["churn_level"] = level
    facts["churn_score"] = score

    for stage in rules.lifecycle:
        if all(c.holds(facts) for c in stage.when):
            facts["lifecycle_stage"] = stage.stage
            why["lifecycle_stage"] = (
                f"{stage.stage}: {_because(stage.when, facts) or NOT_MATCHED} (line {stage.line})"
            )
            break

    tags = []
    for rule in rules.tags:
        if all(c.holds(facts) for c in rule.when):
            tags.append(rule.tag)
            why[f"tag {rule.tag}"] = f"{rule.kind}: {_because(rule.when, facts)} (line {rule.line})"

    return Insight(
        tags=tuple(tags),
        value_tier=tier,
        rfm=rfm,
        lifecycle_stage=facts["lifecycle_stage"],
        churn_risk=ChurnRisk(score, level, reasons),
        figures=dict(figures),
        why=why,
    )
