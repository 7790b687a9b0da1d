"""What every resolver can reach: the caller, the backends and this request's loaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from adapters.declared.linker import DeclaredLinker
from adapters.declared.system import DeclaredSystem
from adapters.identity import IdentityResolver
from adapters.identity_store import IdentityStore
from adapters.read_ledger import ReadLedger, open_read_ledger
from adapters.request_share import open_request_share
from insight.provider import InsightEngine
from marketing.services import MarketingServices
from orchestration.service import Workflows
from orchestration.store import RequestStore
from policies.disclosure import Disclosure
from policies.model import Policy
from policies.principal import Principal
from policies.verification import VerificationStore
from schema.audit_reader import AuditReader
from schema.loaders import Loaders


@dataclass(frozen=True, slots=True)
class Backends:
    """The process-wide adapters and identity services, built once at start-up."""

    customer_system: CustomerSystem
    billing: BillingSystem
    care: CareSystem
    identity_store: IdentityStore
    identity_resolver: IdentityResolver
    #: The largest ``first`` of ``Customer.nextBestOffers`` (setting ``graphql.max_offers``).
    max_offers: int
    max_page_size: int = 200
    #: Where verifications (OTP, ID-card checks) are kept; None where nothing verifies.
    verifications: VerificationStore | None = None
    #: Starts and signals workflows, reads requests; None when workflows are off.
    workflows: Workflows | None = None
    #: Campaigns, offers and consents (marketing/); None when campaigns are off.
    marketing: MarketingServices | None = None
    #: Systems declared by files (systems/), by name, and the linkers of those with identity.
    systems: Mapping[str, DeclaredSystem] = field(default_factory=dict)
    linkers: Mapping[str, DeclaredLinker] = field(default_factory=dict)
    #: The data class of each system's crosswalk keys, by system (instance) name.
    key_classes: Mapping[str, str] = field(default_factory=dict)
    #: Customer insight (tags, tiers, churn risk) under the rules in force; None: not offered.
    insight: InsightEngine | None = None
    #: The callers' idempotency keys and the input each was first used with (declared
    #: writes); None: not recorded, a repeat is the system's own to recognise.
    mutation_keys: RequestStore | None = None


@dataclass(slots=True)
class RequestContext:
    principal: Principal
    backends: Backends
    loaders: Loaders
    request_id: str
    disclosure: Disclosure
    #: A websocket's connection_init payload (strawberry fills it in).
    connection_params: dict[str, Any] | None = None
    # For the audit log (gateway/audit/): what this request did, filled as it runs.
    audit: AuditReader | None = None  # the log, for the auditor's queries; None when off
    backends_called: set[str] = field(default_factory=set)  # filled by the loaders
    customers_touched: set[str] = field(default_factory=set)  # hub ids; hashed in the log
    operation_type: str | None = None  # set by schema.operation_facts.OperationFacts
    operation_name: str | None = None
    document_sha256: str | None = None
    #: Set on a websocket's context: records each operation on it when it ends (the audit log).
    on_stream_end: Callable[[RequestContext, int, float, list[Any]], Awaitable[None]] | None = None
    #: How fresh this request's backend reads were (whether its answer may be reused).
    reads: ReadLedger = field(default_factory=ReadLedger)


def new_request_context(
    principal: Principal,
    backends: Backends,
    request_id: str,
    policy: Policy,
    purpose: str | None = None,
    enforce_policy: bool = True,
    audit: AuditReader | None = None,
) -> RequestContext:
    backends_called: set[str] = set()
    # This request's fair share of each backend's call slots (adapters/request_share.py):
    # the calling task and every task its resolvers and loaders start from here on see it.
    open_request_share()
    # Likewise the ledger of its reads: the record cache and the backend guard note in it.
    reads = open_read_ledger()
    return RequestContext(
        principal=principal,
        backends=backends,
        loaders=Loaders(
            customer_system=backends.customer_system,
            billing=backends.billing,
            care=backends.care,
            identity_store=backends.identity_store,
            identity_resolver=backends.identity_resolver,
            backends_called=backends_called,
            systems=backends.systems,
            linkers=backends.linkers,
        ),
        request_id=request_id,
        disclosure=Disclosure(policy, principal, purpose, enforced=enforce_policy),
        audit=audit,
        backends_called=backends_called,
        reads=reads,
    )
