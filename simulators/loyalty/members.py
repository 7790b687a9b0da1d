"""Who is a member of Aurora Loyalty, and each member's points, tier and seeded history.

Everything is a pure function of (seed, customer index) and a few facts of the BOSS customer
(name, status, star level, creation date, first line), so the seeder can derive the members
from the generated customers and an old data dir can derive the same ones from boss.db.

A member's seeded history is not stored: like the bills of the billing system it is recomputed
on read from (seed, customer index, enrolment date, star level); the seeder sums the same
postings into the stored balance, so balance and history always agree. Postings made through
the service (redemptions) are stored and listed before the seeded ones, which all lie at or
before the dataset's "today".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from functools import lru_cache
from typing import NamedTuple

from simulators.dataset import MAX_CUSTOMERS
from simulators.reference import AS_OF, TZ

# Bump with any change to the derivation below: loyalty.db is then rebuilt, the others stay.
LOYALTY_VERSION = "1"

MEMBER_SHARE = 0.6
FROZEN_SHARE = 0.02
WINDOW_MONTHS = 12  # months of monthly postings a member's history goes back
EXPIRY_DATE = "2026-12-31"  # points earned up to the end of 2025 expire at the end of 2026
_EXPIRING_UNTIL = dt.date(2025, 12, 31).toordinal()
WELCOME_BONUS = 200

# Member numbers: an affine bijection of the customer index onto [0, 2e9), zero-padded to ten
# digits, so half of them start with 0 (a caller that treats them as numbers loses digits).
_MEMBER_SPACE = 2_000_000_000
_MEMBER_MUL = 1_103_515_243  # coprime to 2 and 5, hence to 2e9
assert MAX_CUSTOMERS < _MEMBER_SPACE < 1 << 31

# Monthly points by BOSS star level: one point per yuan of a typical bill of that level.
_MONTHLY_POINTS = {"1": 40, "2": 90, "3": 170, "4": 300, "5": 520}
_CARRY_OVER_MAX = {"1": 1500, "2": 3000, "3": 6000, "4": 10000, "5": 18000}
# Tier by points earned in the last 12 months.
_TIERS = ((6000, "PLATINUM"), (3000, "GOLD"), (1200, "SILVER"), (0, "BRONZE"))
REWARDS: tuple[tuple[int, str], ...] = (
    (500, "10元话费券"),
    (1000, "1GB流量包"),
    (2000, "视频会员月卡"),
    (5000, "蓝牙耳机"),
)
_REDEEM_SHARE = 0.1  # chance, after each monthly posting, that the member redeems something

# Months are counted as year * 12 + (month - 1). Points for a month are posted on the 3rd of
# the month after; the newest posting is the one before AS_OF.
_NEWEST_SPEND_MONTH = AS_OF.year * 12 + AS_OF.month - 2 - (1 if AS_OF.day < 3 else 0)
_OLDEST_SPEND_MONTH = _NEWEST_SPEND_MONTH - WINDOW_MONTHS + 1
_AS_OF_ORD = AS_OF.toordinal()


class MemberSource(NamedTuple):
    """What the loyalty system knows of a BOSS customer when it enrols them."""

    index: int
    name: str
    customer_status: str  # BOSS A | S
    cust_level: str  # BOSS star level 1-5
    create_date: str
    first_msisdn: str  # national, 11 digits: the line the membership is keyed to


class Member(NamedTuple):
    member_no: str
    index: int
    msisdn: str  # E.164
    full_name: str
    tier: str
    points_balance: int
    points_expiring: int
    expiry_date: str
    enrolled_on: str
    status: str
    spend_level: str


class Posting(NamedTuple):
    """A seeded history entry before formatting: day ordinal, second of day, points, reason."""

    ordinal: int
    second: int
    points: int
    reason: str


class Entry(NamedTuple):
    entry_id: str
    posted_at: str
    points: int
    reason: str


@lru_cache(maxsize=16)
def _seed_base(seed: int) -> int:
    digest = hashlib.sha256(f"aurora-loyalty:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") << 32


_M64 = (1 << 64) - 1


def is_member(seed: int, index: int) -> bool:
    """Whether customer ``index`` enrolled: a hash draw, far cheaper than a random stream for
    the customers who did not."""
    x = (_seed_base(seed) + index * 0x9E3779B97F4A7C15) & _M64
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & _M64
    x ^= x >> 29
    return (x >> 11) / (1 << 53) < MEMBER_SHARE


def _rng(seed: int, index: int) -> random.Random:
    """A member's stream: the enrolment draw, the status draw, then the history."""
    return random.Random(_seed_base(seed) + index)


def member_no(seed: int, index: int) -> str:
    offset = _seed_base(seed) >> 32
    return f"{(index * _MEMBER_MUL + offset) % _MEMBER_SPACE:010d}"


def e164(national: str) -> str:
    return f"+86{national}"


def _month_start(month: int) -> int:
    year, rest = divmod(month, 12)
    return dt.date(year, rest + 1, 1).toordinal()


def _monthly_postings() -> tuple[tuple[int, str], ...]:
    """(posting day, reason) of each month of the window, oldest first: the 3rd of the month
    after the one the points are for."""
    out = []
    for month in range(_OLDEST_SPEND_MONTH, _NEWEST_SPEND_MONTH + 1):
        year, rest = divmod(month, 12)
        out.append((_month_start(month + 1) + 2, f"月度消费积分（{year}年{rest + 1}月）"))
    return tuple(out)


_MONTHS = _monthly_postings()
_WINDOW_START = _month_start(_OLDEST_SPEND_MONTH + 1)
_TIER_SINCE = _MONTHS[-12][0]


@lru_cache(maxsize=65536)
def _ordinal(iso_date: str) -> int:
    # Cached: a million customers share some ten thousand creation dates.
    return dt.date.fromisoformat(iso_date).toordinal()


def _enrolment(rng: random.Random, create_date: str) -> int:
    created = _ordinal(create_date)
    return created + int(rng.random() * max(1, _AS_OF_ORD - 30 - created))


def seeded_postings(seed: int, index: int, enrolled_ord: int, level: str) -> list[Posting]:
    """The seeded history of a member, oldest first."""
    rng = _rng(seed, index)
    rng.random()  # the enrolment and status draws of member_of
    rng.random()
    return _postings(rng, enrolled_ord, level)


def _postings(rng: random.Random, enrolled_ord: int, level: str) -> list[Posting]:
    """The postings drawn from a member's stream; the running balance never goes negative."""
    r = rng.random
    postings: list[Posting] = []
    balance = 0
    if enrolled_ord < _WINDOW_START:
        carried = int(r() * _CARRY_OVER_MAX[level])
        postings.append(Posting(_WINDOW_START, 0, carried, "历史积分结转"))
        balance = carried
    else:
        postings.append(
            Posting(enrolled_ord, 9 * 3600 + int(r() * 11 * 3600), WELCOME_BONUS, "入会奖励")
        )
        balance = WELCOME_BONUS
    monthly = _MONTHLY_POINTS[level]
    for day, reason in _MONTHS:
        if day <= enrolled_ord:
            continue
        points = int(monthly * (0.6 + 0.8 * r()))
        postings.append(Posting(day, 2 * 3600, points, reason))
        balance += points
        if r() < _REDEEM_SHARE:
            affordable = [reward for reward in REWARDS if reward[0] <= balance]
            if affordable:
                cost, name = affordable[int(r() * len(affordable))]
                when = min(_AS_OF_ORD, day + 1 + int(r() * 25))
                postings.append(
                    Posting(when, 8 * 3600 + int(r() * 14 * 3600), -cost, f"积分兑换：{name}")
                )
                balance -= cost
    return postings


def member_of(seed: int, source: MemberSource) -> Member | None:
    """The membership of a customer, or None for the customers who never enrolled."""
    if not is_member(seed, source.index):
        return None
    rng = _rng(seed, source.index)
    enrolled = _enrolment(rng, source.create_date)
    frozen = rng.random() < FROZEN_SHARE or source.customer_status == "S"
    balance = early = spent = recent = 0
    for ordinal, _, points, _ in _postings(rng, enrolled, source.cust_level):
        balance += points
        if points < 0:
            spent -= points
        else:
            if ordinal <= _EXPIRING_UNTIL:
                early += points
            if ordinal >= _TIER_SINCE:
                recent += points
    tier = next(name for floor, name in _TIERS if recent >= floor)
    return Member(
        member_no(seed, source.index),
        source.index,
        e164(source.first_msisdn),
        source.name,
        tier,
        balance,
        # Redemptions use the oldest points first, so what expires is what was earned by the
        # end of 2025 and not redeemed since.
        min(balance, max(0, early - spent)),
        EXPIRY_DATE,
        dt.date.fromordinal(enrolled).isoformat(),
        "FROZEN" if frozen else "ACTIVE",
        source.cust_level,
    )


def _iso_time(ordinal: int, second: int) -> str:
    hours, rest = divmod(second, 3600)
    day = dt.date.fromordinal(ordinal).isoformat()
    return f"{day}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}{TZ}"


def seeded_entries(seed: int, member: Member) -> list[Entry]:
    """The seeded history of a member as the service lists it: newest first."""
    enrolled = _ordinal(member.enrolled_on)
    postings = seeded_postings(seed, member.index, enrolled, member.spend_level)
    entries = [
        Entry(f"PE{member.member_no}{pos:03d}", _iso_time(p.ordinal, p.second), p.points, p.reason)
        for pos, p in enumerate(postings)
    ]
    entries.reverse()
    return entries
