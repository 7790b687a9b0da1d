"""Care business events: a trouble ticket resolved.

A /_sim/events request names the line (``msisdn``, the party's phone), the ticket
(``ticketId``) or asks for a random party; the event carries the ticket and its customer
party, as TMF621 notifications do.
"""

from __future__ import annotations

import random
from typing import Any

from simulators import event_requests as req
from simulators.care.store import CareStore, PartyRow
from simulators.events import Builder, EventRequestError

TYPES = ("TroubleTicketResolvedEvent",)


def _party(store: CareStore, body: dict[str, Any], rng: random.Random) -> PartyRow:
    msisdn = req.msisdn(body)
    found: PartyRow | None = None
    if msisdn is not None:
        page = store.parties("phoneNumber", [msisdn], 0, 1)[1]
        found = page[0] if page else None
    elif body.get("random") is True:
        found = store.party_at(rng.randrange(store.party_count() + 1))
    else:
        raise EventRequestError("name the line (msisdn) or ask for a random party (random: true)")
    if found is None:
        raise EventRequestError("no such party")
    return found


def builder(store: CareStore) -> Builder:
    def build(body: dict[str, Any], rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
        kind = req.event_type(body, TYPES)
        party = _party(store, body, rng)
        tickets = store.tickets([party.id], 0, 1)[1]
        ticket_id = tickets[0].id if tickets else f"TT{party.id[2:]}0000"
        ticket_type = tickets[0].ticket_type if tickets else "inquiry"
        event = {
            "troubleTicket": {
                "id": ticket_id,
                "ticketType": ticket_type,
                "status": "resolved",
                "resolutionDate": body.get("resolutionDate") or None,
                "relatedParty": [{"id": party.id, "role": "customer"}],
            },
            "serviceNumber": party.phone,
        }
        return [(kind, event)]

    return build
