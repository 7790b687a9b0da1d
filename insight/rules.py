"""Insight rules as data: tags, value tiers, RFM, lifecycle stages and churn levels.

Operators edit a YAML file (the bundled one is ``insight/rules/default.yaml``); this module reads
it into ``InsightRules`` or raises ``DeclarationInvalid`` naming the file and line of every
problem, like the policy and the systems' files (``adapters/declared/yaml_lines``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.declared.yaml_lines import LINE, DeclarationInvalid, Problem, line_of, load_yaml
from insight.features import FEATURES

DEFAULT_RULES_FILE = Path(__file__).with_name("rules") / "default.yaml"

TAG_KINDS = ("basic", "behaviour", "value", "lifecycle", "risk")
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in")
CHURN_LEVELS = ("low", "medium", "high")
#: Facts derived before lifecycle stages and tags are decided, which their conditions may test.
DERIVED = ("value_tier", "rfm_segment", "churn_level", "churn_score")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
TOP_KEYS = {"version", "value_tiers", "rfm", "churn", "lifecycle", "tags"}


@dataclass(frozen=True, slots=True)
class Condition:
    """``fact op value``: one test on a figure or a derived fact."""

    fact: str
    op: str
    value: Any

    def holds(self, facts: Mapping[str, Any]) -> bool:
        actual = facts.get(self.fact)
        if actual is None:
            return False
        if self.op == "eq":
            return bool(actual == self.value)
        if self.op == "ne":
            return bool(actual != self.value)
        if self.op == "in":
            return actual in self.value
        if not isinstance(actual, int | float):
            return False
        return {
            "gt": actual > self.value,
            "gte": actual >= self.value,
            "lt": actual < self.value,
            "lte": actual <= self.value,
        }[self.op]

    def __str__(self) -> str:
        symbol = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        if self.op == "in":
            return f"{self.fact} in [{', '.join(str(v) for v in self.value)}]"
        return f"{self.fact} {symbol[self.op]} {_number(self.value)}"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class TagRule:
    tag: str
    kind: str
    when: tuple[Condition, ...]
    description: str
    line: int


@dataclass(frozen=True, slots=True)
class TierBand:
    """A value tier: reached when ARPU and MOU are both at least the band's minimums."""

    tier: str
    arpu_min: float
    mou_min: float
    line: int


@dataclass(frozen=True, slots=True)
class Segment:
    """An RFM segment: reached when each score is within the segment's bounds (1..5)."""

    name: str
    bounds: Mapping[str, tuple[int, int]]  # "r" | "f" | "m" -> (min, max)
    line: int


@dataclass(frozen=True, slots=True)
class RfmRules:
    #: Score 5 at or below the first value, 4 at or below the second, ..., 1 beyond the last.
    recency_days: tuple[float, float, float, float]
    #: Score 5 at or above the first value, ..., 1 below the last.
    frequency: tuple[float, float, float, float]
    monetary: tuple[float, float, float, float]
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class Stage:
    stage: str
    when: tuple[Condition, ...]
    line: int


@dataclass(frozen=True, slots=True)
class ModelFeature:
    name: str
    mean: float
    scale: float
    coefficient: float


@dataclass(frozen=True, slots=True)
class ChurnModel:
    """A logistic regression as data: standardised features, coefficients and intercept."""

    file: str
    intercept: float
    features: tuple[ModelFeature, ...]
    trained: Mapping[str, Any]

    def contributions(self, figures: Mapping[str, float]) -> dict[str, float]:
        """Each feature's share of the log-odds (coefficient x standardised value)."""
        return {
            f.name: f.coefficient * (figures.get(f.name, 0.0) - f.mean) / f.scale
            for f in self.features
        }

    def score(self, figures: Mapping[str, float]) -> float:
        logit = self.intercept + sum(self.contributions(figures).values())
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))


@dataclass(frozen=True, slots=True)
class ChurnRules:
    model: ChurnModel
    #: Score at least -> level, highest first; below every threshold the level is "low".
    high: float
    medium: float
    reasons: int

    def level(self, score: float) -> str:
        return "high" if score >= self.high else "medium" if score >= self.medium else "low"


@dataclass(frozen=True, slots=True)
class InsightRules:
    version: str
    file: str
    value_tiers: tuple[TierBand, ...]
    rfm: RfmRules
    churn: ChurnRules
    lifecycle: tuple[Stage, ...]
    tags: tuple[TagRule, ...]


class _Check:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def keys(self, mapping: dict[str, Any], allowed: set[str], what: str) -> None:
        for key in mapping:
            if key != LINE and key not in allowed:
                self.error(line_of(mapping), f"{what}: unknown key {key!r}")

    def mapping(self, value: Any, line: int, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.error(line, f"{what} must be a mapping")
            return {LINE: line}
        return value

    def items(self, value: Any, line: int, what: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            self.error(line, f"{what} must be a non-empty list")
            return []
        return value

    def number(self, value: Any, line: int, what: str, default: float | None = None) -> float:
        if value is None and default is not None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.error(line, f"{what} must be a number")
            return default or 0.0
        return float(value)

    def name(self, value: Any, line: int, what: str) -> str:
        if not isinstance(value, str) or not NAME.match(value):
            self.error(line, f"{what} must be a lower-case name (a-z, 0-9, _), got {value!r}")
            return str(value)
        return value

    def conditions(
        self, value: Any, line: int, what: str, facts: set[str]
    ) -> tuple[Condition, ...]:
        if value is None:
            return ()
        spec = self.mapping(value, line, what)
        line = line_of(spec, line)
        found: list[Condition] = []
        for fact, test in spec.items():
            if fact == LINE:
                continue
            if fact not in facts:
                self.error(
                    line, f"{what}: unknown figure {fact!r} (known: {', '.join(sorted(facts))})"
                )
                continue
            tests = test if isinstance(test, dict) else {"eq": test}
            for op, operand in tests.items():
                if op == LINE:
                    continue
                if op not in OPERATORS:
                    self.error(
                        line, f"{what}.{fact}: unknown operator {op!r} ({', '.join(OPERATORS)})"
                    )
                elif op == "in" and not isinstance(operand, list):
                    self.error(line, f"{what}.{fact}: 'in' takes a list")
                elif op in ("gt", "gte", "lt", "lte") and (
                    isinstance(operand, bool) or not isinstance(operand, int | float)
                ):
                    self.error(line, f"{what}.{fact}: {op} takes a number")
                else:
                    value_ = tuple(operand) if op == "in" else operand
                    found.append(Condition(fact, op, value_))
        return tuple(found)

    def ladder(self, value: Any, line: int, what: str, rising: bool) -> tuple[float, ...]:
        numbers = [self.number(v, line, what) for v in self.items(value, line, what)]
        if len(numbers) != 4:
            self.error(line, f"{what} must list 4 thresholds (scores 5, 4, 3, 2)")
            return (0.0, 0.0, 0.0, 0.0)
        ordered = sorted(numbers) if rising else sorted(numbers, reverse=True)
        if numbers != ordered or len(set(numbers)) != 4:
            order = "rising" if rising else "falling"
            self.error(line, f"{what} must be strictly {order}")
        return tuple(numbers)


def _tiers(check: _Check, value: Any, line: int) -> tuple[TierBand, ...]:
    bands: list[TierBand] = []
    seen: set[str] = set()
    for item in check.items(value, line, "value_tiers"):
        spec = check.mapping(item, line, "value_tiers item")
        at = line_of(spec, line)
        check.keys(spec, {"tier", "arpu_min", "mou_min"}, "value_tiers item")
        tier = check.name(spec.get("tier"), at, "value_tiers.tier")
        if tier in seen:
            check.error(at, f"value tier {tier!r} is listed twice")
        seen.add(tier)
        bands.append(
            TierBand(
                tier,
                check.number(spec.get("arpu_min"), at, "arpu_min", 0.0),
                check.number(spec.get("mou_min"), at, "mou_min", 0.0),
                at,
            )
        )
    for earlier, band in itertools.pairwise(bands):
        if band.arpu_min >= earlier.arpu_min and band.mou_min >= earlier.mou_min:
            check.error(
                band.line,
                f"value tier {band.tier!r} is unreachable: {earlier.tier!r} above it "
                "takes every customer it would",
            )
    if bands and (bands[-1].arpu_min or bands[-1].mou_min):
        check.error(bands[-1].line, "the last value tier must take everyone (no minimums)")
    return tuple(bands)


def _rfm(check: _Check, value: Any, line: int) -> RfmRules:
    spec = check.mapping(value, line, "rfm")
    at = line_of(spec, line)
    check.keys(spec, {"recency_days", "frequency", "monetary", "segments"}, "rfm")
    segments: list[Segment] = []
    for item in check.items(spec.get("segments"), at, "rfm.segments"):
        seg = check.mapping(item, at, "rfm segment")
        seg_line = line_of(seg, at)
        bound_keys = {f"{s}_{b}" for s in "rfm" for b in ("min", "max")}
        check.keys(seg, {"segment", *bound_keys}, "rfm segment")
        name = check.name(seg.get("segment"), seg_line, "rfm.segments.segment")
        bounds: dict[str, tuple[int, int]] = {}
        for score in "rfm":
            low = seg.get(f"{score}_min", 1)
            high = seg.get(f"{score}_max", 5)
            if (
                not all(
                    isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5
                    for v in (low, high)
                )
                or low > high
            ):
                check.error(
                    seg_line,
                    f"rfm segment {name!r}: {score}_min/{score}_max must be scores 1..5, "
                    "min <= max",
                )
                continue
            bounds[score] = (low, high)
        segments.append(Segment(name, bounds, seg_line))
    if segments and any(segments[-1].bounds.get(s, (1, 5)) != (1, 5) for s in "rfm"):
        check.error(segments[-1].line, "the last rfm segment must take everyone (no bounds)")
    return RfmRules(
        check.ladder(spec.get("recency_days"), at, "rfm.recency_days", rising=True),  # type: ignore[arg-type]
        check.ladder(spec.get("frequency"), at, "rfm.frequency", rising=False),  # type: ignore[arg-type]
        check.ladder(spec.get("monetary"), at, "rfm.monetary", rising=False),  # type: ignore[arg-type]
        tuple(segments),
    )


def _model(check: _Check, path: Path, line: int) -> ChurnModel:
    empty = ChurnModel(str(path), 0.0, (), {})
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        check.error(line, f"churn.model: cannot read {path}: {error.strerror}")
        return empty
    except ValueError as error:
        check.error(line, f"churn.model: {path} is not JSON: {error}")
        return empty
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        check.error(line, f"churn.model: {path} has no features list")
        return empty
    features: list[ModelFeature] = []
    for item in data["features"]:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in FEATURES:
            check.error(line, f"churn.model: {path} names an unknown feature {name!r}")
            continue
        try:
            feature = ModelFeature(
                name, float(item["mean"]), float(item["scale"]), float(item["coefficient"])
            )
        except (KeyError, TypeError, ValueError):
            check.error(
                line, f"churn.model: feature {name!r} needs numbers mean, scale, coefficient"
            )
            continue
        if not feature.scale > 0 or not all(
            math.isfinite(v) for v in (feature.mean, feature.scale, feature.coefficient)
        ):
            check.error(
                line, f"churn.model: feature {name!r} needs finite numbers and a positive scale"
            )
            continue
        features.append(feature)
    intercept = data.get("intercept")
    if isinstance(intercept, bool) or not isinstance(intercept, int | float):
        check.error(line, f"churn.model: {path} has no numeric intercept")
        intercept = 0.0
    found = data.get("trained")
    trained: dict[str, Any] = found if isinstance(found, dict) else {}
    return ChurnModel(str(path), float(intercept), tuple(features), trained)


def _churn(check: _Check, value: Any, line: int, base: Path) -> ChurnRules:
    spec = check.mapping(value, line, "churn")
    at = line_of(spec, line)
    check.keys(spec, {"model", "levels", "reasons"}, "churn")
    model_name = spec.get("model")
    if not isinstance(model_name, str) or not model_name:
        check.error(at, "churn.model must name the model file (relative to this file)")
        model = ChurnModel("", 0.0, (), {})
    else:
        model = _model(check, (base / model_name), at)
    levels = check.mapping(spec.get("levels"), at, "churn.levels")
    check.keys(levels, {"high", "medium"}, "churn.levels")
    high = check.number(levels.get("high"), at, "churn.levels.high")
    medium = check.number(levels.get("medium"), at, "churn.levels.medium")
    if not 0 < medium < high < 1:
        check.error(line_of(levels, at), "churn.levels: need 0 < medium < high < 1")
    reasons = spec.get("reasons", 3)
    if isinstance(reasons, bool) or not isinstance(reasons, int) or not 1 <= reasons <= 10:
        check.error(at, "churn.reasons must be a whole number 1..10")
        reasons = 3
    return ChurnRules(model, high, medium, reasons)


def _stages(check: _Check, value: Any, line: int) -> tuple[Stage, ...]:
    facts = set(FEATURES) | set(DERIVED)
    stages: list[Stage] = []
    for item in check.items(value, line, "lifecycle"):
        spec = check.mapping(item, line, "lifecycle item")
        at = line_of(spec, line)
        check.keys(spec, {"stage", "when"}, "lifecycle item")
        name = check.name(spec.get("stage"), at, "lifecycle.stage")
        when = check.conditions(spec.get("when"), at, f"lifecycle {name}.when", facts)
        stages.append(Stage(name, when, at))
    for stage in stages[:-1]:
        if not stage.when:
            check.error(
                stage.line,
                f"lifecycle stage {stage.stage!r} has no conditions: "
                "the stages after it are unreachable",
            )
    if stages and stages[-1].when:
        check.error(stages[-1].line, "the last lifecycle stage must take everyone (no when)")
    return tuple(stages)


def _tags(check: _Check, value: Any, line: int) -> tuple[TagRule, ...]:
    facts = set(FEATURES) | set(DERIVED) | {"lifecycle_stage"}
    tags: list[TagRule] = []
    seen: set[str] = set()
    for item in check.items(value, line, "tags"):
        spec = check.mapping(item, line, "tags item")
        at = line_of(spec, line)
        check.keys(spec, {"tag", "kind", "when", "description"}, "tags item")
        name = check.name(spec.get("tag"), at, "tags.tag")
        if name in seen:
            check.error(at, f"tag {name!r} is defined twice")
        seen.add(name)
        kind = spec.get("kind")
        if kind not in TAG_KINDS:
            check.error(at, f"tag {name!r}: kind must be one of {', '.join(TAG_KINDS)}")
        when = check.conditions(spec.get("when"), at, f"tag {name}.when", facts)
        if not when:
            check.error(at, f"tag {name!r} needs conditions (when)")
        description = spec.get("description", "")
        tags.append(TagRule(name, str(kind), when, str(description), at))
    return tuple(tags)


def parse_rules(document: Any, file: str) -> InsightRules:
    check = _Check(file)
    spec = check.mapping(document, 1, "the insight rules file")
    check.keys(spec, TOP_KEYS, "insight rules")
    version = spec.get("version")
    if not isinstance(version, str) or not version:
        check.error(line_of(spec, 1), "version must be a non-empty string")
    base = Path(file).parent
    at = line_of(spec, 1)
    rules = InsightRules(
        version=str(version),
        file=file,
        value_tiers=_tiers(check, spec.get("value_tiers"), at),
        rfm=_rfm(check, spec.get("rfm"), at),
        churn=_churn(check, spec.get("churn"), at, base),
        lifecycle=_stages(check, spec.get("lifecycle"), at),
        tags=_tags(check, spec.get("tags"), at),
    )
    if check.problems:
        raise DeclarationInvalid(check.problems)
    return rules


def load_rules(path: Path | str | None = None) -> InsightRules:
    """The rules of a file (the bundled one by default), or DeclarationInvalid with file:line."""
    path = Path(path) if path is not None else DEFAULT_RULES_FILE
    return parse_rules(load_yaml(path), str(path))
