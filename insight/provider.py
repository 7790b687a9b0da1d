"""The insight provider: a customer's insight from the legacy systems, outside any request.

``InsightEngine.facts`` is what other parts call (campaign rules, workflow steps): hub customer
ids in, ``CustomerFacts`` out, read through the same adapters (and their cache, retries and
breakers) as the graph. The graph's ``Customer.insight`` reads through the request's loaders
instead and calls ``InsightEngine.evaluate`` on what they found, so both give the same answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar

from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from adapters.errors import Unavailable
from adapters.identity import CustomerKeys, IdentityResolver
from adapters.identity_store import Identity, IdentityStore
from adapters.records import CustomerProfile, Page, Subscription
from insight.evaluate import Insight, evaluate
from insight.features import CustomerRecords, compute_features
from insight.rules import InsightRules
from insight.store import RulesStore

T = TypeVar("T")

#: Bills and payments read per billing account: a year of monthly bills.
HISTORY_MONTHS = 12
#: The operator's local time (China Standard Time): "today" for tenure, recency and windows.
OPERATOR_TZ = timezone(timedelta(hours=8))


def operator_today() -> date:
    return datetime.now(UTC).astimezone(OPERATOR_TZ).date()


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    """What a customer's insight says, in the terms campaign rules test."""

    tags: tuple[str, ...]
    value_tier: str
    rfm_segment: str
    lifecycle_stage: str
    churn_level: str
    churn_score: float

    @classmethod
    def of(cls, insight: Insight) -> CustomerFacts:
        return cls(
            tags=insight.tags,
            value_tier=insight.value_tier,
            rfm_segment=insight.rfm.segment,
            lifecycle_stage=insight.lifecycle_stage,
            churn_level=insight.churn_risk.level,
            churn_score=insight.churn_risk.score,
        )


class InsightEngine:
    """Computes insight from the legacy systems under the rules in force."""

    def __init__(
        self,
        *,
        rules: RulesStore | InsightRules,
        customer_system: CustomerSystem,
        billing: BillingSystem,
        care: CareSystem,
        identity_store: IdentityStore,
        identity_resolver: IdentityResolver,
        today: Callable[[], date] = operator_today,
    ) -> None:
        self._rules = rules
        self._customer_system = customer_system
        self._billing = billing
        self._care = care
        self._store = identity_store
        self._resolver = identity_resolver
        self.today = today

    @property
    def rules(self) -> InsightRules:
        """The rules in force (the store's current version when they reload)."""
        rules = self._rules
        return rules.current if isinstance(rules, RulesStore) else rules

    def evaluate(self, records: CustomerRecords) -> Insight:
        """One customer's insight from records already read (the graph's loaders use this)."""
        return evaluate(self.rules, compute_features(records, self.today()))

    async def facts(self, customer_ids: Sequence[str]) -> Mapping[str, CustomerFacts]:
        """The facts of each hub customer id. Left out: ids the hub does not know, and
        customers whose billing or care records are in identity conflict (the graph answers
        IDENTITY_CONFLICT for them; insight from half the records would mislead).

        Raises the adapters' errors (``Unavailable``, ``TimedOut``...) when a system the
        insight needs cannot be read: a workflow step that calls this is retried as usual.
        """
        return {
            key: CustomerFacts.of(found)
            for key, found in (await self.insights(customer_ids)).items()
        }

    async def insights(self, customer_ids: Sequence[str]) -> Mapping[str, Insight]:
        """The whole insight (figures and reasons included) of each known hub customer id."""
        found = await self.records(customer_ids)
        return {hub_id: self.evaluate(records) for hub_id, records in found.items()}

    async def records(self, customer_ids: Sequence[str]) -> Mapping[str, CustomerRecords]:
        """What the systems hold about each known customer, in a bounded number of batches."""
        ids = list(dict.fromkeys(customer_ids))
        identities = await self._store.by_hub_ids(ids)
        if not identities:
            return {}
        numbers = [identity.customer_no for identity in identities.values()]
        profiles, lines = await asyncio.gather(
            self._customer_system.get_customers(numbers),
            self._customer_system.get_subscriptions(numbers),
        )
        identities = await self._settle(identities, profiles, lines)
        accounts = {h: i.keys("billing") for h, i in identities.items()}
        parties = {h: i.keys("care") for h, i in identities.items()}
        all_accounts = sorted({a for keys in accounts.values() for a in keys})
        all_parties = sorted({p for keys in parties.values() for p in keys})
        balances, bills, payments, tickets, interactions = await asyncio.gather(
            self._billing.get_balances(all_accounts) if all_accounts else _nothing(),
            self._per_account(all_accounts, self._billing.list_bills),
            self._per_account(all_accounts, self._billing.list_payments),
            self._care.get_tickets(all_parties) if all_parties else _nothing(),
            self._care.get_interactions(all_parties) if all_parties else _nothing(),
        )
        out: dict[str, CustomerRecords] = {}
        for hub_id in ids:
            identity = identities.get(hub_id)
            if identity is None or _conflicted(identity):
                continue
            mine, theirs = accounts[hub_id], parties[hub_id]
            out[hub_id] = CustomerRecords(
                profile=profiles.get(identity.customer_no),
                lines=tuple(lines.get(identity.customer_no, ())),
                balances=tuple(balances[a] for a in mine if a in balances),
                bills=tuple(b for a in mine for b in bills.get(a, ())),
                payments=tuple(p for a in mine for p in payments.get(a, ())),
                tickets=tuple(t for p in theirs for t in tickets.get(p, ())),
                interactions=tuple(i for p in theirs for i in interactions.get(p, ())),
            )
        return out

    async def _settle(
        self,
        identities: dict[str, Identity],
        profiles: Mapping[str, CustomerProfile],
        lines: Mapping[str, Sequence[Subscription]],
    ) -> dict[str, Identity]:
        """Resolve billing and care for customers not settled there yet (first sight)."""
        unsettled = [
            i
            for i in identities.values()
            if not (i.is_resolved("billing") and i.is_resolved("care"))
        ]
        if unsettled:
            keys = [
                CustomerKeys(
                    customer_no=i.customer_no,
                    certificate_no=profile.certificate_no,
                    msisdns=tuple(line.msisdn for line in lines.get(i.customer_no, ())),
                )
                for i in unsettled
                if (profile := profiles.get(i.customer_no)) is not None
            ]
            resolved = await self._resolver.resolve(keys)
            for identity in resolved.values():
                identities[identity.hub_id] = identity
        for identity in identities.values():
            for system in ("billing", "care"):
                if not identity.is_resolved(system):
                    raise Unavailable(system, "could not be asked to link this customer")
        return identities

    @staticmethod
    async def _per_account(
        accounts: Sequence[str], fetch: Callable[[str, int, int], Awaitable[Page[T]]]
    ) -> dict[str, Sequence[T]]:
        """A year of one history (bills, or payments) per account, the accounts at once."""
        pages = await asyncio.gather(*(fetch(a, 0, HISTORY_MONTHS) for a in accounts))
        return {a: page.items for a, page in zip(accounts, pages, strict=True)}


def _conflicted(identity: Identity) -> bool:
    return any(
        not identity.keys(system) and identity.conflicts_in(system)
        for system in ("billing", "care")
    )


async def _nothing() -> dict[str, Any]:
    return {}
