"""The deterministic dataset: customer ``i`` of seed ``s`` and everything the three systems know.

``generate(seed, i)`` is a pure function: the same (seed, index) always gives the same records,
whatever the customer count, so stores of any size are prefixes of one another and a test can
recompute any customer without reading a store.

Keys are unique by construction (see ``identifiers``): the ID card is built from a bijection of
the index onto (district, birth date) cells plus a per-cell sequence, MSISDNs and the other line
keys from a global line slot ``4 * i + line``.
"""

from __future__ import annotations

import datetime as dt
import random
from functools import lru_cache
from math import gcd
from typing import NamedTuple

from simulators import identifiers as ids
from simulators.ledger import seeded_balance
from simulators.reference import (
    AS_OF,
    BANK_BINS,
    EMAIL_DOMAINS,
    ESTATES,
    GIVEN_FEMALE,
    GIVEN_MALE,
    GIVEN_NEUTRAL,
    INTERACTION_CHANNELS,
    INTERACTION_TEMPLATES,
    NOTE_TEXTS,
    OFFERING_WEIGHTS_ADULT,
    OFFERING_WEIGHTS_SENIOR,
    OFFERING_WEIGHTS_YOUNG,
    OFFERINGS,
    REGIONS,
    STREETS,
    SURNAMES,
    TICKET_CHANNELS,
    TICKET_TEMPLATES,
    TYPO_REGION,
    TZ,
)

DATASET_VERSION = "2"  # 2: churners show it in tickets and arrears

LINE_SLOTS = 4  # at most four lines per customer
TICKET_SLOTS = 4  # at most three tickets, one spare slot
INTERACTION_SLOTS = 4
TYPO_PERIOD = 200  # one customer in every 200 consecutive ones has a mistyped billing ID card
CUSTOMER_NO_BASE = 1_000_000_001

_BIRTH_FIRST = dt.date(1950, 1, 1).toordinal()
_BIRTH_DAYS = dt.date(2006, 12, 31).toordinal() - _BIRTH_FIRST + 1
_CELLS = len(REGIONS) * _BIRTH_DAYS
_SEQ_SPAN = 499  # sequence numbers 002..999: 499 per gender per cell
MAX_CUSTOMERS = _CELLS * _SEQ_SPAN


def _coprime_multiplier(modulus: int, start: int) -> int:
    candidate = start
    while gcd(candidate, modulus) != 1:
        candidate += 1
    return candidate


_CELL_MUL = _coprime_multiplier(_CELLS, 1_000_003)
_TYPO_MUL = 77  # coprime to TYPO_PERIOD

_AS_OF_ORD = AS_OF.toordinal()
_EPOCH_2000 = dt.date(2000, 1, 1).toordinal()


class Customer(NamedTuple):
    index: int
    customer_no: str
    name: str
    family_name: str
    given_name: str
    gender: str
    cert_no: str
    birth_date: str
    address: str
    email: str | None
    cust_level: str
    cust_segment: str
    create_date: str
    status: str


class Subscriber(NamedTuple):
    subscriber_no: str
    customer_no: str
    msisdn: str
    imsi: str
    iccid: str
    status: str
    activation_date: str
    offering_id: str
    arpu_cents: int
    mou: int
    data_used_mb: int
    voice_used_min: int
    sms_used: int


class BillingAccount(NamedTuple):
    index: int
    id: str
    name: str
    state: str
    account_type: str
    certificate_number: str
    service_numbers: tuple[str, ...]
    credit_limit_cents: int
    payment_method: str
    bank_card: str | None
    base_fee_cents: int
    arrears: int  # 0 up to date, 1 last month unpaid, 2 last month partly paid
    balance_cents: int
    overdue_cents: int


class Party(NamedTuple):
    index: int
    id: str
    full_name: str
    family_name: str
    given_name: str
    phone: str
    email: str | None
    id_card: str


class Note(NamedTuple):
    date: str
    author: str
    text: str


class Ticket(NamedTuple):
    id: str
    party_id: str
    name: str
    description: str
    ticket_type: str
    severity: str
    priority: str
    status: str
    creation_date: str
    last_update: str
    channel: str
    notes: tuple[Note, ...]


class Interaction(NamedTuple):
    id: str
    party_id: str
    start: str
    end: str
    channel: str
    direction: str
    reason: str
    description: str
    status: str


class CustomerBundle(NamedTuple):
    """Everything about one customer, as BOSS, billing and care each hold it."""

    customer: Customer
    subscribers: tuple[Subscriber, ...]
    account: BillingAccount
    party: Party
    tickets: tuple[Ticket, ...]
    interactions: tuple[Interaction, ...]


def customer_no(index: int) -> str:
    return str(CUSTOMER_NO_BASE + index)


def has_certificate_typo(seed: int, index: int) -> bool:
    """Whether the billing account of customer ``index`` carries a mistyped ID-card number.

    Exactly one customer in every ``TYPO_PERIOD`` consecutive indexes does, which one depends
    on the seed.
    """
    return (index * _TYPO_MUL + ids.seed_keys(seed).offsets[7]) % TYPO_PERIOD == 0


def _cumulative(weights: tuple[int, ...]) -> tuple[float, ...]:
    total = sum(weights)
    running = 0
    out = []
    for w in weights:
        running += w
        out.append(running / total)
    return tuple(out)


_OFFER_CUM = {
    "young": _cumulative(OFFERING_WEIGHTS_YOUNG),
    "adult": _cumulative(OFFERING_WEIGHTS_ADULT),
    "senior": _cumulative(OFFERING_WEIGHTS_SENIOR),
}
_LINES_CUM = _cumulative((55, 28, 12, 5))
_TICKETS_CUM = _cumulative((40, 32, 18, 10))
# Customers who are leaving (a line terminated or suspended) complained more and paid worse
# before they left: the labelled history the churn model learns from (insight/train.py). Same
# number of draws either way, so the other customers' records are unchanged.
_TICKETS_CUM_CHURNER = _cumulative((15, 25, 30, 30))
_TEMPLATES_CUM = _cumulative(tuple(1 for _ in TICKET_TEMPLATES))
_TEMPLATES_CUM_CHURNER = _cumulative(
    tuple(4 if kind == "complaint" else 1 for kind, _, _ in TICKET_TEMPLATES)
)
_INTERACTIONS_CUM = _cumulative((25, 25, 22, 16, 12))


def _pick_cum(cum: tuple[float, ...], r: float) -> int:
    for pos, edge in enumerate(cum):
        if r < edge:
            return pos
    return len(cum) - 1


@lru_cache(maxsize=65536)
def _iso(ordinal: int) -> str:
    # Cached: a million customers use only some thirty thousand distinct days.
    return dt.date.fromordinal(ordinal).isoformat()


def _iso_time(ordinal: int, seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{_iso(ordinal)}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}{TZ}"


def bank_card_number(rng: random.Random) -> str:
    body = BANK_BINS[int(rng.random() * len(BANK_BINS))] + f"{rng.getrandbits(40) % 10**12:012d}"
    return body + ids.luhn_check_digit(body)


def _identity_cell(seed: int, index: int) -> tuple[int, int, int]:
    """(region position, birth ordinal, sequence half) of a customer: a bijection of index."""
    keys = ids.seed_keys(seed)
    k, rest = divmod(index, _CELLS)
    cell = (rest * _CELL_MUL + keys.offsets[0]) % _CELLS
    region_pos, day = divmod(cell, _BIRTH_DAYS)
    half = 1 + (k + cell * 131) % _SEQ_SPAN  # distinct for distinct k below _SEQ_SPAN
    return region_pos, _BIRTH_FIRST + day, half


def _id_card(region_code: str, birth: str, seq: int) -> str:
    first17 = f"{region_code}{birth.replace('-', '')}{seq:03d}"
    return first17 + ids.gb11643_check_digit(first17)


def generate(seed: int, index: int) -> CustomerBundle:
    """Customer ``index`` (0-based) of the dataset ``seed``."""
    if not 0 <= index < MAX_CUSTOMERS:
        raise ValueError(f"customer index out of range: {index}")
    keys = ids.seed_keys(seed)
    rng = random.Random(keys.rng_base + index)
    r = rng.random

    # Identity.
    male = r() < 0.5
    region_pos, birth_ord, half = _identity_cell(seed, index)
    region = REGIONS[region_pos]
    birth = _iso(birth_ord)
    cert_no = _id_card(region.code, birth, 2 * half + (1 if male else 0))
    family = SURNAMES[int(len(SURNAMES) * r() ** 1.8)]
    pool = GIVEN_MALE if male else GIVEN_FEMALE
    given = pool[int(r() * len(pool))]
    if r() < 0.7:
        second = r()
        given += (
            GIVEN_NEUTRAL[int(second * len(GIVEN_NEUTRAL))]
            if second < 0.15
            else pool[int(r() * len(pool))]
        )
    name = family + given
    age = (_AS_OF_ORD - birth_ord) // 365
    band = "young" if age < 26 else "senior" if age >= 60 else "adult"

    street = STREETS[int(r() * len(STREETS))]
    number = 1 + int(r() * 399)
    city = "" if region.city == region.province else region.city
    address = f"{region.province}{city}{region.district}{street}{number}号"
    if r() < 0.6:
        address += (
            f"{ESTATES[int(r() * len(ESTATES))]}{1 + int(r() * 30)}栋"
            f"{1 + int(r() * 4)}单元{1 + int(r() * 30)}{1 + int(r() * 4):02d}室"
        )

    adult_ord = max(_EPOCH_2000, birth_ord + 18 * 366)
    create_ord = adult_ord + int(r() * max(1, _AS_OF_ORD - 60 - adult_ord))
    status = "S" if r() < 0.03 else "A"
    cust_no = customer_no(index)

    # Lines.
    line_count = 1 + _pick_cum(_LINES_CUM, r())
    subscribers: list[Subscriber] = []
    fee_total = 0
    offer_cum = _OFFER_CUM[band]
    for line in range(line_count):
        slot = index * LINE_SLOTS + line
        offering = OFFERINGS[_pick_cum(offer_cum, r())]
        if status == "S":
            line_status = "S"
        elif line > 0 and r() < 0.08:
            line_status = "D"
        elif r() < 0.04:
            line_status = "S"
        else:
            line_status = "A"
        activation = create_ord + (0 if line == 0 else int(r() * max(1, _AS_OF_ORD - create_ord)))
        if line_status == "A":
            data_used = int(offering.data_mb * r() * 1.3)
            voice_used = int(offering.voice_min * r() * 1.2)
            sms_used = int(offering.sms * r() * 0.5)
            arpu = int(offering.monthly_fee_cents * (0.95 + 0.45 * r()))
            mou = int(voice_used * (1.6 + r()))
            fee_total += offering.monthly_fee_cents
        else:
            data_used = voice_used = sms_used = 0
            arpu = int(offering.monthly_fee_cents * 0.3 * r()) if line_status == "S" else 0
            mou = 0
        subscribers.append(
            Subscriber(
                ids.subscriber_no(keys, slot),
                cust_no,
                ids.msisdn(keys, slot),
                ids.imsi(keys, slot),
                ids.iccid(keys, slot),
                line_status,
                _iso(activation),
                offering.offering_id,
                arpu,
                mou,
                data_used,
                voice_used,
                sms_used,
            )
        )

    level = (
        "5"
        if fee_total >= 38800
        else "4"
        if fee_total >= 25000
        else "3"
        if fee_total >= 15000
        else "2"
        if fee_total >= 8000
        else "1"
    )
    if int(level) >= 4:
        segment = "HIGH_VALUE"
    elif band == "young":
        segment = "YOUTH"
    elif band == "senior":
        segment = "SENIOR"
    elif line_count >= 3:
        segment = "FAMILY"
    else:
        segment = "MASS"

    primary = subscribers[0].msisdn
    email_draw = r()
    if email_draw < 0.15:
        email: str | None = f"{primary}@139.com"
    elif email_draw < 0.35:
        email = f"{10000 + rng.getrandbits(32) % 2_000_000_000}@qq.com"
    elif email_draw < 0.6:
        handle = "".join(chr(97 + int(r() * 26)) for _ in range(3 + int(r() * 5)))
        email = f"{handle}{int(r() * 1000)}@{EMAIL_DOMAINS[2 + int(r() * 3)]}"
    else:
        email = None

    customer = Customer(
        index,
        cust_no,
        name,
        family,
        given,
        "M" if male else "F",
        cert_no,
        birth,
        address,
        email,
        level,
        segment,
        _iso(create_ord),
        status,
    )

    # Billing account.
    billing_cert = cert_no
    if has_certificate_typo(seed, index):
        billing_cert = _id_card(TYPO_REGION[region.code], birth, int(cert_no[14:17]))
    postpaid = int(level) >= 3 or r() < 0.65
    pay_draw = r()
    method = (
        "alipay"
        if pay_draw < 0.35
        else "wechat"
        if pay_draw < 0.65
        else "bankCard"
        if pay_draw < 0.9
        else "cash"
    )
    card = bank_card_number(rng) if method == "bankCard" else None
    churner = status == "S" or any(s.status != "A" for s in subscribers)
    arrears_draw = r()
    late, unpaid = (0.35, 0.2) if churner else (0.1, 0.06)
    arrears = 0 if not postpaid or arrears_draw >= late else (1 if arrears_draw < unpaid else 2)
    account_type = "postpaid" if postpaid else "prepaid"
    base_fee = max(fee_total, 800)
    ba_id = ids.billing_account_id(keys, index)
    prepaid_cents = int(r() * 30000)
    balance, overdue = seeded_balance(seed, index, base_fee, account_type, arrears, prepaid_cents)
    account = BillingAccount(
        index,
        ba_id,
        name,
        "suspended" if status == "S" else "active",
        account_type,
        billing_cert,
        tuple(s.msisdn for s in subscribers if s.status != "D"),
        {"1": 10000, "2": 30000, "3": 80000, "4": 200000, "5": 500000}[level] if postpaid else 0,
        method,
        card,
        base_fee,
        arrears,
        balance,
        overdue,
    )

    # Care.
    pid = ids.party_id(keys, index)
    party = Party(index, pid, name, family, given, primary, email, cert_no)
    fill = {"msisdn": primary, "cert": cert_no, "card": card or bank_card_number(rng)}

    tickets: list[Ticket] = []
    for t in range(_pick_cum(_TICKETS_CUM_CHURNER if churner else _TICKETS_CUM, r())):
        templates = _TEMPLATES_CUM_CHURNER if churner else _TEMPLATES_CUM
        ticket_type, title, text = TICKET_TEMPLATES[_pick_cum(templates, r())]
        created_ord = _AS_OF_ORD - int(r() * 720)
        created_sec = 8 * 3600 + int(r() * 13 * 3600)
        age_days = _AS_OF_ORD - created_ord
        if age_days > 30:
            ticket_status = "closed" if r() < 0.7 else "resolved"
        else:
            ticket_status = ("acknowledged", "inProgress", "resolved")[int(r() * 3)]
        notes = []
        note_ord = created_ord
        for _ in range({"acknowledged": 0, "inProgress": 1}.get(ticket_status, 2 + int(r() * 2))):
            note_ord = min(_AS_OF_ORD, note_ord + int(r() * 5))
            notes.append(
                Note(
                    _iso_time(note_ord, 9 * 3600 + int(r() * 10 * 3600)),
                    f"agent{int(r() * 9000) + 1000}",
                    NOTE_TEXTS[int(r() * len(NOTE_TEXTS))],
                )
            )
        created = _iso_time(created_ord, created_sec)
        severity = "major" if ticket_type == "fault" else "minor"
        if r() < 0.08:
            severity = "critical"
        tickets.append(
            Ticket(
                f"TT{ids.seeded_ticket_number(keys, index * TICKET_SLOTS + t):010d}",
                pid,
                title,
                text.format_map(fill),
                ticket_type,
                severity,
                "high" if ticket_type == "complaint" else ("medium" if r() < 0.6 else "low"),
                ticket_status,
                created,
                max(created, notes[-1].date) if notes else created,
                TICKET_CHANNELS[int(r() * len(TICKET_CHANNELS))],
                tuple(notes),
            )
        )

    interactions: list[Interaction] = []
    for n in range(_pick_cum(_INTERACTIONS_CUM, r())):
        reason, text = INTERACTION_TEMPLATES[int(r() * len(INTERACTION_TEMPLATES))]
        day = _AS_OF_ORD - int(r() * 365)
        start_sec = 8 * 3600 + int(r() * 13 * 3600)
        outbound = reason in ("缴费提醒", "满意度回访", "营销推荐")
        interactions.append(
            Interaction(
                f"PI{ids.seeded_ticket_number(keys, index * INTERACTION_SLOTS + n):010d}",
                pid,
                _iso_time(day, start_sec),
                _iso_time(day, start_sec + 60 + int(r() * 1200)),
                "agent" if outbound else INTERACTION_CHANNELS[int(r() * 6)],
                "outbound" if outbound else "inbound",
                reason,
                text.format_map(fill),
                "completed",
            )
        )

    return CustomerBundle(
        customer, tuple(subscribers), account, party, tuple(tickets), tuple(interactions)
    )
