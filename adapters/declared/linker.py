"""Links a declared system's records to hub customers, by the rule its mapping declares.

``match: msisdn``: a record carrying one of the customer's numbers (compared in E.164,
whatever form each side writes) is linked; if the record also carries an ID-card number that
is not the customer's, it is a conflict instead. ``match: certificate`` and
``certificate+msisdn`` follow the bundled systems' rule (``adapters.identity.match``); with
``msisdn_lookup`` the records found by the customer's numbers are asked too, so that one
serving a number under another ID card (a mistyped card) is a conflict, not unseen.
Resolution is recorded per instance: an instance that owns none of the customer's numbers is
settled as absent without a call, and one that fails stays unresolved and is asked again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.declared.spec import IdentitySpec
from adapters.declared.system import DeclaredSystem, Located
from adapters.errors import AdapterError
from adapters.identity import Candidate, CustomerKeys, match
from adapters.identity_store import Conflict, Link, SystemResolution
from adapters.phone import to_e164


@dataclass(frozen=True, slots=True)
class Resolved:
    #: Customer number -> one resolution per instance settled now.
    resolutions: dict[str, list[SystemResolution]]
    #: Instance -> why it could not be asked (its customers stay unresolved there).
    failures: dict[str, AdapterError]


def _numbers(value: object) -> tuple[str, ...]:
    values = value if isinstance(value, list | tuple) else [value]
    return tuple(n for v in values if v and (n := to_e164(str(v))) is not None)


class DeclaredLinker:
    """Finds the records of one declared system for customers, per instance."""

    def __init__(self, system: DeclaredSystem) -> None:
        if system.spec.identity is None:
            raise ValueError(f"system {system.name} declares no identity rule")
        self.system = system
        self.rule: IdentitySpec = system.spec.identity

    @property
    def instances(self) -> tuple[str, ...]:
        return tuple(self.system.instances)

    async def resolve(self, customers: Sequence[CustomerKeys]) -> Resolved:
        """Per customer number, a resolution for each instance that could be settled now."""
        if not customers:
            return Resolved({}, {})
        if self.rule.match == "msisdn":
            return await self._by_msisdn(customers)
        return await self._by_certificate(customers)

    async def _by_msisdn(self, customers: Sequence[CustomerKeys]) -> Resolved:
        numbers = {c.customer_no: _numbers(list(c.msisdns)) for c in customers}
        owners = {n: self.system.owner_of(n) for found in numbers.values() for n in found}
        wanted = sorted({n for n, owner in owners.items() if owner is not None})
        failed: dict[str, AdapterError] = {}
        found: list[Located] = []
        # Each instance is asked on its own so that one failing leaves the others settled.
        by_instance: dict[str, list[str]] = {}
        for number in wanted:
            by_instance.setdefault(owners[number] or "", []).append(number)
        results = await asyncio.gather(
            *(
                self.system.lookup_msisdns(self.rule.lookup, batch)
                for batch in by_instance.values()
            ),
            return_exceptions=True,
        )
        for instance, result in zip(by_instance, results, strict=True):
            if isinstance(result, AdapterError):
                failed[instance] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                found += result
        outcome: dict[str, list[SystemResolution]] = {}
        for customer in customers:
            lines = set(numbers[customer.customer_no])
            resolutions: list[SystemResolution] = []
            for instance in self.instances:
                if instance in failed:
                    continue
                links: list[Link] = []
                conflicts: list[Conflict] = []
                for located in found:
                    if located.instance != instance:
                        continue
                    record = located.record
                    if not lines & set(_numbers(record.get(self.rule.msisdn or ""))):
                        continue
                    key = str(record.get(self.rule.key))
                    certificate = (
                        record.get(self.rule.certificate) if self.rule.certificate else None
                    )
                    if certificate and str(certificate) != customer.certificate_no:
                        conflicts.append(
                            Conflict(
                                instance,
                                "msisdn_under_other_certificate",
                                f"a {instance} record serves a number of the customer "
                                "but is held under another certificate",
                            )
                        )
                    elif all(link.key != key for link in links):
                        links.append(Link(instance, key, "msisdn"))
                resolutions.append(SystemResolution(instance, tuple(links), tuple(conflicts)))
            outcome[customer.customer_no] = resolutions
        return Resolved(outcome, failed)

    async def _by_certificate(self, customers: Sequence[CustomerKeys]) -> Resolved:
        rule = self.rule
        try:
            found = await self.system.lookup_keys(
                rule.lookup, [c.certificate_no for c in customers]
            )
            by_number: list[Located] = []
            if rule.msisdn_lookup is not None:
                numbers = [n for c in customers for n in c.msisdns]
                by_number = await self.system.lookup_msisdns(rule.msisdn_lookup, numbers)
        except AdapterError as error:
            return Resolved({}, {name: error for name in self.instances})
        outcome: dict[str, list[SystemResolution]] = {}

        def candidates(records: list[Located], instance: str) -> list[Candidate]:
            return [
                Candidate(
                    key=str(x.record.get(rule.key)),
                    certificate_nos=(str(x.record.get(rule.certificate or "")),),
                    msisdns=_numbers(x.record.get(rule.msisdn or ""))
                    if rule.match == "certificate+msisdn"
                    else (),
                )
                for x in records
                if x.instance == instance
            ]

        for customer in customers:
            resolutions = []
            e164 = CustomerKeys(
                customer.customer_no, customer.certificate_no, _numbers(list(customer.msisdns))
            )
            for instance in self.instances:
                resolutions.append(
                    match(
                        instance,
                        e164,
                        candidates(found, instance),
                        candidates(by_number, instance),
                    )
                )
            outcome[customer.customer_no] = resolutions
        return Resolved(outcome, {})
