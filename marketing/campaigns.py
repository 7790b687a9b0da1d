"""Campaigns as data: the model, and the loader that checks a campaigns file with file:line.

A campaign says which business event (and which conditions on its payload and on the
customer's insight) makes which offer, to which audience, through which channels, when, and
which share of the customers it matches is held out as the control group. The guards (caps,
quiet hours, complaint cool-down) are the file's too: one place an operator reads and diffs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any

from adapters.declared.yaml_lines import (
    DeclarationInvalid,
    FileProblems,
    Problem,
    line_of,
    load_yaml,
    plain,
)
from marketing.events import EVENT_TYPES

DEFAULT_CAMPAIGNS = Path(__file__).with_name("rules") / "campaigns.yaml"

#: Where an offer can go: the care system's SMS (TMF681), the app (channelNotifications), or
#: the agent console's next best offers (shown, not sent).
CHANNELS = ("sms", "app", "nbo")
#: Channels that contact the customer, so caps and quiet hours count them.
CONTACT_CHANNELS = ("sms", "app")
PERIODS = ("day", "week")
OPERATORS = ("eq", "gt", "gte", "lt", "lte", "in")
#: The customer's insight a campaign may test (insight/provider.py CustomerFacts).
INSIGHT_KEYS = ("value_tier", "rfm_segment", "lifecycle_stage", "churn_level", "tags")
CAMPAIGN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
OFFERING_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
MAX_MESSAGE = 300  # the care system takes 500; room for nothing else to be added
HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on a value: ``key op value`` (``in``: value is a list)."""

    key: str
    op: str
    value: Any

    def holds(self, actual: Any) -> bool:
        if actual is None:
            return False
        try:
            if self.op == "eq":
                return bool(actual == self.value)
            if self.op == "in":
                return actual in self.value
            if isinstance(actual, bool) or not isinstance(actual, int | float):
                return False
            return bool(
                {
                    "gt": actual > self.value,
                    "gte": actual >= self.value,
                    "lt": actual < self.value,
                    "lte": actual <= self.value,
                }[self.op]
            )
        except TypeError:
            return False

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.value}"


@dataclass(frozen=True, slots=True)
class Offer:
    """An offering of the BOSS catalogue (acceptance changes the line's plan), or a retention
    pack (a named benefit; acceptance is recorded for the operator to fulfil)."""

    offering: str | None = None
    retention_pack: str | None = None

    @property
    def ref(self) -> str:
        return f"offering:{self.offering}" if self.offering else f"pack:{self.retention_pack}"


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    event_type: str
    offer: Offer
    channels: tuple[str, ...]
    valid_from: date
    valid_until: date
    control_share: float
    payload: tuple[Condition, ...] = ()
    #: Insight conditions: key -> accepted values (any of them); tags: any of them.
    insight: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Audience: rfm segments, value tiers, tags (each list: any of them; all lists must hold).
    segments: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    purpose: str = "marketing"
    message: str | None = None
    description: str = ""
    line: int = 0

    @property
    def needs_insight(self) -> bool:
        return bool(self.insight or self.segments or self.tiers or self.tags)


@dataclass(frozen=True, slots=True)
class Guards:
    #: period -> channel (or "overall") -> contacts at most.
    caps: Mapping[str, Mapping[str, int]]
    quiet_start: time | None = None
    quiet_end: time | None = None
    complaint_cooldown_days: float = 14.0

    def in_quiet_hours(self, local: time) -> bool:
        if self.quiet_start is None or self.quiet_end is None:
            return False
        if self.quiet_start <= self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end  # over midnight


@dataclass(frozen=True, slots=True)
class CampaignBook:
    version: str
    guards: Guards
    campaigns: tuple[Campaign, ...]
    path: str = ""

    def by_id(self, campaign_id: str) -> Campaign | None:
        return next((c for c in self.campaigns if c.id == campaign_id), None)

    def for_event(self, event_type: str) -> tuple[Campaign, ...]:
        return tuple(c for c in self.campaigns if c.event_type == event_type)

    def offerings(self) -> dict[str, int]:
        """Offering ids the campaigns name, with the line naming each first."""
        found: dict[str, int] = {}
        for c in self.campaigns:
            if c.offer.offering:
                found.setdefault(c.offer.offering, c.line)
        return found


def render_message(campaign: Campaign, payload: Mapping[str, Any]) -> str:
    """The SMS text: the template with numbers from the event's payload only (never free
    text: a payload string could carry personal data)."""
    template = campaign.message or f"An offer for you: {campaign.offer.ref}. See the app."

    def fill(match: re.Match[str]) -> str:
        value = payload.get(match.group(1))
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else ""

    return PLACEHOLDER.sub(fill, template)[:MAX_MESSAGE]


class _Checker(FileProblems):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path))

    def strings(self, value: Any, line: int, what: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(line, f"{what} must be a list of names")
            return ()
        return tuple(value)

    def keys(self, spec: dict[str, Any], allowed: Iterable[str], line: int, what: str) -> None:
        self.unknown_keys(spec, allowed, what, line)


def _conditions(check: _Checker, spec: Any, line: int) -> tuple[Condition, ...]:
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        check.error(line, "trigger.payload must map payload keys to conditions")
        return ()
    found = []
    for key, test in plain(spec).items():
        if not isinstance(test, dict):
            test = {"eq": test}
        for op, value in test.items():
            if op not in OPERATORS:
                check.error(
                    line,
                    f"trigger.payload.{key}: operator {op!r} is not one of {', '.join(OPERATORS)}",
                )
            elif op == "in" and not isinstance(value, list):
                check.error(line, f"trigger.payload.{key}: 'in' takes a list")
            elif op in ("gt", "gte", "lt", "lte") and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                check.error(line, f"trigger.payload.{key}: {op!r} takes a number")
            else:
                found.append(Condition(str(key), op, value))
    return tuple(found)


def _date(check: _Checker, value: Any, line: int, what: str) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        check.error(line, f"{what} must be a date YYYY-MM-DD")
        return None


def _campaign(check: _Checker, spec: Any, seen: set[str]) -> Campaign | None:
    line = line_of(spec)
    if not isinstance(spec, dict):
        check.error(line, "a campaign must be a mapping")
        return None
    check.keys(
        spec,
        (
            "id",
            "description",
            "trigger",
            "audience",
            "offer",
            "channels",
            "valid",
            "control_share",
            "purpose",
            "message",
        ),
        line,
        "campaign",
    )
    campaign_id = spec.get("id")
    if not isinstance(campaign_id, str) or not CAMPAIGN_ID.fullmatch(campaign_id):
        check.error(line, "id must be 1-48 of a-z, 0-9 and -, starting with a letter or digit")
        return None
    if campaign_id in seen:
        check.error(line, f"campaign {campaign_id}: id used twice")
    seen.add(campaign_id)
    where = f"campaign {campaign_id}"

    trigger = spec.get("trigger")
    t_line = line_of(trigger, line)
    if not isinstance(trigger, dict):
        check.error(line, f"{where}: trigger is required (event, payload, insight)")
        return None
    check.keys(trigger, ("event", "payload", "insight"), t_line, f"{where}: trigger")
    event_type = trigger.get("event")
    if event_type not in EVENT_TYPES:
        check.error(t_line, f"{where}: trigger.event must be one of {', '.join(EVENT_TYPES)}")
    payload = _conditions(check, trigger.get("payload"), t_line)
    insight: dict[str, tuple[str, ...]] = {}
    raw_insight = trigger.get("insight") or {}
    if not isinstance(raw_insight, dict):
        check.error(t_line, f"{where}: trigger.insight must be a mapping")
        raw_insight = {}
    check.keys(raw_insight, INSIGHT_KEYS, line_of(raw_insight, t_line), f"{where}: insight")
    for key, value in plain(raw_insight).items():
        if key in INSIGHT_KEYS:
            insight[key] = check.strings(value, t_line, f"{where}: trigger.insight.{key}")

    audience = spec.get("audience") or {}
    a_line = line_of(audience, line)
    if not isinstance(audience, dict):
        check.error(line, f"{where}: audience must be a mapping")
        audience = {}
    check.keys(audience, ("segments", "tiers", "tags"), a_line, f"{where}: audience")

    offer_spec = spec.get("offer")
    o_line = line_of(offer_spec, line)
    offer = Offer()
    if not isinstance(offer_spec, dict) or (
        ("offering" in offer_spec) == ("retention_pack" in offer_spec)
    ):
        check.error(o_line, f"{where}: offer must name exactly one of offering, retention_pack")
    else:
        check.keys(offer_spec, ("offering", "retention_pack"), o_line, f"{where}: offer")
        offering = offer_spec.get("offering")
        pack = offer_spec.get("retention_pack")
        if offering is not None and not (
            isinstance(offering, str) and OFFERING_ID.fullmatch(offering)
        ):
            check.error(o_line, f"{where}: offer.offering is not an offering id")
        if pack is not None and not (isinstance(pack, str) and CAMPAIGN_ID.fullmatch(pack)):
            check.error(o_line, f"{where}: offer.retention_pack must be a name (a-z, 0-9, -)")
        offer = Offer(offering=offering, retention_pack=pack)

    channels = check.strings(spec.get("channels"), line, f"{where}: channels")
    if not channels:
        check.error(line, f"{where}: channels must list at least one of {', '.join(CHANNELS)}")
    for channel in channels:
        if channel not in CHANNELS:
            check.error(line, f"{where}: channel {channel!r} is not one of {', '.join(CHANNELS)}")
    if len(set(channels)) != len(channels):
        check.error(line, f"{where}: a channel is listed twice")

    valid = spec.get("valid")
    v_line = line_of(valid, line)
    if not isinstance(valid, dict) or "from" not in valid or "until" not in valid:
        check.error(line, f"{where}: valid must give from and until (dates)")
        return None
    valid_from = _date(check, valid["from"], v_line, f"{where}: valid.from")
    valid_until = _date(check, valid["until"], v_line, f"{where}: valid.until")
    if valid_from and valid_until and valid_until < valid_from:
        check.error(v_line, f"{where}: valid.until is before valid.from")

    share = spec.get("control_share", 0.1)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
        check.error(line, f"{where}: control_share must be a number from 0 up to (not) 1")
        share = 0.0

    message = spec.get("message")
    if message is not None:
        if not isinstance(message, str) or not message.strip():
            check.error(line, f"{where}: message must be text")
            message = None
        elif len(message) > MAX_MESSAGE:
            check.error(line, f"{where}: message is longer than {MAX_MESSAGE} characters")
    if "sms" in channels and message is None:
        check.error(line, f"{where}: an sms campaign needs a message")
    purpose = spec.get("purpose", "marketing")
    if not isinstance(purpose, str) or not purpose:
        check.error(line, f"{where}: purpose must be a name")
        purpose = "marketing"
    if valid_from is None or valid_until is None or event_type not in EVENT_TYPES:
        return None
    return Campaign(
        id=campaign_id,
        event_type=str(event_type),
        offer=offer,
        channels=channels,
        valid_from=valid_from,
        valid_until=valid_until,
        control_share=float(share),
        payload=payload,
        insight=insight,
        segments=check.strings(audience.get("segments"), a_line, f"{where}: audience.segments"),
        tiers=check.strings(audience.get("tiers"), a_line, f"{where}: audience.tiers"),
        tags=check.strings(audience.get("tags"), a_line, f"{where}: audience.tags"),
        purpose=purpose,
        message=message,
        description=str(spec.get("description") or ""),
        line=line,
    )


def _time(check: _Checker, value: Any, line: int, what: str) -> time | None:
    match = HHMM.fullmatch(str(value)) if isinstance(value, str) else None
    if match is None:
        check.error(line, f"{what} must be a time HH:MM")
        return None
    return time(int(match.group(1)), int(match.group(2)))


def _guards(check: _Checker, spec: Any) -> Guards:
    line = line_of(spec)
    if not isinstance(spec, dict):
        check.error(line, "guards is required (caps, quiet_hours, complaint_cooldown_days)")
        return Guards(caps={})
    check.keys(spec, ("caps", "quiet_hours", "complaint_cooldown_days"), line, "guards")
    caps: dict[str, dict[str, int]] = {}
    raw_caps = spec.get("caps") or {}
    c_line = line_of(raw_caps, line)
    if not isinstance(raw_caps, dict):
        check.error(line, "guards.caps must map day/week to caps")
        raw_caps = {}
    check.keys(raw_caps, PERIODS, c_line, "guards.caps")
    for period in PERIODS:
        per = raw_caps.get(period)
        if per is None:
            continue
        p_line = line_of(per, c_line)
        if not isinstance(per, dict):
            check.error(c_line, f"guards.caps.{period} must map channels to numbers")
            continue
        check.keys(per, ("overall", *CONTACT_CHANNELS), p_line, f"guards.caps.{period}")
        caps[period] = {}
        for name, value in plain(per).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                check.error(p_line, f"guards.caps.{period}.{name} must be a whole number >= 0")
            else:
                caps[period][str(name)] = value
    quiet = spec.get("quiet_hours")
    start = end = None
    if quiet is not None:
        q_line = line_of(quiet, line)
        if not isinstance(quiet, dict):
            check.error(line, "guards.quiet_hours must give start and end (HH:MM)")
        else:
            check.keys(quiet, ("start", "end"), q_line, "guards.quiet_hours")
            start = _time(check, quiet.get("start"), q_line, "guards.quiet_hours.start")
            end = _time(check, quiet.get("end"), q_line, "guards.quiet_hours.end")
    cooldown = spec.get("complaint_cooldown_days", 14)
    if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or cooldown < 0:
        check.error(line, "guards.complaint_cooldown_days must be a number >= 0")
        cooldown = 14
    return Guards(
        caps=caps, quiet_start=start, quiet_end=end, complaint_cooldown_days=float(cooldown)
    )


def load_campaigns(path: Path = DEFAULT_CAMPAIGNS) -> CampaignBook:
    """The campaigns of a file; DeclarationInvalid naming each problem's file and line."""
    data = load_yaml(path)
    check = _Checker(path)
    if not isinstance(data, dict):
        raise DeclarationInvalid([Problem(str(path), 0, "the file must be a mapping")])
    check.keys(data, ("version", "guards", "campaigns"), line_of(data, 1), "file")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        check.error(line_of(data, 1), "version is required (a string; bump it on every change)")
    guards = _guards(check, data.get("guards"))
    raw = data.get("campaigns")
    campaigns: list[Campaign] = []
    if not isinstance(raw, list):
        check.error(line_of(data, 1), "campaigns must be a list")
    else:
        seen: set[str] = set()
        for spec in raw:
            found = _campaign(check, spec, seen)
            if found is not None:
                campaigns.append(found)
    if check.problems:
        raise DeclarationInvalid(check.problems)
    return CampaignBook(str(version), guards, tuple(campaigns), str(path))


def check_offerings(book: CampaignBook, catalogue: Mapping[str, bool] | None) -> list[Problem]:
    """Offerings a campaign names that the BOSS catalogue lacks or no longer sells.

    ``catalogue``: offering id -> sellable, or None when BOSS was not reachable (then nothing
    can be said, and the caller reports that as a warning)."""
    if catalogue is None:
        return []
    problems = []
    for offering, line in book.offerings().items():
        if offering not in catalogue:
            problems.append(
                Problem(book.path, line, f"offering {offering} is not in the BOSS catalogue")
            )
        elif not catalogue[offering]:
            problems.append(Problem(book.path, line, f"offering {offering} is no longer sold"))
    return problems


def campaign_ids(campaigns: Sequence[Campaign]) -> list[str]:
    return [c.id for c in campaigns]
