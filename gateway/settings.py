"""Settings of the hub: environment variables over a TOML config file over defaults.

Every value has an embedded default so that `switchboard demo` needs nothing else. Environment
variables use the prefix ``SWITCHBOARD_`` and ``__`` for nesting
(``SWITCHBOARD_BILLING__TIMEOUT_S=2``). The config file is ``switchboard.toml`` in the working
directory, or the path in ``SWITCHBOARD_CONFIG``.
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

STATE_DIR = Path(".switchboard")
ENV_PREFIX = "SWITCHBOARD_"


class SettingsModel(BaseModel):
    """A table of the settings: an unknown key in it is a typo, refused like a top-level one."""

    model_config = ConfigDict(extra="forbid")


class SettingsInvalid(ValueError):
    """The settings cannot be read; the message is one line naming the key or file:line."""


class BackendSettings(SettingsModel):
    """How the hub reaches one legacy system."""

    base_url: str
    timeout_s: float = Field(default=2.0, gt=0, description="Per-call timeout, connect included.")
    max_connections: int = Field(default=50, ge=1)
    retry_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts for idempotent reads (1 = no retry)."
    )
    retry_backoff_s: float = Field(default=0.05, ge=0)
    max_concurrency: int = Field(
        default=50,
        ge=1,
        description="Bulkhead: calls in flight at once; more wait for a slot within the timeout.",
    )
    max_concurrency_per_request: int = Field(
        default=10,
        ge=1,
        description="Fair share: one request's calls in flight at once (at most max_concurrency);"
        " its others wait for its own slots within their timeout.",
    )
    breaker_failure_threshold: int = Field(
        default=5,
        ge=1,
        description="Consecutive failed attempts (unavailable, timed out) that open the circuit.",
    )
    breaker_reset_s: float = Field(
        default=5.0,
        gt=0,
        description="Cool-down of an open circuit before one probe call tries the system again.",
    )
    # Hostile or broken replies (docs/security.md, "Hostile backends"). The biggest reply the
    # bundled systems give is ~125 KB (a 200-customer BOSS page is ~115 KB); 8 MiB leaves room
    # for fat free text while capping what one call can hold at once.
    max_response_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="A reply body (decompressed) over this is refused and its connection closed.",
    )
    max_response_depth: int = Field(
        default=64,
        ge=8,
        le=256,
        description="JSON or XML nested deeper is refused (libxml2 stops at 256 regardless).",
    )
    max_response_items: int = Field(
        default=200_000,
        ge=100,
        description="JSON values, or XML elements plus attributes, per reply (or list read).",
    )
    breaker_min_budget_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A timed-out attempt counts against the breaker only if it reached the "
        "backend with at least this share of timeout_s left (else the hub's queueing used it).",
    )
    parse_in_thread_above_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="A SOAP reply body longer than this is parsed in a worker thread, so the "
        "event loop serves other requests meanwhile (0: every reply).",
    )
    list_read_timeout_s: float = Field(
        default=8.0,
        gt=0,
        le=600,
        description="A list read whole, page after page (all_pages): all its calls together "
        "at most this long, then BACKEND_TIMEOUT.",
    )


class BossSettings(BackendSettings):
    base_url: str = "http://127.0.0.1:8101"
    wsdl_path: str = "/boss/services/BossService?wsdl"
    service_path: str = "/boss/services/BossService"
    login_system_code: str = "SWITCHBOARD"


class BillingSettings(BackendSettings):
    base_url: str = "http://127.0.0.1:8102"


class CareSettings(BackendSettings):
    base_url: str = "http://127.0.0.1:8103"


class GraphQLSettings(SettingsModel):
    graphiql: bool = Field(default=False, description="Serve GraphiQL on GET /graphql.")
    max_page_size: int = Field(default=200, ge=1, le=1000)
    max_offers: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Largest `first` of Customer.nextBestOffers; more (or less than 1): "
        "BAD_USER_INPUT naming the limit.",
    )
    document_cache_size: int = Field(
        default=1024,
        ge=0,
        description="Documents whose parse, validation, token count and figures are kept "
        "(each cache this many entries); 0 keeps none.",
    )
    cached_document_max_chars: int = Field(
        default=32 * 1024,
        ge=0,
        description="Longest document whose token count and figures are kept; longer ones "
        "are measured on every request (so a cache holds at most document_cache_size x this).",
    )
    operation_limits: bool = Field(
        default=True,
        description="Off only to measure the operation limits' cost (bench/): no token, depth, "
        "alias, root field or cost limit is checked, whatever the policy says.",
    )


class CacheTtlSettings(SettingsModel):
    """Seconds a cached record of each kind is served; 0 leaves that kind uncached."""

    profile: float = Field(default=300, ge=0)
    subscriptions: float = Field(default=60, ge=0)
    line_by_msisdn: float = Field(default=60, ge=0, description="The line customerByMsisdn finds.")
    offerings: float = Field(default=3600, ge=0)
    billing_account: float = Field(default=300, ge=0)
    balance: float = Field(default=30, ge=0)
    bills: float = Field(default=300, ge=0)
    payments: float = Field(default=300, ge=0)
    tickets: float = Field(default=30, ge=0)
    interactions: float = Field(default=60, ge=0)


class AnswerCacheSettings(SettingsModel):
    """Whole answers reused for callers the policy treats alike (gateway/answer_cache.py)."""

    enabled: bool = Field(
        default=True, description="Off: every request runs the graph (records still cached)."
    )
    ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="Longest reuse of an answer (never longer than the shortest TTL of the "
        "record kinds it read; any eviction ends it); 0 keeps none.",
    )
    max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="All answers kept, in bytes of JSON."
    )
    max_entry_bytes: int = Field(
        default=256 * 1024, ge=0, description="A larger answer is not kept."
    )


class CacheSettings(SettingsModel):
    """The read-through cache in front of the backends (adapters/cache.py)."""

    enabled: bool = Field(default=True, description="Off to measure the cache's effect (bench/).")
    backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory: per process; redis: shared (scaled mode)."
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    namespace: str = Field(
        default="switchboard",
        min_length=1,
        description="Prefix of every cache key (hubs sharing one Redis need the same one).",
    )
    operation_timeout_s: float = Field(
        default=0.25, gt=0, description="A Redis operation slower than this is a miss."
    )
    ttl_s: CacheTtlSettings = Field(default_factory=CacheTtlSettings)
    answers: AnswerCacheSettings = Field(default_factory=AnswerCacheSettings)


class WorkflowSettings(SettingsModel):
    """The durable workflow engine (DBOS Transact) and the workflows' waits (orchestration/)."""

    enabled: bool = Field(default=True, description="Off: no engine, workflow mutations refused.")
    database_url: str | None = Field(
        default=None,
        description="DBOS system database (sqlite:///... or postgresql://...); default: "
        "workflows.sqlite beside a SQLite hub database, or the hub's own PostgreSQL database.",
    )
    application_version: str = Field(
        default="2026.11.1",
        min_length=1,
        description="Pinned workflow code version: recovery only resumes workflows of it.",
    )
    executor_id: str = Field(
        default="local",
        min_length=1,
        max_length=64,
        description="This process's executor id: stable per replica, unique among replicas.",
    )
    complaint_sla_s: float | None = Field(
        default=None, gt=0, description="Overrides every complaint category's SLA (tests)."
    )
    feedback_wait_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    handoff_wait_s: float = Field(default=14 * 24 * 3600.0, gt=0)
    call_attempts: int = Field(default=3, ge=1, le=10)
    subscription_poll_s: float = Field(default=1.0, gt=0)
    executor_lock_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="At start, how long to wait for this executor id's liveness lock (held "
        "by a process still running under the same id) before refusing to start.",
    )
    max_description_chars: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Longest complaint description fileComplaint accepts (characters, after "
        "trimming); longer: BAD_USER_INPUT naming the limit, nothing starts.",
    )
    max_agent_credit: Decimal = Field(
        default=Decimal("500.00"),
        gt=0,
        le=1_000_000,
        decimal_places=2,
        description="Largest billing credit an agent may grant with resolveComplaint(credit:); "
        "more: BAD_USER_INPUT naming the limit, nothing is signalled.",
    )


class ScaledSettings(SettingsModel):
    """The scaled mode: N replicas sharing one Redis for limits, evictions and breaker state
    (docs/operations.md, "Replicas"). Unset ``redis_url``: all of it per process."""

    redis_url: str | None = Field(
        default=None,
        pattern=r"^rediss?://",
        description="Redis shared by every replica (redis://host:port/db); unset: every limit, "
        "cache eviction and breaker view stays in its own process.",
    )
    key_prefix: str = Field(
        default="switchboard",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Prefix of every key and pub/sub channel of the scaled mode (the same on "
        "every replica of one hub; another hub on the same Redis needs another).",
    )
    replica_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="This replica's name in the replica summary; default: workflows.executor_id.",
    )
    operation_timeout_s: float = Field(
        default=0.25, gt=0, le=10, description="One Redis call (a rate limit, a publish)."
    )
    redis_retry_s: float = Field(
        default=2.0,
        gt=0,
        description="After a Redis failure, limits are counted in process this long before "
        "Redis is tried again (no request waits on a dead Redis more than once per period).",
    )
    rate_limit_on_redis_error: Literal["local", "closed"] = Field(
        default="local",
        description="Redis unreachable: local = each process enforces the limits on its own "
        "(as without Redis); closed = requests with a rate limit are refused (429).",
    )
    heartbeat_s: float = Field(
        default=2.0, gt=0, description="How often each process publishes its breakers' state."
    )
    replica_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="A process that has not published for this long drops out of the summary.",
    )
    reconnect_max_s: float = Field(
        default=5.0, gt=0, description="Longest wait between two reconnects of the eviction feed."
    )
    eviction_max_keys: int = Field(
        default=10_000,
        ge=1,
        description="Cache keys in one eviction message at most: a write evicting more is "
        "published in several; a received message with more is dropped (the same on every "
        "replica).",
    )
    eviction_max_message_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest eviction message published or accepted (the same on every replica).",
    )
    summary_max_entries: int = Field(
        default=1000,
        ge=1,
        description="Process entries one replica summary reads at most (/replicas, "
        "`switchboard status`), whatever Redis holds.",
    )
    summary_max_entry_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="Largest process entry a summary reads; a larger one is skipped.",
    )

    @model_validator(mode="after")
    def _checked(self) -> ScaledSettings:
        if self.replica_ttl_s <= self.heartbeat_s:
            raise ValueError("scaled.replica_ttl_s must be longer than scaled.heartbeat_s")
        return self


class CampaignSettings(SettingsModel):
    """Event-triggered campaigns and their guards (marketing/, docs/marketing.md)."""

    enabled: bool = Field(
        default=True,
        description="Off: no campaign handler is installed; events stay stored, unhandled.",
    )
    rules_file: Path | None = Field(
        default=None,
        description="The campaigns file (YAML, `switchboard campaigns check`); the bundled "
        "marketing/rules/campaigns.yaml when unset.",
    )
    default_timezone: str = Field(
        default="Asia/Shanghai",
        description="The region's time zone: quiet hours and daily/weekly caps are counted in "
        "the customer's local time, this one when the customer's data has none.",
    )
    consent_default_granted: bool = Field(
        default=True,
        description="A customer with no stored consent for a channel and purpose counts as "
        "granted (opt-out); false: only an explicit grant allows a contact (opt-in).",
    )
    delivery_pump: bool = Field(
        default=True,
        description="Off: this process decides but starts no deliveries (another process's "
        "delivery pump starts the offers it reserved).",
    )
    delivery_batch_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Reserved offers a delivery pump claims (and starts workflows for) at once.",
    )
    delivery_max_in_flight: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="Deliveries running at once in a process; the pump claims no more until "
        "one ends (the workflows share the event loop with the intake and the decisions).",
    )
    delivery_busy_max_in_flight: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="Deliveries running at once in a process while its event intake or "
        "decisions are busy (an event stored or a batch decided within "
        "delivery_busy_window_s): a burst is stored and decided first, its sends drain after "
        "at delivery_max_in_flight. At least 1: a steady stream never stops the sends.",
    )
    delivery_busy_window_s: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="How long after the last event stored or batch decided in a process its "
        "intake counts as busy for the delivery pump; 0: the pump never yields.",
    )
    delivery_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often an idle pump looks for reserved offers (a decision in the same "
        "process wakes it at once; the poll finds other processes' and a restart's offers).",
    )
    delivery_restart_after_s: float = Field(
        default=60,
        gt=0,
        description="An offer claimed this long ago and still reserved is started again (a "
        "no-op if its workflow exists): covers a pump that died between claim and start.",
    )

    @model_validator(mode="after")
    def _zone(self) -> CampaignSettings:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("campaigns.default_timezone: not a known IANA time zone") from None
        return self


class AuditSettings(SettingsModel):
    """The tamper-evident access log (gateway/audit/, docs/audit.md)."""

    enabled: bool = Field(
        default=True, description="Off only to measure the log's cost (bench/): no records."
    )
    state_dir: Path = Field(
        default=STATE_DIR, description="Where the signing and customer keys are generated."
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) for checkpoints; state_dir/audit-signing.key "
        "when unset, generated on first use (the public key beside it, .pub).",
    )
    customer_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for customer ids in the log (set it in scaled mode, the same on "
        "every replica); else state_dir/audit-customer.key, generated on first use.",
    )
    retention_days: float = Field(default=183, ge=1, description="Records older are pruned.")
    max_batch: int = Field(default=256, ge=1, description="Records per group commit at most.")
    wal_checkpoint_every_s: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="SQLite: how often the WAL the event loop's commits grow is copied into "
        "the database (a passive checkpoint on the writer's thread; the loop's own commits "
        "never checkpoint). Longer: a larger WAL between checkpoints.",
    )
    customer_hashes_remembered: int = Field(
        default=4096,
        ge=0,
        description="Customer ids whose keyed hash each process keeps (an HMAC is ~3.5 us, a "
        "third of building a record); past it the memory is emptied and refilled. 0: none.",
    )
    trusted_public_key_file: Path | None = Field(
        default=None,
        description="The checkpoint public key (PEM) verification trusts (the page, "
        "auditVerification, `audit verify` without --public-key). Unset: signatures are "
        "checked with the hub's own key file only and reported UNTRUSTED.",
    )
    checkpoint_every_records: int = Field(
        default=10_000, ge=1, description="The gateway signs a checkpoint after this many records."
    )
    checkpoint_every_s: float = Field(
        default=300,
        gt=0,
        description="... or once the oldest record no checkpoint covers is this old (seconds).",
    )
    checkpoint_poll_s: float = Field(
        default=1.0, gt=0, description="How often each process looks whether one is due."
    )
    checkpoint_file: Path | None = Field(
        default=None,
        description="Append-only JSON lines file of the checkpoints signed (outside the "
        "database); state_dir/audit-checkpoints.jsonl when unset.",
    )
    scheduled_checkpoints: bool = Field(
        default=True, description="Off: checkpoints only from `switchboard audit checkpoint`."
    )
    refusal_window_s: float = Field(
        default=60,
        gt=0,
        description="Refusals past a limit (refusal_codes) are counted per (caller, code) in "
        "windows this long: at most one aggregate record per window.",
    )
    refusal_individual_records: int = Field(
        default=5,
        ge=0,
        description="The first refusals of each (caller, code) window still recorded one by one.",
    )
    refusal_max_callers: int = Field(
        default=10_000,
        ge=1,
        description="(caller, code) windows tracked at once; past it new callers share one.",
    )
    refusal_codes: list[str] = Field(
        default=["RATE_LIMITED", "UNAUTHENTICATED", "CHANNEL_MISMATCH"],
        description="Refusals before GraphQL that are aggregated past the first few.",
    )
    export_max_records: int = Field(
        default=1_000_000,
        ge=1,
        description="The auditors' page's export (GET /audit/export) refuses a filter matching "
        "more records (413 EXPORT_TOO_LARGE: narrow it, or use `switchboard audit export`).",
    )
    export_batch_records: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Records an export reads and writes at a time (its memory per download).",
    )
    max_search_page: int = Field(
        default=200,
        ge=1,
        le=1000,
        description="Largest `first` of auditLog (records per page); more (or less than 1): "
        "BAD_USER_INPUT naming the limit.",
    )


#: Signature algorithms a bearer token may use: asymmetric only. ``none`` and the HMAC family
#: are never accepted (an HS256 token "signed" with the public key is the classic confusion).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class OidcSettings(SettingsModel):
    """OAuth2/OIDC bearer tokens (JWT) beside API keys (gateway/jwt_auth.py, docs/security.md).

    Off unless ``jwks_file`` or ``jwks_url`` is set; then ``issuer`` and ``audience`` are
    required. Claims map to the principal: which claim holds the channel, role, scopes and
    partner.
    """

    jwks_file: Path | None = Field(
        default=None, description="A local JSON Web Key Set file (read at start-up)."
    )
    jwks_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The issuer's JWKS URL, fetched in the background and cached.",
    )
    issuer: str | None = Field(default=None, description="The `iss` every token must carry.")
    audience: list[str] = Field(
        default_factory=list, description="Accepted `aud` values (one must match)."
    )
    algorithms: list[str] = Field(
        default=["RS256", "ES256"], min_length=1, description="Signature algorithms accepted."
    )
    leeway_s: float = Field(
        default=30, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat."
    )
    max_token_age_s: float = Field(
        default=3600,
        gt=0,
        description="A token issued (iat) longer ago than this is refused, whatever its exp.",
    )
    max_token_bytes: int = Field(
        default=8192, ge=512, le=65536, description="Longer bearer tokens are refused unread."
    )
    jwks_cache_ttl_s: float = Field(
        default=300, gt=0, description="How long fetched keys are used before a refresh."
    )
    jwks_timeout_s: float = Field(
        default=2.0, gt=0, le=30, description="One JWKS fetch, connect included."
    )
    jwks_min_refresh_interval_s: float = Field(
        default=30,
        ge=0,
        description="An unknown kid refetches the JWKS at most this often (no fetch storm).",
    )
    jwks_max_bytes: int = Field(
        default=262_144, ge=1024, description="Largest JWKS document read (file or URL)."
    )
    max_kid_length: int = Field(
        default=128,
        ge=1,
        le=1024,
        description="Longest `kid` a token header may name (characters); longer: 401.",
    )
    max_scopes: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Scope items a token may carry (the scope claim split); more: 401.",
    )
    max_scope_length: int = Field(
        default=128,
        ge=1,
        le=1024,
        description="Longest scope item kept (characters); a longer one is dropped, the "
        "token still counts without it.",
    )
    channel_claim: str = Field(default="channel", min_length=1)
    role_claim: str = Field(default="role", min_length=1)
    scope_claim: str = Field(
        default="scope", min_length=1, description="Space-separated string or list of scopes."
    )
    partner_claim: str | None = Field(default="partner", description="Unset: no partner.")

    @property
    def enabled(self) -> bool:
        return self.jwks_file is not None or self.jwks_url is not None

    @model_validator(mode="after")
    def _checked(self) -> OidcSettings:
        unsafe = sorted(set(self.algorithms) - ASYMMETRIC_ALGORITHMS)
        if unsafe:
            raise ValueError(
                f"auth.oidc.algorithms: {', '.join(unsafe)} not allowed "
                f"(asymmetric only: {', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
            )
        if self.jwks_file is not None and self.jwks_url is not None:
            raise ValueError("auth.oidc: set jwks_file or jwks_url, not both")
        if self.enabled and (not self.issuer or not self.audience):
            raise ValueError("auth.oidc: issuer and audience are required with a JWKS")
        return self


class TrustedDocumentsSettings(SettingsModel):
    """Persisted (trusted) documents: the manifest hash-only requests name (docs/security.md).

    Which channels accept nothing else is policy (a channel's ``documents: trusted_only``).
    """

    manifest_file: Path | None = Field(
        default=None,
        description='JSON {"<sha256 hex>": "<document>", ..., "channels": {"<channel>": '
        "{...}}}; read at start-up.",
    )
    max_manifest_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest manifest file read."
    )


class HttpSettings(SettingsModel):
    """What /graphql accepts over HTTP before GraphQL sees it (docs/security.md)."""

    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest POST body to /graphql (bytes); larger ones get 413 PAYLOAD_TOO_LARGE.",
    )
    max_json_depth: int = Field(
        default=32,
        ge=4,
        le=512,
        description="Deepest nesting of arrays and objects in a request's JSON; deeper: 400.",
    )


class AuthSettings(SettingsModel):
    """Throttling of failed authentication (gateway/auth_throttle.py, docs/security.md)."""

    failure_window_s: float = Field(
        default=60.0, gt=0, description="The window failed attempts are counted in."
    )
    max_failures_per_source: int = Field(
        default=20,
        ge=1,
        description="Failed attempts from one client address in a window; past it: 429.",
    )
    max_failures_per_key_id: int = Field(
        default=10,
        ge=1,
        description="Failed attempts naming one key id (sb_<id>.) in a window; past it, "
        "addresses that failed with that id get 429 (others are still checked).",
    )
    failures_tracked: int = Field(
        default=100_000,
        ge=100,
        description="Addresses, key ids and (key id, address) pairs with failures each process "
        "remembers; past it, those without a failure in the window are forgotten.",
    )
    key_cache_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="How long a process keeps an API key it looked up: a revoked key stops "
        "working within this in every worker; 0 reads the key's row on every request.",
    )
    oidc: OidcSettings = Field(default_factory=OidcSettings)


class IdentitySettings(SettingsModel):
    """The identity crosswalk (adapters/identity_store.py, docs/architecture.md "Identity")."""

    absent_recheck_s: float = Field(
        default=3600.0,
        gt=0,
        le=366 * 86400,
        description="A system that had no record for a customer is asked again after this "
        "(systems open records every day); shorter: more lookups of customers still absent.",
    )
    settled_remembered: int = Field(
        default=200_000,
        ge=0,
        description="Customers resolved in every system whose crosswalk identity each process "
        "keeps in memory (no database round trip for them); past it the memory is emptied "
        "and refilled; 0 keeps none.",
    )


class WebSocketSettings(SettingsModel):
    """Limits on one websocket connection (gateway/ws_limits.py, docs/security.md)."""

    max_operations_per_connection: int = Field(
        default=100,
        ge=1,
        description="Operations running at once on one connection; past it the new one "
        "gets an error message (TOO_MANY_OPERATIONS).",
    )
    max_messages_per_second: int = Field(
        default=50,
        ge=1,
        description="Messages a client may send on one connection per second; past it the "
        "socket is closed with 4429.",
    )


class EventsSettings(SettingsModel):
    """Business events from the legacy systems (marketing/, docs/marketing.md "## Events")."""

    enabled: bool = Field(
        default=True, description="Off: no listener, no registration, no NATS consumers."
    )
    callback_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The hub's address as the systems reach it (callbacks are "
        "<this>/events/<source>); default http://<host>:<port>.",
    )
    max_body_bytes: int = Field(
        default=65_536, ge=1024, description="Largest notification body; larger: 413."
    )
    max_json_depth: int = Field(
        default=32, ge=4, le=512, description="Deepest nesting in a notification; deeper: 400."
    )
    signature_tolerance_s: float = Field(
        default=300,
        gt=0,
        le=3600,
        description="A signature timestamp further than this from the hub's clock: 401.",
    )
    intake_max_batch: int = Field(
        default=256, ge=1, description="Notifications committed together at most (group commit)."
    )
    dispatch: bool = Field(
        default=True, description="Off: this process stores events but hands none out."
    )
    dispatch_batch_size: int = Field(
        default=100, ge=1, le=10_000, description="Events per EventHandler.handle call at most."
    )
    dispatch_poll_s: float = Field(
        default=0.2, gt=0, description="How often an idle dispatcher looks for new events."
    )
    claim_lease_s: float = Field(
        default=60,
        gt=0,
        description="A claimed batch not marked handled by then is handed again elsewhere.",
    )
    retry_after_s: float = Field(
        default=5, ge=0, description="A batch whose handler raised is handed again after this."
    )
    retention_days: float = Field(
        default=30, gt=0, description="Handled events older than this are pruned."
    )
    prune_interval_s: float = Field(default=3600, gt=0, description="How often pruning runs.")
    register_callbacks: bool = Field(
        default=True, description="Register the callback with each webhook source's hub."
    )
    register_timeout_s: float = Field(default=5, gt=0, description="One hub call at most.")
    register_retry_s: float = Field(
        default=5, gt=0, description="A hub (or NATS) unreachable is tried again after this."
    )
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        pattern=r"^(nats|tls)://",
        description="The NATS server of sources with transport: nats.",
    )
    nats_fetch_batch: int = Field(default=256, ge=1, le=10_000)
    nats_ack_wait_s: float = Field(
        default=30, gt=0, description="JetStream redelivers a message not acked by then."
    )
    max_line_lookups: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Customer lookups by line (BOSS) in flight at once for events the "
        "crosswalk cannot place by their key.",
    )
    customer_keys_remembered: int = Field(
        default=100_000,
        ge=0,
        description="Event customer keys (system, key) whose hub id each process remembers; "
        "past it the memory is emptied and refilled from the crosswalk; 0 remembers none.",
    )
    resolve_by_line: bool = Field(
        default=True,
        description="An event whose customer key the crosswalk lacks is resolved by its line "
        "(one BOSS lookup).",
    )
    handler: Literal["campaigns", "none", "record"] = Field(
        default="campaigns",
        description="campaigns: the campaigns decide and deliver (when campaigns and workflows "
        "are on); record: the recording handler (one row per event in event_decision; tests "
        "and bench/); none: events stay stored, unhandled.",
    )


class TelemetrySettings(SettingsModel):
    """Traces (OpenTelemetry) and metric labels (docs/operations.md, "Tracing", "Metrics")."""

    enabled: bool = Field(
        default=False,
        description="Traces on: spans exported over OTLP/HTTP. Off: no spans are made at all "
        "(a caller's traceparent is still passed on to the backends).",
    )
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces",
        pattern=r"^https?://",
        description="The OTLP/HTTP traces endpoint of the collector.",
    )
    service_name: str = Field(
        default="switchboard", min_length=1, description="service.name of every span."
    )
    sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces sampled; a caller's sampled flag is followed.",
    )
    max_operation_names: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Distinct operation names a process labels metrics and spans with; "
        "later new names are reported as 'other'.",
    )


class DatabaseSettings(SettingsModel):
    """The hub database's schema (gateway/migrate.py, docs/operations.md, "Migrating")."""

    migrate_on_start: bool = Field(
        default=False,
        description="`switchboard serve` upgrades the hub database to this release's head "
        "before it starts the workers (off: it refuses to start on an older schema; run "
        "`switchboard migrate`).",
    )
    migrate_lock_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a migration waits for another one running on the same database.",
    )


class DependencyReadiness(SettingsModel):
    """One dependency in /readyz: whether it takes the hub out of rotation, and its check's
    time limit."""

    required: bool = Field(
        default=True, description="Down: /readyz 503 (required) or 200 degraded (optional)."
    )
    timeout_s: float = Field(default=1.0, gt=0, le=30, description="The check's time limit.")


class ReadinessSettings(SettingsModel):
    """What /readyz checks besides the legacy systems (gateway/readiness.py)."""

    backend_timeout_s: float = Field(
        default=3.0, gt=0, le=30, description="A legacy system's readiness ping."
    )
    hub_database: DependencyReadiness = Field(
        default_factory=lambda: DependencyReadiness(required=True, timeout_s=1.0)
    )
    audit: DependencyReadiness = Field(
        default_factory=lambda: DependencyReadiness(required=True, timeout_s=1.0)
    )
    workflows: DependencyReadiness = Field(
        default_factory=lambda: DependencyReadiness(required=True, timeout_s=2.0)
    )
    cache: DependencyReadiness = Field(
        # Optional: with Redis down, reads fall back to the backends.
        default_factory=lambda: DependencyReadiness(required=False, timeout_s=0.5)
    )


class Settings(BaseSettings):
    """The hub's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{STATE_DIR}/hub.db",
        description="The hub's own state (identity crosswalk, API keys, verifications, requests, "
        "the access log). SQLite or PostgreSQL; its schema: `switchboard migrate`.",
    )
    policy_file: Path | None = Field(
        default=None,
        description="Channel and disclosure rules (YAML); the bundled default when unset.",
    )
    policy_reload_interval_s: float = Field(default=2.0, gt=0)
    insight_rules_file: Path | None = Field(
        default=None,
        description="Customer insight rules (YAML: tags, value tiers, RFM, lifecycle, churn "
        "levels and the churn model file; docs/insight.md); the bundled "
        "insight/rules/default.yaml when unset. Reloaded on change like the policy.",
    )
    insight_reload_interval_s: float = Field(
        default=2.0, gt=0, description="How often the insight rules file is polled for changes."
    )
    policy_enforcement: bool = Field(
        default=True,
        description="Off only to measure the policy's cost (bench/): every field goes out clear.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    worker_healthcheck_s: int = Field(
        default=30,
        ge=1,
        le=600,
        description="With workers > 1: seconds a worker may take to answer the supervisor's "
        "health check (uvicorn's default, 5, kills workers still importing on a busy host).",
    )
    systems_dir: Path | None = Field(
        default=None,
        description="Folder of declared systems (one sub-folder each: system.yaml + "
        "mapping.yaml, docs/systems.md); the bundled systems/ when unset.",
    )
    system_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Base URL per declared system instance, over its system file "
        '(e.g. {"loyalty-north": "http://10.0.0.5:8104"}).',
    )

    @property
    def instance_urls(self) -> dict[str, str]:
        """``system_urls`` by instance name (an env JSON key may spell it LOYALTY_NORTH)."""
        return {name.replace("_", "-").lower(): url for name, url in self.system_urls.items()}

    role_engine: Literal["declared", "handwritten"] = Field(
        default="declared",
        description="What serves the hub's roles that a declared system plays (billing): "
        "the declared files through the generic engines, or the hand-written adapter kept "
        "for the benchmark's side-by-side comparison.",
    )
    boss: BossSettings = Field(default_factory=BossSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    care: CareSettings = Field(default_factory=CareSettings)
    graphql: GraphQLSettings = Field(default_factory=GraphQLSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="json: one JSON object per line (for collectors); text: one plain line.",
    )
    cache: CacheSettings = Field(default_factory=CacheSettings)
    workflows: WorkflowSettings = Field(default_factory=WorkflowSettings)
    campaigns: CampaignSettings = Field(default_factory=CampaignSettings)
    scaled: ScaledSettings = Field(default_factory=ScaledSettings)

    audit: AuditSettings = Field(default_factory=AuditSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    trusted_documents: TrustedDocumentsSettings = Field(default_factory=TrustedDocumentsSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the TOML file.
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_path()),
        )


def config_path() -> Path:
    """The TOML config file: SWITCHBOARD_CONFIG, else switchboard.toml in the working dir."""
    return Path(os.environ.get(f"{ENV_PREFIX}CONFIG", "switchboard.toml"))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; raise SettingsInvalid (one line, naming the bad key) on bad input."""
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as error:
        raise SettingsInvalid(_toml_problem(config_path(), error)) from None
    except ValidationError as error:
        raise SettingsInvalid(_validation_problem(error)) from None
    except SettingsError as error:  # e.g. a nested value given as malformed JSON in the env
        raise SettingsInvalid(f"invalid settings: {error}") from None


def _toml_problem(path: Path, error: tomllib.TOMLDecodeError) -> str:
    # tomllib reports the place only inside its message: "... (at line 3, column 9)".
    message = str(error)
    place = re.search(r"\(at line (\d+), column \d+\)$", message)
    if place is None:
        return f"{path}: not valid TOML: {message}"
    return f"{path}:{place.group(1)}: not valid TOML: {message[: place.start()].strip()}"


def _validation_problem(error: ValidationError) -> str:
    """Every problem on one line: dotted key, where it came from, what is wrong (no values:
    a setting may be a secret)."""
    problems = []
    variables = {name.upper(): name for name in os.environ}  # names are case-insensitive
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        variable = variables.get(ENV_PREFIX + "__".join(str(p) for p in item["loc"]).upper())
        where = f"from {variable}" if variable else f"in {config_path()}"
        reason = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{key} ({where}): {reason}")
    return "invalid settings: " + "; ".join(problems)


def replica_state_dir(database_url: str) -> Path:
    """The replica's local state dir: beside a SQLite hub database, else .switchboard/.

    Workflow executor slots and the workers' metric files live there."""
    from sqlalchemy.engine import make_url  # here: the settings module stays cheap to import

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent
    return STATE_DIR
