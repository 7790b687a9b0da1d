"""The audit log as the gateway uses it: tables, keys, writer, reader and verifier wired once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from opentelemetry.trace import Status, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import checkpoint as checkpoints
from gateway.audit import checkpoint_file
from gateway.audit.checkpoint import Checkpoint, SigningKey, key_id, load_public_key
from gateway.audit.checkpoint_file import KeptCheckpoint
from gateway.audit.reader import AuditLogReader
from gateway.audit.record import AuditRecord, CustomerHasher
from gateway.audit.refusals import RefusalCounter
from gateway.audit.scheduler import CheckpointScheduler
from gateway.audit.verify import verify_chain, verify_incremental
from gateway.audit.writer import AuditUnavailable, AuditWriter
from gateway.settings import AuditSettings
from schema.audit_reader import VerificationReport
from telemetry import tracing
from telemetry.metrics import AUDIT_COMMIT

log = logging.getLogger("switchboard.audit")


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


def checkpoint_file_path(settings: AuditSettings) -> Path:
    return settings.checkpoint_file or settings.state_dir / "audit-checkpoints.jsonl"


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """The public key checkpoint signatures are checked with, and whether it is trusted:
    supplied by the auditor or pinned by the operator, never the hub's own key file (nor a
    key a checkpoint carries), which whoever rewrites the hub's state can replace too."""

    public_key: Ed25519PublicKey
    trusted: bool
    source: str

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


class AuditLog:
    def __init__(self, engine: AsyncEngine, settings: AuditSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.hasher = CustomerHasher(
            customer_key(settings), remembered=settings.customer_hashes_remembered
        )
        self.signing_key = SigningKey(signing_key_path(settings))
        self.checkpoint_file = checkpoint_file_path(settings)
        self.writer = AuditWriter(
            engine,
            max_batch=settings.max_batch,
            wal_checkpoint_every_s=settings.wal_checkpoint_every_s,
        )
        self.reader = AuditLogReader(
            engine, self.hasher, self.verify_latest, max_search_page=settings.max_search_page
        )
        self.refusals = RefusalCounter(
            codes=frozenset(settings.refusal_codes),
            window_s=settings.refusal_window_s,
            individual=settings.refusal_individual_records,
            max_callers=settings.refusal_max_callers,
        )
        self.scheduler = CheckpointScheduler(
            engine,
            self.signing_key,
            file=self.checkpoint_file,
            every_records=settings.checkpoint_every_records,
            every_s=settings.checkpoint_every_s,
            poll_s=settings.checkpoint_poll_s,
        )
        self._refusal_task: asyncio.Task[None] | None = None

    async def start(self, *, schedule_checkpoints: bool = False) -> None:
        """Writer and refusal counting (on a migrated database: `switchboard migrate`);
        ``schedule_checkpoints`` (the gateway's lifespan): also sign checkpoints on the
        schedule, if ``audit.scheduled_checkpoints``."""
        await self.writer.start()
        self._refusal_task = asyncio.create_task(self._write_refusals(), name="audit-refusals")
        if schedule_checkpoints and self.settings.scheduled_checkpoints:
            self.scheduler.start()

    async def stop(self) -> None:
        if self._refusal_task is not None:
            self._refusal_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refusal_task
            self._refusal_task = None
            # The windows still open: their counts go in before the writer stops.
            await self._append_refusals(self.refusals.due(_now_us(), all_windows=True))
        await self.scheduler.stop()
        await self.writer.stop()

    async def _write_refusals(self) -> None:
        """Write the aggregate of each refusal window soon after it ends."""
        pause = min(self.settings.refusal_window_s / 2, 5.0)
        while True:
            await asyncio.sleep(pause)
            await self._append_refusals(self.refusals.due(_now_us()))

    async def _append_refusals(self, aggregates: list[AuditRecord]) -> None:
        results = await asyncio.gather(
            *(self.append(a) for a in aggregates), return_exceptions=True
        )
        for aggregate, result in zip(aggregates, results, strict=True):
            if isinstance(result, AuditUnavailable):
                log.error(
                    "audit aggregate of %d refusal(s) lost: code=%s",
                    aggregate.refused_count,
                    aggregate.code,
                )

    async def append(self, record: AuditRecord) -> int:
        """Append and wait for the commit (raises AuditUnavailable if it cannot be made).

        The wait is ``switchboard_audit_commit_seconds`` (and an ``audit commit`` span)."""
        started = time.perf_counter()
        tracer = tracing.tracer()
        try:
            if tracer is None:
                return await self.writer.append(record)
            with tracer.start_as_current_span("audit commit", record_exception=False) as span:
                try:
                    return await self.writer.append(record)
                except AuditUnavailable:
                    span.set_status(Status(StatusCode.ERROR, "AUDIT_UNAVAILABLE"))
                    raise
        finally:
            AUDIT_COMMIT.observe(time.perf_counter() - started)

    def verifying_key(self, supplied: Path | None = None) -> VerifyingKey:
        """The key an auditor supplied, else the one pinned in the settings, else (UNTRUSTED)
        the hub's own."""
        if supplied is not None:
            return VerifyingKey(load_public_key(supplied), True, f"--public-key {supplied}")
        pinned = self.settings.trusted_public_key_file
        if pinned is not None:
            return VerifyingKey(
                load_public_key(pinned), True, f"audit.trusted_public_key_file {pinned}"
            )
        return VerifyingKey(
            self.signing_key.public_key,
            False,
            f"the hub's own key file {self.signing_key.public_path} (not a trusted key)",
        )

    def kept_checkpoints(self, files: Sequence[Path] = ()) -> list[KeptCheckpoint]:
        """The checkpoints in the given files, else in the hub's checkpoint file if any."""
        if not files:
            files = [self.checkpoint_file] if self.checkpoint_file.exists() else []
        return [kept for path in files for kept in checkpoint_file.read(path)]

    async def verify(
        self,
        against: Checkpoint | None = None,
        progress: Callable[[int], None] | None = None,
        *,
        key: VerifyingKey | None = None,
        kept: Sequence[KeptCheckpoint] = (),
    ) -> VerificationReport:
        """The whole chain and the checkpoint table; against a checkpoint the auditor kept
        and the checkpoints of a file (``kept``), if given."""
        key = key or self.verifying_key()
        return await verify_chain(
            self.engine,
            key.public_key,
            against,
            progress,
            kept=kept,
            trusted=key.trusted,
            key_source=key.source,
        )

    async def verify_latest(self, full: bool = False) -> VerificationReport:
        """The auditors' page: from the latest trustworthy checkpoint to the head.

        ``full``: the whole chain and the checkpoint table, against the hub's checkpoint file.
        """
        key = self.verifying_key()
        if not full:
            return await verify_incremental(
                self.engine, key.public_key, trusted=key.trusted, key_source=key.source
            )
        kept = await asyncio.to_thread(self.kept_checkpoints)
        return await self.verify(key=key, kept=kept)

    async def publish_checkpoint(self) -> Checkpoint:
        """Sign the head now, store it and add it to the checkpoint file."""
        checkpoint = await checkpoints.publish(self.engine, self.signing_key)
        await asyncio.to_thread(checkpoint_file.append, self.checkpoint_file, checkpoint)
        return checkpoint


def _now_us() -> int:
    return int(time.time() * 1_000_000)
