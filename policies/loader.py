"""Reads a policy file (YAML) into a Policy, or says exactly what is wrong and where.

Every problem names the file and the line, so `switchboard policy check` reads like a compiler.
Problems are errors (the file is refused: a running hub keeps its current policy) or warnings
(overlapping rules: legal, first match wins, but worth a look).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

# One line-numbered YAML reader and one Problem for the policy and the systems' files.
from adapters.declared.yaml_lines import LINE, LineLoader, Problem
from policies.masks import BUILTIN_CLASSES, DataClass, DeclaredMask
from policies.model import (
    DOCUMENTS_ANY,
    DOCUMENTS_TRUSTED_ONLY,
    ROWS_ALL,
    ROWS_VERIFIED_CUSTOMER,
    ChannelProfile,
    Continuity,
    Level,
    OperationLimits,
    Policy,
    Rule,
    SearchGrant,
    VerificationLimits,
)

TOP_KEYS = {
    "version",
    "purposes",
    "verification_levels",
    "verification_limits",
    "limits",
    "data_classes",
    "channels",
    "search",
    "disclosure",
}
#: Operation limits: positive integers, and `mode` (enforce, or dry_run: log only).
LIMIT_NUMBERS = {f.name for f in fields(OperationLimits) if f.name != "dry_run"}
LIMIT_KEYS = LIMIT_NUMBERS | {"mode"}
LIMIT_MODES = {"enforce": False, "dry_run": True}
VERIFICATION_LIMIT_KEYS = {f.name for f in fields(VerificationLimits)}
DATA_CLASS_KEYS = {"mask", "description"}
MASK_KEYS = {"keep_first", "keep_last", "min_length", "withheld", "like"}
CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
CHANNEL_KEYS = {
    "limits",
    "operations",
    "introspection",
    "rate_limit_per_minute",
    "rendering",
    "requires_verification",
    "continuity",
    "rows",
    "documents",
}
DOCUMENTS = {DOCUMENTS_ANY, DOCUMENTS_TRUSTED_ONLY}
CONTINUITY_KEYS = {"from", "max_age_minutes", "carries"}
ROWS = {ROWS_ALL, ROWS_VERIFIED_CUSTOMER}
RULE_KEYS = {"id", "class", "channel", "role", "purpose", "verified", "decision"}
SEARCH_KEYS = {"class", "channel", "role"}
RENDERINGS = {"standard", "full", "speech", "text"}
LEVELS = {level.value: level for level in Level}


class PolicyInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _Reader:
    def __init__(self, file: str, known_operations: Collection[str] | None) -> None:
        self.file = file
        self.known_operations = known_operations
        self.problems: list[Problem] = []
        self.levels: tuple[str, ...] = ("none",)
        self.limits = OperationLimits()
        #: Built-in classes and the ones this file declares, by name.
        self.known_classes: dict[str, DataClass] = {str(c): c for c in BUILTIN_CLASSES}

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def warn(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message, "warning"))

    def keys(self, mapping: dict, allowed: set[str], what: str) -> None:
        for key in mapping:
            if key != LINE and key not in allowed:
                self.error(mapping[LINE], f"unknown key '{key}' in {what}")

    def names(self, value: Any, line: int, what: str) -> frozenset[str] | None:
        """A name or a list of names; absent means any."""
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            self.error(line, f"{what} must be a name or a list of names")
            return frozenset()
        return frozenset(items)

    def classes(self, value: Any, line: int) -> frozenset[DataClass] | None:
        names = self.names(value, line, "class")
        if names is None:
            return None
        known = self.known_classes
        for name in sorted(names - known.keys()):
            self.error(line, f"unknown data class '{name}' (known: {', '.join(sorted(known))})")
        return frozenset(known[n] for n in names if n in known)

    def data_classes(self, specs: Any, line: int) -> dict[DataClass, DeclaredMask]:
        """The ``data_classes:`` section: classes a policy adds, each with its mask."""
        if specs is None:
            return {}
        if not isinstance(specs, dict):
            self.error(line, "data_classes must be a mapping of class name -> {mask: ...}")
            return {}
        declared: dict[DataClass, DeclaredMask] = {}
        for name, spec in specs.items():
            if name == LINE:
                continue
            name = str(name)
            if not CLASS_NAME.match(name):
                self.error(specs[LINE], f"data class name '{name}' must match {CLASS_NAME.pattern}")
                continue
            if name in self.known_classes:
                self.error(specs[LINE], f"data class '{name}' is built in or declared twice")
                continue
            if not isinstance(spec, dict):
                self.error(specs[LINE], f"data class '{name}' must be a mapping with a mask")
                continue
            self.keys(spec, DATA_CLASS_KEYS, f"data class '{name}'")
            found = self.declared_mask(name, spec.get("mask"), spec[LINE])
            if found is not None:
                data_class = DataClass(name)
                declared[data_class] = found
                self.known_classes[name] = data_class
        return declared

    def declared_mask(self, name: str, spec: Any, line: int) -> DeclaredMask | None:
        if spec == "withheld":
            return DeclaredMask(withheld=True)
        if spec == "hidden":
            return DeclaredMask()
        if not isinstance(spec, dict):
            self.error(
                line,
                f"data class '{name}': mask must be withheld, hidden, or a mapping of "
                f"{', '.join(sorted(MASK_KEYS))}",
            )
            return None
        self.keys(spec, MASK_KEYS, f"the mask of data class '{name}'")
        numbers: dict[str, int] = {}
        for key in ("keep_first", "keep_last", "min_length"):
            value = spec.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 64:
                self.error(spec[LINE], f"data class '{name}': {key} must be an integer 0-64")
                return None
            numbers[key] = value
        like = spec.get("like")
        if like is not None and like not in {str(c) for c in BUILTIN_CLASSES}:
            self.error(spec[LINE], f"data class '{name}': like must name a built-in class")
            return None
        return DeclaredMask(
            **numbers,
            withheld=bool(spec.get("withheld", False)),
            like=DataClass(like) if like is not None else None,
        )

    def channel(self, name: str, spec: Any, line: int) -> ChannelProfile | None:
        if not isinstance(spec, dict):
            self.error(line, f"channel '{name}' must be a mapping")
            return None
        self.keys(spec, CHANNEL_KEYS, f"channel '{name}'")
        line = spec[LINE]
        operations = spec.get("operations", "*")
        allowed = None if operations == "*" else self.names(operations, line, "operations")
        if allowed is not None and self.known_operations is not None:
            for op in sorted(allowed - set(self.known_operations)):
                self.error(line, f"channel '{name}' allows unknown operation '{op}'")
        rendering = spec.get("rendering", "standard")
        if rendering not in RENDERINGS:
            self.error(
                line, f"unknown rendering '{rendering}' (known: {', '.join(sorted(RENDERINGS))})"
            )
        limit = spec.get("rate_limit_per_minute")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            self.error(line, "rate_limit_per_minute must be a positive integer")
        introspection = spec.get("introspection", False)
        if not isinstance(introspection, bool):
            self.error(line, "introspection must be true or false")
        rows = spec.get("rows", ROWS_ALL)
        if rows not in ROWS:
            self.error(line, f"rows must be one of {', '.join(sorted(ROWS))}")
        documents = spec.get("documents", DOCUMENTS_ANY)
        if documents not in DOCUMENTS:
            self.error(
                line,
                f"channel '{name}': documents must be one of {', '.join(sorted(DOCUMENTS))}",
            )
        return ChannelProfile(
            name,
            allowed,
            bool(introspection),
            limit,
            str(rendering),
            requires_verification=self.requirements(name, spec.get("requires_verification"), line),
            continuity=self.continuity(name, spec.get("continuity"), line),
            rows=str(rows),
            limits=self.operation_limits(spec.get("limits"), line, f"channel '{name}'"),
            documents=str(documents) if documents in DOCUMENTS else DOCUMENTS_ANY,
        )

    def operation_limits(self, spec: Any, line: int, what: str) -> OperationLimits:
        """`limits`: the keys given replace those of the policy's own `limits` (the default)."""
        if spec is None:
            return self.limits
        if not isinstance(spec, dict):
            self.error(line, f"{what}: limits must be a mapping ({', '.join(sorted(LIMIT_KEYS))})")
            return self.limits
        line = spec[LINE]
        self.keys(spec, LIMIT_KEYS, f"the limits of {what}")
        changes: dict[str, Any] = {}
        for key in sorted(LIMIT_NUMBERS & spec.keys()):
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.error(line, f"{what}: limits.{key} must be a positive integer")
            else:
                changes[key] = value
        if "mode" in spec:
            mode = spec["mode"]
            if mode not in LIMIT_MODES:
                self.error(line, f"{what}: limits.mode must be one of enforce, dry_run")
            else:
                changes["dry_run"] = LIMIT_MODES[mode]
        return replace(self.limits, **changes)

    def verification_limits(self, spec: Any, line: int) -> VerificationLimits:
        if spec is None:
            return VerificationLimits()
        if not isinstance(spec, dict):
            self.error(line, "verification_limits must be a mapping")
            return VerificationLimits()
        line = spec[LINE]
        self.keys(spec, VERIFICATION_LIMIT_KEYS, "verification_limits")
        changes: dict[str, int] = {}
        for key in sorted(VERIFICATION_LIMIT_KEYS & spec.keys()):
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.error(line, f"verification_limits.{key} must be a positive integer")
            else:
                changes[key] = value
        found = replace(VerificationLimits(), **changes)
        for kind in ("otp_sends", "id_card_failures"):
            own = getattr(found, f"{kind}_per_credential")
            ceiling = getattr(found, f"{kind}_per_customer")
            if own > ceiling:
                self.error(
                    line,
                    f"verification_limits: {kind}_per_credential ({own}) is above "
                    f"{kind}_per_customer ({ceiling}); the ceiling would always decide",
                )
            elif own == ceiling:
                self.warn(
                    line,
                    f"verification_limits: {kind}_per_credential equals {kind}_per_customer "
                    f"({own}): one credential alone can use up the customer's ceiling and lock "
                    "every other channel out for the window",
                )
        return found

    def level(self, value: Any, line: int, what: str) -> str | None:
        if not isinstance(value, str) or value not in self.levels:
            self.error(
                line, f"{what} must be a verification level (known: {', '.join(self.levels)})"
            )
            return None
        return value

    def requirements(self, name: str, spec: Any, line: int) -> dict[str, str]:
        """requires_verification: {operation: minimum level}."""
        if spec is None:
            return {}
        if not isinstance(spec, dict):
            self.error(line, f"channel '{name}': requires_verification maps operation -> level")
            return {}
        line = spec[LINE]
        found: dict[str, str] = {}
        for operation, level in spec.items():
            if operation == LINE:
                continue
            known = self.known_operations
            if known is not None and operation not in known:
                self.error(
                    line,
                    f"channel '{name}' requires verification for unknown operation '{operation}'",
                )
            checked = self.level(
                level, line, f"channel '{name}': requires_verification.{operation}"
            )
            if checked is not None:
                found[str(operation)] = checked
        return found

    def continuity(self, name: str, spec: Any, line: int) -> tuple[Continuity, ...]:
        """continuity: [{from: channel, max_age_minutes: N, carries: level}, ...]."""
        if spec is None:
            return ()
        if not isinstance(spec, list):
            self.error(line, f"channel '{name}': continuity must be a list of entries")
            return ()
        found: list[Continuity] = []
        for entry in spec:
            if not isinstance(entry, dict):
                self.error(line, f"channel '{name}': each continuity entry must be a mapping")
                continue
            at = entry[LINE]
            self.keys(entry, CONTINUITY_KEYS, f"a continuity entry of channel '{name}'")
            source = entry.get("from")
            age = entry.get("max_age_minutes")
            carries = self.level(entry.get("carries"), at, f"channel '{name}': continuity carries")
            if not isinstance(source, str) or not source:
                self.error(at, f"channel '{name}': continuity needs 'from' (a channel)")
                continue
            if source == name:
                self.error(at, f"channel '{name}': continuity from itself is implied")
            if isinstance(age, bool) or not isinstance(age, int) or age < 1:
                self.error(at, f"channel '{name}': max_age_minutes must be a positive integer")
                continue
            if carries is not None:
                found.append(Continuity(source, age, carries, at))
        return tuple(found)

    def rule(
        self, index: int, spec: Any, purposes: frozenset[str], channels: set[str]
    ) -> Rule | None:
        if not isinstance(spec, dict):
            self.error(0, f"disclosure rule #{index + 1} must be a mapping")
            return None
        line = spec[LINE]
        self.keys(spec, RULE_KEYS, "a disclosure rule")
        rule_id = str(spec.get("id") or f"rule-{index + 1}")
        decision = LEVELS.get(str(spec.get("decision")))
        if decision is None:
            self.error(line, f"rule '{rule_id}': decision must be one of clear, masked, denied")
            return None
        rule_channels = self.names(spec.get("channel"), line, "channel")
        for name in sorted((rule_channels or frozenset()) - channels):
            self.error(line, f"rule '{rule_id}' names unknown channel '{name}'")
        rule_purposes = self.names(spec.get("purpose"), line, "purpose")
        for name in sorted((rule_purposes or frozenset()) - purposes):
            self.error(line, f"rule '{rule_id}' names unknown purpose '{name}'")
        verified_min = None
        verified = None
        if "verified" in spec:
            verified_min = self.level(spec["verified"], line, f"rule '{rule_id}': verified")
            if verified_min is not None:
                # A minimum, held as the set of levels at or above it, so that the checks for
                # unreachable and overlapping rules treat it like any other dimension.
                verified = frozenset(self.levels[self.levels.index(verified_min) :])
        return Rule(
            verified=verified,
            verified_min=verified_min,
            id=rule_id,
            decision=decision,
            classes=self.classes(spec.get("class"), line),
            channels=rule_channels,
            roles=self.names(spec.get("role"), line, "role"),
            purposes=rule_purposes,
            line=line,
        )


def _covers(outer: frozenset | None, inner: frozenset | None) -> bool:
    return outer is None or (inner is not None and inner <= outer)


def _meets(a: frozenset | None, b: frozenset | None) -> bool:
    return a is None or b is None or bool(a & b)


def analyse(rules: Iterable[Rule], file: str) -> list[Problem]:
    """Unreachable rules (errors) and overlapping rules with other decisions (warnings).

    An earlier rule that lies wholly inside a later one with another decision is an exception
    to it, written first on purpose, and is not reported.
    """
    problems: list[Problem] = []
    earlier: list[Rule] = []
    for rule in rules:
        shadow = next(
            (
                e
                for e in earlier
                if all(
                    _covers(o, i) for o, i in zip(e.dimensions(), rule.dimensions(), strict=True)
                )
            ),
            None,
        )
        if shadow is not None:
            problems.append(
                Problem(
                    file,
                    rule.line,
                    f"rule '{rule.id}' is unreachable: rule '{shadow.id}' (line {shadow.line}) "
                    "matches everything it does",
                )
            )
        else:
            for e in earlier:
                if (
                    e.decision != rule.decision
                    and all(
                        _meets(a, b) for a, b in zip(e.dimensions(), rule.dimensions(), strict=True)
                    )
                    # An earlier rule wholly inside the later one is a deliberate exception
                    # ("X unless verified": the narrow rule first), not a surprise.
                    and not all(
                        _covers(later, exception)
                        for later, exception in zip(rule.dimensions(), e.dimensions(), strict=True)
                    )
                ):
                    problems.append(
                        Problem(
                            file,
                            rule.line,
                            f"rule '{rule.id}' overlaps rule '{e.id}' (line {e.line}), which "
                            f"decides {e.decision.value} first where both match",
                            "warning",
                        )
                    )
        earlier.append(rule)
    return problems


def parse_policy(
    text: str, file: str = "<policy>", known_operations: Collection[str] | None = None
) -> tuple[Policy, list[Problem]]:
    """The policy and its warnings; PolicyInvalid listing every error otherwise."""
    reader = _Reader(file, known_operations)
    try:
        document = yaml.load(text, Loader=LineLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise PolicyInvalid(
            [Problem(file, line, f"not valid YAML: {getattr(error, 'problem', error)}")]
        ) from None
    if not isinstance(document, dict):
        raise PolicyInvalid([Problem(file, 1, "a policy file is a mapping")])
    reader.keys(document, TOP_KEYS, "the policy")
    version = document.get("version")
    if not isinstance(version, str | int | float) or not str(version):
        reader.error(document[LINE], "version is required (a string operators bump on change)")
    purposes = reader.names(document.get("purposes", []), document[LINE], "purposes") or frozenset()
    levels = document.get("verification_levels", ["none"])
    if (
        not isinstance(levels, list)
        or not levels
        or not all(isinstance(level, str) and level for level in levels)
        or len(set(levels)) != len(levels)
    ):
        reader.error(
            document[LINE],
            "verification_levels must be a list of distinct names, weakest first "
            "(e.g. [none, otp, id_card])",
        )
    else:
        reader.levels = tuple(levels)

    reader.limits = reader.operation_limits(document.get("limits"), document[LINE], "the policy")
    verification_limits = reader.verification_limits(
        document.get("verification_limits"), document[LINE]
    )
    declared_classes = reader.data_classes(document.get("data_classes"), document[LINE])

    channels: dict[str, ChannelProfile] = {}
    channel_specs = document.get("channels") or {}
    if not isinstance(channel_specs, dict):
        reader.error(document[LINE], "channels must be a mapping of channel name -> profile")
        channel_specs = {}
    for name, spec in channel_specs.items():
        if name == LINE:
            continue
        profile = reader.channel(str(name), spec, channel_specs[LINE])
        if profile is not None:
            channels[profile.name] = profile
    for profile in channels.values():
        for entry in profile.continuity:
            if entry.from_channel not in channels:
                reader.error(
                    entry.line,
                    f"channel '{profile.name}': continuity from unknown channel "
                    f"'{entry.from_channel}'",
                )

    grants: list[SearchGrant] = []
    for spec in document.get("search") or []:
        if not isinstance(spec, dict):
            reader.error(document[LINE], "search entries must be mappings")
            continue
        reader.keys(spec, SEARCH_KEYS, "a search grant")
        classes = reader.classes(spec.get("class"), spec[LINE])
        if not classes:
            reader.error(spec[LINE], "a search grant must name the classes it allows")
            continue
        grant_channels = reader.names(spec.get("channel"), spec[LINE], "channel")
        for name in sorted((grant_channels or frozenset()) - channels.keys()):
            reader.error(spec[LINE], f"search grant names unknown channel '{name}'")
        grants.append(
            SearchGrant(classes, grant_channels, reader.names(spec.get("role"), spec[LINE], "role"))
        )

    disclosure = document.get("disclosure") or {}
    if not isinstance(disclosure, dict):
        reader.error(document[LINE], "disclosure must be a mapping with default and rules")
        disclosure = {LINE: document[LINE]}
    default = LEVELS.get(str(disclosure.get("default", "masked")))
    if default is None:
        reader.error(disclosure[LINE], "disclosure default must be one of clear, masked, denied")
        default = Level.MASKED
    rules = [
        r
        for i, spec in enumerate(disclosure.get("rules") or [])
        if (r := reader.rule(i, spec, purposes, set(channels))) is not None
    ]
    seen: dict[str, int] = {}
    for r in rules:
        if r.id in seen:
            reader.error(r.line, f"rule id '{r.id}' is used twice (first on line {seen[r.id]})")
        seen.setdefault(r.id, r.line)
    problems = reader.problems + analyse(rules, file)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise PolicyInvalid(errors)
    policy = Policy(
        version=str(version),
        source=file,
        purposes=purposes,
        channels=channels,
        rules=tuple(rules),
        default=default,
        search=tuple(grants),
        verification_levels=reader.levels,
        limits=reader.limits,
        verification_limits=verification_limits,
        data_classes=declared_classes,
    )
    return policy, problems


def load_policy(
    path: Path, known_operations: Collection[str] | None = None
) -> tuple[Policy, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyInvalid([Problem(str(path), 0, f"cannot read: {error.strerror}")]) from None
    return parse_policy(text, str(path), known_operations)
