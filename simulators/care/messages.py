"""TMF681 Communication Message: the care system sends SMS to customers' lines.

The simulator delivers nothing: it keeps what was sent, in memory, and shows it on
``GET /_sim/messages?msisdn=...`` the way a phone would show an SMS, so a test can read a
one-time code that really went out over the wire.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.rest import bad_request, json_body, json_response

MESSAGES = "/tmf-api/communicationManagement/v4/communicationMessage"
MSISDN = re.compile(r"1[3-9][0-9]{9}")
MAX_CONTENT = 500  # a long SMS, in characters
_CST = dt.timezone(dt.timedelta(hours=8))


@dataclass(frozen=True)
class SentMessage:
    id: str
    msisdn: str
    content: str
    message_type: str
    sent_at: str

    def item(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "href": f"{MESSAGES}/{self.id}",
            "@type": "CommunicationMessage",
            "messageType": self.message_type,
            "content": self.content,
            "state": "completed",
            "sendTime": self.sent_at,
            "receiver": [{"phoneNumber": self.msisdn}],
        }


class Outbox:
    """Messages sent, in order, with the idempotency keys they were sent under."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: list[SentMessage] = []
        self._by_key: dict[str, SentMessage] = {}
        #: POSTs answered with the first message of their key (a sender's repeat).
        self._replays = 0

    async def send(self, request: Request) -> Response:
        key = request.headers.get("x-idempotency-key", "").strip()
        if len(key) > 128:
            raise bad_request("X-Idempotency-Key is longer than 128 characters")
        if key and (first := self._by_key.get(key)) is not None:
            with self._lock:
                self._replays += 1
            return json_response(first.item(), 200)
        body = await json_body(request)
        message_type = body.get("messageType", "SMS")
        if message_type != "SMS":
            raise bad_request("messageType must be SMS")
        content = body.get("content")
        if not isinstance(content, str) or not content.strip():
            raise bad_request("content is required")
        if len(content) > MAX_CONTENT:
            raise bad_request(f"content is longer than {MAX_CONTENT} characters")
        receivers = body.get("receiver")
        ok = (
            isinstance(receivers, list)
            and len(receivers) == 1
            and isinstance(receivers[0], dict)
            and isinstance(receivers[0].get("phoneNumber"), str)
            and MSISDN.fullmatch(receivers[0]["phoneNumber"])
        )
        if not ok:
            # The number is not repeated: it may be personal data.
            raise bad_request("receiver must be one party with an 11-digit phoneNumber")
        with self._lock:
            # Checked again under the lock: two POSTs with one key at once send one message.
            if key and (first := self._by_key.get(key)) is not None:
                self._replays += 1
                return json_response(first.item(), 200)
            message = SentMessage(
                id=f"CM{len(self._sent) + 1:010d}",
                msisdn=receivers[0]["phoneNumber"],  # type: ignore[index]
                content=content,
                message_type=message_type,
                sent_at=dt.datetime.now(_CST).isoformat(timespec="seconds"),
            )
            self._sent.append(message)
            if key:
                self._by_key[key] = message
        return json_response(message.item(), 201)

    async def read(self, request: Request) -> Response:
        """What a phone with this number received, oldest first (a /_sim route, never counted)."""
        msisdn = request.query_params.get("msisdn", "")
        if not MSISDN.fullmatch(msisdn):
            return JSONResponse({"error": "msisdn must be an 11-digit number"}, status_code=400)
        return JSONResponse([m.item() for m in self._sent if m.msisdn == msisdn])

    async def stats(self, request: Request) -> Response:
        """How many messages went out and how many POSTs repeated a key (never counted)."""
        with self._lock:
            return JSONResponse({"sent": len(self._sent), "replayed": self._replays})

    def routes(self) -> list[Route]:
        return [
            Route("/_sim/messages", self.read, methods=["GET"]),
            Route("/_sim/messages/stats", self.stats, methods=["GET"]),
        ]
