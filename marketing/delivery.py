"""Delivery of a reserved offer as a durable workflow (DBOS), one per offer.

    consent checked again (a withdrawal since the decision is honoured)
      -> sms: care TMF681 message POST with X-Idempotency-Key = offer id
         app: a hub notification to the app channel (channelNotifications), once per offer
      -> the offer is SENT (or SUPPRESSED by consent, or FAILED with the system's code)

The delivery pump (marketing/pump.py) starts one for each RESERVED offer. The workflow id is
the offer id, so a delivery runs once however often a pump starts it (a second start with the
same id runs nothing); a step repeated after a crash sends with the same key, and the care
system answers with the first message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, SetWorkflowID

from adapters.errors import AdapterError
from adapters.phone import national
from marketing.offer_store import MarketingStore, hub_consent, insert_ignoring, now
from orchestration.runtime import current as orchestration
from orchestration.steps import call, failed
from orchestration.store import hub_notification

log = logging.getLogger("switchboard.marketing")


@dataclass(frozen=True, slots=True)
class DeliveryRuntime:
    store: MarketingStore
    consent_default: bool = True


_current: DeliveryRuntime | None = None


def install(runtime: DeliveryRuntime | None) -> None:
    global _current
    _current = runtime


def current() -> DeliveryRuntime:
    if _current is None:
        raise RuntimeError("marketing delivery is not wired (no DeliveryRuntime installed)")
    return _current


@DBOS.step(name="campaign.consent")
async def check_consent(customer_id: str, channel: str, purpose: str) -> dict[str, Any]:
    runtime = current()
    async with runtime.store.engine.connect() as conn:
        row = (
            await conn.execute(
                hub_consent.select().where(
                    hub_consent.c.customer_id == customer_id,
                    hub_consent.c.channel == channel,
                    hub_consent.c.purpose == purpose,
                )
            )
        ).first()
    granted = runtime.consent_default if row is None else bool(row.granted)
    return {"ok": True, "granted": granted}


@DBOS.step(name="campaign.send_sms")
async def send_sms(
    offer_id: str, customer_no: str, msisdn: str | None, text: str
) -> dict[str, Any]:
    runtime = orchestration()
    try:
        lines = await call(lambda: runtime.customer_system.get_subscriptions([customer_no]))
    except AdapterError as error:
        return failed(error)
    own = list(lines.get(customer_no, ()))
    wanted = national(msisdn) if msisdn else None
    line = (
        next((x for x in own if x.msisdn == wanted), None)
        or next((x for x in own if x.status.upper() in ("A", "ACTIVE")), None)
        or (own[0] if own else None)
    )
    if line is None:
        return {"ok": False, "code": "NO_LINE", "system": "boss"}
    try:
        message_id = await call(lambda: runtime.care.send_message(line.msisdn, text, offer_id))
    except AdapterError as error:
        return failed(error)
    return {"ok": True, "message_id": message_id, "subscriber_no": line.subscriber_no}


@DBOS.step(name="campaign.notify_app")
async def notify_app(
    offer_id: str, customer_id: str, campaign: str, offer_ref: str
) -> dict[str, Any]:
    store = current().store
    async with store.engine.begin() as conn:
        await conn.execute(
            insert_ignoring(conn.dialect.name, hub_notification).values(
                request_id=offer_id,
                customer_id=customer_id,
                notice_key="offer",
                channel="app",
                kind="OFFER",
                detail=json.dumps({"offerId": offer_id, "campaign": campaign, "offer": offer_ref}),
                at=now(),
            )
        )
    orchestration().bus.publish()
    return {"ok": True}


@DBOS.step(name="campaign.record")
async def record(offer_id: str, state: str, guard: str | None, merge: dict[str, Any]) -> bool:
    return await current().store.move(
        offer_id, state, only_from=("RESERVED",), guard=guard, merge=merge
    )


@DBOS.workflow(name="campaign_delivery")
async def campaign_delivery(order: dict[str, Any]) -> dict[str, Any]:
    """``order``: offer_id, campaign, customer_id, customer_no, channel, purpose, offer_ref,
    msisdn (the event's line, may be None), text."""
    offer_id = order["offer_id"]
    consent = await check_consent(order["customer_id"], order["channel"], order["purpose"])
    if not consent["granted"]:
        await record(offer_id, "SUPPRESSED", "consent", {"late": True})
        return {"outcome": "SUPPRESSED", "guard": "consent"}
    if order["channel"] == "sms":
        sent = await send_sms(offer_id, order["customer_no"], order.get("msisdn"), order["text"])
    else:
        sent = await notify_app(
            offer_id, order["customer_id"], order["campaign"], order["offer_ref"]
        )
    if not sent["ok"]:
        await record(offer_id, "FAILED", None, {"code": sent["code"]})
        return {"outcome": "FAILED", "code": sent["code"]}
    merge: dict[str, Any] = {k: sent[k] for k in ("message_id", "subscriber_no") if k in sent}
    await record(offer_id, "SENT", None, merge)
    return {"outcome": "SENT"}


async def start_delivery(order: dict[str, Any]) -> object:
    """Start (once per offer id) the delivery workflow; returns once DBOS has recorded it, with
    DBOS's handle (the pump counts the deliveries running here by it)."""
    with SetWorkflowID(order["offer_id"]):
        return await DBOS.start_workflow_async(campaign_delivery, order)
