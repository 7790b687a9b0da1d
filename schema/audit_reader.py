"""What the graph needs from the audit log, as a protocol the gateway supplies.

The schema never imports the gateway (dependency direction); the gateway's audit package
implements ``AuditReader`` and puts it on the request context. Plain dataclasses only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AuditSearch:
    """An auditor's filter. ``customer_id`` is the hub id in clear: the reader hashes it."""

    customer_id: str | None = None
    principal: str | None = None
    channel: str | None = None
    time_from_us: int | None = None
    time_to_us: int | None = None
    outcome: str | None = None
    clear_only: bool = False
    role: str | None = None
    operation: str | None = None  # the operation's name (auditLog, customerByMsisdn, ...)
    code: str | None = None  # the refusal's or error's code
    purpose: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    time_us: int
    request_id: str
    outcome: str
    code: str | None
    subject: str | None
    role: str | None
    channel: str | None
    partner: str | None
    credential_id: str | None
    purpose: str | None
    operation_type: str | None
    operation_name: str | None
    document_sha256: str | None
    customers: tuple[str, ...]
    disclosed: dict[str, str]
    policy_version: str | None
    backends: tuple[str, ...]
    latency_us: int
    hash: str
    source: str | None = None  # keyed hash of a refused caller's address (no principal)
    refused_count: int | None = None  # an aggregate of refusals: how many it counts ...
    window_end_us: int | None = None  # ... from time_us to this


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    has_next: bool


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem the verifier found, and where (sequence numbers)."""

    # edited | deleted | inserted | reordered | broken_link | truncated | rewritten |
    # forged_checkpoint | checkpoint_mismatch | checkpoint_deleted
    kind: str
    seq: int
    detail: str


@dataclass(frozen=True, slots=True)
class VerificationReport:
    ok: bool
    checked: int  # records walked
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    anchor: str  # where the walk started: genesis, or the prune checkpoint at seq N
    findings: list[Finding] = field(default_factory=list)
    checkpoint_seq: int | None = None  # the checkpoint compared against, if any
    full: bool = True  # False: walked only from the latest trusted checkpoint to the head
    start_kind: str | None = None  # the checkpoint an incremental walk started from ...
    start_seq: int | None = None
    start_time_us: int | None = None  # ... and when it was signed
    # Whether checkpoint signatures were checked against a key the auditor supplied or the
    # operator pinned (True), or only against the hub's own key file, which whoever can
    # write the hub's state can replace along with the checkpoints (False: UNTRUSTED).
    key_trusted: bool = False
    key_id: str | None = None  # the key signatures were checked with
    key_source: str = ""  # where that key came from, in words
    checkpoints_checked: int = 0  # checkpoints (table and kept ones) compared with the chain


class AuditReader(Protocol):
    #: The largest ``first`` a search may ask for (setting ``audit.max_search_page``).
    max_search_page: int

    async def search(self, search: AuditSearch, first: int, after_seq: int | None) -> AuditPage:
        """Records matching the filter, newest first, at most ``first``."""
        ...

    async def verify(self, full: bool = False) -> VerificationReport:
        """From the latest trusted checkpoint to the head; ``full``: the whole chain."""
        ...
