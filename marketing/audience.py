"""Whether an event and a customer match a campaign: payload, insight, audience, validity.

The customer's insight comes through ``FactsSource``, a protocol of this package's own, so
campaigns do not depend on how insight is computed (``insight.provider.InsightEngine`` fits
it). With no source, a campaign that tests insight matches no one and says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from marketing.campaigns import Campaign
from marketing.events import BusinessEvent

#: Membership of the control group is a fixed function of (campaign, customer): the same
#: customer stays in (or out of) a campaign's control group for the campaign's whole life.
CONTROL_SALT = "switchboard-control-v1"


class Facts(Protocol):
    """The insight a campaign may test (the fields of insight's CustomerFacts)."""

    @property
    def tags(self) -> Sequence[str]: ...
    @property
    def value_tier(self) -> str | None: ...
    @property
    def rfm_segment(self) -> str | None: ...
    @property
    def lifecycle_stage(self) -> str | None: ...
    @property
    def churn_level(self) -> str | None: ...


class FactsSource(Protocol):
    async def facts(self, customer_ids: Sequence[str]) -> Mapping[str, Facts]: ...


@dataclass(frozen=True, slots=True)
class Match:
    """A campaign's verdict on one event: ``reason`` is None when it matches."""

    campaign: Campaign
    reason: str | None

    @property
    def matched(self) -> bool:
        return self.reason is None


def in_control_group(campaign: Campaign, customer_id: str) -> bool:
    digest = hashlib.sha256(f"{CONTROL_SALT}\x00{campaign.id}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < campaign.control_share


def _insight_reason(campaign: Campaign, facts: Facts | None) -> str | None:
    if not campaign.needs_insight:
        return None
    if facts is None:
        return "insight unavailable for this customer"
    tags = set(facts.tags or ())
    for key, accepted in campaign.insight.items():
        if key == "tags":
            if not tags & set(accepted):
                return f"insight tags has none of {', '.join(accepted)}"
            continue
        value = getattr(facts, key, None)
        if value not in accepted:
            return f"insight {key} is not one of {', '.join(accepted)}"
    if campaign.segments and facts.rfm_segment not in campaign.segments:
        return "audience: rfm segment not in the campaign's segments"
    if campaign.tiers and facts.value_tier not in campaign.tiers:
        return "audience: value tier not in the campaign's tiers"
    if campaign.tags and not tags & set(campaign.tags):
        return "audience: none of the campaign's tags"
    return None


def match(
    campaign: Campaign,
    event_type: str,
    payload: Mapping[str, Any],
    facts: Facts | None,
    today: date,
) -> Match:
    """Whether this campaign takes an event of this type and payload for this customer today."""
    if campaign.event_type != event_type:
        return Match(campaign, f"trigger is {campaign.event_type}, not {event_type}")
    if not campaign.valid_from <= today <= campaign.valid_until:
        return Match(
            campaign, f"outside its validity ({campaign.valid_from} to {campaign.valid_until})"
        )
    for condition in campaign.payload:
        if not condition.holds(payload.get(condition.key)):
            return Match(campaign, f"payload condition {condition} does not hold")
    return Match(campaign, _insight_reason(campaign, facts))


def match_event(
    campaign: Campaign, event: BusinessEvent, facts: Facts | None, today: date
) -> Match:
    return match(campaign, event.event_type, event.payload, facts, today)
