"""Helpers every workflow uses: idempotency keys, legacy calls, history and notifications.

Steps return JSON-safe dicts (the engine stores them as portable JSON). A legacy system's
error does not leave a step as an exception: it comes back as ``{"ok": False, "code": ...}``
so the workflow decides (compensate, reject, escalate) from data that survives a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from dbos import DBOS

from adapters.errors import AdapterError
from orchestration.runtime import current
from orchestration.timed import step

T = TypeVar("T")


#: The request a workflow serves. Bound at the top of every workflow (also when DBOS recovers
#: or forks one), read by the steps it awaits (they run in the workflow's own context).
_request_id: ContextVar[str | None] = ContextVar("switchboard_request_id", default=None)


def bind_request(request_id: str) -> None:
    _request_id.set(request_id)


def step_key(step: str) -> str:
    """The idempotency key of a legacy write: request id + step name, the same on every repeat.

    The request id is the original workflow id: a workflow forked onto a new version (a new
    workflow id) repeats its legacy writes with the same keys, and gets the first answers.
    """
    return f"{_request_id.get() or DBOS.workflow_id}:{step}"


async def call(make: Callable[[], Awaitable[T]]) -> T:
    """Call a legacy system; repeat it (same key, inside ``make``) while the error may pass."""
    timings = current().timings
    for attempt in range(1, timings.call_attempts + 1):
        try:
            return await make()
        except AdapterError as error:
            if not error.retryable or attempt == timings.call_attempts:
                raise
            await asyncio.sleep(timings.call_backoff_s * attempt)
    raise AssertionError("unreachable")


def failed(error: AdapterError) -> dict[str, Any]:
    return {"ok": False, "code": error.code, "system": error.system}


@step("switchboard.record")
async def record(
    request_id: str,
    event_key: str,
    state: str,
    status: str = "OPEN",
    waiting_for: str | None = None,
    detail: dict[str, Any] | None = None,
    merge: dict[str, Any] | None = None,
    channel: str = "hub",
    actor: str = "hub",
) -> None:
    """One state change in the hub's history (once per event key), and wake subscriptions."""
    runtime = current()
    await runtime.store.transition(
        request_id,
        event_key,
        state,
        status=status,
        waiting_for=waiting_for,
        channel=channel,
        actor=actor,
        detail=detail,
        merge=merge,
    )
    runtime.bus.publish()


@step("switchboard.notify")
async def notify(
    request_id: str, notice_key: str, channel: str, kind: str, detail: Mapping[str, Any]
) -> None:
    """A durable notification for the customer's (or the agents') channel, once."""
    runtime = current()
    await runtime.store.notify(
        request_id, notice_key, channel=channel, kind=kind, detail=dict(detail)
    )
    runtime.bus.publish()


@step("switchboard.mirror_ticket")
async def mirror_ticket(
    ticket_id: str | None,
    step: str,
    note: str,
    status: str | None = None,
    priority: str | None = None,
) -> dict[str, Any]:
    """Mirror a state change to the care ticket (keyed: a repeat appends no second note)."""
    if not ticket_id:
        return {"ok": True, "skipped": True}
    care = current().care
    try:
        await call(
            lambda: care.update_ticket(
                ticket_id,
                status=status,
                priority=priority,
                note=note,
                idempotency_key=step_key(step),
            )
        )
    except AdapterError as error:
        return failed(error)
    return {"ok": True}
