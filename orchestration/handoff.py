"""Channel hand-off: a service request started in the app, finished at a store counter.

    RECEIVED -> AWAITING_ID_CHECK (the customer is told to visit a store)
      -> ID_VERIFIED (a store clerk's continueRequest; the hub checked the presented ID card
         against BOSS) -> FULFILLED (care ticket resolved) -> DONE
      or -> EXPIRED when no store continues it within ``handoff_wait_s``.

Only the store channel may continue it (the schema refuses others). The ID-card number never
enters the workflow: the resolver checks it against BOSS and sends only the outcome, so it is
kept in neither the hub's history nor the engine's tables.
"""

from __future__ import annotations

from typing import Any

from dbos import DBOS

from adapters.errors import AdapterError
from orchestration.runtime import current
from orchestration.steps import bind_request, call, failed, mirror_ticket, notify, record, step_key
from orchestration.timed import step

ID_CHECK_TOPIC = "id_check"


@step("handoff.open_ticket")
async def open_ticket(party_id: str | None, service: str, channel: str) -> dict[str, Any]:
    if not party_id:
        return {"ok": True, "ticket_id": None}
    care = current().care
    try:
        ticket = await call(
            lambda: care.create_ticket(
                party_id,
                ticket_type="inquiry",
                name=f"Service request: {service}",
                description=f"Service request {service}: ID-card check at a store required.",
                severity="minor",
                channel=channel if channel in ("app", "web") else "app",
                idempotency_key=step_key("open_ticket"),
            )
        )
    except AdapterError as error:
        return failed(error)
    return {"ok": True, "ticket_id": ticket.id}


@DBOS.workflow(name="handoff")
async def handoff(request: dict[str, Any]) -> dict[str, Any]:
    """``request``: request_id, channel, customer_no, party_id, service."""
    request_id = request["request_id"]
    bind_request(request_id)
    channel = request["channel"]
    opened = await open_ticket(request.get("party_id"), request["service"], channel)
    ticket_id = opened.get("ticket_id")
    # Every notification goes out before the state that implies it is recorded.
    await notify(request_id, "visit_store", channel, "VISIT_STORE", {"service": request["service"]})
    await record(
        request_id,
        "awaiting_id_check",
        "AWAITING_ID_CHECK",
        status="WAITING",
        waiting_for="STORE_ID_CHECK",
        merge={"ticketId": ticket_id, "service": request["service"]},
    )
    check = await DBOS.recv_async(ID_CHECK_TOPIC, timeout_seconds=current().timings.handoff_wait_s)
    if check is None:
        await mirror_ticket(ticket_id, "m_expired", "expired: no ID check", status="closed")
        await notify(request_id, "expired", channel, "REQUEST_EXPIRED", {})
        await record(request_id, "expired", "EXPIRED", status="DONE")
        return {"outcome": "EXPIRED"}
    clerk = str(check.get("actor", "store"))
    await record(
        request_id,
        "id_verified",
        "ID_VERIFIED",
        channel="store",
        actor=clerk,
        merge={"verifiedBy": clerk},
    )
    await mirror_ticket(ticket_id, "m_verified", "ID card checked at a store", status="inProgress")
    await mirror_ticket(ticket_id, "m_fulfilled", "service request fulfilled", status="resolved")
    # Notified before the final state: whoever sees FULFILLED finds the notification too.
    await notify(request_id, "fulfilled", channel, "REQUEST_FULFILLED", {})
    await record(request_id, "fulfilled", "FULFILLED", status="DONE")
    return {"outcome": "FULFILLED", "ticketId": ticket_id}
