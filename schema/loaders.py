"""Per-request DataLoaders: every backend read of a request goes through one of these.

Resolvers ask for one key at a time; the loaders collect the keys asked for in the same tick
and make one batched backend call for them, so a page of N customers costs a bounded number of
calls per backend, not N per field. They live for one request only, so nothing one caller
loaded is ever served to another.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from adapters.declared.linker import DeclaredLinker
from adapters.declared.system import DeclaredSystem
from adapters.declared.values import Record
from adapters.errors import AdapterError, Unavailable
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
from telemetry import tracing

K = TypeVar("K")
V = TypeVar("V")

SYSTEMS_TO_RESOLVE = ("billing", "care")
#: What a list loader answers for a key its system did not return.
NO_RECORDS: Sequence[Any] = ()


async def batch_span(system: str, kind: str, size: int, work: Awaitable[V]) -> V:
    """One DataLoader batch, as a span when tracing is on (names and a count: no keys)."""
    tracer = tracing.tracer()
    if tracer is None:
        return await work
    with tracer.start_as_current_span(
        f"batch {system}.{kind}",
        attributes={
            "switchboard.system": system,
            "switchboard.record_kind": kind,
            "switchboard.batch_size": size,
        },
        record_exception=False,  # an adapter error's message is safe, others' may not be
    ):
        return await work


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
        customer_system: CustomerSystem,
        billing: BillingSystem,
        care: CareSystem,
        identity_store: IdentityStore,
        identity_resolver: IdentityResolver,
        backends_called: set[str] | None = None,
        systems: Mapping[str, DeclaredSystem] | None = None,
        linkers: Mapping[str, DeclaredLinker] | None = None,
    ) -> None:
        self._store = identity_store
        self._systems = systems or {}
        self._linkers = linkers or {}
        self._record_loaders: dict[tuple[str, str], DataLoader[tuple[str, str], Record | None]] = {}
        self._link_loaders: dict[str, DataLoader[str, Identity | BaseException]] = {}
        self._seen: dict[str, Identity] = {}  # this request's identities, by customer number
        #: Declared systems whose customers are linked on first sight, with billing and care.
        self._waited = tuple(
            name
            for name, linker in self._linkers.items()
            if linker.system.spec.waits_at_first_sight
        )
        self._resolver = identity_resolver
        #: Which backends this request asked (for the audit log).
        self.backends_called = backends_called if backends_called is not None else set()
        self._customer_system = customer_system
        self._billing = billing
        self._care = care

    # Each loader is made when a resolver first asks for it: a request touches a few of them
    # (an answer reused whole, gateway/answer_cache.py, touches none), and making all eight
    # for every request was a tenth of a cached request's time.

    @cached_property
    def profiles(self) -> DataLoader[str, CustomerProfile | None]:
        system = self._customer_system
        return DataLoader(_keyed(self._noting(system.name, "profiles", system.get_customers)))

    @cached_property
    def subscriptions(self) -> DataLoader[str, Sequence[Subscription]]:
        system = self._customer_system
        fetch = self._noting(system.name, "subscriptions", system.get_subscriptions)
        return DataLoader(_keyed(fetch, NO_RECORDS))

    @cached_property
    def billing_accounts(self) -> DataLoader[str, BillingAccount | None]:
        billing = self._billing
        return DataLoader(
            _keyed(self._noting(billing.name, "billing_accounts", billing.get_accounts))
        )

    @cached_property
    def balances(self) -> DataLoader[str, Balance | None]:
        billing = self._billing
        return DataLoader(_keyed(self._noting(billing.name, "balances", billing.get_balances)))

    @cached_property
    def tickets(self) -> DataLoader[str, Sequence[Ticket]]:
        care = self._care
        return DataLoader(_keyed(self._noting(care.name, "tickets", care.get_tickets), NO_RECORDS))

    @cached_property
    def interactions(self) -> DataLoader[str, Sequence[Interaction]]:
        care = self._care
        fetch = self._noting(care.name, "interactions", care.get_interactions)
        return DataLoader(_keyed(fetch, NO_RECORDS))

    @cached_property
    def identity_by_customer_no(self) -> DataLoader[str, Identity | None]:
        return DataLoader(self._identities)

    @cached_property
    def identity_by_hub_id(self) -> DataLoader[str, Identity | None]:
        return DataLoader(self._identities_by_hub_id)

    def _noting(
        self, system: str, kind: str, fetch: Callable[[list[str]], Awaitable[Mapping[str, V]]]
    ) -> Callable[[list[str]], Awaitable[Mapping[str, V]]]:
        async def fetch_noted(keys: list[str]) -> Mapping[str, V]:
            self.backends_called.add(system)
            return await batch_span(system, kind, len(keys), fetch(keys))

        return fetch_noted

    def prime_profiles(self, profiles: Sequence[CustomerProfile]) -> None:
        """Reuse profiles a search already returned instead of asking the customer system again."""
        for profile in profiles:
            self.profiles.prime(profile.customer_no, profile)

    async def _identities(self, customer_nos: list[str]) -> list[Identity | None]:
        known = await self._store.by_customer_nos(customer_nos)
        unsettled = [no for no in customer_nos if no not in known or not self._settled(known[no])]
        if unsettled:
            try:
                known.update(await self._resolve(unsettled, customer_nos))
            except AdapterError:
                # The customer system cannot tell us the matching keys now. Customers the
                # crosswalk already knows are still served from it; new ones fail below.
                if any(no not in known for no in customer_nos):
                    raise
        return [known.get(no) for no in customer_nos]

    def _settled(self, identity: Identity) -> bool:
        """Resolved in every system first sight waits for (billing, care, declared ``wait``)."""
        return all(identity.is_resolved(s) for s in SYSTEMS_TO_RESOLVE) and all(
            identity.is_resolved(instance)
            for name in self._waited
            for instance in self._linkers[name].instances
        )

    async def _resolve(self, customer_nos: list[str], batch: list[str]) -> dict[str, Identity]:
        keys = await self._customer_keys(customer_nos, batch)
        if not keys:
            return {}
        # Resolution matches the customer's keys in the other systems.
        self.backends_called.update(SYSTEMS_TO_RESOLVE)
        resolved = await self._resolver.resolve(keys)
        if self._waited:
            await asyncio.gather(
                *(self._link(name, keys, resolved) for name in self._waited),
                return_exceptions=True,  # a failing system stays unresolved: asked next time
            )
            resolved.update(await self._store.refresh([k.customer_no for k in keys]))
        return resolved

    async def _customer_keys(self, customer_nos: list[str], batch: list[str]) -> list[CustomerKeys]:
        """What the customer system says other systems can match these customers on."""
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
        return keys

    async def _identities_by_hub_id(self, hub_ids: list[str]) -> list[Identity | None]:
        known = await self._store.by_hub_ids(hub_ids)
        unsettled = [
            identity.customer_no for identity in known.values() if not self._settled(identity)
        ]
        if unsettled:
            for identity in await self.identity_by_customer_no.load_many(unsettled):
                if identity is not None:
                    known[identity.hub_id] = identity
        return [known.get(hub_id) for hub_id in hub_ids]

    # --- systems declared by files (adapters/declared) ------------------------------------

    def system_records(
        self, system: str, operation: str
    ) -> DataLoader[tuple[str, str], Record | None]:
        """Records of a declared system by (instance, key), batched per request."""
        loader = self._record_loaders.get((system, operation))
        if loader is None:
            declared = self._systems[system]

            async def load(keys: list[tuple[str, str]]) -> list[Record | None]:
                self.backends_called.update({instance for instance, _ in keys})
                found = await batch_span(
                    system, operation, len(keys), declared.read_by_keys(operation, keys)
                )
                return [found.get(key) for key in keys]

            loader = DataLoader[tuple[str, str], Record | None](load)
            self._record_loaders[(system, operation)] = loader
        return loader

    async def system_keys(self, system: str, identity: Identity) -> list[tuple[str, str]]:
        """The customer's (instance, key) pairs in a declared system, linking them if needed.

        A system linked lazily is resolved here, for every customer of the request at once,
        the first time a query asks for its fields; an instance that cannot be asked raises
        its error (only this system's fields fail).
        """
        instances = self._linkers[system].instances
        # Every customer of the request passes through one loader, linked or not, so that
        # their records are then read in one batch rather than in two waves.
        loader = self._link_loaders.get(system)
        if loader is None:
            loader = DataLoader[str, Identity | BaseException](
                functools.partial(self._link_lazily, system)
            )
            self._link_loaders[system] = loader
        self._seen[identity.customer_no] = identity
        identity = await loader.load(identity.customer_no)  # type: ignore[assignment]
        return [(i, key) for i in instances for key in identity.keys(i)]

    async def _link_lazily(self, system: str, customer_nos: list[str]) -> list[Any]:
        instances = self._linkers[system].instances
        known = {
            no: self._seen[no]
            for no in customer_nos
            if all(self._seen[no].is_resolved(i) for i in instances)
        }
        unlinked = [no for no in customer_nos if no not in known]
        known.update(await self._store.refresh(unlinked))  # another replica may have linked
        pending = [
            no
            for no in unlinked
            if no in known and not all(known[no].is_resolved(i) for i in instances)
        ]
        failures: dict[str, AdapterError] = {}
        if pending:
            keys = await self._customer_keys(pending, pending)
            failures = await self._link(system, keys, known)
            known.update(await self._store.refresh(pending))
        answers: list[Any] = []
        for no in customer_nos:
            identity = known.get(no)
            missing = [i for i in instances if identity is None or not identity.is_resolved(i)]
            if identity is None:
                answers.append(Unavailable(system, "could not link this customer"))
            elif missing:
                answers.append(
                    failures.get(missing[0])
                    or Unavailable(missing[0], "could not be asked for this customer's records")
                )
            else:
                answers.append(identity)
        return answers

    async def _link(
        self, system: str, keys: Sequence[CustomerKeys], known: Mapping[str, Identity]
    ) -> dict[str, AdapterError]:
        """Resolve customers in one declared system and record what was found."""
        linker = self._linkers[system]
        self.backends_called.update(linker.instances)
        resolved = await linker.resolve(keys)
        await self._store.record(
            {
                known[no].hub_id: resolutions
                for no, resolutions in resolved.resolutions.items()
                if no in known
            }
        )
        return resolved.failures
