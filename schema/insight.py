"""``Customer.insight``: tags, value tier, RFM, lifecycle stage and churn risk in the graph.

Computed per request from the records this request's loaders read (so a 360 query that asks
for lines and tickets too reads them once), by the same ``InsightEngine.evaluate`` that
``InsightEngine.facts`` uses outside requests. Every leaf is personal data of the class
``insight`` (a profile of the person, for marketing): the policy decides per channel, role and
purpose, the access log records each clear path, and ``policy explain`` lists them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import strawberry
from strawberry.types import Info

from adapters.identity_store import Identity
from adapters.records import Bill, Payment
from insight.evaluate import Insight
from insight.features import CustomerRecords
from insight.provider import HISTORY_MONTHS
from policies.masks import DataClass
from policies.model import Level
from schema.classified import Classified, denied, field_path
from schema.customer_scope import owner_of
from schema.errors import GraphError, identity_conflict, identity_unresolved
from schema.field_info import FieldInfo

#: Insight about a person (their tags, tier, segment, stage, churn risk) is personal data.
INSIGHT = DataClass("insight")


class InsightClassified(Classified):
    """The insight class on a leaf. Insight has no partial form (half a churn score, some of
    the tags), so a masked decision withholds the value (null), whatever mask is declared."""

    def _apply(self, value: Any, info: FieldInfo) -> Any:
        disclosure = info.context.disclosure
        if not disclosure.enforced:
            return value
        owner = owner_of(info) if disclosure.principal.verification is not None else None
        decision = disclosure.decide(self.data_class, owner)
        disclosure.record(field_path(info), decision.level)
        if decision.level is Level.DENIED:
            raise denied(info)
        return value if decision.level is Level.CLEAR else None


def _insight_field(description: str) -> Any:
    return strawberry.field(extensions=[InsightClassified(INSIGHT)], description=description)


@strawberry.type(description="Recency, frequency and monetary scores (1..5) and the segment.")
class Rfm:
    recency: int | None = _insight_field("Days since the last payment, as a score 1..5.")
    frequency: int | None = _insight_field("Payments in the last 12 months, as a score 1..5.")
    monetary: int | None = _insight_field("Yuan paid in the last 12 months, as a score 1..5.")
    segment: str | None = _insight_field("The RFM segment the scores fall in.")


@strawberry.type(description="How likely the customer is to leave, and why.")
class ChurnRisk:
    score: float | None = _insight_field("Probability 0..1 from the churn model.")
    level: str | None = _insight_field("low, medium or high (the rules' thresholds).")
    reasons: list[str] | None = _insight_field(
        "The figures that raise the score most, in words, largest first."
    )


@strawberry.type(
    description="What the hub concludes about the customer from every system's records "
    "(rules: docs/insight.md). Personal data of class insight."
)
class CustomerInsight:
    tags: list[str] | None = _insight_field("Tags whose rules hold (basic, behaviour, ...).")
    value_tier: str | None = _insight_field("Value tier from ARPU and MOU.")
    rfm: Rfm
    lifecycle_stage: str | None = _insight_field("new, growing, mature or churn_warning.")
    churn_risk: ChurnRisk

    @classmethod
    def of(cls, insight: Insight) -> CustomerInsight:
        return cls(
            tags=list(insight.tags),
            value_tier=insight.value_tier,
            rfm=Rfm(
                recency=insight.rfm.recency,
                frequency=insight.rfm.frequency,
                monetary=insight.rfm.monetary,
                segment=insight.rfm.segment,
            ),
            lifecycle_stage=insight.lifecycle_stage,
            churn_risk=ChurnRisk(
                score=insight.churn_risk.score,
                level=insight.churn_risk.level,
                reasons=list(insight.churn_risk.reasons),
            ),
        )

    @classmethod
    def withheld(cls) -> CustomerInsight:
        """Placeholders for a caller who may not see insight clear: every leaf is masked to
        null or denied by its extension, so nothing needs to be read."""
        return cls(
            tags=[],
            value_tier="",
            rfm=Rfm(recency=0, frequency=0, monetary=0, segment=""),
            lifecycle_stage="",
            churn_risk=ChurnRisk(score=0.0, level="", reasons=[]),
        )


def _keys(identity: Identity, system: str) -> tuple[str, ...]:
    if not identity.is_resolved(system):
        raise identity_unresolved(system)
    keys = identity.keys(system)
    if not keys and identity.conflicts_in(system):
        raise identity_conflict(system)
    return keys


async def resolve_insight(info: Info, identity: Identity) -> CustomerInsight:
    context = info.context
    engine = context.backends.insight
    if engine is None:
        raise GraphError("INSIGHT_UNAVAILABLE", "Insight is not configured on this hub.")
    disclosure = context.disclosure
    if disclosure.enforced:
        owner = owner_of(info) if disclosure.principal.verification is not None else None
        if disclosure.decide(INSIGHT, owner).level is not Level.CLEAR:
            return CustomerInsight.withheld()
    loaders = context.loaders
    accounts, parties = _keys(identity, "billing"), _keys(identity, "care")
    billing = context.backends.billing
    context.backends_called.add("billing")

    async def pages(fetch: Callable[[str, int, int], Awaitable[Any]]) -> list[Any]:
        found = await asyncio.gather(*(fetch(a, 0, HISTORY_MONTHS) for a in accounts))
        return [item for page in found for item in page.items]

    profile, lines, balances, bills, payments, tickets, interactions = await asyncio.gather(
        loaders.profiles.load(identity.customer_no),
        loaders.subscriptions.load(identity.customer_no),
        loaders.balances.load_many(accounts),
        pages(billing.list_bills),
        pages(billing.list_payments),
        loaders.tickets.load_many(parties),
        loaders.interactions.load_many(parties),
    )
    records = CustomerRecords(
        profile=profile,
        lines=tuple(lines),
        balances=tuple(b for b in balances if b is not None),
        bills=tuple[Bill, ...](bills),
        payments=tuple[Payment, ...](payments),
        tickets=_flat(tickets),
        interactions=_flat(interactions),
    )
    return CustomerInsight.of(engine.evaluate(records))


def _flat(per_party: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
    return tuple(item for items in per_party for item in items)
