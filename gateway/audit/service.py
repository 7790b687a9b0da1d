"""The audit log as the gateway uses it: tables, keys, writer, reader and verifier wired once."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import checkpoint as checkpoints
from gateway.audit.checkpoint import Checkpoint, SigningKey
from gateway.audit.reader import AuditLogReader
from gateway.audit.record import AuditRecord, CustomerHasher
from gateway.audit.store import metadata
from gateway.audit.verify import verify_chain, verify_incremental
from gateway.audit.writer import AuditWriter
from gateway.database import create_tables
from gateway.settings import AuditSettings
from schema.audit_reader import VerificationReport


def customer_key(settings: AuditSettings) -> bytes:
    """The HMAC key for customer ids: from the settings, else a file generated on first use."""
    if settings.customer_key is not None:
        return settings.customer_key.get_secret_value().encode()
    path = settings.state_dir / "audit-customer.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: two processes generating at once keep the first key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def signing_key_path(settings: AuditSettings) -> Path:
    return settings.signing_key_file or settings.state_dir / "audit-signing.key"


class AuditLog:
    def __init__(self, engine: AsyncEngine, settings: AuditSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.hasher = CustomerHasher(customer_key(settings))
        self.signing_key = SigningKey(signing_key_path(settings))
        self.writer = AuditWriter(engine, max_batch=settings.max_batch)
        self.reader = AuditLogReader(engine, self.hasher, self.verify_latest)

    async def create_tables(self) -> None:
        await create_tables(self.engine, metadata)

    async def start(self) -> None:
        await self.create_tables()
        await self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

    async def append(self, record: AuditRecord) -> int:
        """Append and wait for the commit (raises AuditUnavailable if it cannot be made)."""
        return await self.writer.append(record)

    async def verify(
        self, against: Checkpoint | None = None, progress: Callable[[int], None] | None = None
    ) -> VerificationReport:
        return await verify_chain(self.engine, self.signing_key.public_key, against, progress)

    async def verify_latest(self, full: bool = False) -> VerificationReport:
        """The auditors' page: from the latest trustworthy checkpoint to the head.

        ``full``: the whole chain, against the latest checkpoint the hub published.
        """
        if not full:
            return await verify_incremental(self.engine, self.signing_key.public_key)
        return await self.verify(await checkpoints.latest(self.engine, checkpoints.PUBLISHED))

    async def publish_checkpoint(self) -> Checkpoint:
        return await checkpoints.publish(self.engine, self.signing_key)
