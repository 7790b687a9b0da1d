"""The hub's roles (adapters/contract.py) played by declared systems.

A role adapter is the role's own logic, written once per role and never per system: which slot
to call for a contract method, how to merge lookups, what variables a write fills. Everything
system-specific (paths, batch sizes, field paths, error codes) is in the system's files; the
calls go through ``DeclaredSystem`` and so through the same call policy, breaker and bulkhead
as every declared system. The hub's record cache wraps a role adapter like any adapter of the
role (``CachedBillingSystem``...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from adapters.concurrency import gather_outcomes
from adapters.declared.canonical import to_canonical
from adapters.declared.spec import InstanceSpec, SystemSpec
from adapters.declared.system import DeclaredSystem
from adapters.errors import BadResponse, BusinessRejected, NotFound
from adapters.parsing import unique
from adapters.phone import to_e164
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
from adapters.resilience import BackendGuard, Endpoint

Route = Callable[[str], "str | None"]


class _RoleAdapter:
    """What every role adapter shares: the system, its instances and their router, its slots.

    With one instance every call goes to it. With several (provincial BOSS instances, each
    owning a range of customer numbers or MSISDNs: ``owns:`` in the system file), a call by a
    key or number that a rule covers goes only to its owner; a call by anything else (an ID
    card, a subscriber no rule covers, a search page, the catalogue) asks every instance, and an
    instance that answers NOT_FOUND simply holds none. A write goes to one instance: the owner
    by rule, else the one a locating read finds (``_home``).
    """

    def __init__(self, system: DeclaredSystem) -> None:
        role = system.spec.role
        if role is None:
            raise ValueError(f"system {system.name} declares no role")
        self.system = system
        #: The instances, in declared order (a search page runs through them in this order).
        self.instances: tuple[str, ...] = tuple(system.instances)
        #: What errors, guards, metrics and /readyz call it: the instance's name when there is
        #: one, the system's when there are several (each instance is then probed by its own).
        self.name = self.instances[0] if len(self.instances) == 1 else system.name
        self._slots = role.slots

    def _op(self, slot: str) -> str:
        return self._slots[slot]

    async def start(self) -> None:
        await self.system.start()

    async def close(self) -> None:
        await self.system.close()

    async def ping(self, instance: str | None = None) -> None:
        await self.system.ping(instance or self.instances[0])

    # --- routing ------------------------------------------------------------------------

    def _route(self, values: Sequence[str], owner: Route) -> dict[str, list[str]]:
        """Each instance's share of ``values``: a value no rule places goes to every one."""
        shares: dict[str, list[str]] = {}
        for value in values:
            home = owner(value)
            for name in (home,) if home is not None else self.instances:
                shares.setdefault(name, []).append(value)
        return shares

    async def _each(
        self,
        names: Sequence[str],
        call: Callable[[str], Awaitable[Any]],
        *,
        found_is_enough: bool = False,
    ) -> list:
        """``call(name)`` on each named instance at once, the answers in declared order. An
        instance that answers NOT_FOUND holds none (left out); when all of them do, that is
        the answer. Any other failure fails the call, since without that instance's answer
        the hub cannot say what there is; unless ``found_is_enough`` (a lookup of one number
        or ID card, which one instance holds at most) and another instance found it."""
        outcomes = await gather_outcomes([call(n) for n in names])
        kept: list[Any] = []
        missing: NotFound | None = None
        failed: BaseException | None = None
        for outcome in outcomes:
            if isinstance(outcome, NotFound):
                missing = missing or outcome
            elif isinstance(outcome, BaseException):
                failed = failed or outcome
            else:
                kept.append(outcome)
        if failed is not None and not (found_is_enough and any(kept)):
            raise failed
        if not kept and missing is not None:
            raise missing
        return kept

    async def _home(self, key: str, locate: Callable[[str], Awaitable[Any]]) -> str:
        """The instance a write about ``key`` goes to: its owner by rule, else the one
        instance where ``locate(instance)`` (a read) finds it; NOT_FOUND where none does."""
        owner = self.system.key_owner(key)
        if owner is not None:
            return owner

        async def holder(name: str) -> str:
            await locate(name)
            return name

        found = await self._each(self.instances, holder)
        if len(found) > 1:
            raise BadResponse(self.name, f"instances {', '.join(found)} all hold the same key")
        return str(found[0])

    async def _holds(self, slot: str, key: str, instance: str) -> None:
        """A locating read: NOT_FOUND unless ``instance`` answers ``slot`` for ``key``."""
        found = await self.system.read_by_keys(self._op(slot), [(instance, key)])
        if not found:
            raise NotFound(instance, f"holds no such {slot} key")

    # --- reads --------------------------------------------------------------------------

    async def _keyed(
        self, slot: str, record: str, keys: Sequence[str], instance: str | None = None
    ) -> dict[str, Any]:
        """Records by key; ``instance``: where they are known to be (no routing)."""
        op = self._op(slot)
        shares = {instance: list(keys)} if instance else self._route(keys, self.system.key_owner)

        async def one(name: str) -> dict[tuple[str, str], Any]:
            return await self.system.read_by_keys(op, ((name, k) for k in shares[name]))

        found: dict[str, Any] = {}
        for answer in await self._each(list(shares), one):
            for (_, key), r in answer.items():
                found.setdefault(key, to_canonical(record, r))
        return found

    async def _lookup(
        self, slot: str, record: str, values: Sequence[str], owner: Route | None = None
    ) -> list[Any]:
        """Records found by ``values``; ``owner`` places a value on its instance (a number by
        ``owns.msisdn_prefix``); without one, every instance is asked."""
        if not values:
            return []
        op = self._op(slot)
        shares = self._route(values, owner or (lambda _: None))
        found = await self._each(
            list(shares),
            lambda name: self.system.lookup_at(op, name, shares[name]),
            found_is_enough=len(values) == 1,
        )
        return [to_canonical(record, located.record) for answer in found for located in answer]

    async def _by_number(self, slot: str, record: str, msisdns: Sequence[str]) -> list[Any]:
        return await self._lookup(slot, record, msisdns, self.system.number_owner)

    async def _grouped(self, slot: str, record: str, keys: Sequence[str]) -> dict[str, list[Any]]:
        """Every key's records (an empty list for a key with none), in the system's order."""
        grouped: dict[str, list[Any]] = {key: [] for key in keys}
        if not keys:
            return grouped
        op = self._op(slot)
        key_field = self.system.spec.operations[op].key_field or ""
        shares = self._route(list(keys), self.system.key_owner)
        answers = await self._each(
            list(shares), lambda name: self.system.lookup_at(op, name, shares[name])
        )
        for found in (located for answer in answers for located in answer):
            owner = found.record.get(key_field)
            if owner is None:
                raise BadResponse(self.name, f"answered {op} without record keys")
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
        """One page. A key's page comes from the key's instance; a page no rule places (a
        search, a key no rule covers) runs through the instances in declared order, as if
        their lists were one: one call per instance, each also telling its total."""
        op = self._op(slot)
        owner = self.system.key_owner(key) if key else None
        if owner is None and len(self.instances) == 1:
            owner = self.instances[0]
        if owner is not None:
            total, found = await self.system.page(op, owner, key, offset, limit, variables)
            return Page(total, tuple(to_canonical(record, r) for r in found))
        total = 0
        records: list[Any] = []
        for name in self.instances:
            wanted = max(limit - len(records), 1)  # a full page still learns the total
            try:
                count, found = await self.system.page(
                    op, name, key, max(offset - total, 0), wanted, variables
                )
            except NotFound:
                continue  # this instance holds no such key
            if offset < total + count:
                records += found[: limit - len(records)]
            total += count
        return Page(total, tuple(to_canonical(record, r) for r in records))

    async def _read(
        self, slot: str, record: str, values: dict[str, Any], instance: str | None = None
    ) -> list[Any]:
        found = await self.system.read(self._op(slot), values, instance)
        return [to_canonical(record, r) for r in found]

    async def _read_everywhere(self, slot: str, record: str, values: dict[str, Any]) -> list:
        """A read asked of every instance, the answers one after another in declared order."""
        answers = await self._each(
            self.instances, lambda name: self._read(slot, record, values, name)
        )
        return [item for answer in answers for item in answer]

    async def _write(
        self, slot: str, values: dict[str, Any], instance: str | None = None
    ) -> list[Mapping[str, Any]]:
        return await self.system.send(self._op(slot), values, instance)

    async def _written(
        self, slot: str, record: str, values: dict[str, Any], instance: str | None = None
    ) -> Any:
        """A write whose answer is the changed record (a ticket as it now stands)."""
        answer = await self._write(slot, values, instance)
        if not answer:
            raise BadResponse(self.name, f"answered {self._op(slot)} without its result")
        return to_canonical(record, answer[0])

    def _owned(self, key: str, what: str, owner: Route | None = None) -> str:
        """The instance a write about ``key`` goes to when the role has no read to locate
        it: the owner by rule (``owns:``); with several instances and no rule, refused."""
        home = (owner or self.system.key_owner)(key)
        if home is None:
            raise BusinessRejected(
                self.name, f"no instance owns this {what}: its instances need owns: rules"
            )
        return home


class DeclaredBilling(_RoleAdapter):
    """adapters.contract.BillingSystem over a declared system that plays ``billing``."""

    async def find_accounts(
        self, *, certificate_nos: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[BillingAccount]:
        found: dict[str, BillingAccount] = {}
        for slot, values, route in (
            ("accounts_by_certificate", certificate_nos, None),
            ("accounts_by_msisdn", msisdns, self.system.number_owner),
        ):
            for account in await self._lookup(slot, "BillingAccount", values, route):
                found.setdefault(account.id, account)
        return list(found.values())

    async def get_accounts(self, account_ids: Sequence[str]) -> Mapping[str, BillingAccount]:
        return await self._keyed("accounts", "BillingAccount", account_ids)

    async def get_balances(self, account_ids: Sequence[str]) -> Mapping[str, Balance]:
        return await self._keyed("balances", "Balance", account_ids)

    async def list_bills(self, account_id: str, offset: int, limit: int) -> Page[Bill]:
        page = await self._page("bills", "Bill", account_id, offset, limit)
        return self._only_of(page, "bills", account_id, limit)

    async def list_payments(self, account_id: str, offset: int, limit: int) -> Page[Payment]:
        page = await self._page("payments", "Payment", account_id, offset, limit)
        return self._only_of(page, "payments", account_id, limit)

    def _only_of(self, page: Page, slot: str, account_id: str, limit: int) -> Page:
        """A page of one account's records, as asked. A system that ignored its filter (or
        its page size) would show one customer another's bills: refused, not filtered, since
        the total it tells cannot be trusted either."""
        if len(page.items) > limit or any(i.account_id != account_id for i in page.items):
            raise BadResponse(self.name, f"answered {slot} with records it was not asked for")
        return page

    async def adjust_balance(
        self, account_id: str, amount: Money, reason: str, idempotency_key: str
    ) -> str:
        home = await self._home(account_id, lambda name: self._holds("accounts", account_id, name))
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
            home,
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
        for slot, values, route in (
            ("parties_by_certificate", id_card_numbers, None),
            ("parties_by_msisdn", msisdns, self.system.number_owner),
        ):
            for party in await self._lookup(slot, "Party", values, route):
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
        return await self._written(
            "create_ticket", "Ticket", values, self._owned(party_id, "party")
        )

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
        return await self._written(
            "update_ticket", "Ticket", values, self._owned(ticket_id, "ticket")
        )

    async def send_message(self, msisdn: str, text: str, idempotency_key: str) -> str:
        values = {"$msisdn": msisdn, "$text": text, "$idempotencyKey": idempotency_key}
        home = self._owned(msisdn, "number", self.system.number_owner)
        answer = await self._write("send_message", values, home)
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
        # Another customer's record for the asked certificate would be shown as this one's.
        if found[0].certificate_no.strip().upper() != certificate_no.strip().upper():
            raise BadResponse(self.name, "answered with another customer than the one asked for")
        return found[0]

    async def get_subscriptions(
        self, customer_nos: Sequence[str]
    ) -> Mapping[str, Sequence[Subscription]]:
        return await self._grouped("subscriptions", "Subscription", unique(customer_nos))

    async def find_subscription_by_msisdn(self, msisdn: str) -> Subscription:
        found = await self._by_number("subscriptions_by_msisdn", "Subscription", [msisdn])
        if not found:
            raise BadResponse(self.name, "answered without the subscriber")
        # The line of another number would make customerByMsisdn show another customer.
        if to_e164(found[0].msisdn) != to_e164(msisdn):
            raise BadResponse(self.name, "answered with another line than the one asked for")
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
            found = await self._read_everywhere("offerings", "Offering", {})
        else:
            found = await self._lookup("offerings_by_id", "Offering", wanted)
        # Several instances may sell the same offering: the first one's record stands.
        offerings: dict[str, Offering] = {}
        for offering in found:
            offerings.setdefault(offering.id, offering)
        return list(offerings.values())

    async def check_eligibility(self, subscriber_no: str, offering_id: str) -> tuple[bool, str]:
        values = {"$key": subscriber_no, "$offeringId": offering_id}
        owner = self.system.key_owner(subscriber_no)
        if owner is not None:
            found = await self._read("eligibility", "Eligibility", values, owner)
        else:
            found = await self._read_everywhere("eligibility", "Eligibility", values)
        if not found:
            raise BadResponse(self.name, "answered without the eligibility")
        answer: Eligibility = found[0]
        return answer.eligible, answer.reason

    async def get_order(self, order_id: str, instance: str | None = None) -> Order:
        orders = await self._keyed("orders", "Order", [order_id], instance)
        if order_id not in orders:
            raise BadResponse(self.name, "answered without the order")
        return orders[order_id]

    # --- writes: sent once; the order is then read back (a read, retried) ----------------

    async def change_offering(
        self, subscriber_no: str, offering_id: str, idempotency_key: str
    ) -> Order:
        home = await self._home(
            subscriber_no,
            lambda name: self._read(
                "eligibility",
                "Eligibility",
                {"$key": subscriber_no, "$offeringId": offering_id},
                name,
            ),
        )
        placed = await self._placed(
            "change_offering",
            {
                "$key": subscriber_no,
                "$offeringId": offering_id,
                "$idempotencyKey": idempotency_key,
            },
            home,
        )
        return await self.get_order(placed, home)

    async def cancel_order(self, order_id: str, idempotency_key: str) -> Order:
        home = await self._home(order_id, lambda name: self._holds("orders", order_id, name))
        await self._placed(
            "cancel_order", {"$key": order_id, "$idempotencyKey": idempotency_key}, home
        )
        return await self.get_order(order_id, home)

    async def _placed(self, slot: str, values: dict[str, Any], instance: str) -> str:
        answer = await self._write(slot, values, instance)
        if not answer or answer[0].get("id") is None:
            raise BadResponse(self.name, "answered an order without its id")
        return str(answer[0]["id"])


#: The adapter class of each role a declared system may play.
ROLE_ADAPTERS: dict[str, type[_RoleAdapter]] = {
    "billing": DeclaredBilling,
    "care": DeclaredCare,
    "customer": DeclaredCustomerSystem,
}


def play(
    spec: SystemSpec,
    endpoint: Endpoint,
    settings: Mapping[str, str] | None = None,
    urls: Mapping[str, str] | None = None,
) -> Any:
    """The role adapter of a system that plays a role, reached through ``endpoint``.

    One instance takes the endpoint's name and URL (the role's settings table), so errors,
    guards and /readyz keep the names operators know. Several instances (content-based
    routing) keep their own names and URLs (``urls``: the hub's ``system_urls`` overrides)
    and each gets the table's call settings with a guard of its own, so one province down
    opens only its own breaker. ``settings``: the rest of that table (``[boss]``'s
    ``service_path``, ``login_system_code``); each one the system file declares under
    ``settings:`` takes the table's value, the others are not the declaration's.
    """
    if spec.role is None:
        raise ValueError(f"system {spec.name} declares no role")
    if len(spec.instances) == 1:
        instances: tuple[InstanceSpec, ...] = (
            replace(spec.instances[0], name=endpoint.system, base_url=endpoint.base_url),
        )
        endpoints = {endpoint.system: endpoint}
    else:
        instances = tuple(
            replace(i, base_url=(urls or {}).get(i.name, i.base_url).rstrip("/"))
            for i in spec.instances
        )
        endpoints = {i.name: _own_endpoint(endpoint, i) for i in instances}
    own = {
        **spec.settings,
        **{k: str(v) for k, v in (settings or {}).items() if k in spec.settings},
    }
    played = replace(spec, instances=instances, settings=own)
    system = DeclaredSystem(played, endpoints)
    return ROLE_ADAPTERS[spec.role.plays](system)


def _own_endpoint(template: Endpoint, instance: InstanceSpec) -> Endpoint:
    """The role table's call settings for one instance, with its URL and a guard of its own."""
    endpoint = replace(template, system=instance.name, base_url=instance.base_url, guard=None)
    return replace(endpoint, guard=BackendGuard.for_endpoint(endpoint))
