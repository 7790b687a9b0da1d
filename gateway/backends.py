"""Builds the adapters and identity services from settings: the one place they are wired."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.billing import BillingAdapter
from adapters.boss import BossAdapter
from adapters.care import CareAdapter
from adapters.identity import IdentityResolver
from adapters.identity_store import IdentityStore
from adapters.resilience import Endpoint
from gateway.settings import BackendSettings, Settings
from schema.context import Backends


def _endpoint(system: str, backend: BackendSettings) -> Endpoint:
    return Endpoint(
        system=system,
        base_url=backend.base_url,
        timeout_s=backend.timeout_s,
        max_connections=backend.max_connections,
        retry_attempts=backend.retry_attempts,
        retry_backoff_s=backend.retry_backoff_s,
    )


def build_backends(settings: Settings, engine: AsyncEngine) -> Backends:
    boss = BossAdapter(
        _endpoint("boss", settings.boss),
        wsdl_path=settings.boss.wsdl_path,
        service_path=settings.boss.service_path,
        login_system_code=settings.boss.login_system_code,
    )
    billing = BillingAdapter(_endpoint("billing", settings.billing))
    care = CareAdapter(_endpoint("care", settings.care))
    store = IdentityStore(engine)
    return Backends(
        boss=boss,
        billing=billing,
        care=care,
        identity_store=store,
        identity_resolver=IdentityResolver(store, billing, care),
        max_page_size=settings.graphql.max_page_size,
    )
