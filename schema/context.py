"""What every resolver can reach: the caller, the backends and this request's loaders."""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from adapters.identity import IdentityResolver
from adapters.identity_store import IdentityStore
from policies.disclosure import Disclosure
from policies.model import Policy
from policies.principal import Principal
from schema.audit_reader import AuditReader
from schema.loaders import Loaders


@dataclass(frozen=True, slots=True)
class Backends:
    """The process-wide adapters and identity services, built once at start-up."""

    boss: CustomerSystem
    billing: BillingSystem
    care: CareSystem
    identity_store: IdentityStore
    identity_resolver: IdentityResolver
    max_page_size: int = 200


@dataclass(slots=True)
class RequestContext:
    principal: Principal
    backends: Backends
    loaders: Loaders
    request_id: str
    disclosure: Disclosure
    # For the audit log (gateway/audit/): what this request did, filled as it runs.
    audit: AuditReader | None = None  # the log, for the auditor's queries; None when off
    backends_called: set[str] = field(default_factory=set)  # filled by the loaders
    customers_touched: set[str] = field(default_factory=set)  # hub ids; hashed in the log
    operation_type: str | None = None  # set by schema.operation_facts.OperationFacts
    operation_name: str | None = None
    document_sha256: str | None = None


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
    return RequestContext(
        principal=principal,
        backends=backends,
        loaders=Loaders(
            boss=backends.boss,
            billing=backends.billing,
            care=backends.care,
            identity_store=backends.identity_store,
            identity_resolver=backends.identity_resolver,
            backends_called=backends_called,
        ),
        request_id=request_id,
        disclosure=Disclosure(policy, principal, purpose, enforced=enforce_policy),
        audit=audit,
        backends_called=backends_called,
    )
