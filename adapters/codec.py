"""JSON for canonical records: one explicit encoder and decoder per record type.

The Redis cache stores records as JSON, never pickle: a pickle names classes and is rebuilt by
whatever code is deployed when it is read, so a rolling deploy (or anyone able to write to
Redis) could hand the hub objects it did not expect; JSON is data only, and a decoder that
finds the wrong shape fails, which the cache treats as a miss. ``CODEC_VERSION`` is part of
every cache key: change a record's fields, bump it, and old entries are simply never read.

Decimals travel as strings (no float rounding), dates and datetimes as ISO 8601 (the offset
kept), enums by value, tuples as lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

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
    TicketNote,
    Usage,
)

T = TypeVar("T")
Json = Any

#: Part of every cache key; bump when an encoding below changes.
CODEC_VERSION = "1"


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    """A record type's way to and from JSON-compatible values, and to and from text."""

    encode: Callable[[T], Json]
    decode: Callable[[Json], T]

    def dumps(self, value: T) -> str:
        return json.dumps(self.encode(value), ensure_ascii=False, separators=(",", ":"))

    def loads(self, text: str | bytes) -> T:
        return self.decode(json.loads(text))


# --- scalars ----------------------------------------------------------------------------------


def _date(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _to_date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value is not None else None


def _datetime(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _to_datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _strings(values: Sequence[str]) -> list[str]:
    return [str(v) for v in values]


def _to_strings(values: list[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def encode_money(money: Money) -> Json:
    return {"amount": str(money.amount), "currency": money.currency}


def decode_money(data: Json) -> Money:
    return Money(Decimal(data["amount"]), data["currency"])


# --- customer system --------------------------------------------------------------------------


def encode_profile(p: CustomerProfile) -> Json:
    return {
        "customer_no": p.customer_no,
        "name": p.name,
        "gender": p.gender,
        "certificate_type": p.certificate_type,
        "certificate_no": p.certificate_no,
        "birth_date": _date(p.birth_date),
        "address": p.address,
        "email": p.email,
        "star_level": p.star_level.value,
        "segment": p.segment,
        "customer_since": _date(p.customer_since),
        "status": p.status,
    }


def decode_profile(d: Json) -> CustomerProfile:
    return CustomerProfile(
        customer_no=d["customer_no"],
        name=d["name"],
        gender=d["gender"],
        certificate_type=d["certificate_type"],
        certificate_no=d["certificate_no"],
        birth_date=_to_date(d["birth_date"]),
        address=d["address"],
        email=d["email"],
        star_level=StarLevel(d["star_level"]),
        segment=d["segment"],
        customer_since=_to_date(d["customer_since"]),
        status=d["status"],
    )


def encode_usage(u: Usage) -> Json:
    return {
        "data_used_mb": u.data_used_mb,
        "data_allowance_mb": u.data_allowance_mb,
        "voice_used_min": u.voice_used_min,
        "voice_allowance_min": u.voice_allowance_min,
        "sms_used": u.sms_used,
        "sms_allowance": u.sms_allowance,
    }


def decode_usage(d: Json) -> Usage:
    return Usage(
        data_used_mb=int(d["data_used_mb"]),
        data_allowance_mb=int(d["data_allowance_mb"]),
        voice_used_min=int(d["voice_used_min"]),
        voice_allowance_min=int(d["voice_allowance_min"]),
        sms_used=int(d["sms_used"]),
        sms_allowance=int(d["sms_allowance"]),
    )


def encode_subscription(s: Subscription) -> Json:
    return {
        "subscriber_no": s.subscriber_no,
        "customer_no": s.customer_no,
        "msisdn": s.msisdn,
        "imsi": s.imsi,
        "iccid": s.iccid,
        "status": s.status,
        "activated_on": _date(s.activated_on),
        "offering_id": s.offering_id,
        "offering_name": s.offering_name,
        "arpu": str(s.arpu),
        "mou": s.mou,
        "usage": encode_usage(s.usage),
    }


def decode_subscription(d: Json) -> Subscription:
    return Subscription(
        subscriber_no=d["subscriber_no"],
        customer_no=d["customer_no"],
        msisdn=d["msisdn"],
        imsi=d["imsi"],
        iccid=d["iccid"],
        status=d["status"],
        activated_on=_to_date(d["activated_on"]),
        offering_id=d["offering_id"],
        offering_name=d["offering_name"],
        arpu=Decimal(d["arpu"]),
        mou=int(d["mou"]),
        usage=decode_usage(d["usage"]),
    )


def encode_offering(o: Offering) -> Json:
    return {
        "id": o.id,
        "name": o.name,
        "monthly_fee": str(o.monthly_fee),
        "data_allowance_mb": o.data_allowance_mb,
        "voice_allowance_min": o.voice_allowance_min,
        "sms_allowance": o.sms_allowance,
        "sellable": o.sellable,
    }


def decode_offering(d: Json) -> Offering:
    return Offering(
        id=d["id"],
        name=d["name"],
        monthly_fee=Decimal(d["monthly_fee"]),
        data_allowance_mb=int(d["data_allowance_mb"]),
        voice_allowance_min=int(d["voice_allowance_min"]),
        sms_allowance=int(d["sms_allowance"]),
        sellable=bool(d["sellable"]),
    )


def encode_order(o: Order) -> Json:
    return {
        "id": o.id,
        "subscriber_no": o.subscriber_no,
        "old_offering_id": o.old_offering_id,
        "new_offering_id": o.new_offering_id,
        "status": o.status,
        "created_at": _datetime(o.created_at),
    }


def decode_order(d: Json) -> Order:
    return Order(
        id=d["id"],
        subscriber_no=d["subscriber_no"],
        old_offering_id=d["old_offering_id"],
        new_offering_id=d["new_offering_id"],
        status=d["status"],
        created_at=_to_datetime(d["created_at"]),
    )


# --- billing ----------------------------------------------------------------------------------


def encode_account(a: BillingAccount) -> Json:
    return {
        "id": a.id,
        "holder_name": a.holder_name,
        "state": a.state,
        "account_type": a.account_type,
        "certificate_no": a.certificate_no,
        "service_numbers": _strings(a.service_numbers),
        "credit_limit": encode_money(a.credit_limit),
        "payment_method": a.payment_method,
        "bank_card_no": a.bank_card_no,
    }


def decode_account(d: Json) -> BillingAccount:
    return BillingAccount(
        id=d["id"],
        holder_name=d["holder_name"],
        state=d["state"],
        account_type=d["account_type"],
        certificate_no=d["certificate_no"],
        service_numbers=_to_strings(d["service_numbers"]),
        credit_limit=decode_money(d["credit_limit"]),
        payment_method=d["payment_method"],
        bank_card_no=d["bank_card_no"],
    )


def encode_balance(b: Balance) -> Json:
    return {
        "account_id": b.account_id,
        "amount": encode_money(b.amount),
        "overdue": encode_money(b.overdue),
        "as_of": _datetime(b.as_of),
    }


def decode_balance(d: Json) -> Balance:
    return Balance(
        account_id=d["account_id"],
        amount=decode_money(d["amount"]),
        overdue=decode_money(d["overdue"]),
        as_of=_to_datetime(d["as_of"]),
    )


def encode_bill(b: Bill) -> Json:
    return {
        "id": b.id,
        "account_id": b.account_id,
        "bill_no": b.bill_no,
        "bill_date": _date(b.bill_date),
        "period_start": _datetime(b.period_start),
        "period_end": _datetime(b.period_end),
        "amount_due": encode_money(b.amount_due),
        "remaining": encode_money(b.remaining),
        "due_date": _date(b.due_date),
        "state": b.state,
    }


def decode_bill(d: Json) -> Bill:
    return Bill(
        id=d["id"],
        account_id=d["account_id"],
        bill_no=d["bill_no"],
        bill_date=_to_date(d["bill_date"]),
        period_start=_to_datetime(d["period_start"]),
        period_end=_to_datetime(d["period_end"]),
        amount_due=decode_money(d["amount_due"]),
        remaining=decode_money(d["remaining"]),
        due_date=_to_date(d["due_date"]),
        state=d["state"],
    )


def encode_payment(p: Payment) -> Json:
    return {
        "id": p.id,
        "account_id": p.account_id,
        "paid_at": _datetime(p.paid_at),
        "amount": encode_money(p.amount),
        "status": p.status,
        "channel": p.channel,
        "method": p.method,
    }


def decode_payment(d: Json) -> Payment:
    return Payment(
        id=d["id"],
        account_id=d["account_id"],
        paid_at=_to_datetime(d["paid_at"]),
        amount=decode_money(d["amount"]),
        status=d["status"],
        channel=d["channel"],
        method=d["method"],
    )


# --- care -------------------------------------------------------------------------------------


def encode_party(p: Party) -> Json:
    return {
        "id": p.id,
        "full_name": p.full_name,
        "msisdns": _strings(p.msisdns),
        "id_card_numbers": _strings(p.id_card_numbers),
        "email": p.email,
    }


def decode_party(d: Json) -> Party:
    return Party(
        id=d["id"],
        full_name=d["full_name"],
        msisdns=_to_strings(d["msisdns"]),
        id_card_numbers=_to_strings(d["id_card_numbers"]),
        email=d["email"],
    )


def encode_note(n: TicketNote) -> Json:
    return {"date": _datetime(n.date), "author": n.author, "text": n.text}


def decode_note(d: Json) -> TicketNote:
    return TicketNote(date=_to_datetime(d["date"]), author=d["author"], text=d["text"])


def encode_ticket(t: Ticket) -> Json:
    return {
        "id": t.id,
        "party_id": t.party_id,
        "name": t.name,
        "description": t.description,
        "ticket_type": t.ticket_type,
        "severity": t.severity,
        "priority": t.priority,
        "status": t.status,
        "created_at": _datetime(t.created_at),
        "updated_at": _datetime(t.updated_at),
        "channel": t.channel,
        "notes": [encode_note(n) for n in t.notes],
    }


def decode_ticket(d: Json) -> Ticket:
    return Ticket(
        id=d["id"],
        party_id=d["party_id"],
        name=d["name"],
        description=d["description"],
        ticket_type=d["ticket_type"],
        severity=d["severity"],
        priority=d["priority"],
        status=d["status"],
        created_at=_to_datetime(d["created_at"]),
        updated_at=_to_datetime(d["updated_at"]),
        channel=d["channel"],
        notes=tuple(decode_note(n) for n in d["notes"]),
    )


def encode_interaction(i: Interaction) -> Json:
    return {
        "id": i.id,
        "party_id": i.party_id,
        "started_at": _datetime(i.started_at),
        "ended_at": _datetime(i.ended_at),
        "channel": i.channel,
        "direction": i.direction,
        "reason": i.reason,
        "description": i.description,
        "status": i.status,
    }


def decode_interaction(d: Json) -> Interaction:
    return Interaction(
        id=d["id"],
        party_id=d["party_id"],
        started_at=_to_datetime(d["started_at"]),
        ended_at=_to_datetime(d["ended_at"]),
        channel=d["channel"],
        direction=d["direction"],
        reason=d["reason"],
        description=d["description"],
        status=d["status"],
    )


# --- containers -------------------------------------------------------------------------------


def tuple_of(item: Codec[T]) -> Codec[tuple[T, ...]]:
    return Codec(
        encode=lambda values: [item.encode(v) for v in values],
        decode=lambda data: tuple(item.decode(v) for v in data),
    )


def page_of(item: Codec[T]) -> Codec[Page[T]]:
    return Codec(
        encode=lambda page: {"total": page.total, "items": [item.encode(v) for v in page.items]},
        decode=lambda data: Page(int(data["total"]), tuple(item.decode(v) for v in data["items"])),
    )


MONEY = Codec(encode_money, decode_money)
PROFILE = Codec(encode_profile, decode_profile)
USAGE = Codec(encode_usage, decode_usage)
SUBSCRIPTION = Codec(encode_subscription, decode_subscription)
OFFERING = Codec(encode_offering, decode_offering)
ORDER = Codec(encode_order, decode_order)
ACCOUNT = Codec(encode_account, decode_account)
BALANCE = Codec(encode_balance, decode_balance)
BILL = Codec(encode_bill, decode_bill)
PAYMENT = Codec(encode_payment, decode_payment)
PARTY = Codec(encode_party, decode_party)
TICKET_NOTE = Codec(encode_note, decode_note)
TICKET = Codec(encode_ticket, decode_ticket)
INTERACTION = Codec(encode_interaction, decode_interaction)
#: Plain JSON values (the cache's own index entries: lists of keys).
PLAIN: Codec[Json] = Codec(lambda value: value, lambda data: data)
