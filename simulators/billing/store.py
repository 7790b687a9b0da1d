"""The billing store: accounts, their service numbers and balance adjustments in billing.db."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from simulators.dataset import CustomerBundle

TABLES = (
    """CREATE TABLE account (
        idx INTEGER PRIMARY KEY, id TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
        account_type TEXT NOT NULL, cert_no TEXT NOT NULL, service_numbers TEXT NOT NULL,
        credit_limit_cents INTEGER NOT NULL, payment_method TEXT NOT NULL, bank_card TEXT,
        base_fee_cents INTEGER NOT NULL, arrears INTEGER NOT NULL,
        balance_cents INTEGER NOT NULL, overdue_cents INTEGER NOT NULL)""",
    "CREATE TABLE service_number (msisdn TEXT NOT NULL, account_idx INTEGER NOT NULL)",
    """CREATE TABLE adjustment (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL, doc TEXT NOT NULL)""",
)

INDEXES = (
    "CREATE UNIQUE INDEX ix_account_id ON account (id)",
    "CREATE INDEX ix_account_cert ON account (cert_no)",
    "CREATE UNIQUE INDEX ix_service_number ON service_number (msisdn)",
)

INSERT_ACCOUNT = "INSERT INTO account VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
INSERT_SERVICE_NUMBER = "INSERT INTO service_number VALUES (?,?)"


def rows(bundles: Iterable[CustomerBundle]) -> tuple[list[tuple], list[tuple]]:
    """(account rows, service-number rows) of some customers, ready for executemany."""
    accounts: list[tuple] = []
    numbers: list[tuple] = []
    for bundle in bundles:
        a = bundle.account
        accounts.append((*a[:6], ",".join(a.service_numbers), *a[7:]))
        numbers.extend((msisdn, a.index) for msisdn in a.service_numbers)
    return accounts, numbers


class AccountRow(NamedTuple):
    idx: int
    id: str
    name: str
    state: str
    account_type: str
    cert_no: str
    service_numbers: str
    credit_limit_cents: int
    payment_method: str
    bank_card: str | None
    base_fee_cents: int
    arrears: int
    balance_cents: int
    overdue_cents: int


_COLS = (
    "a.idx, a.id, a.name, a.state, a.account_type, a.cert_no, a.service_numbers, "
    "a.credit_limit_cents, a.payment_method, a.bank_card, a.base_fee_cents, a.arrears, "
    "a.balance_cents, a.overdue_cents"
)


def _marks(n: int) -> str:
    return ",".join("?" * n)


class BillingStore:
    """Queries and changes of billing.db over one connection (used from one thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _select(
        self, where: str, params: Sequence[Any], offset: int, limit: int
    ) -> list[AccountRow]:
        cur = self._conn.execute(
            f"SELECT {_COLS} FROM account a {where} ORDER BY a.id LIMIT ? OFFSET ?",  # noqa: S608
            (*params, limit, offset),
        )
        return [AccountRow(*row) for row in cur]

    def _count(self, where: str, params: Sequence[Any]) -> int:
        return self._conn.execute(
            f"SELECT count(*) FROM account a {where}",  # noqa: S608
            tuple(params),
        ).fetchone()[0]

    def accounts(
        self, field: str, values: Sequence[str], offset: int, limit: int
    ) -> tuple[int, list[AccountRow]]:
        """(total, page) of accounts whose ``field`` (id, cert, msisdn) is one of ``values``."""
        marks = _marks(len(values))
        where = {
            "id": f"WHERE a.id IN ({marks})",
            "cert": f"WHERE a.cert_no IN ({marks})",
            "msisdn": (
                f"WHERE a.idx IN (SELECT account_idx FROM service_number WHERE msisdn IN ({marks}))"  # noqa: S608
            ),
        }[field]
        return self._count(where, values), self._select(where, values, offset, limit)

    def account_count(self) -> int:
        return int(self._conn.execute("SELECT max(idx) FROM account").fetchone()[0] or 0)

    def account_at(self, position: int) -> AccountRow | None:
        row = self._conn.execute(
            f"SELECT {_COLS} FROM account a WHERE a.idx >= ? ORDER BY a.idx LIMIT 1",  # noqa: S608
            (position,),
        ).fetchone()
        return AccountRow(*row) if row else None

    def account(self, account_id: str) -> AccountRow | None:
        found = self._select("WHERE a.id = ?", (account_id,), 0, 1)
        return found[0] if found else None

    def adjustment_for_key(self, key: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT doc FROM adjustment WHERE idem_key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def adjust(
        self, account: AccountRow, cents: int, reason: str, adjust_type: str, key: str
    ) -> dict[str, Any]:
        """Apply a credit (+) or debit (-) to the balance and store the adjustment."""
        delta = cents if adjust_type == "credit" else -cents
        now = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8)))
        with self._conn:
            self._conn.execute("BEGIN")
            seq = self._conn.execute(
                "INSERT INTO adjustment (idem_key, account_id, doc) VALUES (?, ?, '')",
                (key, account.id),
            ).lastrowid
            # A credit pays off what is overdue first.
            self._conn.execute(
                "UPDATE account SET balance_cents = balance_cents + ?, "
                "overdue_cents = MIN(overdue_cents, MAX(0, -(balance_cents + ?))) WHERE idx = ?",
                (delta, delta, account.idx),
            )
            balance = self._conn.execute(
                "SELECT balance_cents FROM account WHERE idx = ?", (account.idx,)
            ).fetchone()[0]
            adjustment_id = f"ADJ{now:%Y%m%d}{seq:08d}"
            doc = {
                "id": adjustment_id,
                "href": f"/tmf-api/prepayBalanceManagement/v4/adjustBalance/{adjustment_id}",
                "@type": "AdjustBalance",
                "billingAccount": {"id": account.id},
                "amount": {"unit": "CNY", "value": round(cents / 100, 2)},
                "adjustType": adjust_type,
                "reason": reason,
                "status": "completed",
                "creationDate": now.isoformat(timespec="seconds"),
                "balanceAfter": {"unit": "CNY", "value": round(balance / 100, 2)},
            }
            self._conn.execute(
                "UPDATE adjustment SET doc = ? WHERE seq = ?",
                (json.dumps(doc, ensure_ascii=False), seq),
            )
        return doc
