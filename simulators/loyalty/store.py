"""The loyalty store (loyalty.db): members, the postings made through the service, and the
redemptions remembered per requestId.

Both instances serve from the same file; each answers only the members of its own MSISDN range
and keeps its own requestIds.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from simulators.loyalty.members import Entry, Member, MemberSource, member_of

TABLES = (
    """CREATE TABLE member (
        member_no TEXT PRIMARY KEY, member_index INTEGER NOT NULL, msisdn TEXT NOT NULL,
        full_name TEXT NOT NULL, tier TEXT NOT NULL, points_balance INTEGER NOT NULL,
        points_expiring INTEGER NOT NULL, expiry_date TEXT NOT NULL, enrolled_on TEXT NOT NULL,
        status TEXT NOT NULL, spend_level TEXT NOT NULL) WITHOUT ROWID""",
    # Postings made through the service (redemptions); the seeded ones are computed on read.
    """CREATE TABLE points_entry (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, member_no TEXT NOT NULL,
        posted_at TEXT NOT NULL, points INTEGER NOT NULL, reason TEXT NOT NULL)""",
    # One row per successful redemption: what it was for, and the answer it got.
    """CREATE TABLE redemption (
        instance TEXT NOT NULL, request_id TEXT NOT NULL, member_no TEXT NOT NULL,
        points INTEGER NOT NULL, reward_code TEXT NOT NULL, redemption_id TEXT NOT NULL,
        points_balance INTEGER NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (instance, request_id)) WITHOUT ROWID""",
)
INDEXES = (
    "CREATE UNIQUE INDEX ix_member_msisdn ON member (msisdn)",
    "CREATE INDEX ix_points_entry_member ON points_entry (member_no, seq)",
)
INSERT_MEMBER = "INSERT INTO member VALUES (?,?,?,?,?,?,?,?,?,?,?)"

_MEMBER_COLS = (
    "member_no, member_index, msisdn, full_name, tier, points_balance, points_expiring, "
    "expiry_date, enrolled_on, status, spend_level"
)
_CST = dt.timezone(dt.timedelta(hours=8))


def rows(seed: int, sources: Iterable[MemberSource]) -> list[tuple]:
    """Member rows of some customers (the non-members left out), ready for executemany."""
    return [tuple(m) for source in sources if (m := member_of(seed, source)) is not None]


class Redemption(NamedTuple):
    member_no: str
    points: int
    reward_code: str
    redemption_id: str
    points_balance: int


def _marks(n: int) -> str:
    return ",".join("?" * n)


class LoyaltyStore:
    """Queries and changes of loyalty.db over one connection (used from one thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def members_by_msisdn(self, msisdns: Sequence[str]) -> dict[str, Member]:
        """E.164 MSISDN -> member, for those that are members."""
        cur = self._conn.execute(
            f"SELECT {_MEMBER_COLS} FROM member WHERE msisdn IN ({_marks(len(msisdns))})",  # noqa: S608
            tuple(msisdns),
        )
        return {row[2]: Member(*row) for row in cur}

    def members_by_no(self, numbers: Sequence[str]) -> dict[str, Member]:
        cur = self._conn.execute(
            f"SELECT {_MEMBER_COLS} FROM member WHERE member_no IN ({_marks(len(numbers))})",  # noqa: S608
            tuple(numbers),
        )
        return {row[0]: Member(*row) for row in cur}

    def member(self, member_no: str) -> Member | None:
        return self.members_by_no([member_no]).get(member_no)

    def posted_count(self, member_no: str) -> int:
        return self._conn.execute(
            "SELECT count(*) FROM points_entry WHERE member_no = ?", (member_no,)
        ).fetchone()[0]

    def posted_entries(self, member_no: str, offset: int, limit: int) -> list[Entry]:
        """Postings made through the service, newest first."""
        cur = self._conn.execute(
            "SELECT seq, posted_at, points, reason FROM points_entry WHERE member_no = ? "
            "ORDER BY seq DESC LIMIT ? OFFSET ?",
            (member_no, limit, offset),
        )
        return [Entry(f"PR{seq:012d}", at, points, reason) for seq, at, points, reason in cur]

    def remembered(self, instance: str, request_id: str) -> Redemption | None:
        row = self._conn.execute(
            "SELECT member_no, points, reward_code, redemption_id, points_balance "
            "FROM redemption WHERE instance = ? AND request_id = ?",
            (instance, request_id),
        ).fetchone()
        return Redemption(*row) if row else None

    def redeem(
        self, instance: str, request_id: str, member: Member, points: int, reward_code: str
    ) -> Redemption | None:
        """Take ``points`` off the member's balance, post the entry, remember the request.

        None when the balance no longer covers it (re-read inside the transaction).
        """
        now = dt.datetime.now(_CST).replace(microsecond=0)
        with self._conn:  # balance, entry and requestId together or not at all
            self._conn.execute("BEGIN IMMEDIATE")
            balance = self._conn.execute(
                "SELECT points_balance FROM member WHERE member_no = ?", (member.member_no,)
            ).fetchone()[0]
            if balance < points:
                return None
            self._conn.execute(
                "UPDATE member SET points_balance = points_balance - ?, "
                "points_expiring = max(0, min(points_expiring - ?, points_balance - ?)) "
                "WHERE member_no = ?",
                (points, points, points, member.member_no),
            )
            cur = self._conn.execute(
                "INSERT INTO points_entry (member_no, posted_at, points, reason) "
                "VALUES (?, ?, ?, ?)",
                (member.member_no, now.isoformat(), -points, f"积分兑换：{reward_code}"),
            )
            redemption_id = f"RD{now:%Y%m%d}{cur.lastrowid:010d}"
            answer = Redemption(
                member.member_no, points, reward_code, redemption_id, balance - points
            )
            self._conn.execute(
                "INSERT INTO redemption VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (instance, request_id, *answer, now.isoformat()),
            )
        return answer
