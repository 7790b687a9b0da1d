"""API keys: how a caller proves who it is, and the principal each key stands for.

A key looks like ``sb_<id>.<secret>``. Only a SHA-256 of the whole key is stored; the id part
is public (it names the key in logs and the audit trail) and finds the row, and the hash is
compared in constant time. A request's channel comes from its key, never from anything the
caller can set.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, ColumnElement, DateTime, MetaData, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from policies.principal import Principal

metadata = MetaData()

api_key = Table(
    "api_key",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("key_hash", String(64), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("scopes", String(1024), nullable=False, default=""),
    Column("partner", String(64)),
    Column("label", String(128), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

#: How long a looked-up key is kept by default (``auth.key_cache_s``).
KEY_CACHE_S = 30.0


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key_id: str
    key: str  # shown once, never stored


@dataclass(frozen=True, slots=True)
class KeyListing:
    """What an operator sees of an issued key: never its secret or its hash."""

    key_id: str
    subject: str
    role: str
    channel: str
    scopes: tuple[str, ...]
    partner: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _split(key: str) -> str | None:
    """The public id of a well-formed key, or None."""
    if not key.startswith("sb_") or "." not in key or len(key) > 128:
        return None
    key_id = key[3:].split(".", 1)[0]
    return key_id if key_id.isalnum() and len(key_id) <= 16 else None


def key_id_of(key: str) -> str | None:
    """The public id of a presented key (``sb_<id>.``), None if it is not of that form."""
    return _split(key)


class ApiKeyStore:
    def __init__(self, engine: AsyncEngine, *, cache_s: float = KEY_CACHE_S) -> None:
        self._engine = engine
        self._cache_s = cache_s
        # Hash -> (principal, expiry). Saves a database round trip on every request; a revoked
        # key stops working within ``cache_s`` in every worker.
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def issue(
        self,
        *,
        subject: str,
        role: str,
        channel: str,
        scopes: Iterable[str] = (),
        partner: str | None = None,
        label: str = "",
    ) -> IssuedKey:
        key_id = secrets.token_hex(4)
        key = f"sb_{key_id}.{secrets.token_urlsafe(24)}"
        async with self._engine.begin() as conn:
            await conn.execute(
                api_key.insert().values(
                    key_id=key_id,
                    key_hash=_hash(key),
                    subject=subject,
                    role=role,
                    channel=channel,
                    scopes=" ".join(sorted(set(scopes))),
                    partner=partner,
                    label=label,
                    created_at=datetime.now(UTC),
                )
            )
        return IssuedKey(key_id=key_id, key=key)

    async def revoke(self, key_id: str) -> bool:
        """Revoke one key by its public id; False if no unrevoked key has it. Every process
        stops accepting it within its key cache (``auth.key_cache_s``)."""
        revoked = await self._revoke_where(api_key.c.key_id == key_id)
        self._cache = {d: e for d, e in self._cache.items() if e[0].credential_id != key_id}
        return revoked > 0

    async def listing(self, *, include_revoked: bool = False) -> list[KeyListing]:
        """Every issued key (the unrevoked ones unless asked), oldest first."""
        query = select(api_key).order_by(api_key.c.created_at, api_key.c.key_id)
        if not include_revoked:
            query = query.where(api_key.c.revoked_at.is_(None))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            KeyListing(
                key_id=row.key_id,
                subject=row.subject,
                role=row.role,
                channel=row.channel,
                scopes=tuple(row.scopes.split()),
                partner=row.partner,
                label=row.label,
                created_at=row.created_at,
                revoked_at=row.revoked_at,
            )
            for row in rows
        ]

    async def revoke_where_label(self, label: str) -> None:
        await self._revoke_where(api_key.c.label == label)

    async def _revoke_where(self, condition: ColumnElement[bool]) -> int:
        """Revoke the unrevoked keys matching ``condition``; how many there were."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_key)
                .where(condition, api_key.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return result.rowcount

    async def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        key_id = _split(key)
        if key_id is None:
            return None
        digest = _hash(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_key).where(
                        api_key.c.key_id == key_id, api_key.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        principal = Principal(
            subject=row.subject,
            role=row.role,
            channel=row.channel,
            scopes=frozenset(row.scopes.split()),
            partner=row.partner,
            credential_id=row.key_id,
        )
        if self._cache_s > 0:
            self._cache[digest] = (principal, now + self._cache_s)
        return principal
