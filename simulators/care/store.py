"""The care store: parties, trouble tickets, interactions and idempotency keys in care.db."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from simulators.dataset import CustomerBundle
from simulators.identifiers import CREATED_NUMBER_BASE

TABLES = (
    """CREATE TABLE party (
        idx INTEGER PRIMARY KEY, id TEXT NOT NULL, full_name TEXT NOT NULL,
        family_name TEXT NOT NULL, given_name TEXT NOT NULL, phone TEXT NOT NULL, email TEXT,
        id_card TEXT NOT NULL)""",
    # related: the relatedParty list as posted; NULL for seeded tickets (one customer party).
    """CREATE TABLE ticket (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL, party_id TEXT NOT NULL, name TEXT NOT NULL,
        description TEXT NOT NULL, ticket_type TEXT NOT NULL, severity TEXT NOT NULL,
        priority TEXT NOT NULL, status TEXT NOT NULL, creation_date TEXT NOT NULL,
        last_update TEXT NOT NULL, channel TEXT, notes TEXT NOT NULL, related TEXT)""",
    """CREATE TABLE interaction (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL, party_id TEXT NOT NULL,
        start_time TEXT NOT NULL, end_time TEXT NOT NULL, channel TEXT NOT NULL,
        direction TEXT NOT NULL, reason TEXT NOT NULL, description TEXT NOT NULL,
        status TEXT NOT NULL, related TEXT)""",
    """CREATE TABLE idempotency (
        kind TEXT NOT NULL, idem_key TEXT NOT NULL, resource_id TEXT NOT NULL,
        PRIMARY KEY (kind, idem_key)) WITHOUT ROWID""",
)

INDEXES = (
    "CREATE UNIQUE INDEX ix_party_id ON party (id)",
    "CREATE INDEX ix_party_id_card ON party (id_card)",
    "CREATE INDEX ix_party_phone ON party (phone)",
    "CREATE UNIQUE INDEX ix_ticket_id ON ticket (id)",
    "CREATE INDEX ix_ticket_party ON ticket (party_id, creation_date)",
    "CREATE UNIQUE INDEX ix_interaction_id ON interaction (id)",
    "CREATE INDEX ix_interaction_party ON interaction (party_id, start_time)",
)

INSERT_PARTY = "INSERT INTO party VALUES (?,?,?,?,?,?,?,?)"
INSERT_TICKET = (
    "INSERT INTO ticket (id, party_id, name, description, ticket_type, severity, priority, "
    "status, creation_date, last_update, channel, notes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
INSERT_INTERACTION = (
    "INSERT INTO interaction (id, party_id, start_time, end_time, channel, direction, reason, "
    "description, status) VALUES (?,?,?,?,?,?,?,?,?)"
)


def _notes_json(notes: Iterable[Any]) -> str:
    return json.dumps(
        [{"date": n.date, "author": n.author, "text": n.text} for n in notes], ensure_ascii=False
    )


def rows(bundles: Iterable[CustomerBundle]) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """(party rows, ticket rows, interaction rows) of some customers, for executemany."""
    parties: list[tuple] = []
    tickets: list[tuple] = []
    interactions: list[tuple] = []
    for bundle in bundles:
        parties.append(tuple(bundle.party))
        for t in bundle.tickets:
            tickets.append((*t[:11], _notes_json(t.notes)))
        interactions.extend(bundle.interactions)
    return parties, tickets, interactions


class PartyRow(NamedTuple):
    idx: int
    id: str
    full_name: str
    family_name: str
    given_name: str
    phone: str
    email: str | None
    id_card: str


class TicketRow(NamedTuple):
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
    channel: str | None
    notes: str
    related: str | None


class InteractionRow(NamedTuple):
    id: str
    party_id: str
    start_time: str
    end_time: str
    channel: str
    direction: str
    reason: str
    description: str
    status: str
    related: str | None


_PARTY_COLS = "idx, id, full_name, family_name, given_name, phone, email, id_card"
_TICKET_COLS = (
    "id, party_id, name, description, ticket_type, severity, priority, status, "
    "creation_date, last_update, channel, notes, related"
)
_INTERACTION_COLS = (
    "id, party_id, start_time, end_time, channel, direction, reason, description, status, related"
)


def _marks(n: int) -> str:
    return ",".join("?" * n)


class CareStore:
    """Queries and changes of care.db over one connection (used from one thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _count(self, table: str, where: str, params: Sequence[Any]) -> int:
        sql = f"SELECT count(*) FROM {table} WHERE {where}"  # noqa: S608 - fixed names only
        return self._conn.execute(sql, tuple(params)).fetchone()[0]

    def parties(
        self, field: str, values: Sequence[str], offset: int, limit: int
    ) -> tuple[int, list[PartyRow]]:
        column = {"id": "id", "identificationId": "id_card", "phoneNumber": "phone"}[field]
        where = f"{column} IN ({_marks(len(values))})"
        cur = self._conn.execute(
            f"SELECT {_PARTY_COLS} FROM party WHERE {where} ORDER BY id LIMIT ? OFFSET ?",  # noqa: S608
            (*values, limit, offset),
        )
        return self._count("party", where, values), [PartyRow(*row) for row in cur]

    def party_count(self) -> int:
        return int(self._conn.execute("SELECT max(idx) FROM party").fetchone()[0] or 0)

    def party_at(self, position: int) -> PartyRow | None:
        row = self._conn.execute(
            f"SELECT {_PARTY_COLS} FROM party WHERE idx >= ? ORDER BY idx LIMIT 1",  # noqa: S608
            (position,),
        ).fetchone()
        return PartyRow(*row) if row else None

    def tickets(
        self, party_ids: Sequence[str], offset: int, limit: int
    ) -> tuple[int, list[TicketRow]]:
        where = f"party_id IN ({_marks(len(party_ids))})"
        cur = self._conn.execute(
            f"SELECT {_TICKET_COLS} FROM ticket WHERE {where} "  # noqa: S608
            "ORDER BY creation_date DESC, id DESC LIMIT ? OFFSET ?",
            (*party_ids, limit, offset),
        )
        return self._count("ticket", where, party_ids), [TicketRow(*row) for row in cur]

    def ticket(self, ticket_id: str) -> TicketRow | None:
        row = self._conn.execute(
            f"SELECT {_TICKET_COLS} FROM ticket WHERE id = ?",  # noqa: S608
            (ticket_id,),
        ).fetchone()
        return TicketRow(*row) if row else None

    def interactions(
        self, party_ids: Sequence[str], offset: int, limit: int
    ) -> tuple[int, list[InteractionRow]]:
        where = f"party_id IN ({_marks(len(party_ids))})"
        cur = self._conn.execute(
            f"SELECT {_INTERACTION_COLS} FROM interaction WHERE {where} "  # noqa: S608
            "ORDER BY start_time DESC, id DESC LIMIT ? OFFSET ?",
            (*party_ids, limit, offset),
        )
        return self._count("interaction", where, party_ids), [InteractionRow(*row) for row in cur]

    def interaction(self, interaction_id: str) -> InteractionRow | None:
        row = self._conn.execute(
            f"SELECT {_INTERACTION_COLS} FROM interaction WHERE id = ?",  # noqa: S608
            (interaction_id,),
        ).fetchone()
        return InteractionRow(*row) if row else None

    def remembered(self, kind: str, key: str) -> str | None:
        row = self._conn.execute(
            "SELECT resource_id FROM idempotency WHERE kind = ? AND idem_key = ?", (kind, key)
        ).fetchone()
        return row[0] if row else None

    def _next_id(self, table: str, prefix: str) -> tuple[int, str]:
        # Created records number upwards from CREATED_NUMBER_BASE, above every seeded number.
        seq = self._conn.execute(f"SELECT coalesce(max(seq), 0) + 1 FROM {table}").fetchone()[0]  # noqa: S608
        return seq, f"{prefix}{CREATED_NUMBER_BASE + seq:010d}"

    def create_ticket(self, row: TicketRow, key: str | None) -> str:
        """Store a new ticket (its id is assigned here) and its idempotency key."""
        with self._conn:
            self._conn.execute("BEGIN")
            seq, ticket_id = self._next_id("ticket", "TT")
            self._conn.execute(
                f"INSERT INTO ticket (seq, {_TICKET_COLS}) VALUES ({_marks(14)})",  # noqa: S608
                (seq, ticket_id, *row[1:]),
            )
            if key:
                self._conn.execute(
                    "INSERT INTO idempotency VALUES ('ticket', ?, ?)", (key, ticket_id)
                )
        return ticket_id

    def update_ticket(
        self,
        ticket_id: str,
        changes: dict[str, str],
        notes: str,
        last_update: str,
        key: str | None = None,
    ) -> None:
        columns = ", ".join(f"{column} = ?" for column in changes)
        sets = f"{columns}, " if columns else ""
        with self._conn:  # the change and its idempotency key together or not at all
            self._conn.execute("BEGIN")
            self._conn.execute(
                f"UPDATE ticket SET {sets}notes = ?, last_update = ? WHERE id = ?",  # noqa: S608 - column names from a fixed set
                (*changes.values(), notes, last_update, ticket_id),
            )
            if key:
                self._conn.execute(
                    "INSERT INTO idempotency VALUES ('ticket_patch', ?, ?)", (key, ticket_id)
                )

    def create_interaction(self, row: InteractionRow, key: str | None) -> str:
        with self._conn:
            self._conn.execute("BEGIN")
            seq, interaction_id = self._next_id("interaction", "PI")
            self._conn.execute(
                f"INSERT INTO interaction (seq, {_INTERACTION_COLS}) VALUES ({_marks(11)})",  # noqa: S608
                (seq, interaction_id, *row[1:]),
            )
            if key:
                self._conn.execute(
                    "INSERT INTO idempotency VALUES ('interaction', ?, ?)", (key, interaction_id)
                )
        return interaction_id
