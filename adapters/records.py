"""Canonical records: what adapters hand to the rest of the hub, whatever the wire looked like.

They are plain frozen dataclasses so that they cache, compare and serialise cheaply, and so that
an adapter for a new system only has to fill them in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Generic, TypeVar

T = TypeVar("T")


class StarLevel(enum.Enum):
    NORMAL = "normal"
    SILVER = "silver"
    GOLD = "gold"
    DIAMOND = "diamond"
    PREMIUM = "premium"


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str = "CNY"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a longer list, with the size of the whole list."""

    total: int
    items: tuple[T, ...]


# --- customer system (BOSS) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    customer_no: str
    name: str
    gender: str
    certificate_type: str
    certificate_no: str
    birth_date: date | None
    address: str
    email: str | None
    star_level: StarLevel
    segment: str
    customer_since: date | None
    status: str


@dataclass(frozen=True, slots=True)
class Usage:
    data_used_mb: int
    data_allowance_mb: int
    voice_used_min: int
    voice_allowance_min: int
    sms_used: int
    sms_allowance: int


@dataclass(frozen=True, slots=True)
class Subscription:
    subscriber_no: str
    customer_no: str
    msisdn: str
    imsi: str
    iccid: str
    status: str
    activated_on: date | None
    offering_id: str
    offering_name: str
    arpu: Decimal
    mou: int
    usage: Usage


@dataclass(frozen=True, slots=True)
class Offering:
    id: str
    name: str
    monthly_fee: Decimal
    data_allowance_mb: int
    voice_allowance_min: int
    sms_allowance: int
    sellable: bool


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Whether a line may move to an offering, and the system's reason code."""

    eligible: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    subscriber_no: str
    old_offering_id: str
    new_offering_id: str
    status: str
    created_at: datetime | None


# --- billing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BillingAccount:
    id: str
    holder_name: str
    state: str
    account_type: str
    certificate_no: str
    service_numbers: tuple[str, ...]
    credit_limit: Money
    payment_method: str
    bank_card_no: str | None


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: str
    amount: Money
    overdue: Money
    as_of: datetime | None


@dataclass(frozen=True, slots=True)
class Bill:
    id: str
    account_id: str
    bill_no: str
    bill_date: date | None
    period_start: datetime | None
    period_end: datetime | None
    amount_due: Money
    remaining: Money
    due_date: date | None
    state: str


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    account_id: str
    paid_at: datetime | None
    amount: Money
    status: str
    channel: str
    method: str


# --- care -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Party:
    id: str
    full_name: str
    msisdns: tuple[str, ...]
    id_card_numbers: tuple[str, ...]
    email: str | None


@dataclass(frozen=True, slots=True)
class TicketNote:
    date: datetime | None
    author: str
    text: str


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    party_id: str
    name: str
    description: str
    ticket_type: str
    severity: str
    priority: str
    status: str
    created_at: datetime | None
    updated_at: datetime | None
    channel: str
    notes: tuple[TicketNote, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Interaction:
    id: str
    party_id: str
    started_at: datetime | None
    ended_at: datetime | None
    channel: str
    direction: str
    reason: str
    description: str
    status: str
