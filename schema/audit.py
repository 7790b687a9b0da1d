"""The auditors' root fields: the access log, searched and paged, and its verification.

Open to the auditor role only: anyone else gets FORBIDDEN (and, like every operation, the
refusal is itself in the log). The log is reached through ``context.audit``, a reader the
gateway supplies (schema.audit_reader.AuditReader): the schema never imports the gateway.
Records carry no personal data: customers appear as keyed hashes.
"""

from __future__ import annotations

import base64
import enum
from datetime import UTC, datetime

import strawberry

from schema.audit_reader import AuditEntry, AuditReader, AuditSearch, VerificationReport
from schema.errors import GraphError, bad_input
from schema.timestamps import from_micros
from schema.types import GraphInfo, PageInfo

AUDITOR_ROLE = "auditor"
#: Fixed, not a setting: the widest text column a filter is compared with (subject,
#: operation_name: 128 characters); a longer value could match nothing.
MAX_FILTER_TEXT = 128
CURSOR_PREFIX = "seq:"


@strawberry.enum(description="How an operation ended.")
class AuditOutcome(enum.Enum):
    OK = "ok"
    PARTIAL = "partial"
    REFUSED = "refused"
    ERROR = "error"


@strawberry.enum(description="The level a field went out at.")
class DisclosureLevel(enum.Enum):
    CLEAR = "clear"
    MASKED = "masked"
    DENIED = "denied"


@strawberry.input(description="Filters of the access log; all given ones must match.")
class AuditFilter:
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="A hub customer id (cus_...): records that touched them."
    )
    principal: str | None = strawberry.field(default=None, description="A principal's subject.")
    channel: str | None = None
    from_: datetime | None = strawberry.field(
        default=None, name="from", description="From this time on (inclusive)."
    )
    to: datetime | None = strawberry.field(default=None, description="Before this time.")
    decision: AuditOutcome | None = None
    clear_only: bool = strawberry.field(
        default=False, description="Only operations that disclosed some field in clear."
    )
    role: str | None = strawberry.field(default=None, description="The principal's role.")
    operation: str | None = strawberry.field(
        default=None, description="The operation's name (auditLog, customerByMsisdn, ...)."
    )
    code: str | None = strawberry.field(
        default=None, description="The refusal's or error's code (FORBIDDEN, RATE_LIMITED, ...)."
    )
    purpose: str | None = strawberry.field(default=None, description="The stated X-Purpose.")
    request_id: str | None = strawberry.field(
        default=None, description="One request's records (its X-Request-Id)."
    )


@strawberry.type
class DisclosedField:
    path: str
    level: DisclosureLevel


@strawberry.type(description="One operation in the access log. No values, no personal data.")
class AuditRecord:
    seq: int
    time: datetime
    request_id: str
    outcome: AuditOutcome
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
    customers: list[str] = strawberry.field(description="Keyed hashes of the customers touched.")
    disclosed: list[DisclosedField]
    policy_version: str | None
    backends: list[str]
    latency_ms: float
    hash: str
    source: str | None = strawberry.field(
        default=None,
        description="A refusal with no principal: keyed hash of the caller's address.",
    )
    refused_count: int | None = strawberry.field(
        default=None,
        description="An aggregate record: how many refusals of this caller and code it counts "
        "(those not recorded one by one), from `time` to `windowEnd`. Null: one operation.",
    )
    window_end: datetime | None = strawberry.field(
        default=None, description="An aggregate record: the end of its window."
    )

    @classmethod
    def of(cls, e: AuditEntry) -> AuditRecord:
        return cls(
            seq=e.seq,
            time=from_micros(e.time_us),
            request_id=e.request_id,
            outcome=AuditOutcome(e.outcome),
            code=e.code,
            subject=e.subject,
            role=e.role,
            channel=e.channel,
            partner=e.partner,
            credential_id=e.credential_id,
            purpose=e.purpose,
            operation_type=e.operation_type,
            operation_name=e.operation_name,
            document_sha256=e.document_sha256,
            customers=list(e.customers),
            disclosed=[
                DisclosedField(path=p, level=DisclosureLevel(v)) for p, v in e.disclosed.items()
            ],
            policy_version=e.policy_version,
            backends=list(e.backends),
            latency_ms=e.latency_us / 1000,
            hash=e.hash,
            source=e.source,
            refused_count=e.refused_count,
            window_end=(from_micros(e.window_end_us) if e.window_end_us is not None else None),
        )


@strawberry.type
class AuditConnection:
    nodes: list[AuditRecord]
    page_info: PageInfo


@strawberry.type
class AuditFinding:
    kind: str = strawberry.field(
        description="edited, deleted, inserted, reordered, broken_link, truncated, rewritten, "
        "forged_checkpoint, checkpoint_mismatch or checkpoint_deleted."
    )
    seq: int
    detail: str


@strawberry.enum(description="Whether checkpoint signatures were checked with a trusted key.")
class SignatureTrust(enum.Enum):
    TRUSTED = "trusted"  # the key pinned in audit.trusted_public_key_file
    UNTRUSTED = "untrusted"  # only the hub's own key file: replaceable with the checkpoints


@strawberry.type(description="A signed checkpoint an incremental verification started from.")
class AuditCheckpointRef:
    kind: str = strawberry.field(description="published or prune.")
    seq: int
    time: datetime


@strawberry.type(
    description="The chain verified from the latest trustworthy checkpoint to the head, or "
    "(full) end to end against the latest checkpoint."
)
class AuditVerification:
    ok: bool
    checked: int = strawberry.field(description="How many records were walked.")
    full: bool
    started_from: AuditCheckpointRef | None = strawberry.field(
        description="The checkpoint an incremental walk started from (null: the genesis)."
    )
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    anchor: str
    checkpoint_seq: int | None
    findings: list[AuditFinding]
    signatures: SignatureTrust = strawberry.field(
        description="TRUSTED: checkpoint signatures were checked with the public key pinned "
        "in audit.trusted_public_key_file. UNTRUSTED: only with the hub's own key file, which "
        "whoever can rewrite the hub's state can replace along with the checkpoints; `ok` "
        "then proves less."
    )
    key_id: str | None = strawberry.field(description="The key signatures were checked with.")
    checkpoints_checked: int = strawberry.field(
        description="Checkpoints compared with the chain (incremental: those tried as start)."
    )

    @classmethod
    def of(cls, r: VerificationReport) -> AuditVerification:
        return cls(
            ok=r.ok,
            checked=r.checked,
            full=r.full,
            started_from=_started_from(r),
            first_seq=r.first_seq,
            last_seq=r.last_seq,
            head_hash=r.head_hash,
            anchor=r.anchor,
            checkpoint_seq=r.checkpoint_seq,
            findings=[AuditFinding(kind=f.kind, seq=f.seq, detail=f.detail) for f in r.findings],
            signatures=SignatureTrust.TRUSTED if r.key_trusted else SignatureTrust.UNTRUSTED,
            key_id=r.key_id,
            checkpoints_checked=r.checkpoints_checked,
        )


def _started_from(r: VerificationReport) -> AuditCheckpointRef | None:
    if r.full or r.start_kind is None or r.start_seq is None or r.start_time_us is None:
        return None
    return AuditCheckpointRef(
        kind=r.start_kind,
        seq=r.start_seq,
        time=from_micros(r.start_time_us),
    )


def _auditor_log(info: GraphInfo) -> AuditReader:
    if info.context.principal.role != AUDITOR_ROLE:
        raise GraphError("FORBIDDEN", "Only the auditor role may read the access log.")
    if info.context.audit is None:
        raise GraphError("AUDIT_DISABLED", "The access log is switched off on this hub.")
    return info.context.audit


def _micros(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{seq}".encode()).decode()


def _after(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith(CURSOR_PREFIX):
            raise ValueError(cursor)
        return int(text.removeprefix(CURSOR_PREFIX))
    except ValueError:
        raise bad_input("after is not a cursor this API issued.") from None


def _search(given: AuditFilter | None) -> AuditSearch:
    if given is None:
        return AuditSearch()
    for name, value in (
        ("customerId", given.customer_id),
        ("principal", given.principal),
        ("channel", given.channel),
        ("role", given.role),
        ("operation", given.operation),
        ("code", given.code),
        ("purpose", given.purpose),
        ("requestId", given.request_id),
    ):
        if value is not None and not 1 <= len(value) <= MAX_FILTER_TEXT:
            raise bad_input(f"{name} must be 1 to {MAX_FILTER_TEXT} characters.")
    return AuditSearch(
        customer_id=str(given.customer_id) if given.customer_id is not None else None,
        principal=given.principal,
        channel=given.channel,
        time_from_us=_micros(given.from_),
        time_to_us=_micros(given.to),
        outcome=given.decision.value if given.decision else None,
        clear_only=given.clear_only,
        role=given.role,
        operation=given.operation,
        code=given.code,
        purpose=given.purpose,
        request_id=given.request_id,
    )


@strawberry.type
class AuditQuery:
    @strawberry.field(description="The access log, newest first (auditor role only).")
    async def audit_log(
        self,
        info: GraphInfo,
        filter: AuditFilter | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> AuditConnection:
        reader = _auditor_log(info)
        limit = reader.max_search_page
        if not 1 <= first <= limit:
            raise bad_input(f"first must be between 1 and {limit}.")
        page = await reader.search(_search(filter), first, _after(after) if after else None)
        nodes = [AuditRecord.of(e) for e in page.entries]
        return AuditConnection(
            nodes=nodes,
            page_info=PageInfo(
                has_next_page=page.has_next,
                end_cursor=_cursor(nodes[-1].seq) if nodes else None,
            ),
        )

    @strawberry.field(
        description="Verify the chain now (auditor role only): from the latest checkpoint "
        "whose signature and head hash check out to the head; full: from the start."
    )
    async def audit_verification(self, info: GraphInfo, full: bool = False) -> AuditVerification:
        return AuditVerification.of(await _auditor_log(info).verify(full))
