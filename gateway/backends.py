"""Builds the adapters and identity services from settings: the one place they are wired.

Each backend gets one guard (circuit breaker, bulkhead, counters) handed to its adapter in the
``Endpoint`` and kept here for /readyz and /metrics. With the cache on, every adapter is wrapped
in its cached counterpart, sharing one ``RecordCache``; the identity resolver gets the wrapped
ones too (its lookups pass through uncached).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.billing import BillingAdapter
from adapters.boss import BossAdapter
from adapters.cache import (
    CachedBillingSystem,
    CachedCareSystem,
    CachedCustomerSystem,
    RecordCache,
)
from adapters.care import CareAdapter
from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from adapters.declared.linker import DeclaredLinker
from adapters.declared.registry import (
    BUNDLED_SYSTEMS_DIR,
    SystemRegistry,
    load_registry,
    with_bundled_roles,
)
from adapters.declared.roles import play
from adapters.declared.spec import SystemSpec
from adapters.declared.system import DeclaredSystem
from adapters.identity import IdentityResolver
from adapters.identity_store import IdentityStore
from adapters.resilience import BackendGuard, Endpoint
from gateway.settings import BackendSettings, CacheSettings, Settings
from gateway.verification_store import SqlVerificationStore
from insight.provider import InsightEngine
from insight.rules import InsightRules
from insight.store import RulesStore
from orchestration.store import RequestStore
from schema.context import Backends

log = logging.getLogger("switchboard.systems")


@dataclass(frozen=True, slots=True)
class SystemProbe:
    """One instance of a declared system, as /readyz checks it."""

    name: str
    system: DeclaredSystem
    required: bool

    async def ping(self) -> None:
        await self.system.ping(self.name)


@dataclass(frozen=True, slots=True)
class RoleProbe:
    """One instance of a role's system (or the hand-written adapter), as /readyz checks it."""

    name: str
    ping: Callable[[], Awaitable[None]]


def _split_system(adapter: Any) -> DeclaredSystem | None:
    """The declared system behind a role adapter when it has several instances (each then
    has its own guard and probe); None for one instance or a hand-written adapter."""
    system = getattr(adapter, "system", None)
    return system if isinstance(system, DeclaredSystem) and len(system.instances) > 1 else None


def _role_probes(adapter: Any) -> tuple[RoleProbe, ...]:
    """One probe per instance of a declared role system with several; else the adapter's."""
    if (system := _split_system(adapter)) is not None:
        return tuple(RoleProbe(n, partial(adapter.ping, n)) for n in system.instances)
    return (RoleProbe(adapter.name, adapter.ping),)


def _role_guards(adapter: Any, endpoint: Endpoint) -> dict[str, BackendGuard]:
    """The guards a role's calls go through: each instance's when its system has several."""
    if (system := _split_system(adapter)) is not None:
        return {n: e.guard for n, e in system.endpoints.items() if e.guard is not None}
    return {endpoint.system: endpoint.guard} if endpoint.guard is not None else {}


@dataclass(frozen=True, slots=True)
class Wiring:
    """What ``build_backends`` made: the schema's backends, plus what /readyz and /metrics read."""

    backends: Backends
    #: One guard per backend, by system name ("boss", "billing", "care").
    guards: Mapping[str, BackendGuard]
    #: The shared read-through cache; None when ``cache.enabled`` is false.
    cache: RecordCache | None
    #: The declared systems (systems/), and what /readyz probes of them.
    registry: SystemRegistry = field(default_factory=lambda: SystemRegistry({}))
    probes: tuple[SystemProbe, ...] = ()
    #: One guard per declared system instance, by instance name ("loyalty-north").
    system_guards: Mapping[str, BackendGuard] = field(default_factory=dict)
    #: What /readyz probes of the three roles: one per instance (guards has the same names).
    role_probes: tuple[RoleProbe, ...] = ()

    @property
    def all_guards(self) -> dict[str, BackendGuard]:
        return {**self.guards, **self.system_guards}

    async def start_systems(self) -> None:
        for system in self.backends.systems.values():
            await system.start()

    async def close(self) -> None:
        for adapter in (self.backends.customer_system, self.backends.billing, self.backends.care):
            await adapter.close()
        for system in self.backends.systems.values():
            await system.close()
        if self.cache is not None:
            await self.cache.close()


def _endpoint(system: str, backend: BackendSettings) -> Endpoint:
    endpoint = Endpoint(
        system=system,
        base_url=backend.base_url,
        timeout_s=backend.timeout_s,
        max_connections=backend.max_connections,
        retry_attempts=backend.retry_attempts,
        retry_backoff_s=backend.retry_backoff_s,
        breaker_failure_threshold=backend.breaker_failure_threshold,
        breaker_reset_s=backend.breaker_reset_s,
        max_concurrency=backend.max_concurrency,
        max_response_bytes=backend.max_response_bytes,
        max_response_depth=backend.max_response_depth,
        max_response_items=backend.max_response_items,
        max_concurrency_per_request=backend.max_concurrency_per_request,
        breaker_min_budget_share=backend.breaker_min_budget_share,
        list_read_timeout_s=backend.list_read_timeout_s,
        parse_in_thread_above_bytes=backend.parse_in_thread_above_bytes,
    )
    # The guard is built here, not in the adapter, so that /readyz and /metrics can see it.
    return replace(endpoint, guard=BackendGuard.for_endpoint(endpoint))


def build_cache(settings: CacheSettings) -> RecordCache | None:
    if not settings.enabled:
        return None
    ttls = settings.ttl_s.model_dump()
    if settings.backend == "redis":
        return RecordCache.on_redis(
            settings.redis_url,
            timeout_s=settings.operation_timeout_s,
            ttls=ttls,
            namespace=settings.namespace,
        )
    return RecordCache.in_memory(ttls=ttls, namespace=settings.namespace)


def _instance_endpoint(spec: SystemSpec, name: str, base_url: str) -> Endpoint:
    call = spec.call
    endpoint = Endpoint(
        system=name,
        base_url=base_url,
        timeout_s=call.timeout_s,
        max_connections=call.max_connections,
        retry_attempts=call.retry_attempts,
        retry_backoff_s=call.retry_backoff_s,
        breaker_failure_threshold=call.breaker_failure_threshold,
        breaker_reset_s=call.breaker_reset_s,
        max_concurrency=call.max_concurrency,
        max_concurrency_per_request=call.max_concurrency_per_request,
        list_read_timeout_s=call.list_read_timeout_s,
        parse_in_thread_above_bytes=call.parse_in_thread_above_bytes,
    )
    return replace(endpoint, guard=BackendGuard.for_endpoint(endpoint))


def load_systems(settings: Settings) -> SystemRegistry:
    """The declared systems: the settings' folder, or the bundled one; a role no system
    there plays is served by its bundled declaration."""
    return with_bundled_roles(load_registry(settings.systems_dir or BUNDLED_SYSTEMS_DIR))


def build_systems(
    registry: SystemRegistry, settings: Settings, cache: RecordCache | None
) -> tuple[dict[str, DeclaredSystem], dict[str, Endpoint]]:
    """One DeclaredSystem per declared system, one guarded endpoint per instance."""
    overrides = settings.instance_urls
    systems: dict[str, DeclaredSystem] = {}
    endpoints: dict[str, Endpoint] = {}
    for spec in registry.graph_systems():
        mine = {
            i.name: _instance_endpoint(spec, i.name, overrides.get(i.name, i.base_url).rstrip("/"))
            for i in spec.instances
        }
        endpoints.update(mine)
        systems[spec.name] = DeclaredSystem(spec, mine, cache)
    return systems, endpoints


def _role_adapter(
    registry: SystemRegistry,
    settings: Settings,
    role: str,
    endpoint: Endpoint,
    handwritten: Callable[[], Any],
) -> Any:
    """The adapter that plays ``role``: the declared system that plays it, reached with the
    role's own settings table (``[billing]``: base URL, timeouts, breaker, bulkhead), or the
    hand-written adapter (``handwritten()``) when ``role_engine`` asks for it (the benchmark's
    comparison) or no system plays the role. The table's own keys beyond a backend's
    (``[boss]``'s ``service_path``, ``login_system_code``) reach the declaration as its
    settings (``$settings.name`` in its system file)."""
    spec = registry.playing(role)
    if settings.role_engine == "handwritten" or spec is None:
        return handwritten()
    table = _own_settings(getattr(settings, endpoint.system, None))
    return play(spec, endpoint, table, settings.instance_urls)


def _own_settings(table: BackendSettings | None) -> dict[str, str]:
    """A role's settings table's keys that every backend does not have, as text."""
    if table is None:
        return {}
    common = BackendSettings.model_fields
    return {k: str(v) for k, v in table.model_dump().items() if k not in common}


def build_backends(
    settings: Settings, engine: AsyncEngine, registry: SystemRegistry | None = None
) -> Wiring:
    endpoints = {
        "boss": _endpoint("boss", settings.boss),
        "billing": _endpoint("billing", settings.billing),
        "care": _endpoint("care", settings.care),
    }
    registry = registry if registry is not None else load_systems(settings)
    for name in registry.unknown_instances(settings.instance_urls):
        # Not fatal (a shared settings file may name instances of systems deployed elsewhere),
        # but said: a misspelt name would otherwise leave the instance at its file's URL.
        log.warning("system_urls names '%s', which no declared system has as an instance", name)
    customer_system: CustomerSystem = _role_adapter(
        registry,
        settings,
        "customer",
        endpoints["boss"],
        lambda: BossAdapter(
            endpoints["boss"],
            wsdl_path=settings.boss.wsdl_path,
            service_path=settings.boss.service_path,
            login_system_code=settings.boss.login_system_code,
        ),
    )
    billing: BillingSystem = _role_adapter(
        registry,
        settings,
        "billing",
        endpoints["billing"],
        lambda: BillingAdapter(endpoints["billing"]),
    )
    care: CareSystem = _role_adapter(
        registry, settings, "care", endpoints["care"], lambda: CareAdapter(endpoints["care"])
    )
    roles = ((customer_system, "boss"), (billing, "billing"), (care, "care"))
    guards: dict[str, BackendGuard] = {}
    for adapter, table in roles:
        guards.update(_role_guards(adapter, endpoints[table]))
    role_probes = tuple(probe for adapter, _ in roles for probe in _role_probes(adapter))
    cache = build_cache(settings.cache)
    if cache is not None:
        customer_system = CachedCustomerSystem(customer_system, cache)
        billing = CachedBillingSystem(billing, cache)
        care = CachedCareSystem(care, cache)
    systems, system_endpoints = build_systems(registry, settings, cache)
    linkers = {
        name: DeclaredLinker(system)
        for name, system in systems.items()
        if system.spec.identity is not None
    }
    key_classes = {
        instance: spec.identity.key_class
        for spec in registry
        if spec.identity is not None
        for instance in spec.instance_names
    }
    store = IdentityStore(
        engine,
        remembered=settings.identity.settled_remembered,
        absent_recheck_s=settings.identity.absent_recheck_s,
    )
    backends = Backends(
        customer_system=customer_system,
        billing=billing,
        care=care,
        identity_store=store,
        identity_resolver=IdentityResolver(store, billing, care),
        max_offers=settings.graphql.max_offers,
        max_page_size=settings.graphql.max_page_size,
        verifications=SqlVerificationStore(engine),
        systems=systems,
        linkers=linkers,
        key_classes=key_classes,
        mutation_keys=RequestStore(engine),
    )
    system_guards = {
        name: endpoint.guard for name, endpoint in system_endpoints.items() if endpoint.guard
    }
    probes = tuple(
        SystemProbe(instance, systems[spec.name], spec.required)
        for spec in registry.graph_systems()
        for instance in spec.instance_names
    )
    return Wiring(
        backends=backends,
        guards=guards,
        cache=cache,
        registry=registry,
        probes=probes,
        system_guards=system_guards,
        role_probes=role_probes,
    )


def insight_engine(backends: Backends, rules: RulesStore | InsightRules) -> InsightEngine:
    """The insight provider over the same (cached, guarded) adapters as the graph."""
    return InsightEngine(
        rules=rules,
        customer_system=backends.customer_system,
        billing=backends.billing,
        care=backends.care,
        identity_store=backends.identity_store,
        identity_resolver=backends.identity_resolver,
    )
