"""Monthly bills and payments of a billing account, computed on read.

Twelve bills and their payments per account would be the bulk of the billing store; instead
they are a pure function of (seed, account index, month) plus a few stored account facts
(base fee, account type, arrears), so they cost no storage and no seeding time. The seeder uses
the same functions to derive the stored balance, so balance and bills always agree.
"""

from __future__ import annotations

import calendar
import datetime as dt
from functools import lru_cache
from typing import NamedTuple

from simulators.identifiers import seed_keys
from simulators.reference import AS_OF, TZ

BILL_MONTHS = 12
_M64 = (1 << 64) - 1
# Months are counted as year * 12 + (month - 1); the newest bill is for the month before AS_OF.
_NEWEST_MONTH = AS_OF.year * 12 + AS_OF.month - 2


class Bill(NamedTuple):
    id: str
    bill_no: str
    bill_date: str
    period_start: str
    period_end: str
    amount_cents: int
    remaining_cents: int
    due_date: str
    state: str


class Payment(NamedTuple):
    id: str
    date: str
    amount_cents: int
    channel: str
    method_type: str
    method_name: str


def _mix(a: int, b: int, c: int) -> int:
    """A 64-bit hash of three integers (splitmix64 finaliser); cheap and well spread."""
    x = (a * 0x9E3779B97F4A7C15 + b * 0xBF58476D1CE4E5B9 + c * 0x94D049BB133111EB) & _M64
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & _M64
    x ^= x >> 29
    return x


@lru_cache(maxsize=256)
def _month_dates(month_key: int) -> tuple[dt.date, dt.date]:
    year, month0 = divmod(month_key, 12)
    first = dt.date(year, month0 + 1, 1)
    last = first.replace(day=calendar.monthrange(year, month0 + 1)[1])
    return first, last


def _bill_amount(salt: int, index: int, base_fee_cents: int, month_key: int) -> int:
    h = _mix(salt, index, month_key)
    factor = 0.92 + (h & 0xFFFF) / 0xFFFF * 0.38
    extras = (h >> 16) % 1500 if (h >> 40) % 4 == 0 else 0  # roaming, value-added services
    return int(base_fee_cents * factor) + extras


def _state(position: int, account_type: str, arrears: int, h: int, amount: int) -> tuple[str, int]:
    """(state, remaining) of the bill ``position`` months back (0 = newest)."""
    if account_type == "prepaid" or position >= 2:
        return "settled", 0
    if position == 0:
        return ("settled", 0) if h % 10 < 4 else ("new", amount)
    if arrears == 1:
        return "new", amount
    if arrears == 2:
        return "partiallyPaid", amount * (30 + h % 41) // 100
    return "settled", 0


def bills(
    seed: int,
    index: int,
    account_id: str,
    base_fee_cents: int,
    account_type: str,
    arrears: int,
) -> list[Bill]:
    """The twelve monthly bills of an account, newest first."""
    salt = seed_keys(seed).offsets[5]
    digits = account_id[2:]
    out = []
    for position in range(BILL_MONTHS):
        month_key = _NEWEST_MONTH - position
        first, last = _month_dates(month_key)
        bill_day = last + dt.timedelta(days=1)
        amount = _bill_amount(salt, index, base_fee_cents, month_key)
        state, remaining = _state(
            position, account_type, arrears, _mix(salt, index, -month_key), amount
        )
        yyyymm = f"{first.year}{first.month:02d}"
        out.append(
            Bill(
                f"CB{digits}{yyyymm}",
                f"{yyyymm}{digits}",
                bill_day.isoformat(),
                f"{first.isoformat()}T00:00:00{TZ}",
                f"{last.isoformat()}T23:59:59{TZ}",
                amount,
                remaining,
                (bill_day + dt.timedelta(days=20)).isoformat(),
                state,
            )
        )
    return out


_CHANNELS = {
    "alipay": ("alipay", "DigitalWallet"),
    "wechat": ("wechat", "DigitalWallet"),
    "bankCard": ("bank", "BankCard"),
    "cash": ("store", "Cash"),
}


def payments(
    seed: int, index: int, payment_method: str, account_bills: list[Bill]
) -> list[Payment]:
    """One payment per settled or partly paid bill, newest first."""
    salt = seed_keys(seed).offsets[6]
    channel, method_type = _CHANNELS[payment_method]
    out = []
    for bill in account_bills:
        paid = bill.amount_cents - bill.remaining_cents
        if paid <= 0:
            continue
        h = _mix(salt, index, int(bill.bill_date.replace("-", "")))
        day = dt.date.fromisoformat(bill.bill_date) + dt.timedelta(days=int(h % 15))
        day = min(day, AS_OF)
        seconds = 8 * 3600 + (h >> 8) % (14 * 3600)
        hours, rest = divmod(seconds, 3600)
        # Some wallet users pay through the operator's app instead.
        pay_channel = "app" if channel in ("alipay", "wechat") and (h >> 32) % 3 == 0 else channel
        out.append(
            Payment(
                f"PM{bill.id[2:]}",
                f"{day.isoformat()}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}{TZ}",
                paid,
                pay_channel,
                method_type,
                payment_method,
            )
        )
    return out


def seeded_balance(
    seed: int,
    index: int,
    base_fee_cents: int,
    account_type: str,
    arrears: int,
    prepaid_cents: int,
) -> tuple[int, int]:
    """(balance, overdue) in cents as seeded: prepaid credit, or minus what postpaid bills owe."""
    if account_type == "prepaid":
        return prepaid_cents, 0
    # The same arithmetic as ``bills`` for the two bills that can be open, without the rest.
    salt = seed_keys(seed).offsets[5]
    remaining = []
    for position in (0, 1):
        month_key = _NEWEST_MONTH - position
        amount = _bill_amount(salt, index, base_fee_cents, month_key)
        h = _mix(salt, index, -month_key)
        remaining.append(_state(position, account_type, arrears, h, amount)[1])
    return -(remaining[0] + remaining[1]), remaining[1]
