"""Wires the workflow engine from settings: request store, runtime, DBOS configuration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.cache import RecordCache
from gateway.settings import WorkflowSettings, replica_state_dir
from orchestration.engine import EngineConfig, WorkflowEngine, system_database_url
from orchestration.runtime import EventBus, Runtime, Timings
from orchestration.service import Workflows
from orchestration.store import RequestStore
from schema.context import Backends


@dataclass(frozen=True, slots=True)
class WorkflowWiring:
    engine: WorkflowEngine
    services: Workflows


def build_workflows(
    settings_database_url: str,
    workflow_settings: WorkflowSettings,
    engine: AsyncEngine,
    backends: Backends,
    cache: RecordCache | None,
    workers: int = 1,
) -> WorkflowWiring | None:
    if not workflow_settings.enabled:
        return None
    store = RequestStore(engine)
    bus = EventBus()

    async def evict(customer_no: str, accounts: Sequence[str], parties: Sequence[str]) -> None:
        if cache is not None:
            await cache.evict_customer(customer_no, accounts, parties)

    runtime = Runtime(
        customer_system=backends.customer_system,
        billing=backends.billing,
        care=backends.care,
        store=store,
        timings=Timings(
            complaint_sla_s=workflow_settings.complaint_sla_s,
            feedback_wait_s=workflow_settings.feedback_wait_s,
            handoff_wait_s=workflow_settings.handoff_wait_s,
            call_attempts=workflow_settings.call_attempts,
        ),
        bus=bus,
        evict=evict,
    )
    config = EngineConfig(
        system_database_url=system_database_url(
            settings_database_url, workflow_settings.database_url
        ),
        application_version=workflow_settings.application_version,
        executor_id=workflow_settings.executor_id,
        workers=workers,
        lock_dir=replica_state_dir(settings_database_url),
        executor_lock_wait_s=workflow_settings.executor_lock_wait_s,
    )
    return WorkflowWiring(
        engine=WorkflowEngine(config, runtime),
        services=Workflows(
            store,
            bus,
            workflow_settings.subscription_poll_s,
            max_description_chars=workflow_settings.max_description_chars,
            max_agent_credit=workflow_settings.max_agent_credit,
        ),
    )
