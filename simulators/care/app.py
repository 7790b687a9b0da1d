"""The care simulator: TMF632 individuals, TMF621 trouble tickets, TMF683 party interactions."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from simulators.care.events import builder as event_builder
from simulators.care.messages import MESSAGES, Outbox
from simulators.care.store import CareStore, InteractionRow, PartyRow, TicketRow
from simulators.control import SimControl, TraceparentRecorder
from simulators.events import EventHub
from simulators.rest import (
    GARBLED_BODY,
    JSON,
    ApiError,
    bad_request,
    business_route,
    http_exception,
    injected_failure,
    json_body,
    json_response,
    list_response,
    not_found,
    one_filter,
    paging,
    required_filter,
)
from simulators.storage import open_for_serving, store_path

INDIVIDUALS = "/tmf-api/partyManagement/v4/individual"
TICKETS = "/tmf-api/troubleTicket/v4/troubleTicket"
INTERACTIONS = "/tmf-api/partyInteraction/v4/partyInteraction"

TICKET_TYPES = ("complaint", "inquiry", "fault")
SEVERITIES = ("minor", "major", "critical")
PRIORITIES = ("low", "medium", "high")
STATUSES = ("acknowledged", "inProgress", "resolved", "closed")
CHANNELS = ("app", "web", "store", "agent", "ivr", "sms")
DIRECTIONS = ("inbound", "outbound")
MAX_TEXT = 4000
_CST = dt.timezone(dt.timedelta(hours=8))


def _now() -> str:
    return dt.datetime.now(_CST).isoformat(timespec="seconds")


def individual_item(p: PartyRow) -> dict[str, Any]:
    contact: list[dict[str, Any]] = [
        {"mediumType": "mobile", "characteristic": {"phoneNumber": p.phone}}
    ]
    if p.email:
        contact.append({"mediumType": "email", "characteristic": {"emailAddress": p.email}})
    return {
        "id": p.id,
        "href": f"{INDIVIDUALS}/{p.id}",
        "@type": "Individual",
        "fullName": p.full_name,
        "familyName": p.family_name,
        "givenName": p.given_name,
        "contactMedium": contact,
        "individualIdentification": [
            {"identificationType": "IDCard", "identificationId": p.id_card}
        ],
    }


def _customer_party(party_id: str) -> list[dict[str, str]]:
    return [{"id": party_id, "role": "customer", "@referredType": "Individual"}]


def ticket_item(t: TicketRow) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": t.id,
        "href": f"{TICKETS}/{t.id}",
        "@type": "TroubleTicket",
        "name": t.name,
        "description": t.description,
        "ticketType": t.ticket_type,
        "severity": t.severity,
        "priority": t.priority,
        "status": t.status,
        "creationDate": t.creation_date,
        "lastUpdate": t.last_update,
        "relatedParty": json.loads(t.related) if t.related else _customer_party(t.party_id),
        "note": json.loads(t.notes),
    }
    if t.channel:
        item["channel"] = {"name": t.channel}
    return item


def interaction_item(i: InteractionRow) -> dict[str, Any]:
    related = json.loads(i.related) if i.related else [{"id": i.party_id, "role": "customer"}]
    return {
        "id": i.id,
        "href": f"{INTERACTIONS}/{i.id}",
        "@type": "PartyInteraction",
        "interactionDate": {"startDateTime": i.start_time, "endDateTime": i.end_time},
        "channel": [{"name": i.channel}],
        "direction": i.direction,
        "reason": i.reason,
        "description": i.description,
        "status": i.status,
        "relatedParty": related,
    }


def _text(body: dict[str, Any], name: str, required: bool, default: str = "") -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"{name} is required")
        return default
    if not isinstance(value, str) or (required and not value.strip()):
        raise bad_request(f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise bad_request(f"{name} is longer than {MAX_TEXT} characters")
    return value


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in allowed:
        raise bad_request(f"{name} must be one of {', '.join(allowed)}")
    return value


def _related_parties(body: dict[str, Any]) -> list[dict[str, Any]]:
    related = body.get("relatedParty")
    ok = (
        isinstance(related, list)
        and related
        and all(isinstance(p, dict) and isinstance(p.get("id"), str) and p["id"] for p in related)
    )
    if not ok:
        raise bad_request("relatedParty must be a non-empty list of parties with an id")
    return related  # type: ignore[return-value]


def _new_notes(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("note must be a list")
    notes = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise bad_request("each note needs a text")
        author = item.get("author", "switchboard")
        notes.append(
            {
                "date": item["date"] if isinstance(item.get("date"), str) else _now(),
                "author": author if isinstance(author, str) else "switchboard",
                "text": item["text"][:MAX_TEXT],
            }
        )
    return notes


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("x-idempotency-key", "").strip()
    if len(key) > 128:
        raise bad_request("X-Idempotency-Key is longer than 128 characters")
    return key or None


def _party_of(related: list[dict[str, Any]]) -> str:
    """The party a record is filed under: the customer among the related parties if named."""
    for party in related:
        if party.get("role") == "customer":
            return party["id"]
    return related[0]["id"]


class CareApi:
    def __init__(self, store: CareStore) -> None:
        self._store = store

    async def list_individuals(self, request: Request) -> Response:
        name, values = one_filter(request, ["id", "identificationId", "phoneNumber"])
        offset, limit = paging(request)
        total, rows = self._store.parties(name, values, offset, limit)
        return list_response([individual_item(p) for p in rows], total)

    async def list_tickets(self, request: Request) -> Response:
        parties = required_filter(request, "relatedParty.id")
        offset, limit = paging(request)
        total, rows = self._store.tickets(parties, offset, limit)
        return list_response([ticket_item(t) for t in rows], total)

    async def create_ticket(self, request: Request) -> Response:
        key = _idempotency_key(request)
        if key is not None and (first := self._store.remembered("ticket", key)) is not None:
            return json_response(ticket_item(self._existing_ticket(first)), 200)
        body = await json_body(request)
        description = _text(body, "description", required=True)
        ticket_type = body.get("ticketType")
        if ticket_type not in TICKET_TYPES:
            raise bad_request(f"ticketType is required, one of {', '.join(TICKET_TYPES)}")
        related = _related_parties(body)
        channel = body.get("channel")
        channel_name = channel.get("name") if isinstance(channel, dict) else None
        if channel_name is not None and not isinstance(channel_name, str):
            raise bad_request("channel.name must be a string")
        now = _now()
        row = TicketRow(
            "",
            _party_of(related),
            _text(body, "name", required=False, default=description[:30]),
            description,
            ticket_type,
            _choice(body, "severity", SEVERITIES, "minor"),
            _choice(body, "priority", PRIORITIES, "medium"),
            "acknowledged",
            now,
            now,
            channel_name,
            json.dumps(_new_notes(body.get("note")), ensure_ascii=False),
            json.dumps(related, ensure_ascii=False),
        )
        ticket_id = self._store.create_ticket(row, key)
        return json_response(ticket_item(self._existing_ticket(ticket_id)), 201)

    def _existing_ticket(self, ticket_id: str) -> TicketRow:
        ticket = self._store.ticket(ticket_id)
        if ticket is None:
            raise not_found(f"trouble ticket {ticket_id} does not exist")
        return ticket

    async def patch_ticket(self, request: Request) -> Response:
        ticket = self._existing_ticket(request.path_params["id"])
        key = _idempotency_key(request)
        if key is not None and self._store.remembered("ticket_patch", key) is not None:
            # A repeated patch (same key) changes nothing: its notes were appended once.
            return json_response(ticket_item(ticket))
        body = await json_body(request)
        unknown = set(body) - {"status", "priority", "severity", "note"}
        if unknown:
            raise bad_request(
                "only status, priority, severity and note can be patched, not "
                + ", ".join(sorted(unknown))
            )
        changes: dict[str, str] = {}
        for field, allowed in (
            ("status", STATUSES),
            ("priority", PRIORITIES),
            ("severity", SEVERITIES),
        ):
            if field in body:
                changes[field] = _choice(body, field, allowed, "")
        notes = json.loads(ticket.notes) + _new_notes(body.get("note"))
        self._store.update_ticket(
            ticket.id, changes, json.dumps(notes, ensure_ascii=False), _now(), key
        )
        return json_response(ticket_item(self._existing_ticket(ticket.id)))

    async def list_interactions(self, request: Request) -> Response:
        parties = required_filter(request, "relatedParty.id")
        offset, limit = paging(request)
        total, rows = self._store.interactions(parties, offset, limit)
        return list_response([interaction_item(i) for i in rows], total)

    async def create_interaction(self, request: Request) -> Response:
        key = _idempotency_key(request)
        if key is not None and (first := self._store.remembered("interaction", key)) is not None:
            existing = self._store.interaction(first)
            if existing is None:
                raise ApiError(500, "internal error")
            return json_response(interaction_item(existing), 200)
        body = await json_body(request)
        related = _related_parties(body)
        when = body.get("interactionDate") or {}
        if not isinstance(when, dict):
            raise bad_request("interactionDate must be an object")
        now = _now()
        start = when.get("startDateTime", now)
        end = when.get("endDateTime", start)
        if not isinstance(start, str) or not isinstance(end, str):
            raise bad_request("interactionDate times must be strings")
        channels = body.get("channel") or [{"name": "agent"}]
        if (
            not isinstance(channels, list)
            or not isinstance(channels[0], dict)
            or channels[0].get("name") not in CHANNELS
        ):
            raise bad_request(f"channel must be a list whose first name is one of {CHANNELS}")
        row = InteractionRow(
            "",
            _party_of(related),
            start,
            end,
            channels[0]["name"],
            _choice(body, "direction", DIRECTIONS, "inbound"),
            _text(body, "reason", required=False),
            _text(body, "description", required=False),
            "completed",
            json.dumps(related, ensure_ascii=False),
        )
        interaction_id = self._store.create_interaction(row, key)
        created = self._store.interaction(interaction_id)
        assert created is not None
        return json_response(interaction_item(created), 201)


def create_app(data_dir: Path) -> Starlette:
    """The care app over ``data_dir/care.db``."""
    conn = open_for_serving(store_path(data_dir, "care"))
    control = SimControl(injected_failure, GARBLED_BODY, JSON)
    store = CareStore(conn)
    api = CareApi(store)
    outbox = Outbox()
    events = EventHub("care", event_builder(store))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await events.start()
        yield
        await events.stop()
        conn.close()

    app = Starlette(
        routes=[
            business_route(control, "GET", INDIVIDUALS, api.list_individuals),
            business_route(control, "GET", TICKETS, api.list_tickets),
            business_route(control, "POST", TICKETS, api.create_ticket),
            business_route(control, "PATCH", TICKETS + "/{id}", api.patch_ticket),
            business_route(control, "GET", INTERACTIONS, api.list_interactions),
            business_route(control, "POST", INTERACTIONS, api.create_interaction),
            business_route(control, "POST", MESSAGES, outbox.send),
            *control.routes(),
            *outbox.routes(),
            *events.routes(),
        ],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    app.state.control = control
    app.state.events = events
    app.add_middleware(TraceparentRecorder, control=control)
    return app
