"""Walks the chain and says what was tampered with, and where (sequence numbers).

One pass in seq order re-hashes every record (an edited record no longer matches its hash)
and checks it names its predecessor's hash (a link that does not fit means records were
deleted, inserted or moved). Broken links are classified afterwards, by finding which record
the link points to: a later one means records were moved (reordered); an earlier one with the
records in between named by nobody means those were inserted; a gap in the numbers means
records were deleted. A cut tail is invisible to the chain alone: it is caught against a
signed checkpoint the auditor kept (the log ends before it), and a log rewritten wholesale
no longer matches the checkpoint's head hash.

``verify_chain`` (the CLI's default, and ``auditVerification(full: true)``) walks from the
latest prune checkpoint (retention) whose signature verifies, or from the genesis, and holds
every checkpoint against the chain: each row of the table, the auditor's own (``against``)
and each line of a checkpoint file (``kept``); kept ones missing from the table were deleted.
Signatures are checked with the key given; whether it is trusted (the auditor's or a pinned
one, not the hub's own key file) is the caller's to say, and the report carries it.
``verify_incremental`` (the auditors' page and ``auditVerification``) walks only from the
latest checkpoint in the table that proves trustworthy (signature valid with the public key,
head hash still that of the record at its seq) to the head; checkpoints that fail are
findings, never starting points.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import checkpoint as checkpoints
from gateway.audit.checkpoint import Checkpoint, key_id, signature_valid
from gateway.audit.checkpoint_file import KeptCheckpoint
from gateway.audit.record import GENESIS_HASH, chain_hash
from gateway.audit.store import audit_head, audit_record, record_of
from schema.audit_reader import Finding, VerificationReport

#: Records read per query, and re-hashed per turn of the event loop. A gateway verifies
#: before each checkpoint it signs (every 10,000 records by default) while it serves: 5,000
#: rows read at once held its loop ~45 ms, and hashing them on a thread took the GIL from it
#: as long (a cache-on p99 of ~80 ms against ~15 without checkpoints). A batch of 500 holds
#: it a few ms, each chunk of 100 re-hashed about one.
BATCH = 500
CHECK_CHUNK = 100


@dataclass
class _Walk:
    anchor_seq: int
    anchor_hash: str
    findings: list[Finding] = field(default_factory=list)
    broken: list[tuple[int, str, int]] = field(default_factory=list)  # seq, prev_hash, prev_seq
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    hash_at: dict[int, str] = field(default_factory=dict)  # for the checkpoint's seq


def _check_batch(
    walk: _Walk, rows: Sequence[Any], watch: set[int], expected: str, prev_seq: int
) -> tuple[str, int]:
    """Re-hash and link-check one batch; the hash and seq the next batch must follow."""
    for row in rows:
        seq = int(row.seq)
        if chain_hash(row.prev_hash, record_of(row)) != row.hash:
            walk.findings.append(
                Finding("edited", seq, f"seq {seq}: its content does not match its hash")
            )
        if row.prev_hash != expected:
            if seq > prev_seq + 1:
                missing = f"{prev_seq + 1}" if seq == prev_seq + 2 else f"{prev_seq + 1}..{seq - 1}"
                walk.findings.append(
                    Finding("deleted", prev_seq + 1, f"seq {missing} missing (deleted)")
                )
            else:
                walk.broken.append((seq, row.prev_hash, prev_seq))
        if seq in watch:
            walk.hash_at[seq] = row.hash
        walk.first_seq = seq if walk.first_seq is None else walk.first_seq
        expected, prev_seq = row.hash, seq
        walk.checked += 1
    return expected, prev_seq


async def _walk(
    engine: AsyncEngine, walk: _Walk, watch: set[int], progress: Callable[[int], None] | None
) -> None:
    expected, prev_seq, after = walk.anchor_hash, walk.anchor_seq, walk.anchor_seq
    while True:
        query = (
            select(audit_record)
            .where(audit_record.c.seq > after)
            .order_by(audit_record.c.seq)
            .limit(BATCH)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        # Hashing is CPU work: in chunks, each followed by a turn of the loop, so a gateway
        # verifying (a checkpoint, the auditors' page) keeps answering between them.
        for start in range(0, len(rows), CHECK_CHUNK):
            chunk = rows[start : start + CHECK_CHUNK]
            expected, prev_seq = _check_batch(walk, chunk, watch, expected, prev_seq)
            await asyncio.sleep(0)
        if rows:
            walk.last_seq, walk.last_hash = prev_seq, expected
            after = prev_seq
            if progress is not None:
                progress(len(rows))
        if len(rows) < BATCH:
            return


async def _seqs_of_hashes(engine: AsyncEngine, hashes: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    wanted = list(hashes)
    async with engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            rows = await conn.execute(
                select(audit_record.c.seq, audit_record.c.hash).where(
                    audit_record.c.hash.in_(wanted[i : i + 500])
                )
            )
            found.update({r.hash: int(r.seq) for r in rows})
    return found


async def _classify(engine: AsyncEngine, walk: _Walk) -> None:
    if not walk.broken:
        return
    where = await _seqs_of_hashes(engine, {p for _, p, _ in walk.broken})
    where.setdefault(walk.anchor_hash, walk.anchor_seq)
    for seq, prev_hash, prev_seq in walk.broken:
        target = where.get(prev_hash)
        if target is None:
            walk.findings.append(
                Finding(
                    "broken_link",
                    seq,
                    f"seq {seq} does not follow seq {prev_seq}: the record before it was "
                    "edited and re-hashed, or records were deleted and the rest renumbered",
                )
            )
        elif target > seq:
            walk.findings.append(
                Finding("reordered", seq, f"seq {seq} follows seq {target} in the chain: moved")
            )
        else:
            between_query = select(audit_record.c.hash).where(
                audit_record.c.seq > target, audit_record.c.seq <= prev_seq
            )
            async with engine.connect() as conn:
                between = {r.hash for r in await conn.execute(between_query)}
                named = (
                    await conn.execute(
                        select(audit_record.c.seq).where(audit_record.c.prev_hash.in_(between))
                    )
                ).first()
            span = f"{target + 1}" if target + 1 == prev_seq else f"{target + 1}..{prev_seq}"
            if named is None:
                walk.findings.append(
                    Finding(
                        "inserted",
                        target + 1,
                        f"seq {span} not in the chain (seq {seq} follows seq {target}): inserted",
                    )
                )
            else:
                walk.findings.append(
                    Finding("reordered", seq, f"seq {seq} follows seq {target} in the chain: moved")
                )


async def _head_seq(engine: AsyncEngine) -> int | None:
    async with engine.connect() as conn:
        head = (await conn.execute(select(audit_head.c.seq))).first()
    return int(head.seq) if head is not None else None


def _head_beyond(head_seq: int | None, last: int) -> Finding | None:
    """The tail cut before the head row (the chain alone cannot see it)."""
    if head_seq is not None and head_seq > last:
        detail = f"the log ends at seq {last}, its head says {head_seq}"
        return Finding("truncated", last + 1, detail)
    return None


async def _walk_to_head(
    engine: AsyncEngine,
    walk: _Walk,
    checkpoint_seqs: set[int],
    progress: Callable[[int], None] | None,
    findings: list[Finding],
) -> int:
    """Walk from the anchor to the last record, adding what is wrong (and a head row that
    claims more than the table holds) to ``findings``; the last seq walked.

    The head is read before the walk, not after it: a record appended while the walk runs
    (a gateway under load) would otherwise look like a cut tail. Records and the head are
    committed together, so every record up to the head read here was in the table then,
    and only the tail being cut (or the head written on its own) leaves the walk short."""
    head_seq = await _head_seq(engine)
    await _walk(engine, walk, checkpoint_seqs, progress)
    await _classify(engine, walk)
    findings += walk.findings
    last = walk.last_seq if walk.last_seq is not None else walk.anchor_seq
    truncated = _head_beyond(head_seq, last)
    if truncated is not None:
        findings.append(truncated)
    return last


@dataclass(frozen=True, slots=True)
class _Compared:
    """A checkpoint to hold the chain against, and how to name where it came from."""

    checkpoint: Checkpoint
    where: str  # "the checkpoint" (the auditor's), "the checkpoint table's", "FILE line N"
    kept: bool  # held outside the database: it must also still be in the table


def _identity(c: Checkpoint) -> tuple[str, int, str, int, str]:
    return (c.kind, c.seq, c.head_hash, c.time_us, c.signature)


def _signature_finding(compared: _Compared, public_key: Ed25519PublicKey) -> Finding | None:
    c = compared.checkpoint
    if signature_valid(c, public_key):
        return None
    if compared.where == "the checkpoint":  # the one the auditor passed with --checkpoint
        return Finding("rewritten", c.seq, "the checkpoint's signature is not valid")
    signer = "" if c.key_id == key_id(public_key) else f", and it names another key ({c.key_id})"
    return Finding(
        "forged_checkpoint",
        c.seq,
        f"the {c.kind} checkpoint at seq {c.seq} ({compared.where}) does not verify with the "
        f"public key {key_id(public_key)}{signer}: edited or forged; not trusted",
    )


def _chain_finding(compared: _Compared, walk: _Walk, last: int) -> Finding | None:
    """Whether the chain, as walked, still has the checkpoint's head hash at its seq."""
    c, where = compared.checkpoint, compared.where
    if c.kind != checkpoints.PUBLISHED or c.seq <= walk.anchor_seq:
        return None  # records pruned on purpose: the signature is what there is to check
    if last < c.seq:
        covers = "the checkpoint" if where == "the checkpoint" else f"the checkpoint in {where}"
        return Finding(
            "truncated", last + 1, f"the log ends at seq {last}; {covers} covers seq {c.seq}"
        )
    stored = walk.hash_at.get(c.seq)
    if stored is None or stored == c.head_hash:
        return None  # a record missing there is already a finding of the walk
    if where == "the table":
        return Finding(
            "checkpoint_mismatch",
            c.seq,
            f"the published checkpoint at seq {c.seq} in the checkpoint table names a head hash "
            "the log does not have there: the log was rewritten under it",
        )
    which = "the checkpoint's" if where == "the checkpoint" else f"the checkpoint in {where}'s"
    return Finding("rewritten", c.seq, f"seq {c.seq} does not match {which} head hash")


def _deleted_finding(compared: _Compared) -> Finding:
    c = compared.checkpoint
    where = "the checkpoint you kept" if compared.where == "the checkpoint" else compared.where
    return Finding(
        "checkpoint_deleted",
        c.seq,
        f"{where} ({c.kind}, seq {c.seq}, signed at {c.time_us} us) is not in the checkpoint "
        "table: deleted",
    )


def _deduplicated(findings: list[Finding]) -> list[Finding]:
    """One finding per (kind, seq, detail), one ``truncated`` per seq; sorted by seq."""
    seen: set[tuple[str, int, str]] = set()
    kept: list[Finding] = []
    for f in findings:
        key = (f.kind, f.seq, "" if f.kind == "truncated" else f.detail)
        if key not in seen:
            seen.add(key)
            kept.append(f)
    kept.sort(key=lambda f: f.seq)
    return kept


async def verify_chain(
    engine: AsyncEngine,
    public_key: Ed25519PublicKey,
    against: Checkpoint | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    kept: Sequence[KeptCheckpoint] = (),
    trusted: bool = False,
    key_source: str = "",
) -> VerificationReport:
    """Verify the whole log and every checkpoint in the table; against a checkpoint the
    auditor kept and the checkpoints of a checkpoint file (``kept``), if given.

    Each checkpoint must verify with ``public_key`` and (published ones after the anchor)
    match the chain at its seq; each kept one must also still be in the table. ``trusted``
    says whether ``public_key`` came from the auditor or the operator's pin (reported as is).

    A prune committed while the walk ran (`switchboard audit prune` beside a serving hub)
    deletes records under it, past the anchor chosen before it: the walk then sees a gap
    that retention made, not tampering. When a walk finds something and a prune checkpoint
    that verifies now lies past its anchor, the log is verified once more, from it.
    """
    arguments = (engine, public_key, against, progress, kept, trusted, key_source)
    report, anchor_seq = await _verify_chain_once(*arguments)
    if not report.ok and await _pruned_past(engine, public_key, anchor_seq):
        report, _ = await _verify_chain_once(*arguments)
    return report


async def _pruned_past(engine: AsyncEngine, public_key: Ed25519PublicKey, seq: int) -> bool:
    """Whether the table now holds a prune checkpoint past ``seq`` that verifies."""
    async for checkpoint in checkpoints.newest_first(engine):  # latest seq first
        if checkpoint.seq <= seq:
            return False
        if checkpoint.kind == checkpoints.PRUNE and signature_valid(checkpoint, public_key):
            return True
    return False


async def _verify_chain_once(
    engine: AsyncEngine,
    public_key: Ed25519PublicKey,
    against: Checkpoint | None,
    progress: Callable[[int], None] | None,
    kept: Sequence[KeptCheckpoint],
    trusted: bool,
    key_source: str,
) -> tuple[VerificationReport, int]:
    """One walk of ``verify_chain``: its report, and the seq it started after."""
    findings: list[Finding] = []
    table = [c async for c in checkpoints.newest_first(engine)]
    compared: list[_Compared] = []
    if against is not None:
        compared.append(_Compared(against, "the checkpoint", kept=True))
    for line in kept:
        if line.checkpoint is None:
            findings.append(Finding("forged_checkpoint", 0, f"{line.origin} is not a checkpoint"))
        else:
            compared.append(_Compared(line.checkpoint, line.origin, kept=True))
    outside = {_identity(c.checkpoint) for c in compared}
    # Table rows the auditor's own copies already stand for are compared once, as theirs.
    compared += [
        _Compared(c, "the table", kept=False) for c in table if _identity(c) not in outside
    ]
    valid: list[_Compared] = []
    for item in compared:
        problem = _signature_finding(item, public_key)
        if problem is None:
            valid.append(item)
        else:
            findings.append(problem)
    table_ids = {_identity(c) for c in table}
    for item in valid:
        if item.kept and _identity(item.checkpoint) not in table_ids:
            findings.append(_deleted_finding(item))
    # The walk starts from the latest prune checkpoint in the table that verifies.
    anchor = max(
        (
            c.checkpoint
            for c in valid
            if c.where == "the table" or _identity(c.checkpoint) in table_ids
            if c.checkpoint.kind == checkpoints.PRUNE
        ),
        key=lambda c: c.seq,
        default=None,
    )
    walk = _Walk(
        anchor_seq=anchor.seq if anchor else 0,
        anchor_hash=anchor.head_hash if anchor else GENESIS_HASH,
    )
    watch = {
        c.checkpoint.seq
        for c in valid
        if c.checkpoint.kind == checkpoints.PUBLISHED and c.checkpoint.seq > walk.anchor_seq
    }
    last = await _walk_to_head(engine, walk, watch, progress, findings)
    for item in valid:
        problem = _chain_finding(item, walk, last)
        if problem is not None:
            findings.append(problem)
    against_valid = against is not None and signature_valid(against, public_key)
    findings = _deduplicated(findings)
    report = VerificationReport(
        ok=not findings,
        checked=walk.checked,
        first_seq=walk.first_seq,
        last_seq=walk.last_seq,
        head_hash=walk.last_hash,
        anchor=f"prune checkpoint at seq {anchor.seq}" if anchor else "genesis",
        findings=findings,
        checkpoint_seq=against.seq if against is not None and against_valid else None,
        key_trusted=trusted,
        key_id=key_id(public_key),
        key_source=key_source,
        checkpoints_checked=len(valid),
    )
    return report, walk.anchor_seq


async def _untrusted(
    engine: AsyncEngine, checkpoint: Checkpoint, public_key: Ed25519PublicKey
) -> Finding | None:
    """Why a checkpoint in the table cannot be trusted as a starting point, if it cannot.

    Its signature must check out with the public key, and (for a published checkpoint) the
    record at its seq must still carry its head hash. A prune checkpoint names a record that
    was deleted on purpose: its signature is all there is to check, and the first kept
    record must then chain onto its head hash (the walk checks that).
    """
    seq = checkpoint.seq
    if not signature_valid(checkpoint, public_key):
        return Finding(
            "forged_checkpoint",
            seq,
            f"the {checkpoint.kind} checkpoint at seq {seq} does not verify with the public "
            "key: the checkpoint table was tampered with; not trusted",
        )
    if checkpoint.kind == checkpoints.PRUNE:
        return None
    if seq == 0:
        stored: str | None = GENESIS_HASH
    else:
        async with engine.connect() as conn:
            stored = (
                await conn.execute(select(audit_record.c.hash).where(audit_record.c.seq == seq))
            ).scalar_one_or_none()
    if stored != checkpoint.head_hash:
        what = "no record" if stored is None else "the record there has another hash"
        return Finding(
            "checkpoint_mismatch",
            seq,
            f"the {checkpoint.kind} checkpoint at seq {seq} names a head hash the log does not "
            f"have ({what}): the checkpoint table or the log was tampered with; not trusted",
        )
    return None


async def _anchor_record_edited(engine: AsyncEngine, seq: int) -> Finding | None:
    """The record a trusted checkpoint names keeps its hash; is its content still its own?"""
    async with engine.connect() as conn:
        row = (await conn.execute(select(audit_record).where(audit_record.c.seq == seq))).first()
    if row is None or chain_hash(row.prev_hash, record_of(row)) == row.hash:
        return None
    return Finding("edited", seq, f"seq {seq}: its content does not match its hash")


async def verify_incremental(
    engine: AsyncEngine,
    public_key: Ed25519PublicKey,
    progress: Callable[[int], None] | None = None,
    *,
    trusted: bool = False,
    key_source: str = "",
) -> VerificationReport:
    """Verify from the latest trustworthy checkpoint in the table to the head.

    The checkpoint's head hash and count are trusted (its signature proves the hub signed
    them; the record at its seq must still carry that hash), so only the records after it
    are walked: they must chain onto its head hash and be intact. Checkpoints newer than
    the one used that fail either check are findings (someone wrote the checkpoint table).
    Records before the starting point are not looked at: ``verify_chain`` does that.
    """
    findings: list[Finding] = []
    start: Checkpoint | None = None
    checked_checkpoints = 0
    async for candidate in checkpoints.newest_first(engine):
        checked_checkpoints += 1
        problem = await _untrusted(engine, candidate, public_key)
        if problem is None:
            start = candidate
            break
        findings.append(problem)
    walk = _Walk(
        anchor_seq=start.seq if start else 0,
        anchor_hash=start.head_hash if start else GENESIS_HASH,
    )
    if start is not None and start.kind == checkpoints.PUBLISHED and start.seq > 0:
        edited = await _anchor_record_edited(engine, start.seq)
        if edited is not None:
            findings.append(edited)
    await _walk_to_head(engine, walk, set(), progress, findings)
    findings.sort(key=lambda f: f.seq)
    return VerificationReport(
        ok=not findings,
        checked=walk.checked,
        first_seq=walk.first_seq,
        last_seq=walk.last_seq if walk.last_seq is not None else (start.seq if start else None),
        head_hash=walk.last_hash if walk.last_hash is not None else walk.anchor_hash,
        anchor=f"{start.kind} checkpoint at seq {start.seq}" if start else "genesis",
        findings=findings,
        checkpoint_seq=start.seq if start else None,
        full=False,
        start_kind=start.kind if start else None,
        start_seq=start.seq if start else None,
        start_time_us=start.time_us if start else None,
        key_trusted=trusted,
        key_id=key_id(public_key),
        key_source=key_source,
        checkpoints_checked=checked_checkpoints,
    )
