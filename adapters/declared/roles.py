"""The hub's roles (adapters/contract.py) played by declared systems.

A role adapter is the role's own logic, written once per role and never per system: which slot
to call for a contract method, how to merge lookups, what variables a write fills. Everything
system-specific (paths, batch sizes, field paths, error codes) is in the system's files; the
calls go through ``DeclaredSystem`` and so through the same call policy, breaker and bulkhead
as every declared system. The hub's record cache wraps a role adapter like any adapter of the
role (``CachedBillingSystem``...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from adapters.declared.canonical import to_canonical
from adapters.declared.spec import SystemSpec
from adapters.declared.system import DeclaredSystem
from adapters.errors import BadResponse, NotFound
from adapters.parsing import unique
from adapters.records import (
    Balance,
    Bill,
    BillingAccount,
    CustomerProfile,
    Eligibility,
    Interaction,
    Money,
    Offering,
    Order,
    Page,
    Party,
    Payment,
    StarLevel,
    Subscription,
    Ticket,
)
from adapters.resilience import Endpoint


class _RoleAdapter:
    """What every role adapter shares: the system, its one instance, its slots."""

    def __init__(self, system: DeclaredSystem) -> None:
        role = system.spec.role
        if role is None:
            raise ValueError(f"system {system.name} declares no role")
        self.system = system
        #: The instance name: what errors, guards, metrics and /readyz call it.
        self.name = system.sole_instance
        self._slots = role.slots

    def _op(self, slot: str) -> str:
        return self._slots[slot]

    async def start(self) -> None:
        await self.system.start()

    async def close(self) -> None:
        await self.system.close()

    async def ping(self) -> None:
        await self.system.ping(self.name)

    async def _keyed(self, slot: str, record: str, keys: Sequence[str]) -> dict[str, Any]:
        found = await self.system.read_by_keys(self._op(slot), ((self.name, k) for k in keys))
        return {key: to_canonical(record, r) for (_, key), r in found.items()}

    async def _lookup(self, slot: str, record: str, values: Sequence[str]) -> list[Any]:
        if not values:
            return []
        located = await self.system.lookup_keys(self._op(slot), list(values))
        return [to_canonical(record, found.record) for found in located]

    async def _grouped(self, slot: str, record: str, keys: Sequence[str]) -> dict[str, list[Any]]:
        """Every key's records (an empty list for a key with none), in the system's order."""
        grouped: dict[str, list[Any]] = {key: [] for key in keys}
        if not keys:
            return grouped
        key_field = self.system.spec.operations[self._op(slot)].key_field or ""
        located = await self.system.lookup_keys(self._op(slot), list(keys))
        for found in located:
            owner = found.record.get(key_field)
            if owner is None:
                raise BadResponse(self.name, f"answered {self._op(slot)} without record keys")
            if str(owner) in grouped:
                grouped[str(owner)].append(to_canonical(record, found.record))
        return grouped

    async def _page(
        self,
        slot: str,
        record: str,
        key: str,
        offset: int,
        limit: int,
        variables: Mapping[str, Any] | None = None,
    ) -> Page:
        total, found = await self.system.page(
            self._op(slot), self.name, key, offset, limit, variables
        )
        return Page(total, tuple(to_canonical(record, r) for r in found))

    async def _read(self, slot: str, record: str, values: dict[str, Any]) -> list[Any]:
        return [to_canonical(record, r) for r in await self.system.read(self._op(slot), values)]

    async def _write(self, slot: str, values: dict[str, Any]) -> list[Mapping[str, Any]]:
        return await self.system.send(self._op(slot), values)

    async def _written(self, slot: str, record: str, values: dict[str, Any]) -> Any:
        """A write whose answer is the changed record (a ticket as it now stands)."""
        answer = await self._write(slot, values)
        if not answer:
            raise BadResponse(self.name, f"answered {self._op(slot)} without its result")
        return to_canonical(record, answer[0])


class DeclaredBilling(_RoleAdapter):
    """adapters.contract.BillingSystem over a declared system that plays ``billing``."""

    async def find_accounts(
        self, *, certificate_nos: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[BillingAccount]:
        found: dict[str, BillingAccount] = {}
        for slot, values in (
            ("accounts_by_certificate", certificate_nos),
            ("accounts_by_msisdn", msisdns),
        ):
            for account in await self._lookup(slot, "BillingAccount", values):
                found.setdefault(account.id, account)
        return list(found.values())

    async def get_accounts(self, account_ids: Sequence[str]) -> Mapping[str, BillingAccount]:
        return await self._keyed("accounts", "BillingAccount", account_ids)

    async def get_balances(self, account_ids: Sequence[str]) -> Mapping[str, Balance]:
        return await self._keyed("balances", "Balance", account_ids)

    async def list_bills(self, account_id: str, offset: int, limit: int) -> Page[Bill]:
        return await self._page("bills", "Bill", account_id, offset, limit)

    async def list_payments(self, account_id: str, offset: int, limit: int) -> Page[Payment]:
        return await self._page("payments", "Payment", account_id, offset, limit)

    async def adjust_balance(
        self, account_id: str, amount: Money, reason: str, idempotency_key: str
    ) -> str:
        answer = await self._write(
            "adjust_balance",
            {
                "$key": account_id,
                "$amount": float(abs(amount.amount)),
                "$currency": amount.currency,
                "$direction": "credit" if amount.amount >= 0 else "debit",
                "$reason": reason,
                "$idempotencyKey": idempotency_key,
            },
        )
        if not answer or answer[0].get("id") is None:
            raise BadResponse(self.name, "answered a balance adjustment without its id")
        return str(answer[0]["id"])


class DeclaredCare(_RoleAdapter):
    """adapters.contract.CareSystem over a declared system that plays ``care``."""

    async def find_parties(
        self, *, id_card_numbers: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[Party]:
        found: dict[str, Party] = {}
        for slot, values in (
            ("parties_by_certificate", id_card_numbers),
            ("parties_by_msisdn", msisdns),
        ):
            for party in await self._lookup(slot, "Party", values):
                found.setdefault(party.id, party)
        return list(found.values())

    async def get_tickets(self, party_ids: Sequence[str]) -> Mapping[str, Sequence[Ticket]]:
        return await self._grouped("tickets", "Ticket", party_ids)

    async def get_interactions(
        self, party_ids: Sequence[str]
    ) -> Mapping[str, Sequence[Interaction]]:
        return await self._grouped("interactions", "Interaction", party_ids)

    async def create_ticket(
        self,
        party_id: str,
        *,
        ticket_type: str,
        name: str,
        description: str,
        severity: str,
        channel: str,
        idempotency_key: str,
    ) -> Ticket:
        values = {
            "$key": party_id,
            "$ticketType": ticket_type,
            "$name": name,
            "$description": description,
            "$severity": severity,
            "$channel": channel,
            "$idempotencyKey": idempotency_key,
        }
        return await self._written("create_ticket", "Ticket", values)

    async def update_ticket(
        self,
        ticket_id: str,
        *,
        status: str | None = None,
        priority: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Ticket:
        values = {
            "$key": ticket_id,
            "$status": status,
            "$priority": priority,
            "$note": note,
            "$idempotencyKey": idempotency_key,
        }
        return await self._written("update_ticket", "Ticket", values)

    async def send_message(self, msisdn: str, text: str, idempotency_key: str) -> str:
        values = {"$msisdn": msisdn, "$text": text, "$idempotencyKey": idempotency_key}
        answer = await self._write("send_message", values)
        if not answer or answer[0].get("id") is None:
            raise BadResponse(self.name, "answered a message without its id")
        return str(answer[0]["id"])


class DeclaredCustomerSystem(_RoleAdapter):
    """adapters.contract.CustomerSystem over a declared system that plays ``customer``.

    Answers as adapters/boss.py does: unknown customer numbers are left out, a certificate
    nobody holds is NotFound, a line or an order missing from a successful answer is a
    BadResponse, and a change is read back as the order it placed.
    """

    async def get_customers(self, customer_nos: Sequence[str]) -> Mapping[str, CustomerProfile]:
        return await self._keyed("customers", "CustomerProfile", unique(customer_nos))

    async def find_customer_by_certificate(self, certificate_no: str) -> CustomerProfile:
        found = await self._lookup("customers_by_certificate", "CustomerProfile", [certificate_no])
        if not found:
            raise NotFound(self.name, "has no customer with that certificate")
        return found[0]

    async def get_subscriptions(
        self, customer_nos: Sequence[str]
    ) -> Mapping[str, Sequence[Subscription]]:
        return await self._grouped("subscriptions", "Subscription", unique(customer_nos))

    async def find_subscription_by_msisdn(self, msisdn: str) -> Subscription:
        found = await self._lookup("subscriptions_by_msisdn", "Subscription", [msisdn])
        if not found:
            raise BadResponse(self.name, "answered without the subscriber")
        return found[0]

    async def search_customers(
        self,
        offset: int,
        limit: int,
        star_level: StarLevel | None = None,
        name_prefix: str | None = None,
    ) -> Page[CustomerProfile]:
        # The role fills the canonical values; the mapping's maps: gives the system's codes.
        variables = {
            "$starLevel": star_level.value if star_level is not None else None,
            "$namePrefix": name_prefix or None,
        }
        return await self._page("customer_page", "CustomerProfile", "", offset, limit, variables)

    async def get_offerings(self, offering_ids: Sequence[str] = ()) -> Sequence[Offering]:
        wanted = unique(offering_ids)
        if not wanted:
            return await self._read("offerings", "Offering", {})
        return await self._lookup("offerings_by_id", "Offering", wanted)

    async def check_eligibility(self, subscriber_no: str, offering_id: str) -> tuple[bool, str]:
        found = await self._read(
            "eligibility", "Eligibility", {"$key": subscriber_no, "$offeringId": offering_id}
        )
        if not found:
            raise BadResponse(self.name, "answered without the eligibility")
        answer: Eligibility = found[0]
        return answer.eligible, answer.reason

    async def get_order(self, order_id: str) -> Order:
        found = await self._keyed("orders", "Order", [order_id])
        if order_id not in found:
            raise BadResponse(self.name, "answered without the order")
        return found[order_id]

    # --- writes: sent once; the order is then read back (a read, retried) ----------------

    async def change_offering(
        self, subscriber_no: str, offering_id: str, idempotency_key: str
    ) -> Order:
        placed = await self._placed(
            "change_offering",
            {
                "$key": subscriber_no,
                "$offeringId": offering_id,
                "$idempotencyKey": idempotency_key,
            },
        )
        return await self.get_order(placed)

    async def cancel_order(self, order_id: str, idempotency_key: str) -> Order:
        await self._placed("cancel_order", {"$key": order_id, "$idempotencyKey": idempotency_key})
        return await self.get_order(order_id)

    async def _placed(self, slot: str, values: dict[str, Any]) -> str:
        answer = await self._write(slot, values)
        if not answer or answer[0].get("id") is None:
            raise BadResponse(self.name, "answered an order without its id")
        return str(answer[0]["id"])


#: The adapter class of each role a declared system may play.
ROLE_ADAPTERS: dict[str, type[_RoleAdapter]] = {
    "billing": DeclaredBilling,
    "care": DeclaredCare,
    "customer": DeclaredCustomerSystem,
}


def play(spec: SystemSpec, endpoint: Endpoint, settings: Mapping[str, str] | None = None) -> Any:
    """The role adapter of a system that plays a role, reached through ``endpoint``.

    The one instance takes the endpoint's name and URL (the role's settings table), so
    errors, guards and /readyz keep the names operators know. ``settings``: the rest of that
    table (``[boss]``'s ``service_path``, ``login_system_code``); each one the system file
    declares under ``settings:`` takes the table's value, the others are not the
    declaration's.
    """
    if spec.role is None:
        raise ValueError(f"system {spec.name} declares no role")
    instance = replace(spec.instances[0], name=endpoint.system, base_url=endpoint.base_url)
    own = {
        **spec.settings,
        **{k: str(v) for k, v in (settings or {}).items() if k in spec.settings},
    }
    played = replace(spec, instances=(instance,), settings=own)
    system = DeclaredSystem(played, {instance.name: endpoint})
    return ROLE_ADAPTERS[spec.role.plays](system)
