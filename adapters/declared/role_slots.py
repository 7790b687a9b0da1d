"""What a declared system must offer to play one of the hub's roles (data, no behaviour).

The hub's workflows and core graph speak three roles (adapters/contract.py): the customer
system, billing and care. A declared system plays one when its mapping has a ``role:`` section
that names, for each slot below, the operation that serves it. Each slot says what kind of call
it is, which canonical record (adapters/records.py) its operation's record must be, and which
variables its request may use besides the generic ones. ``spec.py`` checks a mapping against
this table; ``roles.py`` calls the operations.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slot:
    #: keyed: one record per key ($keys, batched); grouped: any number of records per key
    #: ($keys, batched; a party's tickets, a customer's lines); lookup: records found by other
    #: values ($keys: ID-card numbers, MSISDNs); page: one page for one key ($key, $offset,
    #: $limit); write: a change, sent once ($idempotencyKey and the slot's variables), whose
    #: answer is read as the slot's record when it names one; read: one call with the slot's
    #: variables (and $key if the role has one), all the records of its answer (a catalogue
    #: read whole, an eligibility check).
    kind: str
    #: The canonical record the operation's record must be (None: the answer is not read).
    record: str | None
    #: The record field that answers each requested key (keyed and grouped reads).
    key_field: str | None = None
    #: Variables the role fills for this slot, besides $keys/$key/$offset/$limit.
    variables: frozenset[str] = frozenset()
    required: bool = True


ROLES: dict[str, dict[str, Slot]] = {
    "billing": {
        "accounts": Slot("keyed", "BillingAccount", key_field="id"),
        "accounts_by_certificate": Slot("lookup", "BillingAccount"),
        "accounts_by_msisdn": Slot("lookup", "BillingAccount"),
        "balances": Slot("keyed", "Balance", key_field="accountId"),
        "bills": Slot("page", "Bill"),
        "payments": Slot("page", "Payment"),
        "adjust_balance": Slot(
            "write",
            None,
            variables=frozenset(
                {"$idempotencyKey", "$amount", "$currency", "$direction", "$reason"}
            ),
        ),
    },
    "care": {
        "parties_by_certificate": Slot("lookup", "Party"),
        "parties_by_msisdn": Slot("lookup", "Party"),
        "tickets": Slot("grouped", "Ticket", key_field="partyId"),
        "interactions": Slot("grouped", "Interaction", key_field="partyId"),
        "create_ticket": Slot(
            "write",
            "Ticket",
            variables=frozenset(
                {"$idempotencyKey", "$ticketType", "$name", "$description", "$severity", "$channel"}
            ),
        ),
        # $key is the ticket's id; an unset variable leaves its part of the change out.
        "update_ticket": Slot(
            "write",
            "Ticket",
            variables=frozenset({"$idempotencyKey", "$status", "$priority", "$note"}),
        ),
        # The text may hold a one-time code: the engine never logs a request body.
        "send_message": Slot(
            "write", None, variables=frozenset({"$idempotencyKey", "$msisdn", "$text"})
        ),
    },
    # The customer system (BOSS): adapters/contract.py CustomerSystem.
    "customer": {
        "customers": Slot("keyed", "CustomerProfile", key_field="customerNo"),
        "customers_by_certificate": Slot("lookup", "CustomerProfile"),
        "customer_page": Slot(
            "page", "CustomerProfile", variables=frozenset({"$starLevel", "$namePrefix"})
        ),
        "subscriptions": Slot("grouped", "Subscription", key_field="customerNo"),
        "subscriptions_by_msisdn": Slot("lookup", "Subscription"),
        "offerings": Slot("read", "Offering"),
        "offerings_by_id": Slot("lookup", "Offering"),
        "eligibility": Slot("read", "Eligibility", variables=frozenset({"$offeringId"})),
        "orders": Slot("keyed", "Order", key_field="id"),
        "change_offering": Slot(
            "write", "Order", variables=frozenset({"$idempotencyKey", "$offeringId"})
        ),
        "cancel_order": Slot("write", "Order", variables=frozenset({"$idempotencyKey"})),
    },
}

#: Every variable some role slot fills: the generic operation check accepts them, the role
#: check then holds each operation to its own slot's variables.
ROLE_VARIABLES: frozenset[str] = frozenset(
    v for slots in ROLES.values() for slot in slots.values() for v in slot.variables
)
