"""Delivery of reserved offers as durable workflows (DBOS), one per claimed batch.

    consent checked again (a withdrawal since the decision is honoured)
      -> sms: care TMF681 message POST with X-Idempotency-Key = offer id
         app: a hub notification to the app channel (channelNotifications), once per offer
      -> the offer is SENT (or SUPPRESSED by consent, or FAILED with the system's code)

The delivery pump (marketing/pump.py) claims a batch of RESERVED offers and starts one
``campaign_deliveries`` workflow for it: the same steps, each over the whole batch (one
consent query, one BOSS line lookup for the batch's customers and the care POSTs side by
side, one transaction of notifications, one of outcomes). DBOS's records per workflow and per
step (a start, a status, a row per step) were most of a delivery's ~5 ms of CPU when each
offer had its own workflow; per batch they are shared. The workflow id is derived from the
batch's offer ids, so starting the same batch again runs nothing; a step repeated after a
crash (a SIGKILL mid-batch: DBOS resumes the workflow at its first unfinished step) sends
every SMS again with the same key, each offer's id, and the care system answers with the
first message; notifications are unique per offer and an outcome moves only a RESERVED offer.

``campaign_delivery`` (one offer, its id the workflow id) stays registered: workflows started
before this change are resumed by it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, SetWorkflowID
from sqlalchemy import select

from adapters.errors import AdapterError
from adapters.phone import national
from adapters.records import Subscription
from marketing.offer_store import MarketingStore, hub_consent, insert_ignoring, now
from orchestration.runtime import Runtime
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
    return await _send_on_line(runtime, lines.get(customer_no, ()), msisdn, text, offer_id)


async def _send_on_line(
    runtime: Runtime, own: Sequence[Subscription], msisdn: str | None, text: str, offer_id: str
) -> dict[str, Any]:
    """Send on the customer's line: the one the offer names, else an active one, else any;
    the care message keyed by the offer id (what ``send_sms`` answers)."""
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


@DBOS.step(name="campaign.consents")
async def check_consents(orders: list[dict[str, Any]]) -> dict[str, bool]:
    """offer id -> consent granted, for the batch, in one query."""
    runtime = current()
    customers = sorted({o["customer_id"] for o in orders})
    async with runtime.store.engine.connect() as conn:
        rows = await conn.execute(
            select(
                hub_consent.c.customer_id,
                hub_consent.c.channel,
                hub_consent.c.purpose,
                hub_consent.c.granted,
            ).where(hub_consent.c.customer_id.in_(customers))
        )
        stored = {(r.customer_id, r.channel, r.purpose): bool(r.granted) for r in rows}
    return {
        o["offer_id"]: stored.get(
            (o["customer_id"], o["channel"], o["purpose"]), runtime.consent_default
        )
        for o in orders
    }


@DBOS.step(name="campaign.send_sms_batch")
async def send_sms_batch(orders: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """offer id -> what ``send_sms`` answers, for the batch: the customers' lines in one BOSS
    lookup, then the care POSTs side by side, each keyed by its offer id."""
    runtime = orchestration()
    try:
        lines = await call(
            lambda: runtime.customer_system.get_subscriptions(
                sorted({o["customer_no"] for o in orders})
            )
        )
    except AdapterError as error:
        return {o["offer_id"]: failed(error) for o in orders}

    async def send(order: dict[str, Any]) -> dict[str, Any]:
        own = lines.get(order["customer_no"], ())
        return await _send_on_line(
            runtime, own, order.get("msisdn"), order["text"], order["offer_id"]
        )

    results = await asyncio.gather(*(send(o) for o in orders))
    return {o["offer_id"]: r for o, r in zip(orders, results, strict=True)}


@DBOS.step(name="campaign.notify_app_batch")
async def notify_app_batch(orders: list[dict[str, Any]]) -> bool:
    """One ``hub_notification`` per offer (unique: a repeat inserts nothing), one wake-up."""
    store = current().store
    at = now()
    async with store.engine.begin() as conn:
        await conn.execute(
            insert_ignoring(conn.dialect.name, hub_notification),
            [
                {
                    "request_id": o["offer_id"],
                    "customer_id": o["customer_id"],
                    "notice_key": "offer",
                    "channel": "app",
                    "kind": "OFFER",
                    "detail": json.dumps(
                        {
                            "offerId": o["offer_id"],
                            "campaign": o["campaign"],
                            "offer": o["offer_ref"],
                        }
                    ),
                    "at": at,
                }
                for o in orders
            ],
        )
    orchestration().bus.publish()
    return True


@DBOS.step(name="campaign.record_batch")
async def record_batch(moves: list[tuple[str, str, str | None, dict[str, Any]]]) -> int:
    return await current().store.move_many(moves, only_from=("RESERVED",))


@DBOS.workflow(name="campaign_deliveries")
async def campaign_deliveries(orders: list[dict[str, Any]]) -> dict[str, Any]:
    """``orders``: as ``campaign_delivery``'s, one per offer of the batch."""
    granted = await check_consents(orders)
    moves: list[tuple[str, str, str | None, dict[str, Any]]] = []
    outcomes: dict[str, str] = {}
    allowed = [o for o in orders if granted[o["offer_id"]]]
    for order in orders:
        if not granted[order["offer_id"]]:
            moves.append((order["offer_id"], "SUPPRESSED", "consent", {"late": True}))
            outcomes[order["offer_id"]] = "SUPPRESSED"
    sms = [o for o in allowed if o["channel"] == "sms"]
    app = [o for o in allowed if o["channel"] != "sms"]
    sent: dict[str, dict[str, Any]] = await send_sms_batch(sms) if sms else {}
    if app:
        await notify_app_batch(app)
        sent.update({o["offer_id"]: {"ok": True} for o in app})
    for order in allowed:
        result = sent[order["offer_id"]]
        if not result["ok"]:
            moves.append((order["offer_id"], "FAILED", None, {"code": result["code"]}))
            outcomes[order["offer_id"]] = "FAILED"
            continue
        merge: dict[str, Any] = {
            k: result[k] for k in ("message_id", "subscriber_no") if k in result
        }
        moves.append((order["offer_id"], "SENT", None, merge))
        outcomes[order["offer_id"]] = "SENT"
    await record_batch(moves)
    return {"outcomes": outcomes}


def batch_workflow_id(offer_ids: Sequence[str]) -> str:
    """The same batch of offers, the same workflow: a second start runs nothing."""
    digest = hashlib.sha256("\n".join(sorted(offer_ids)).encode()).hexdigest()
    return f"deliveries-{digest[:32]}"


async def start_deliveries(orders: list[dict[str, Any]]) -> object:
    """Start (once per batch) the delivery workflow of ``orders``; returns once DBOS has
    recorded it, with DBOS's handle (the pump counts the deliveries running here by it)."""
    with SetWorkflowID(batch_workflow_id([o["offer_id"] for o in orders])):
        return await DBOS.start_workflow_async(campaign_deliveries, orders)


async def start_delivery(order: dict[str, Any]) -> object:
    """Start (once per offer id) the delivery workflow; returns once DBOS has recorded it, with
    DBOS's handle (the pump counts the deliveries running here by it)."""
    with SetWorkflowID(order["offer_id"]):
        return await DBOS.start_workflow_async(campaign_delivery, order)
