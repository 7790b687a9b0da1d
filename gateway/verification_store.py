"""The verification store on the hub's database (SQLite by default, PostgreSQL when scaled).

Implements ``policies.verification.VerificationStore``. Tokens are kept only as SHA-256
digests (like API keys); OTP codes only as keyed digests; failed checks only as counts, never
with the value presented. Times are epoch seconds, so SQLite and PostgreSQL compare alike.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from policies.verification import OtpChallenge, Verification

metadata = MetaData()

verification = Table(
    "verification",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("customer_id", String(32), nullable=False),
    Column("level", String(32), nullable=False),
    Column("method", String(16), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("credential_id", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_verification_customer", "customer_id"),
)

otp_challenge = Table(
    "otp_challenge",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("customer_id", String(32), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("credential_id", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("attempts_left", Integer, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
    Index("ix_otp_challenge_customer", "customer_id", "created_at"),
)

verification_failure = Table(
    "verification_failure",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(32), nullable=False),
    Column("method", String(16), nullable=False),
    Column("channel", String(32), nullable=False),
    # The API key (public id) that failed: a credential's failures lock that credential.
    Column("credential_id", String(16), nullable=False, default=""),
    Column("at", Float, nullable=False),
    Index("ix_verification_failure_customer", "customer_id", "method", "at"),
)


class SqlVerificationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add_verification(self, found: Verification, token_hash: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                verification.insert().values(
                    id=found.id,
                    token_hash=token_hash,
                    customer_id=found.customer_id,
                    level=found.level,
                    method=found.method,
                    channel=found.channel,
                    credential_id=found.credential_id,
                    created_at=found.created_at,
                    expires_at=found.expires_at,
                )
            )

    async def verification_by_token_hash(self, token_hash: str) -> Verification | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(verification).where(verification.c.token_hash == token_hash)
                )
            ).first()
        if row is None:
            return None
        return Verification(
            id=row.id,
            customer_id=row.customer_id,
            level=row.level,
            method=row.method,
            channel=row.channel,
            credential_id=row.credential_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    async def add_challenge(self, challenge: OtpChallenge) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                otp_challenge.insert().values(
                    id=challenge.id,
                    customer_id=challenge.customer_id,
                    code_hash=challenge.code_hash,
                    channel=challenge.channel,
                    credential_id=challenge.credential_id,
                    created_at=challenge.created_at,
                    expires_at=challenge.expires_at,
                    attempts_left=challenge.attempts_left,
                    used=challenge.used,
                )
            )

    async def challenge(self, challenge_id: str) -> OtpChallenge | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(otp_challenge).where(otp_challenge.c.id == challenge_id))
            ).first()
        if row is None:
            return None
        return OtpChallenge(
            id=row.id,
            customer_id=row.customer_id,
            code_hash=row.code_hash,
            channel=row.channel,
            credential_id=row.credential_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            attempts_left=row.attempts_left,
            used=bool(row.used),
        )

    async def challenges_since(
        self, customer_id: str, since: float, credential_id: str | None = None
    ) -> int:
        query = (
            select(func.count())
            .select_from(otp_challenge)
            .where(otp_challenge.c.customer_id == customer_id, otp_challenge.c.created_at >= since)
        )
        if credential_id is not None:
            query = query.where(otp_challenge.c.credential_id == credential_id)
        async with self._engine.connect() as conn:
            count = await conn.scalar(query)
        return int(count or 0)

    async def take_attempt(self, challenge_id: str, now: float) -> bool:
        # One conditional UPDATE: two concurrent guesses can never share the last attempt.
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(otp_challenge)
                .where(
                    otp_challenge.c.id == challenge_id,
                    otp_challenge.c.attempts_left > 0,
                    otp_challenge.c.used.is_(False),
                    otp_challenge.c.expires_at > now,
                )
                .values(attempts_left=otp_challenge.c.attempts_left - 1)
            )
        return result.rowcount == 1

    async def mark_used(self, challenge_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(otp_challenge)
                .where(otp_challenge.c.id == challenge_id, otp_challenge.c.used.is_(False))
                .values(used=True)
            )
        return result.rowcount == 1

    async def add_failure(
        self, customer_id: str, method: str, channel: str, at: float, credential_id: str = ""
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                verification_failure.insert().values(
                    customer_id=customer_id,
                    method=method,
                    channel=channel,
                    credential_id=credential_id,
                    at=at,
                )
            )

    async def failures_since(
        self, customer_id: str, method: str, since: float, credential_id: str | None = None
    ) -> int:
        query = (
            select(func.count())
            .select_from(verification_failure)
            .where(
                verification_failure.c.customer_id == customer_id,
                verification_failure.c.method == method,
                verification_failure.c.at >= since,
            )
        )
        if credential_id is not None:
            query = query.where(verification_failure.c.credential_id == credential_id)
        async with self._engine.connect() as conn:
            count = await conn.scalar(query)
        return int(count or 0)
