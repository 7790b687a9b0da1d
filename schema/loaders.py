"""Per-request DataLoaders: every backend read of a request goes through one of these.

Resolvers ask for one key at a time; the loaders collect the keys asked for in the same tick
and make one batched backend call for them, so a page of N customers costs a bounded number of
calls per backend, not N per field. They live for one request only, so nothing one caller
loaded is ever served to another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from strawberry.dataloader import DataLoader

from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from adapters.errors import AdapterError
from adapters.identity import CustomerKeys, IdentityResolver
from adapters.identity_store import Identity, IdentityStore
from adapters.records import (
    Balance,
    BillingAccount,
    CustomerProfile,
    Interaction,
    Subscription,
    Ticket,
)

K = TypeVar("K")
V = TypeVar("V")

SYSTEMS_TO_RESOLVE = ("billing", "care")


def _keyed(
    fetch: Callable[[list[str]], Awaitable[Mapping[str, V]]], default: V | None = None
) -> Callable[[list[str]], Awaitable[list[V | None]]]:
    """Adapt a batch method returning a mapping to the list-in-key-order a DataLoader wants."""

    async def load(keys: list[str]) -> list[V | None]:
        found = await fetch(keys)
        return [found.get(key, default) for key in keys]

    return load


class Loaders:
    def __init__(
        self,
        *,
        boss: CustomerSystem,
        billing: BillingSystem,
        care: CareSystem,
        identity_store: IdentityStore,
        identity_resolver: IdentityResolver,
        backends_called: set[str] | None = None,
    ) -> None:
        self._store = identity_store
        self._resolver = identity_resolver
        #: Which backends this request asked (for the audit log).
        self.backends_called = backends_called if backends_called is not None else set()
        noted = self._noting
        self.profiles = DataLoader[str, CustomerProfile | None](
            _keyed(noted("boss", boss.get_customers))
        )
        self.subscriptions = DataLoader[str, Sequence[Subscription]](
            _keyed(noted("boss", boss.get_subscriptions), ())
        )
        self.billing_accounts = DataLoader[str, BillingAccount | None](
            _keyed(noted("billing", billing.get_accounts))
        )
        self.balances = DataLoader[str, Balance | None](
            _keyed(noted("billing", billing.get_balances))
        )
        self.tickets = DataLoader[str, Sequence[Ticket]](
            _keyed(noted("care", care.get_tickets), ())
        )
        self.interactions = DataLoader[str, Sequence[Interaction]](
            _keyed(noted("care", care.get_interactions), ())
        )
        self.identity_by_customer_no = DataLoader[str, Identity | None](self._identities)
        self.identity_by_hub_id = DataLoader[str, Identity | None](self._identities_by_hub_id)

    def _noting(
        self, system: str, fetch: Callable[[list[str]], Awaitable[Mapping[str, V]]]
    ) -> Callable[[list[str]], Awaitable[Mapping[str, V]]]:
        async def fetch_noted(keys: list[str]) -> Mapping[str, V]:
            self.backends_called.add(system)
            return await fetch(keys)

        return fetch_noted

    def prime_profiles(self, profiles: Sequence[CustomerProfile]) -> None:
        """Reuse profiles a search already returned instead of asking BOSS again."""
        for profile in profiles:
            self.profiles.prime(profile.customer_no, profile)

    async def _identities(self, customer_nos: list[str]) -> list[Identity | None]:
        known = await self._store.by_customer_nos(customer_nos)
        unsettled = [
            no
            for no in customer_nos
            if no not in known or not all(known[no].is_resolved(s) for s in SYSTEMS_TO_RESOLVE)
        ]
        if unsettled:
            try:
                known.update(await self._resolve(unsettled, customer_nos))
            except AdapterError:
                # The customer system cannot tell us the matching keys now. Customers the
                # crosswalk already knows are still served from it; new ones fail below.
                if any(no not in known for no in customer_nos):
                    raise
        return [known.get(no) for no in customer_nos]

    async def _resolve(self, customer_nos: list[str], batch: list[str]) -> dict[str, Identity]:
        profiles = await self.profiles.load_many(customer_nos)
        # Lines of the whole batch in the one call resolution needs anyway: the subscriptions
        # field of the customers already known would otherwise cost a second call.
        all_lines = dict(zip(batch, await self.subscriptions.load_many(batch), strict=True))
        lines = [all_lines[no] for no in customer_nos]
        keys = [
            CustomerKeys(
                customer_no=profile.customer_no,
                certificate_no=profile.certificate_no,
                msisdns=tuple(line.msisdn for line in customer_lines),
            )
            for profile, customer_lines in zip(profiles, lines, strict=True)
            if profile is not None
        ]
        if not keys:
            return {}
        # Resolution matches the customer's keys in the other systems.
        self.backends_called.update(SYSTEMS_TO_RESOLVE)
        return await self._resolver.resolve(keys)

    async def _identities_by_hub_id(self, hub_ids: list[str]) -> list[Identity | None]:
        known = await self._store.by_hub_ids(hub_ids)
        unsettled = [
            identity.customer_no
            for identity in known.values()
            if not all(identity.is_resolved(s) for s in SYSTEMS_TO_RESOLVE)
        ]
        if unsettled:
            for identity in await self.identity_by_customer_no.load_many(unsettled):
                if identity is not None:
                    known[identity.hub_id] = identity
        return [known.get(hub_id) for hub_id in hub_ids]
