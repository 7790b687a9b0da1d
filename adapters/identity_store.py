"""The hub's identity crosswalk: a stable hub customer id and each system's keys for it.

Stored with SQLAlchemy (SQLite by default, PostgreSQL when scaled). Resolution is recorded per
customer and system, so a system that could not be asked stays unresolved and is asked again
later, while a link or a conflict is never re-guessed. "Absent" (the system had no record for
the customer) is not final: systems open records every day, so an absent outcome older than
``absent_recheck_s`` counts as unresolved again, and the next request that needs the system
asks it once more (then linked, or absent for another period).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

metadata = MetaData()

identity_customer = Table(
    "identity_customer",
    metadata,
    Column("hub_id", String(32), primary_key=True),
    Column("customer_no", String(32), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

identity_link = Table(
    "identity_link",
    metadata,
    Column("system", String(16), primary_key=True),
    Column("external_key", String(64), primary_key=True),
    Column("hub_id", String(32), ForeignKey("identity_customer.hub_id"), nullable=False),
    Column("matched_on", String(32), nullable=False),
    Index("ix_identity_link_hub_id", "hub_id"),
)

identity_resolution = Table(
    "identity_resolution",
    metadata,
    Column("hub_id", String(32), ForeignKey("identity_customer.hub_id"), primary_key=True),
    Column("system", String(16), primary_key=True),
    Column("outcome", String(16), nullable=False),  # linked | absent | conflict
    Column("resolved_at", DateTime(timezone=True), nullable=False),
)

identity_conflict = Table(
    "identity_conflict",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hub_id", String(32), ForeignKey("identity_customer.hub_id"), nullable=False),
    Column("system", String(16), nullable=False),
    Column("kind", String(48), nullable=False),
    # Names record ids of the systems only, never personal data.
    Column("detail", String(256), nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
    Index("ix_identity_conflict_hub_id", "hub_id"),
)


@dataclass(frozen=True, slots=True)
class Link:
    system: str
    key: str
    matched_on: str


@dataclass(frozen=True, slots=True)
class Conflict:
    system: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class SystemResolution:
    """What resolving one customer against one system found."""

    system: str
    links: tuple[Link, ...] = ()
    conflicts: tuple[Conflict, ...] = ()

    @property
    def outcome(self) -> str:
        if self.conflicts:
            return "conflict"
        return "linked" if self.links else "absent"


@dataclass(frozen=True, slots=True)
class Identity:
    """One customer as the hub knows them across systems."""

    hub_id: str
    customer_no: str
    links: tuple[Link, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    outcomes: dict[str, str] = field(default_factory=dict)
    #: When the oldest "absent" outcome in ``outcomes`` falls due to be asked again.
    recheck_at: datetime | None = None

    def keys(self, system: str) -> tuple[str, ...]:
        return tuple(link.key for link in self.links if link.system == system)

    def is_resolved(self, system: str) -> bool:
        return system in self.outcomes

    def conflicts_in(self, system: str) -> tuple[Conflict, ...]:
        return tuple(c for c in self.conflicts if c.system == system)


def new_hub_id() -> str:
    # Random, not derived from any system's key: it must outlive renumbering in any of them.
    return "cus_" + secrets.token_hex(10)


def _now() -> datetime:
    return datetime.now(UTC)


#: Systems whose resolution settles an identity for good (see IdentityStore's cache).
SETTLED_WHEN_RESOLVED = ("billing", "care")
#: Settled identities kept per process by default (setting ``identity.settled_remembered``).
SETTLED_REMEMBERED = 200_000
#: How long "absent in a system" holds before the system is asked again, by default
#: (setting ``identity.absent_recheck_s``).
ABSENT_RECHECK_S = 3600.0


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class IdentityStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        remembered: int = SETTLED_REMEMBERED,
        absent_recheck_s: float = ABSENT_RECHECK_S,
    ) -> None:
        self._engine = engine
        self._remembered = remembered
        self._absent_recheck = timedelta(seconds=absent_recheck_s)
        # Identities resolved in every system never change afterwards (links are only added
        # for a system still unresolved), so they are kept in memory: the crosswalk then costs
        # no database round trip on the hot path, in every replica alike.
        self._settled_by_hub_id: dict[str, Identity] = {}
        self._settled_by_customer_no: dict[str, Identity] = {}

    async def by_hub_ids(self, hub_ids: Sequence[str]) -> dict[str, Identity]:
        return await self._lookup(
            identity_customer.c.hub_id, hub_ids, self._settled_by_hub_id, lambda i: i.hub_id
        )

    async def by_customer_nos(self, customer_nos: Sequence[str]) -> dict[str, Identity]:
        return await self._lookup(
            identity_customer.c.customer_no,
            customer_nos,
            self._settled_by_customer_no,
            lambda i: i.customer_no,
        )

    async def _lookup(
        self,
        column: Column,
        keys: Sequence[str],
        settled: dict[str, Identity],
        key_of: Callable[[Identity], str],
    ) -> dict[str, Identity]:
        """Identities by one of their keys: settled ones from memory, the rest from the table
        (and those whose "absent" outcome falls due to be asked again)."""
        now = _now()
        found = {
            k: i
            for k in keys
            if (i := settled.get(k)) is not None and (i.recheck_at is None or i.recheck_at > now)
        }
        missing = [k for k in keys if k not in found]
        if missing:
            async with self._engine.connect() as conn:
                rows = await conn.execute(select(identity_customer).where(column.in_(missing)))
                pairs = {r.hub_id: r.customer_no for r in rows}
                identities = self._remember(await self._assemble(conn, pairs))
            found.update({key_of(i): i for i in identities.values()})
        return found

    async def refresh(self, customer_nos: Sequence[str]) -> dict[str, Identity]:
        """Identities read from the table, replacing what this process kept in memory.

        Systems resolved lazily (when a query first asks for them) add links to identities
        that were already settled; another replica may have recorded them, so the lazy path
        reads the table before it asks the system again.
        """
        if not customer_nos:
            return {}
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(identity_customer).where(identity_customer.c.customer_no.in_(customer_nos))
            )
            pairs = {r.hub_id: r.customer_no for r in rows}
            identities = await self._assemble(conn, pairs)
        for identity in identities.values():
            if identity.hub_id in self._settled_by_hub_id:
                self._settled_by_hub_id[identity.hub_id] = identity
                self._settled_by_customer_no[identity.customer_no] = identity
        return {i.customer_no: i for i in identities.values()}

    def _remember(self, identities: dict[str, Identity]) -> dict[str, Identity]:
        for identity in identities.values():
            if self._remembered == 0 or not all(
                identity.is_resolved(s) for s in SETTLED_WHEN_RESOLVED
            ):
                continue
            if len(self._settled_by_hub_id) >= self._remembered:
                # Emptied, not evicted one by one: settled identities never change, so the
                # next lookups refill it from the table at one round trip per batch.
                self._settled_by_hub_id.clear()
                self._settled_by_customer_no.clear()
            self._settled_by_hub_id[identity.hub_id] = identity
            self._settled_by_customer_no[identity.customer_no] = identity
        return identities

    async def ensure_customers(self, customer_nos: Iterable[str]) -> dict[str, str]:
        """The hub id of each customer number, minting ids for new ones (race-safe)."""
        wanted = list(dict.fromkeys(customer_nos))
        if not wanted:
            return {}
        async with self._engine.begin() as conn:
            rows = [
                {"hub_id": new_hub_id(), "customer_no": no, "created_at": _now()} for no in wanted
            ]
            # A concurrent request may mint the same customer: the unique customer number
            # decides, and everyone reads back the winner's id.
            await conn.execute(self._insert_ignoring_duplicates(identity_customer), rows)
            found = await conn.execute(
                select(identity_customer.c.customer_no, identity_customer.c.hub_id).where(
                    identity_customer.c.customer_no.in_(wanted)
                )
            )
            return {r.customer_no: r.hub_id for r in found}

    async def record(self, found: Mapping[str, Iterable[SystemResolution]]) -> None:
        """Store, in one transaction, what resolution found per hub id and system."""
        now = _now()
        links, conflicts, outcomes = [], [], []
        for hub_id, resolutions in found.items():
            for resolution in resolutions:
                links += [
                    {
                        "system": link.system,
                        "external_key": link.key,
                        "hub_id": hub_id,
                        "matched_on": link.matched_on,
                    }
                    for link in resolution.links
                ]
                conflicts += [
                    {
                        "hub_id": hub_id,
                        "system": c.system,
                        "kind": c.kind,
                        "detail": c.detail,
                        "detected_at": now,
                    }
                    for c in resolution.conflicts
                ]
                outcomes.append(
                    {
                        "hub_id": hub_id,
                        "system": resolution.system,
                        "outcome": resolution.outcome,
                        "resolved_at": now,
                    }
                )
        if not outcomes:
            return
        async with self._engine.begin() as conn:
            if links:
                await conn.execute(self._insert_ignoring_duplicates(identity_link), links)
            if conflicts:
                await conn.execute(identity_conflict.insert(), conflicts)
            await conn.execute(self._outcomes_upsert(), outcomes)

    async def forget_absent(self, system: str, hub_id: str | None = None) -> int:
        """Make "absent in ``system``" outcomes unresolved now (of one customer, or all): the
        next request that needs the system asks it again. For a mapping or a system fixed
        since; links and conflicts are never touched. The count forgotten."""
        condition = (identity_resolution.c.system == system) & (
            identity_resolution.c.outcome == "absent"
        )
        if hub_id is not None:
            condition = condition & (identity_resolution.c.hub_id == hub_id)
        async with self._engine.begin() as conn:
            done = await conn.execute(delete(identity_resolution).where(condition))
        self._settled_by_hub_id.clear()
        self._settled_by_customer_no.clear()
        return int(done.rowcount or 0)

    def _insert_ignoring_duplicates(self, table: Table):  # type: ignore[no-untyped-def]
        return self._dialect().insert(table).on_conflict_do_nothing()

    def _outcomes_upsert(self):  # type: ignore[no-untyped-def]
        """New outcomes are inserted; one over an existing "absent" (asked again once due)
        replaces it, with its time; a link or conflict already recorded is kept (two
        requests racing to resolve the same customer)."""
        insert = self._dialect().insert(identity_resolution)
        return insert.on_conflict_do_update(
            index_elements=[identity_resolution.c.hub_id, identity_resolution.c.system],
            set_={"outcome": insert.excluded.outcome, "resolved_at": insert.excluded.resolved_at},
            where=identity_resolution.c.outcome == "absent",
        )

    def _dialect(self):  # type: ignore[no-untyped-def]
        return postgresql if self._engine.dialect.name == "postgresql" else sqlite

    async def _assemble(self, conn: AsyncConnection, pairs: dict[str, str]) -> dict[str, Identity]:
        if not pairs:
            return {}
        ids = list(pairs)
        links: dict[str, list[Link]] = {h: [] for h in ids}
        for r in await conn.execute(select(identity_link).where(identity_link.c.hub_id.in_(ids))):
            links[r.hub_id].append(Link(r.system, r.external_key, r.matched_on))
        conflicts: dict[str, list[Conflict]] = {h: [] for h in ids}
        for r in await conn.execute(
            select(identity_conflict)
            .where(identity_conflict.c.hub_id.in_(ids))
            .order_by(identity_conflict.c.id)
        ):
            conflicts[r.hub_id].append(Conflict(r.system, r.kind, r.detail))
        outcomes: dict[str, dict[str, str]] = {h: {} for h in ids}
        recheck_at: dict[str, datetime] = {}
        due = _now() - self._absent_recheck
        for r in await conn.execute(
            select(identity_resolution).where(identity_resolution.c.hub_id.in_(ids))
        ):
            if r.outcome == "absent":
                resolved_at = _aware(r.resolved_at)
                if resolved_at <= due:
                    continue  # due to be asked again: unresolved until then
                again = resolved_at + self._absent_recheck
                recheck_at[r.hub_id] = min(recheck_at.get(r.hub_id, again), again)
            outcomes[r.hub_id][r.system] = r.outcome
        return {
            hub_id: Identity(
                hub_id=hub_id,
                customer_no=customer_no,
                links=tuple(links[hub_id]),
                conflicts=tuple(conflicts[hub_id]),
                outcomes=outcomes[hub_id],
                recheck_at=recheck_at.get(hub_id),
            )
            for hub_id, customer_no in pairs.items()
        }
