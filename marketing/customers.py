"""Which hub customer an event is about: the identity crosswalk, by key or by line.

An event names the customer by its system's key (a BOSS customer number, a billing account
id, a care party id, a declared instance's key) and often the line. The key is looked up in
the crosswalk (``identity_customer`` for BOSS numbers, ``identity_link`` for the others), a
batch of events in one query per system. When the key is unknown to the crosswalk (or the
source names none) and the event has a line, the line's owner is asked of BOSS (through its
adapter: timeout, retries, breaker, cache) and that customer number looked up. Nothing found:
``None``. The crosswalk is never written here: minting or linking customers is identity
resolution's job (docs/architecture.md, "Identity").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.errors import AdapterError
from adapters.identity_store import identity_customer, identity_link

log = logging.getLogger("switchboard.events")

#: The line's BOSS customer number, or None (an adapter error is "not known now").
LineOwner = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class CustomerRef:
    key_system: str | None  # "boss", "billing", "care", an instance name; None: no key
    key: str | None
    subscriber: str | None  # E.164


class CustomerResolver:
    def __init__(
        self,
        engine: AsyncEngine,
        line_owner: LineOwner | None,
        max_line_lookups: int = 16,
        remembered: int = 100_000,
    ) -> None:
        self._engine = engine
        self._line_owner = line_owner
        self._lookups = asyncio.Semaphore(max_line_lookups)
        self._remembered = remembered
        # Links are never changed once made, so a found key is remembered; an unknown one is
        # asked again next time (the customer may have been linked meanwhile).
        self._known: dict[tuple[str, str], str] = {}

    async def resolve(self, refs: Iterable[CustomerRef]) -> dict[CustomerRef, str | None]:
        wanted = list(dict.fromkeys(refs))
        by_key = await self._by_keys(
            {(r.key_system, r.key) for r in wanted if r.key_system and r.key}
        )
        found: dict[CustomerRef, str | None] = {}
        by_line: list[CustomerRef] = []
        for ref in wanted:
            hub_id = by_key.get((ref.key_system, ref.key)) if ref.key else None  # type: ignore[arg-type]
            found[ref] = hub_id
            if hub_id is None and ref.subscriber is not None and self._line_owner is not None:
                by_line.append(ref)
        if by_line:
            owners = await asyncio.gather(*(self._owner(r.subscriber) for r in by_line))  # type: ignore[arg-type]
            customer_nos = {o for o in owners if o is not None}
            hub_ids = await self._by_keys({("boss", no) for no in customer_nos})
            for ref, owner in zip(by_line, owners, strict=True):
                found[ref] = hub_ids.get(("boss", owner)) if owner is not None else None
        return found

    async def _owner(self, subscriber: str) -> str | None:
        assert self._line_owner is not None
        national = subscriber[3:] if subscriber.startswith("+86") else subscriber.lstrip("+")
        async with self._lookups:
            try:
                return await self._line_owner(national)
            except AdapterError as error:
                log.info("event line lookup failed: %s", error.code)  # no number in the line
                return None

    async def _by_keys(self, keys: set[tuple[str, str]]) -> Mapping[tuple[str, str], str]:
        found = {k: self._known[k] for k in keys if k in self._known}
        missing = keys - found.keys()
        if not missing:
            return found
        boss = [key for system, key in missing if system == "boss"]
        others: dict[str, list[str]] = {}
        for system, key in missing:
            if system != "boss":
                others.setdefault(system, []).append(key)
        async with self._engine.connect() as conn:
            if boss:
                rows = await conn.execute(
                    select(identity_customer.c.customer_no, identity_customer.c.hub_id).where(
                        identity_customer.c.customer_no.in_(boss)
                    )
                )
                found.update({("boss", r.customer_no): r.hub_id for r in rows})
            for system, keys_of in others.items():
                rows = await conn.execute(
                    select(identity_link.c.external_key, identity_link.c.hub_id).where(
                        identity_link.c.system == system,
                        identity_link.c.external_key.in_(keys_of),
                    )
                )
                found.update({(system, r.external_key): r.hub_id for r in rows})
        new = {k: v for k, v in found.items() if k in missing}
        if len(self._known) + len(new) > self._remembered:
            self._known.clear()  # emptied, refilled from the crosswalk as keys recur
        if len(new) <= self._remembered:
            self._known.update(new)
        return found
