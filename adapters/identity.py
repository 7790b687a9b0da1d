"""Identity resolution: which billing accounts and care parties belong to a BOSS customer.

Each system keys the customer its own way; what links them, as at a real operator, is the
ID-card (certificate) number and the MSISDNs of the customer's lines. A record is linked when
both agree (or the certificate agrees and the record carries no number to check). When they
disagree (a certificate typo in billing, a number re-used by someone else) the resolver
records a conflict and links nothing on that evidence: it reports instead of guessing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.contract import BillingSystem, CareSystem
from adapters.errors import AdapterError
from adapters.identity_store import Conflict, Identity, IdentityStore, Link, SystemResolution


@dataclass(frozen=True, slots=True)
class CustomerKeys:
    """What the customer system says about a customer that other systems can match on."""

    customer_no: str
    certificate_no: str
    msisdns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A record of another system, reduced to what matching needs."""

    key: str
    certificate_nos: tuple[str, ...]
    msisdns: tuple[str, ...]


def match(
    system: str,
    customer: CustomerKeys,
    by_certificate: Sequence[Candidate],
    by_msisdn: Sequence[Candidate],
) -> SystemResolution:
    """Decide links and conflicts for one customer from the candidates a system returned."""
    lines = set(customer.msisdns)
    links: list[Link] = []
    conflicts: list[Conflict] = []
    seen: set[str] = set()
    for candidate in by_certificate:
        if customer.certificate_no not in candidate.certificate_nos or candidate.key in seen:
            continue
        seen.add(candidate.key)
        if lines & set(candidate.msisdns):
            links.append(Link(system, candidate.key, "certificate+msisdn"))
        elif not candidate.msisdns:
            links.append(Link(system, candidate.key, "certificate"))
        else:
            conflicts.append(
                Conflict(
                    system,
                    "certificate_without_common_msisdn",
                    f"{system} record {candidate.key} has the customer's certificate "
                    "but none of the customer's numbers",
                )
            )
    for candidate in by_msisdn:
        if candidate.key in seen or not lines & set(candidate.msisdns):
            continue
        seen.add(candidate.key)
        conflicts.append(
            Conflict(
                system,
                "msisdn_under_other_certificate",
                f"{system} record {candidate.key} serves a number of the customer "
                "but is held under another certificate",
            )
        )
    return SystemResolution(system, tuple(links), tuple(conflicts))


class IdentityResolver:
    """Finds, records and returns the cross-system identity of BOSS customers."""

    def __init__(self, store: IdentityStore, billing: BillingSystem, care: CareSystem) -> None:
        self._store = store
        self._billing = billing
        self._care = care

    async def resolve(self, customers: Sequence[CustomerKeys]) -> dict[str, Identity]:
        """The identity of each customer, resolving the systems not settled yet.

        A system that cannot be asked now is left unresolved (and asked again next time);
        its error does not fail the others.
        """
        by_no = {c.customer_no: c for c in customers}
        hub_ids = await self._store.ensure_customers(by_no)
        known = await self._store.by_customer_nos(list(by_no))
        pending = {
            system: [c for no, c in by_no.items() if not known[no].is_resolved(system)]
            for system in ("billing", "care")
        }
        if not pending["billing"] and not pending["care"]:
            return known
        outcomes = await asyncio.gather(
            self._resolve_billing(pending["billing"]),
            self._resolve_care(pending["care"]),
            return_exceptions=True,
        )
        found: dict[str, list[SystemResolution]] = {}
        for outcome in outcomes:
            if isinstance(outcome, AdapterError):
                continue  # that system stays unresolved for these customers
            if isinstance(outcome, BaseException):
                raise outcome
            for customer_no, resolution in outcome.items():
                found.setdefault(hub_ids[customer_no], []).append(resolution)
        await self._store.record(found)
        return await self._store.by_customer_nos(list(by_no))

    async def _resolve_billing(
        self, customers: Sequence[CustomerKeys]
    ) -> dict[str, SystemResolution]:
        if not customers:
            return {}
        accounts = await self._billing.find_accounts(
            certificate_nos=[c.certificate_no for c in customers]
        )
        by_certificate = [Candidate(a.id, (a.certificate_no,), a.service_numbers) for a in accounts]
        return await self._match_all(
            "billing",
            customers,
            by_certificate,
            lambda msisdns: self._billing.find_accounts(msisdns=msisdns),
            lambda a: Candidate(a.id, (a.certificate_no,), a.service_numbers),
        )

    async def _resolve_care(self, customers: Sequence[CustomerKeys]) -> dict[str, SystemResolution]:
        if not customers:
            return {}
        parties = await self._care.find_parties(
            id_card_numbers=[c.certificate_no for c in customers]
        )
        by_certificate = [Candidate(p.id, p.id_card_numbers, p.msisdns) for p in parties]
        return await self._match_all(
            "care",
            customers,
            by_certificate,
            lambda msisdns: self._care.find_parties(msisdns=msisdns),
            lambda p: Candidate(p.id, p.id_card_numbers, p.msisdns),
        )

    @staticmethod
    async def _match_all(system, customers, by_certificate, find_by_msisdn, to_candidate):  # type: ignore[no-untyped-def]
        certificates = {no for c in by_certificate for no in c.certificate_nos}
        # Only customers whose certificate found nothing cost a second, number-based lookup.
        unmatched = [c for c in customers if c.certificate_no not in certificates]
        msisdns = [m for c in unmatched for m in c.msisdns]
        by_msisdn = [to_candidate(r) for r in await find_by_msisdn(msisdns)] if msisdns else []
        return {c.customer_no: match(system, c, by_certificate, by_msisdn) for c in customers}
