"""How the graph starts workflows and signals them: the one door from schema to engine.

A mutation's idempotency key is the caller's: the request (and workflow) id is derived from the
caller's credential and the key, and the input's digest is remembered with it. The same key
with the same input gives back the same request; with another input it is refused
(``KeyReused``). Starting never waits for a workflow: DBOS starts it (once per id) and the
caller reads the request's state from the hub's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from dbos import DBOS, SetWorkflowID

from orchestration.runtime import EventBus
from orchestration.store import RequestStore, input_hash, workflow_id

#: Terminal states: a request in one of them moves no more.
TERMINAL_STATES = frozenset(
    {"ARCHIVED", "CONFIRMED", "COMPENSATED", "REJECTED", "FULFILLED", "EXPIRED"}
)


def _workflow(kind: str) -> Any:
    # Imported here: the workflow modules register with DBOS when the engine launches.
    from orchestration.complaint import complaint
    from orchestration.handoff import handoff
    from orchestration.plan_change import plan_change

    return {"complaint": complaint, "plan_change": plan_change, "handoff": handoff}[kind]


class Workflows:
    """Start and signal workflows; read requests through ``store``."""

    def __init__(
        self,
        store: RequestStore,
        bus: EventBus,
        poll_s: float = 1.0,
        *,
        max_description_chars: int,
        max_agent_credit: Decimal = Decimal("500.00"),
    ) -> None:
        self.store = store
        self.bus = bus
        #: How often a subscription looks at the history table without an in-process wake-up
        #: (events written by another replica).
        self.poll_s = poll_s
        #: The longest complaint description fileComplaint accepts (characters).
        self.max_description_chars = max_description_chars
        #: The largest credit resolveComplaint(credit:) grants.
        self.max_agent_credit = max_agent_credit

    async def start(
        self,
        kind: str,
        *,
        mutation: str,
        caller: str,
        key: str,
        fingerprint: Mapping[str, Any],
        customer_id: str,
        channel: str,
        workflow_input: Mapping[str, Any],
        detail: Mapping[str, Any] | None = None,
    ) -> str:
        """Start (or find again) the workflow of a caller's key; the request id."""
        request_id = await self.store.claim_key(
            caller,
            key,
            mutation,
            input_hash(mutation, fingerprint),
            workflow_id(kind, caller, key),
        )
        await self.store.create_request(
            request_id,
            kind=kind,
            customer_id=customer_id,
            channel=channel,
            started_by=caller,
            detail=detail,
        )
        self.bus.publish()
        # Same id, same workflow: DBOS starts it once, a repeat returns the running one.
        with SetWorkflowID(request_id):
            await DBOS.start_workflow_async(
                _workflow(kind), {**workflow_input, "request_id": request_id, "channel": channel}
            )
        return request_id

    async def signal(
        self,
        request_id: str,
        topic: str,
        message: Mapping[str, Any],
        *,
        mutation: str,
        caller: str,
        key: str,
        fingerprint: Mapping[str, Any],
    ) -> None:
        """Send a workflow a message once per caller key (a repeat sends nothing more)."""
        await self.store.claim_key(
            caller, key, mutation, input_hash(mutation, fingerprint), request_id
        )
        await DBOS.send_async(
            request_id,
            dict(message),
            topic,
            idempotency_key=workflow_id("signal", caller, key),
            # A request forked onto a new version (docs/workflows.md) hears it too.
            send_to_forks=True,
        )
