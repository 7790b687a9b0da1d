"""The BOSS store: customers, subscribers (lines), orders and idempotency keys in boss.db."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from simulators.dataset import CustomerBundle

TABLES = (
    """CREATE TABLE customer (
        customer_no INTEGER PRIMARY KEY, name TEXT NOT NULL, gender TEXT NOT NULL,
        cert_no TEXT NOT NULL, birth_date TEXT NOT NULL, address TEXT NOT NULL, email TEXT,
        cust_level TEXT NOT NULL, cust_segment TEXT NOT NULL, create_date TEXT NOT NULL,
        status TEXT NOT NULL)""",
    """CREATE TABLE subscriber (
        subscriber_no TEXT NOT NULL, customer_no INTEGER NOT NULL, msisdn TEXT NOT NULL,
        imsi TEXT NOT NULL, iccid TEXT NOT NULL, status TEXT NOT NULL,
        activation_date TEXT NOT NULL, offering_id TEXT NOT NULL, arpu_cents INTEGER NOT NULL,
        mou INTEGER NOT NULL, data_used_mb INTEGER NOT NULL, voice_used_min INTEGER NOT NULL,
        sms_used INTEGER NOT NULL)""",
    """CREATE TABLE offering_order (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL UNIQUE,
        subscriber_no TEXT NOT NULL, old_offering_id TEXT NOT NULL,
        new_offering_id TEXT NOT NULL, status TEXT NOT NULL, create_time TEXT NOT NULL)""",
    # One row per IdempotencyKey of ChangeOffering/CancelOrder: the order it produced.
    """CREATE TABLE idempotency (
        operation TEXT NOT NULL, idem_key TEXT NOT NULL, order_id TEXT NOT NULL,
        status TEXT NOT NULL, PRIMARY KEY (operation, idem_key)) WITHOUT ROWID""",
)

# Built after the bulk load: one sort per index is far cheaper than index upkeep per insert.
INDEXES = (
    "CREATE INDEX ix_customer_cert ON customer (cert_no)",
    "CREATE INDEX ix_customer_level ON customer (cust_level, customer_no)",
    "CREATE INDEX ix_customer_name ON customer (name, customer_no)",
    "CREATE UNIQUE INDEX ix_subscriber_no ON subscriber (subscriber_no)",
    "CREATE INDEX ix_subscriber_customer ON subscriber (customer_no)",
    "CREATE UNIQUE INDEX ix_subscriber_msisdn ON subscriber (msisdn)",
)

INSERT_CUSTOMER = "INSERT INTO customer VALUES (?,?,?,?,?,?,?,?,?,?,?)"
INSERT_SUBSCRIBER = "INSERT INTO subscriber VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"


def rows(bundles: Iterable[CustomerBundle]) -> tuple[list[tuple], list[tuple]]:
    """(customer rows, subscriber rows) of some customers, ready for executemany."""
    customers: list[tuple] = []
    subscribers: list[tuple] = []
    for bundle in bundles:
        c = bundle.customer
        customers.append(
            (
                int(c.customer_no),
                c.name,
                c.gender,
                c.cert_no,
                c.birth_date,
                c.address,
                c.email,
                c.cust_level,
                c.cust_segment,
                c.create_date,
                c.status,
            )
        )
        for s in bundle.subscribers:
            subscribers.append((s[0], int(s[1]), *s[2:]))
    return customers, subscribers


class CustomerRow(NamedTuple):
    customer_no: int
    name: str
    gender: str
    cert_no: str
    birth_date: str
    address: str
    email: str | None
    cust_level: str
    cust_segment: str
    create_date: str
    status: str


class SubscriberRow(NamedTuple):
    subscriber_no: str
    customer_no: int
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


class OrderRow(NamedTuple):
    order_id: str
    subscriber_no: str
    old_offering_id: str
    new_offering_id: str
    status: str
    create_time: str


_CUSTOMER_COLS = (
    "customer_no, name, gender, cert_no, birth_date, address, email, cust_level, "
    "cust_segment, create_date, status"
)
_SUBSCRIBER_COLS = (
    "subscriber_no, customer_no, msisdn, imsi, iccid, status, activation_date, offering_id, "
    "arpu_cents, mou, data_used_mb, voice_used_min, sms_used"
)
_ORDER_COLS = "order_id, subscriber_no, old_offering_id, new_offering_id, status, create_time"


def _marks(n: int) -> str:
    return ",".join("?" * n)


class BossStore:
    """Queries and changes of boss.db over one connection (used from one thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # Customers never change, so list totals can be remembered per filter.
        self._totals: dict[tuple[str | None, str | None], int] = {}

    def customers_by_no(self, numbers: Sequence[int]) -> list[CustomerRow]:
        sql = (
            f"SELECT {_CUSTOMER_COLS} FROM customer "  # noqa: S608 - placeholders only
            f"WHERE customer_no IN ({_marks(len(numbers))})"
        )
        found = {row[0]: CustomerRow(*row) for row in self._conn.execute(sql, tuple(numbers))}
        seen: set[int] = set()
        ordered = []
        for number in numbers:  # in the order asked, each once
            if number in found and number not in seen:
                seen.add(number)
                ordered.append(found[number])
        return ordered

    def customers_by_cert(self, cert_no: str) -> list[CustomerRow]:
        cur = self._conn.execute(
            f"SELECT {_CUSTOMER_COLS} FROM customer WHERE cert_no = ? ORDER BY customer_no",  # noqa: S608
            (cert_no,),
        )
        return [CustomerRow(*row) for row in cur]

    def customer_page(
        self, begin: int, fetch: int, level: str | None, name_prefix: str | None
    ) -> tuple[int, list[CustomerRow]]:
        where, params = self._list_filter(level, name_prefix)
        key = (level, name_prefix)
        total = self._totals.get(key)
        if total is None:
            total = self._conn.execute(
                f"SELECT count(*) FROM customer{where}",  # noqa: S608
                params,
            ).fetchone()[0]
            if len(self._totals) > 4096:
                self._totals.clear()
            self._totals[key] = total
        cur = self._conn.execute(
            f"SELECT {_CUSTOMER_COLS} FROM customer{where} ORDER BY customer_no LIMIT ? OFFSET ?",  # noqa: S608
            (*params, fetch, begin),
        )
        return total, [CustomerRow(*row) for row in cur]

    @staticmethod
    def _list_filter(level: str | None, name_prefix: str | None) -> tuple[str, tuple]:
        clauses: list[str] = []
        params: list[str] = []
        if level is not None:
            clauses.append("cust_level = ?")
            params.append(level)
        if name_prefix:
            # A range on the name index; LIKE would not use it for non-ASCII text.
            clauses.append("name >= ? AND name < ?")
            params.extend((name_prefix, name_prefix + "\U0010ffff"))
        return ((" WHERE " + " AND ".join(clauses)) if clauses else ""), tuple(params)

    def subscribers_of(self, customer_numbers: Sequence[int]) -> list[SubscriberRow]:
        cur = self._conn.execute(
            f"SELECT {_SUBSCRIBER_COLS} FROM subscriber "  # noqa: S608
            f"WHERE customer_no IN ({_marks(len(customer_numbers))}) ORDER BY customer_no, rowid",
            tuple(customer_numbers),
        )
        return [SubscriberRow(*row) for row in cur]

    def subscriber_by_msisdn(self, msisdn: str) -> SubscriberRow | None:
        row = self._conn.execute(
            f"SELECT {_SUBSCRIBER_COLS} FROM subscriber WHERE msisdn = ?",  # noqa: S608
            (msisdn,),
        ).fetchone()
        return SubscriberRow(*row) if row else None

    def subscriber_at(self, position: int) -> SubscriberRow | None:
        """The line at ``position`` (0-based, by rowid): the event generator's random pick."""
        row = self._conn.execute(
            f"SELECT {_SUBSCRIBER_COLS} FROM subscriber WHERE rowid > ? ORDER BY rowid LIMIT 1",  # noqa: S608
            (position,),
        ).fetchone()
        return SubscriberRow(*row) if row else None

    def subscriber_count(self) -> int:
        return int(self._conn.execute("SELECT max(rowid) FROM subscriber").fetchone()[0] or 0)

    def subscriber(self, subscriber_no: str) -> SubscriberRow | None:
        row = self._conn.execute(
            f"SELECT {_SUBSCRIBER_COLS} FROM subscriber WHERE subscriber_no = ?",  # noqa: S608
            (subscriber_no,),
        ).fetchone()
        return SubscriberRow(*row) if row else None

    def order(self, order_id: str) -> OrderRow | None:
        row = self._conn.execute(
            f"SELECT {_ORDER_COLS} FROM offering_order WHERE order_id = ?",  # noqa: S608
            (order_id,),
        ).fetchone()
        return OrderRow(*row) if row else None

    def remembered(self, operation: str, key: str) -> tuple[str, str] | None:
        """(OrderId, Status) first answered for an idempotency key, if any."""
        row = self._conn.execute(
            "SELECT order_id, status FROM idempotency WHERE operation = ? AND idem_key = ?",
            (operation, key),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def change_offering(self, subscriber_no: str, old: str, new: str, key: str) -> str:
        """Switch the line's offering and record the order; returns the new OrderId."""
        now = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8)))
        with self._conn:  # one transaction: order, line and key together or not at all
            self._conn.execute("BEGIN")
            cur = self._conn.execute(
                "INSERT INTO offering_order (order_id, subscriber_no, old_offering_id, "
                "new_offering_id, status, create_time) VALUES ('', ?, ?, ?, 'COMPLETED', ?)",
                (subscriber_no, old, new, now.isoformat(timespec="seconds")),
            )
            order_id = f"ORD{now:%Y%m%d}{cur.lastrowid:08d}"
            self._conn.execute(
                "UPDATE offering_order SET order_id = ? WHERE seq = ?", (order_id, cur.lastrowid)
            )
            self._conn.execute(
                "UPDATE subscriber SET offering_id = ? WHERE subscriber_no = ?",
                (new, subscriber_no),
            )
            self._conn.execute(
                "INSERT INTO idempotency VALUES ('ChangeOffering', ?, ?, 'COMPLETED')",
                (key, order_id),
            )
        return order_id

    def cancel_order(self, order: OrderRow, key: str) -> None:
        """Mark the order cancelled and switch its line back to the old offering."""
        with self._conn:
            self._conn.execute("BEGIN")
            if order.status != "CANCELLED":
                self._conn.execute(
                    "UPDATE offering_order SET status = 'CANCELLED' WHERE order_id = ?",
                    (order.order_id,),
                )
                self._conn.execute(
                    "UPDATE subscriber SET offering_id = ? WHERE subscriber_no = ?",
                    (order.old_offering_id, order.subscriber_no),
                )
            self._conn.execute(
                "INSERT INTO idempotency VALUES ('CancelOrder', ?, ?, 'CANCELLED')",
                (key, order.order_id),
            )
