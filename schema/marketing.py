"""The graph's side of campaigns: consent, next best offers, acceptance and the report.

- ``setContactConsent`` (any customer channel; the app and the web for their verified
  customer): stored in ``hub_consent`` and honoured by the next decision and by every delivery
  not yet sent (the delivery workflow reads consent again just before it sends).
- ``Customer.nextBestOffers(first:)``: the customer's open offers (sent, or made for the
  agent console), newest first, after the consent and complaint guards as they stand now.
  Showing them is not a contact: it consumes no cap (the agent or the customer is already
  in the conversation) and contacts no one.
- ``acceptOffer`` (app, web, agent): an offering offer runs the plan-change saga
  (orchestration/plan_change.py) for the line the offer was sent to; a retention pack is
  recorded as accepted for the operator to fulfil.
- ``campaignReport`` (agent console): counts per state and guard, and uplift against control.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import strawberry
from sqlalchemy import select

from marketing.campaigns import CHANNELS
from marketing.offer_store import OPEN_STATES, OfferRow
from marketing.services import MarketingServices
from orchestration.service import Workflows
from orchestration.store import KeyReused, hub_request
from policies.masks import DataClass
from schema.classified import classified
from schema.customer_scope import ensure_in_scope
from schema.errors import GraphError, bad_input, key_reused, not_found
from schema.query import HUB_ID
from schema.types import GraphInfo

OFFER_ID = re.compile(r"offer-[0-9a-f]{24}")
PURPOSE = re.compile(r"[a-z_]{1,32}")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{8,64}")
#: Offers and the campaigns that made them say what the hub inferred about the customer:
#: their own data class, decided by the policy like every other personal field.
OFFER_CLASS = DataClass("marketing_offer")


def _marketing(info: GraphInfo) -> MarketingServices:
    services = info.context.backends.marketing
    if services is None:
        raise GraphError("CAMPAIGNS_DISABLED", "Campaigns are switched off on this hub.")
    return services


def _act_for(info: GraphInfo, customer_id: str) -> None:
    if not HUB_ID.fullmatch(customer_id):
        raise bad_input("customerId must be a hub customer id (cus_ followed by 20 hex digits).")
    info.context.customers_touched.add(customer_id)
    ensure_in_scope(info, customer_id)


@strawberry.type(description="A customer's consent to be contacted on a channel for a purpose.")
class ContactConsent:
    customer_id: strawberry.ID
    channel: str
    purpose: str
    granted: bool


@strawberry.type(description="An offer a campaign made this customer, best first.")
class NextBestOffer:
    offer_id: strawberry.ID
    rank: int
    channel: str | None = strawberry.field(description="sms, app or nbo (agent console).")
    state: str
    created_at: datetime
    campaign: str | None = classified(OFFER_CLASS, "The campaign that made the offer.")
    offer: str | None = classified(OFFER_CLASS, "offering:<offering id> or pack:<retention pack>.")


@strawberry.type(description="What became of an offer the customer accepted.")
class OfferAcceptance:
    offer_id: strawberry.ID
    state: str
    request_id: strawberry.ID | None = strawberry.field(
        description="The plan-change request it started (an offering offer), else null."
    )


@strawberry.type
class GuardCount:
    guard: str
    count: int


@strawberry.type(description="A campaign's outcome so far, with the uplift against control.")
class CampaignReport:
    campaign_id: str
    matched: int = strawberry.field(description="Customers the campaign decided for.")
    control: int
    sent: int
    available: int = strawberry.field(description="Offers made for the agent console.")
    suppressed: int
    suppressed_by: list[GuardCount]
    failed: int
    accepted: int
    converted_treated: int = strawberry.field(
        description="Treated customers (offer made) who accepted or moved to the offering."
    )
    converted_control: int = strawberry.field(
        description="Control customers who moved to the offering through the hub anyway."
    )
    uplift: float | None = strawberry.field(
        description="Conversion rate of the treated minus that of the control group (null "
        "while either group is empty)."
    )


def _ranked(rows: list[OfferRow], first: int) -> list[NextBestOffer]:
    # Offers made for the console first (no one was told yet), then the newest.
    ordered = sorted(rows, key=lambda r: (r.channel != "nbo", -r.created_at.timestamp()))
    return [
        NextBestOffer(
            offer_id=strawberry.ID(r.id),
            rank=i + 1,
            channel=r.channel,
            state=r.state,
            created_at=r.created_at,
            campaign=r.campaign,
            offer=r.offer_ref,
        )
        for i, r in enumerate(ordered[:first])
    ]


async def next_best_offers(info: GraphInfo, customer_id: str, first: int) -> list[NextBestOffer]:
    limit = info.context.backends.max_offers  # graphql.max_offers
    if not 1 <= first <= limit:
        raise bad_input(f"first must be between 1 and {limit}.")
    services = info.context.backends.marketing
    if services is None:
        return []
    book = services.book()
    today = services.context.local_time(customer_id).date()
    rows = await services.store.offers_of(customer_id)
    consents = await services.store.consents([customer_id])
    open_complaint = await _has_open_complaint(services, customer_id)
    if open_complaint:
        return []  # the complaint guard: no offers while one is open
    shown = []
    for row in rows:
        campaign = book.by_id(row.campaign)
        if campaign is None or not campaign.valid_from <= today <= campaign.valid_until:
            continue
        granted = consents.get((customer_id, "nbo", campaign.purpose))
        if not (services.context.consent_default if granted is None else granted):
            continue
        shown.append(row)
    return _ranked(shown, first)


async def _has_open_complaint(services: MarketingServices, customer_id: str) -> bool:
    async with services.store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(hub_request.c.id)
                .where(
                    hub_request.c.customer_id == customer_id,
                    hub_request.c.kind == "complaint",
                    hub_request.c.status.in_(("OPEN", "WAITING")),
                )
                .limit(1)
            )
        ).first()
    return row is not None


def _workflows(info: GraphInfo) -> Workflows:
    workflows = info.context.backends.workflows
    if workflows is None:
        raise GraphError("WORKFLOWS_DISABLED", "Workflows are switched off on this hub.")
    return workflows


@strawberry.type(name="Mutation")
class MarketingMutation:
    @strawberry.mutation(
        description="Grant or withdraw a customer's consent to be contacted on a channel "
        "(sms, app, nbo) for a purpose (e.g. marketing); honoured from the next send on."
    )
    async def set_contact_consent(
        self,
        info: GraphInfo,
        customer_id: strawberry.ID,
        channel: str,
        purpose: str,
        granted: bool,
    ) -> ContactConsent:
        if channel not in CHANNELS:
            raise bad_input(f"channel must be one of: {', '.join(CHANNELS)}.")
        if not PURPOSE.fullmatch(purpose):
            raise bad_input("purpose must be 1-32 of a-z and _.")
        _act_for(info, str(customer_id))
        services = _marketing(info)
        identity = await info.context.loaders.identity_by_hub_id.load(str(customer_id))
        if identity is None:
            raise not_found("customer")
        principal = info.context.principal
        await services.store.set_consent(
            str(customer_id),
            channel,
            purpose,
            granted,
            changed_in=principal.channel,
            changed_by=principal.credential_id or principal.subject,
        )
        return ContactConsent(
            customer_id=customer_id, channel=channel, purpose=purpose, granted=granted
        )

    @strawberry.mutation(
        description="Accept an offer (app or agent console): an offering runs the plan-change "
        "saga on the line the offer was sent to; a retention pack is recorded."
    )
    async def accept_offer(
        self, info: GraphInfo, offer_id: strawberry.ID, idempotency_key: str
    ) -> OfferAcceptance:
        if not OFFER_ID.fullmatch(str(offer_id)):
            raise bad_input("offerId is not an offer id this hub issued.")
        if not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise bad_input("idempotencyKey must be 8-64 characters: letters, digits, . _ : -")
        services = _marketing(info)
        row = await services.store.offer(str(offer_id))
        if row is None:
            raise not_found("offer")
        _act_for(info, row.customer_id)
        if row.state == "ACCEPTED":
            return _acceptance(row)
        if row.state not in OPEN_STATES:
            raise GraphError("OFFER_NOT_OPEN", "This offer is not open to acceptance.")
        request_id: str | None = None
        if row.offer_ref.startswith("offering:"):
            request_id = await _start_plan_change(info, row, idempotency_key)
        merge = {"requestId": request_id} if request_id else {}
        merge["acceptedIn"] = info.context.principal.channel
        await services.store.move(row.id, "ACCEPTED", only_from=OPEN_STATES, merge=merge)
        fresh = await services.store.offer(row.id)
        return _acceptance(fresh or row)


def _acceptance(row: OfferRow) -> OfferAcceptance:
    request_id = row.detail.get("requestId")
    return OfferAcceptance(
        offer_id=strawberry.ID(row.id),
        state=row.state,
        request_id=strawberry.ID(request_id) if request_id else None,
    )


async def _start_plan_change(info: GraphInfo, row: OfferRow, key: str) -> str:
    offering_id = row.offer_ref.removeprefix("offering:")
    identity = await info.context.loaders.identity_by_hub_id.load(row.customer_id)
    if identity is None:
        raise not_found("customer")
    lines = await info.context.loaders.subscriptions.load(identity.customer_no)
    wanted = row.detail.get("subscriber_no")
    line = next((x for x in lines if x.subscriber_no == wanted), None) or next(
        (x for x in lines if x.status.upper() in ("A", "ACTIVE")), None
    )
    if line is None:
        raise GraphError("OFFER_NOT_OPEN", "The customer has no active line to move.")
    principal = info.context.principal
    billing = identity.keys("billing")
    try:
        return await _workflows(info).start(
            "plan_change",
            mutation="acceptOffer",
            caller=principal.credential_id or principal.subject,
            key=key,
            fingerprint={"offerId": row.id},
            customer_id=identity.hub_id,
            channel=principal.channel,
            workflow_input={
                "customer_no": identity.customer_no,
                "subscriber_no": line.subscriber_no,
                "offering_id": offering_id,
                "account_id": billing[0] if billing else None,
            },
            detail={"offeringId": offering_id, "offerId": row.id},
        )
    except KeyReused:
        raise key_reused() from None


@strawberry.type
class MarketingQuery:
    @strawberry.field(
        description="A campaign's report: sent, suppressed by guard, accepted, "
        "uplift against its control group."
    )
    async def campaign_report(self, info: GraphInfo, campaign_id: str) -> CampaignReport:
        services = _marketing(info)
        campaign = services.book().by_id(campaign_id)
        if campaign is None:
            raise not_found("campaign")
        rows = await services.store.offers_of_campaign(campaign_id)
        by_state: dict[str, int] = {}
        guards: dict[str, int] = {}
        for r in rows:
            by_state[r.state] = by_state.get(r.state, 0) + 1
            if r.state == "SUPPRESSED" and r.guard:
                guards[r.guard] = guards.get(r.guard, 0) + 1
        treated = [r for r in rows if r.state in ("SENT", "AVAILABLE", "ACCEPTED")]
        control = [r for r in rows if r.state == "CONTROL"]
        moved = await _moved_to(services, campaign.offer.offering, rows)
        converted_treated = sum(1 for r in treated if r.state == "ACCEPTED" or r.id in moved)
        converted_control = sum(1 for r in control if r.id in moved)
        uplift = (
            converted_treated / len(treated) - converted_control / len(control)
            if treated and control
            else None
        )
        return CampaignReport(
            campaign_id=campaign_id,
            matched=len(rows),
            control=len(control),
            sent=by_state.get("SENT", 0)
            + sum(1 for r in rows if r.state == "ACCEPTED" and r.channel in ("sms", "app")),
            available=by_state.get("AVAILABLE", 0),
            suppressed=by_state.get("SUPPRESSED", 0),
            suppressed_by=[GuardCount(guard=g, count=n) for g, n in sorted(guards.items())],
            failed=by_state.get("FAILED", 0),
            accepted=by_state.get("ACCEPTED", 0),
            converted_treated=converted_treated,
            converted_control=converted_control,
            uplift=uplift,
        )


async def _moved_to(
    services: MarketingServices, offering: str | None, rows: list[OfferRow]
) -> set[str]:
    """Offers whose customer started a plan change to the offering after the offer."""
    if not offering or not rows:
        return set()
    by_customer = {r.customer_id: r for r in rows}
    async with services.store.engine.connect() as conn:
        found = await conn.execute(
            select(hub_request.c.customer_id, hub_request.c.detail, hub_request.c.created_at).where(
                hub_request.c.kind == "plan_change",
                hub_request.c.customer_id.in_(list(by_customer)),
            )
        )
        moved = set()
        for r in found:
            offer = by_customer[r.customer_id]
            detail = json.loads(r.detail or "{}")
            if detail.get("offeringId") == offering and r.created_at >= offer.created_at:
                moved.add(offer.id)
    return moved
