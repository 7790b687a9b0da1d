"""The graph's side of the workflows: mutations that start or signal them, request queries,
and the ``requestUpdates`` subscription.

Resolvers validate everything before anything starts (bad input changes nothing), then hand
the workflow plain ids it needs (customer number, billing account, care party) from the
crosswalk. They never wait for a workflow: they answer with the request as the hub's tables
show it, and the caller follows it with ``request`` or ``requestUpdates``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import strawberry
from strawberry.scalars import JSON

from adapters.errors import NotFound
from adapters.identity_store import Identity
from orchestration.complaint import AGENT_TOPIC, FEEDBACK_TOPIC
from orchestration.handoff import ID_CHECK_TOPIC
from orchestration.rules_loader import load_categories
from orchestration.service import TERMINAL_STATES, Workflows
from orchestration.store import EventRow, KeyReused, RequestRow, input_hash
from policies.principal import Principal
from schema.customer_scope import ensure_in_scope
from schema.errors import GraphError, bad_input, key_reused, not_found
from schema.query import HUB_ID, MSISDN
from schema.types import GraphInfo

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{8,64}")
REQUEST_ID = re.compile(r"(complaint|plan_change|handoff)-[0-9a-f]{24}")
OFFERING_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
ID_CARD = re.compile(r"[0-9]{17}[0-9X]")
SERVICES = ("SIM_REPLACEMENT", "OWNERSHIP_CHECK")

#: Scopes a partner credential needs per mutation (other channels: their channel profile).
PARTNER_SCOPES = {
    "fileComplaint": "complaints:write",
    "submitComplaintFeedback": "complaints:write",
    "changePlan": "orders:write",
    "startServiceRequest": "requests:write",
}
#: Agent-console actions: agents only, whatever a profile's "*" allows.
AGENT_ONLY = ("resolveComplaint", "escalateComplaint")


# --- errors -----------------------------------------------------------------------------------


def not_waiting(what: str) -> GraphError:
    return GraphError("REQUEST_NOT_WAITING", f"The request is not waiting for {what}.")


def _workflows(info: GraphInfo) -> Workflows:
    workflows = info.context.backends.workflows
    if workflows is None:
        raise GraphError("WORKFLOWS_DISABLED", "Workflows are switched off on this hub.")
    return workflows


def _require_scope(principal: Principal, mutation: str) -> None:
    scope = PARTNER_SCOPES.get(mutation)
    is_partner = principal.channel == "partner" or principal.partner is not None
    if is_partner and (scope is None or not principal.has_scope(scope)):
        raise GraphError(
            "SCOPE_REQUIRED",
            f"{mutation} needs the scope {scope} on this credential."
            if scope
            else f"Partners may not use {mutation}.",
        )


def _require_agent(principal: Principal, mutation: str) -> None:
    if principal.channel != "agent" or principal.role != "agent":
        raise GraphError("OPERATION_NOT_ALLOWED", f"Only the agent console may use {mutation}.")


def _caller(principal: Principal) -> str:
    # Keys are the caller's own: two credentials may use the same key independently.
    return principal.credential_id or principal.subject


def _check_key(key: str) -> str:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise bad_input("idempotencyKey must be 8-64 characters: letters, digits, . _ : -")
    return key


def _act_for(info: GraphInfo, customer_id: str) -> None:
    """Note the customer for the audit log (a keyed hash there), then apply the channel's row
    scope: the app acts for the customer it verified, and is refused anyone else."""
    info.context.customers_touched.add(customer_id)
    ensure_in_scope(info, customer_id)


async def _identity(info: GraphInfo, customer_id: str) -> Identity:
    if not HUB_ID.fullmatch(customer_id):
        raise bad_input("customerId must be a hub customer id (cus_ followed by 20 hex digits).")
    _act_for(info, customer_id)
    identity = await info.context.loaders.identity_by_hub_id.load(customer_id)
    if identity is None:
        raise not_found("customer")
    return identity


def _first(keys: tuple[str, ...]) -> str | None:
    return keys[0] if keys else None


async def _request(info: GraphInfo, request_id: str, kind: str | None = None) -> RequestRow:
    if not REQUEST_ID.fullmatch(request_id):
        raise bad_input("requestId is not a request id this hub issued.")
    row = await _workflows(info).store.get(request_id)
    if row is None or (kind is not None and row.kind != kind):
        raise not_found("request" if kind is None else kind.replace("_", " "))
    return row


# --- types ------------------------------------------------------------------------------------


@strawberry.type(description="One state change of a request, with who made it and where.")
class RequestEvent:
    state: str
    at: datetime
    channel: str
    actor: str
    detail: JSON

    @classmethod
    def of(cls, row: EventRow) -> RequestEvent:
        return cls(
            state=row.state,
            at=row.at,
            channel=row.channel,
            actor=row.actor,
            detail=JSON(row.detail),
        )


@strawberry.type(description="A notification the hub sent a channel about a request.")
class RequestNotification:
    channel: str
    kind: str
    at: datetime
    detail: JSON


@strawberry.type(description="A workflow the hub runs for a customer: its state and history.")
class ServiceRequest:
    id: strawberry.ID
    kind: str = strawberry.field(description="complaint, plan_change or handoff.")
    customer_id: strawberry.ID
    channel: str = strawberry.field(description="The channel the request was started in.")
    state: str
    status: str = strawberry.field(description="OPEN, WAITING, DONE, COMPENSATED or REJECTED.")
    waiting_for: str | None = strawberry.field(
        description="AGENT, FEEDBACK or STORE_ID_CHECK while waiting."
    )
    detail: JSON = strawberry.field(description="Ids, codes and amounts; no personal data.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: RequestRow) -> ServiceRequest:
        return cls(
            id=strawberry.ID(row.id),
            kind=row.kind,
            customer_id=strawberry.ID(row.customer_id),
            channel=row.channel,
            state=row.state,
            status=row.status,
            waiting_for=row.waiting_for,
            detail=JSON(row.detail),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @strawberry.field(description="Every state change, oldest first (the saga's history).")
    async def history(self, info: GraphInfo) -> list[RequestEvent]:
        return [RequestEvent.of(e) for e in await _workflows(info).store.history(str(self.id))]

    @strawberry.field(description="Notifications sent about this request, oldest first.")
    async def notifications(self, info: GraphInfo) -> list[RequestNotification]:
        return [
            RequestNotification(
                channel=n["channel"], kind=n["kind"], at=n["at"], detail=n["detail"]
            )
            for n in await _workflows(info).store.notifications(str(self.id))
        ]


@strawberry.type(description="A request moved: pushed to subscribers of requestUpdates.")
class RequestUpdate:
    request_id: strawberry.ID
    customer_id: strawberry.ID
    state: str
    at: datetime
    channel: str
    actor: str
    detail: JSON


@strawberry.type(description="A notification to the caller's channel, as the hub sends it.")
class ChannelNotification:
    request_id: strawberry.ID
    customer_id: strawberry.ID
    kind: str
    at: datetime
    detail: JSON


@strawberry.input
class FileComplaintInput:
    customer_id: strawberry.ID
    category: str
    description: str
    idempotency_key: str


@strawberry.input
class ChangePlanInput:
    customer_id: strawberry.ID
    msisdn: str
    offering_id: str
    idempotency_key: str


@strawberry.input
class StartServiceRequestInput:
    customer_id: strawberry.ID
    service: str = strawberry.field(description="SIM_REPLACEMENT or OWNERSHIP_CHECK.")
    idempotency_key: str


async def _answer(info: GraphInfo, request_id: str) -> ServiceRequest:
    row = await _workflows(info).store.get(request_id)
    if row is None:  # written before the workflow started; absent only if deleted
        raise not_found("request")
    return ServiceRequest.of(row)


# --- roots ------------------------------------------------------------------------------------


@strawberry.type
class WorkflowQuery:
    @strawberry.field(description="One request (complaint, plan change, hand-off) by its id.")
    async def request(self, info: GraphInfo, id: strawberry.ID) -> ServiceRequest:
        row = await _request(info, str(id))
        principal = info.context.principal
        if principal.channel == "partner" and row.started_by != _caller(principal):
            # A partner follows the requests it started, not the operator's other ones.
            raise not_found("request")
        _act_for(info, row.customer_id)
        return ServiceRequest.of(row)

    @strawberry.field(description="A customer's requests that are still open, oldest first.")
    async def open_requests(
        self, info: GraphInfo, customer_id: strawberry.ID
    ) -> list[ServiceRequest]:
        if not HUB_ID.fullmatch(customer_id):
            raise bad_input("customerId must be a hub customer id.")
        _act_for(info, str(customer_id))
        rows = await _workflows(info).store.open_requests(str(customer_id))
        return [ServiceRequest.of(r) for r in rows]


@strawberry.type(name="Mutation")
class WorkflowMutation:
    @strawberry.mutation(
        description="File a complaint; it is classified, investigated, "
        "resolved and archived by a durable workflow."
    )
    async def file_complaint(self, info: GraphInfo, input: FileComplaintInput) -> ServiceRequest:
        principal = info.context.principal
        _require_scope(principal, "fileComplaint")
        key = _check_key(input.idempotency_key)
        categories = load_categories()
        if input.category not in categories:
            raise bad_input(f"category must be one of: {', '.join(sorted(categories))}.")
        workflows = _workflows(info)  # first: the description limit is the engine's setting
        description = input.description.strip()
        limit = workflows.max_description_chars
        if not 1 <= len(description) <= limit:
            raise bad_input(f"description must be 1 to {limit} characters.")
        identity = await _identity(info, str(input.customer_id))
        try:
            request_id = await workflows.start(
                "complaint",
                mutation="fileComplaint",
                caller=_caller(principal),
                key=key,
                fingerprint={
                    "customerId": str(input.customer_id),
                    "category": input.category,
                    "description": description,
                },
                customer_id=identity.hub_id,
                channel=principal.channel,
                workflow_input={
                    "customer_no": identity.customer_no,
                    "account_id": _first(identity.keys("billing")),
                    "party_id": _first(identity.keys("care")),
                    "category": input.category,
                    "description": description,
                },
            )
        except KeyReused:
            raise key_reused() from None
        return await _answer(info, request_id)

    @strawberry.mutation(description="The customer's feedback (1-5) on a resolved complaint.")
    async def submit_complaint_feedback(
        self, info: GraphInfo, request_id: strawberry.ID, rating: int, idempotency_key: str
    ) -> ServiceRequest:
        principal = info.context.principal
        _require_scope(principal, "submitComplaintFeedback")
        key = _check_key(idempotency_key)
        if not 1 <= rating <= 5:
            raise bad_input("rating must be between 1 and 5.")
        row = await _request(info, str(request_id), "complaint")
        _act_for(info, row.customer_id)
        await _signal(
            info,
            row,
            "FEEDBACK",
            FEEDBACK_TOPIC,
            "submitComplaintFeedback",
            key,
            {"rating": rating},
        )
        return await _answer(info, row.id)

    @strawberry.mutation(description="Agent console: resolve a complaint, with a credit if any.")
    async def resolve_complaint(
        self,
        info: GraphInfo,
        request_id: strawberry.ID,
        idempotency_key: str,
        credit: str | None = None,
    ) -> ServiceRequest:
        principal = info.context.principal
        _require_agent(principal, "resolveComplaint")
        key = _check_key(idempotency_key)
        message: dict[str, Any] = {"action": "resolve", "actor": principal.credential_id}
        if credit is not None:
            limit = _workflows(info).max_agent_credit  # workflows.max_agent_credit
            try:
                amount = Decimal(credit)
            except InvalidOperation:
                raise bad_input("credit must be an amount such as 10.00.") from None
            if (
                not amount.is_finite()
                or not (0 < amount <= limit)
                or amount != amount.quantize(Decimal("0.01"))
            ):
                raise bad_input(f"credit must be above 0 and at most {limit}, in cents.")
            message["credit"] = str(amount)
        row = await _request(info, str(request_id), "complaint")
        _act_for(info, row.customer_id)
        await _signal(info, row, "AGENT", AGENT_TOPIC, "resolveComplaint", key, message)
        return await _answer(info, row.id)

    @strawberry.mutation(description="Agent console: escalate a complaint (priority up).")
    async def escalate_complaint(
        self, info: GraphInfo, request_id: strawberry.ID, idempotency_key: str
    ) -> ServiceRequest:
        principal = info.context.principal
        _require_agent(principal, "escalateComplaint")
        key = _check_key(idempotency_key)
        row = await _request(info, str(request_id), "complaint")
        _act_for(info, row.customer_id)
        await _signal(
            info,
            row,
            "AGENT",
            AGENT_TOPIC,
            "escalateComplaint",
            key,
            {"action": "escalate", "actor": principal.credential_id},
        )
        return await _answer(info, row.id)

    @strawberry.mutation(
        description="Move a line to another offering (a saga over the customer system and "
        "billing, compensated if a later step fails)."
    )
    async def change_plan(self, info: GraphInfo, input: ChangePlanInput) -> ServiceRequest:
        principal = info.context.principal
        _require_scope(principal, "changePlan")
        key = _check_key(input.idempotency_key)
        if not MSISDN.fullmatch(input.msisdn):
            raise bad_input("msisdn must be 11 digits starting with 13-19.")
        if not OFFERING_ID.fullmatch(input.offering_id):
            raise bad_input("offeringId is not an offering id.")
        identity = await _identity(info, str(input.customer_id))
        offerings = {o.id for o in await info.context.backends.customer_system.get_offerings()}
        if input.offering_id not in offerings:
            raise bad_input("offeringId is not in the catalogue.")
        lines = await info.context.loaders.subscriptions.load(identity.customer_no)
        line = next((line for line in lines if line.msisdn == input.msisdn), None)
        if line is None:
            raise bad_input("msisdn is not a line of this customer.")
        try:
            request_id = await _workflows(info).start(
                "plan_change",
                mutation="changePlan",
                caller=_caller(principal),
                key=key,
                fingerprint={
                    "customerId": str(input.customer_id),
                    "msisdn": input.msisdn,
                    "offeringId": input.offering_id,
                },
                customer_id=identity.hub_id,
                channel=principal.channel,
                workflow_input={
                    "customer_no": identity.customer_no,
                    "subscriber_no": line.subscriber_no,
                    "offering_id": input.offering_id,
                    "account_id": _first(identity.keys("billing")),
                },
                # The offering asked for: a campaign's report counts moves to its offering.
                detail={"offeringId": input.offering_id},
            )
        except KeyReused:
            raise key_reused() from None
        return await _answer(info, request_id)

    @strawberry.mutation(
        description="Start a service request that needs an ID-card check at a "
        "store (the store continues it with continueRequest)."
    )
    async def start_service_request(
        self, info: GraphInfo, input: StartServiceRequestInput
    ) -> ServiceRequest:
        principal = info.context.principal
        _require_scope(principal, "startServiceRequest")
        key = _check_key(input.idempotency_key)
        if input.service not in SERVICES:
            raise bad_input(f"service must be one of: {', '.join(SERVICES)}.")
        identity = await _identity(info, str(input.customer_id))
        try:
            request_id = await _workflows(info).start(
                "handoff",
                mutation="startServiceRequest",
                caller=_caller(principal),
                key=key,
                fingerprint={"customerId": str(input.customer_id), "service": input.service},
                customer_id=identity.hub_id,
                channel=principal.channel,
                workflow_input={
                    "customer_no": identity.customer_no,
                    "party_id": _first(identity.keys("care")),
                    "service": input.service,
                },
            )
        except KeyReused:
            raise key_reused() from None
        return await _answer(info, request_id)

    @strawberry.mutation(
        description="Store counter: continue a request waiting for an ID-card "
        "check; the card must belong to the request's customer in the customer system."
    )
    async def continue_request(
        self,
        info: GraphInfo,
        request_id: strawberry.ID,
        id_card_number: str,
        idempotency_key: str,
    ) -> ServiceRequest:
        principal = info.context.principal
        if principal.channel != "store":
            raise GraphError(
                "OPERATION_NOT_ALLOWED", "Only a store counter may continue this request."
            )
        key = _check_key(idempotency_key)
        # The number is never echoed, logged or passed on: only the outcome of the check is.
        if not ID_CARD.fullmatch(id_card_number):
            raise bad_input("idCardNumber must be 18 characters: 17 digits and a digit or X.")
        row = await _request(info, str(request_id), "handoff")
        if row.waiting_for != "STORE_ID_CHECK":
            raise not_waiting("an ID-card check")
        identity = await _identity(info, row.customer_id)
        try:
            holder = await info.context.backends.customer_system.find_customer_by_certificate(
                id_card_number
            )
        except NotFound:
            holder = None
        if holder is None or holder.customer_no != identity.customer_no:
            raise GraphError(
                "ID_CHECK_FAILED", "The ID card presented does not belong to this customer."
            )
        await _signal(
            info,
            row,
            "STORE_ID_CHECK",
            ID_CHECK_TOPIC,
            "continueRequest",
            key,
            {"verified": True, "actor": principal.credential_id},
            fingerprint={"idCard": id_card_number},
        )
        return await _answer(info, row.id)


async def _signal(
    info: GraphInfo,
    row: RequestRow,
    waiting_for: str,
    topic: str,
    mutation: str,
    key: str,
    message: dict[str, Any],
    fingerprint: dict[str, Any] | None = None,
) -> None:
    # A repeat of an accepted signal (same key) is fine even once the request moved on.
    if row.waiting_for != waiting_for and not await _known_signal(
        info, row, mutation, key, message, fingerprint
    ):
        raise not_waiting(waiting_for.lower().replace("_", " "))
    try:
        await _workflows(info).signal(
            row.id,
            topic,
            message,
            mutation=mutation,
            caller=_caller(info.context.principal),
            key=key,
            fingerprint={"requestId": row.id, **message, **(fingerprint or {})},
        )
    except KeyReused:
        raise key_reused() from None


async def _known_signal(
    info: GraphInfo,
    row: RequestRow,
    mutation: str,
    key: str,
    message: dict[str, Any],
    fingerprint: dict[str, Any] | None,
) -> bool:
    return await _workflows(info).store.has_key(
        _caller(info.context.principal),
        key,
        mutation,
        input_hash(mutation, {"requestId": row.id, **message, **(fingerprint or {})}),
    )


def _update(event: EventRow) -> RequestUpdate:
    return RequestUpdate(
        request_id=strawberry.ID(event.request_id),
        customer_id=strawberry.ID(event.customer_id),
        state=event.state,
        at=event.at,
        channel=event.channel,
        actor=event.actor,
        detail=JSON(event.detail),
    )


# "Subscription" is taken by the line type (schema/types.py).
@strawberry.type(name="SubscriptionRoot")
class WorkflowSubscription:
    @strawberry.subscription(
        description="State changes of one request, or of every request of "
        "one customer, as they happen (graphql-transport-ws)."
    )
    async def request_updates(
        self,
        info: GraphInfo,
        request_id: strawberry.ID | None = None,
        customer_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[RequestUpdate, None]:
        if (request_id is None) == (customer_id is None):
            raise bad_input("Give exactly one of requestId and customerId.")
        workflows = _workflows(info)
        store = workflows.store
        request_ids: list[str] = []
        after = 0
        if request_id is not None:
            row = await _request(info, str(request_id))
            request_ids = [row.id]
            customer = row.customer_id
        else:
            if not HUB_ID.fullmatch(customer_id or ""):
                raise bad_input("customerId must be a hub customer id.")
            customer = str(customer_id)
        _act_for(info, customer)
        waiter = workflows.bus.waiter()
        try:
            if not request_ids:
                # A customer's stream starts with where each open request stands now, then
                # every change after that.
                after = await store.last_seq()
                for open_request in await store.open_requests(customer):
                    latest = (await store.history(open_request.id))[-1:]
                    if latest and latest[0].seq <= after:
                        yield _update(latest[0])
            while True:
                waiter.clear()
                events = await store.events_after(
                    after,
                    request_ids=request_ids,
                    customer_id=None if request_ids else customer,
                )
                for event in events:
                    after = event.seq
                    yield _update(event)
                    if request_ids and event.state in TERMINAL_STATES:
                        return
                # Look at the table anyway after poll_s: another replica may have written.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), workflows.poll_s)
        finally:
            workflows.bus.drop(waiter)

    @strawberry.subscription(
        description="Notifications the hub sends the caller's channel from now on: a "
        "customer's (customerId), or, for the agent console, every one addressed to agents."
    )
    async def channel_notifications(
        self, info: GraphInfo, customer_id: strawberry.ID | None = None
    ) -> AsyncGenerator[ChannelNotification, None]:
        principal = info.context.principal
        if customer_id is None and principal.channel != "agent":
            raise bad_input("customerId is required (only the agent console follows all).")
        if customer_id is not None and not HUB_ID.fullmatch(customer_id):
            raise bad_input("customerId must be a hub customer id.")
        if customer_id is not None:
            _act_for(info, str(customer_id))
        workflows = _workflows(info)
        store = workflows.store
        waiter = workflows.bus.waiter()
        try:
            after = await store.last_notification_seq()
            while True:
                waiter.clear()
                for notice in await store.notifications_after(
                    after,
                    channel=principal.channel,
                    customer_id=str(customer_id) if customer_id is not None else None,
                ):
                    after = notice["seq"]
                    # The agent console's stream spans customers: each one delivered is noted
                    # for the audit log (a single customer's stream was noted above).
                    info.context.customers_touched.add(notice["customer_id"])
                    yield ChannelNotification(
                        request_id=strawberry.ID(notice["request_id"]),
                        customer_id=strawberry.ID(notice["customer_id"]),
                        kind=notice["kind"],
                        at=notice["at"],
                        detail=notice["detail"],
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), workflows.poll_s)
        finally:
            workflows.bus.drop(waiter)
