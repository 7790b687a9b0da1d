"""The contract an integration engineer implements to plug a legacy system into the hub.

Each system plays one role: the customer system (customers, lines, offerings, orders), the
billing system (accounts, balances, bills, payments) or the care system (parties, tickets,
interactions). An adapter for an operator's own system implements the role's protocol, returns
the canonical records of ``adapters.records`` and raises only ``adapters.errors``. Batch methods
take many keys at once so that the schema's DataLoaders can make one call for a whole page.

Reads are idempotent and may be retried; methods that take an ``idempotency_key`` change the
backend and are never retried by the hub itself: the caller (a durable workflow step) repeats
them with the same key, and the backend must answer a repeated key with its first result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from adapters.records import (
    Balance,
    Bill,
    BillingAccount,
    CustomerProfile,
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


@runtime_checkable
class Backend(Protocol):
    """What every adapter offers the gateway's life cycle and readiness probe."""

    #: Short, stable name used in errors, metrics and /readyz ("boss", "billing", "care").
    name: str

    async def start(self) -> None:
        """Open pools and load contracts (a WSDL) once, before the first call."""

    async def close(self) -> None:
        """Release pools."""

    async def ping(self) -> None:
        """Return if the system answers; raise an AdapterError otherwise."""


class CustomerSystem(Backend, Protocol):
    async def get_customers(self, customer_nos: Sequence[str]) -> Mapping[str, CustomerProfile]:
        """Profiles by customer number; unknown numbers are left out."""

    async def find_customer_by_certificate(self, certificate_no: str) -> CustomerProfile:
        """The customer holding an ID-card number; NotFound if none."""

    async def get_subscriptions(
        self, customer_nos: Sequence[str]
    ) -> Mapping[str, Sequence[Subscription]]:
        """All lines of each customer (an empty list for a customer without lines)."""

    async def find_subscription_by_msisdn(self, msisdn: str) -> Subscription:
        """The line with this MSISDN; NotFound if none."""

    async def search_customers(
        self,
        offset: int,
        limit: int,
        star_level: StarLevel | None = None,
        name_prefix: str | None = None,
    ) -> Page[CustomerProfile]:
        """A page of customers in the system's stable order."""

    async def get_offerings(self, offering_ids: Sequence[str] = ()) -> Sequence[Offering]:
        """The catalogue, or the offerings named."""

    async def check_eligibility(self, subscriber_no: str, offering_id: str) -> tuple[bool, str]:
        """Whether the line may move to the offering, and the system's reason code."""

    async def change_offering(
        self, subscriber_no: str, offering_id: str, idempotency_key: str
    ) -> Order:
        """Place an order moving the line to the offering (once per key)."""

    async def cancel_order(self, order_id: str, idempotency_key: str) -> Order:
        """Cancel an order and restore the previous offering (once per key)."""

    async def get_order(self, order_id: str) -> Order: ...


class BillingSystem(Backend, Protocol):
    async def find_accounts(
        self, *, certificate_nos: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[BillingAccount]:
        """Accounts held under any of these ID-card numbers, or serving any of these MSISDNs."""

    async def get_accounts(self, account_ids: Sequence[str]) -> Mapping[str, BillingAccount]: ...

    async def get_balances(self, account_ids: Sequence[str]) -> Mapping[str, Balance]: ...

    async def list_bills(self, account_id: str, offset: int, limit: int) -> Page[Bill]: ...

    async def list_payments(self, account_id: str, offset: int, limit: int) -> Page[Payment]: ...

    async def adjust_balance(
        self, account_id: str, amount: Money, reason: str, idempotency_key: str
    ) -> str:
        """Credit (positive) or debit (negative) the account once per key; the adjustment id."""


class CareSystem(Backend, Protocol):
    async def find_parties(
        self, *, id_card_numbers: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[Party]: ...

    async def get_tickets(self, party_ids: Sequence[str]) -> Mapping[str, Sequence[Ticket]]:
        """Each party's tickets, newest first."""

    async def get_interactions(
        self, party_ids: Sequence[str]
    ) -> Mapping[str, Sequence[Interaction]]:
        """Each party's interactions, newest first."""

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
    ) -> Ticket: ...

    async def update_ticket(
        self,
        ticket_id: str,
        *,
        status: str | None = None,
        priority: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Ticket:
        """Change a ticket; with a key, a repeat of the same key changes nothing again."""

    async def send_message(self, msisdn: str, text: str, idempotency_key: str) -> str:
        """Send an SMS to a line (once per key); the system's message id.

        The text may hold a one-time code: adapters must never log it.
        """
