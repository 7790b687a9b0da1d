"""The customer-service (care) system: REST in the TM Forum TMF621/TMF683/TMF632 style."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.parsing import reading, to_datetime
from adapters.records import Interaction, Party, Ticket, TicketNote
from adapters.rest import RestBackend, operation_of

PARTIES = "/tmf-api/partyManagement/v4/individual"
TICKETS = "/tmf-api/troubleTicket/v4/troubleTicket"
INTERACTIONS = "/tmf-api/partyInteraction/v4/partyInteraction"
MESSAGES = "/tmf-api/communicationManagement/v4/communicationMessage"


class CareAdapter(RestBackend):
    """Implements adapters.contract.CareSystem over the care REST API."""

    name = "care"
    ping_path = f"{PARTIES}?id=P000000000000&limit=1"

    async def find_parties(
        self, *, id_card_numbers: Sequence[str] = (), msisdns: Sequence[str] = ()
    ) -> Sequence[Party]:
        found: dict[str, Party] = {}
        for filter_name, values in (
            ("identificationId", id_card_numbers),
            ("phoneNumber", msisdns),
        ):
            for item in await self._read_filtered(PARTIES, filter_name, values):
                party = _party(item)
                found.setdefault(party.id, party)
        return list(found.values())

    async def get_tickets(self, party_ids: Sequence[str]) -> Mapping[str, Sequence[Ticket]]:
        return await self._by_party(TICKETS, party_ids, _ticket)

    async def get_interactions(
        self, party_ids: Sequence[str]
    ) -> Mapping[str, Sequence[Interaction]]:
        return await self._by_party(INTERACTIONS, party_ids, _interaction)

    async def create_ticket(
        self,
        party_id: str,
        *,
        ticket_type: str,
        name: str,
        description: str,
        severity: str,
        channel: str,
        idempotency_key: str,
    ) -> Ticket:
        body = {
            "@type": "TroubleTicket",
            "name": name,
            "description": description,
            "ticketType": ticket_type,
            "severity": severity,
            "channel": {"name": channel},
            "relatedParty": [{"id": party_id, "role": "customer", "@referredType": "Individual"}],
        }
        item = await self._policy.write(
            operation_of("POST", TICKETS),
            self._rest.post,
            TICKETS,
            body,
            {"X-Idempotency-Key": idempotency_key},
        )
        return _ticket(item)

    async def update_ticket(
        self,
        ticket_id: str,
        *,
        status: str | None = None,
        priority: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Ticket:
        patch: dict[str, Any] = {}
        if status is not None:
            patch["status"] = status
        if priority is not None:
            patch["priority"] = priority
        if note is not None:
            patch["note"] = [{"text": note, "author": "switchboard"}]
        headers = {"X-Idempotency-Key": idempotency_key} if idempotency_key else None
        item = await self._policy.write(
            operation_of("PATCH", TICKETS),
            self._rest.patch,
            f"{TICKETS}/{ticket_id}",
            patch,
            headers,
        )
        return _ticket(item)

    async def send_message(self, msisdn: str, text: str, idempotency_key: str) -> str:
        """TMF681: one SMS to one line. Never retried blindly: the key makes a repeat safe."""
        body = {
            "@type": "CommunicationMessage",
            "messageType": "SMS",
            "content": text,
            "receiver": [{"phoneNumber": msisdn}],
            "sender": {"name": "switchboard"},
        }
        item = await self._policy.write(
            operation_of("POST", MESSAGES),
            self._rest.post,
            MESSAGES,
            body,
            {"X-Idempotency-Key": idempotency_key},
        )
        with reading("care", "communication message"):
            return str(item["id"])

    async def _by_party(self, path: str, party_ids: Sequence[str], parse: Any) -> dict[str, list]:
        grouped: dict[str, list] = defaultdict(list)
        for item in await self._read_filtered(path, "relatedParty.id", party_ids):
            record = parse(item)
            grouped[record.party_id].append(record)
        return {party_id: grouped.get(party_id, []) for party_id in party_ids}


def _customer_party_id(item: dict[str, Any]) -> str:
    parties = item["relatedParty"]
    for party in parties:
        if party.get("role") == "customer":
            return str(party["id"])
    return str(parties[0]["id"])


def _party(item: dict[str, Any]) -> Party:
    with reading("care", "party"):
        media = item.get("contactMedium") or []
        return Party(
            id=str(item["id"]),
            full_name=str(item.get("fullName", "")),
            msisdns=tuple(
                str(m["characteristic"]["phoneNumber"])
                for m in media
                if m.get("mediumType") == "mobile"
            ),
            id_card_numbers=tuple(
                str(i["identificationId"])
                for i in item.get("individualIdentification") or []
                if i.get("identificationType") == "IDCard"
            ),
            email=next(
                (
                    str(m["characteristic"]["emailAddress"])
                    for m in media
                    if m.get("mediumType") == "email"
                ),
                None,
            ),
        )


def _ticket(item: dict[str, Any]) -> Ticket:
    with reading("care", "trouble ticket"):
        return Ticket(
            id=str(item["id"]),
            party_id=_customer_party_id(item),
            name=str(item.get("name", "")),
            description=str(item.get("description", "")),
            ticket_type=str(item["ticketType"]),
            severity=str(item.get("severity", "")),
            priority=str(item.get("priority", "")),
            status=str(item["status"]),
            created_at=to_datetime(item.get("creationDate")),
            updated_at=to_datetime(item.get("lastUpdate")),
            channel=str((item.get("channel") or {}).get("name", "")),
            notes=tuple(
                TicketNote(
                    date=to_datetime(n.get("date")),
                    author=str(n.get("author", "")),
                    text=str(n["text"]),
                )
                for n in item.get("note") or []
            ),
        )


def _interaction(item: dict[str, Any]) -> Interaction:
    with reading("care", "party interaction"):
        when = item.get("interactionDate") or {}
        channels = item.get("channel") or [{}]
        return Interaction(
            id=str(item["id"]),
            party_id=_customer_party_id(item),
            started_at=to_datetime(when.get("startDateTime")),
            ended_at=to_datetime(when.get("endDateTime")),
            channel=str(channels[0].get("name", "")),
            direction=str(item.get("direction", "")),
            reason=str(item.get("reason", "")),
            description=str(item.get("description", "")),
            status=str(item.get("status", "")),
        )
