"""Limits on one websocket connection (graphql-transport-ws), on top of strawberry's handler.

A client could send subscribes as fast as the socket carries them (5000 in 1.1 s were all
read and answered). Per connection:

- **messages per second** (``websocket.max_messages_per_second``): past it the socket is
  closed with 4429 ("Too many messages"), the code graphql-transport-ws uses for a client
  that sends too much (strawberry's own 4429 is for a repeated connection_init);
- **operations at once** (``websocket.max_operations_per_connection``; strawberry's
  ``max_subscriptions_per_connection``): past it a new subscribe gets the protocol's
  ``error`` message for that operation id, coded TOO_MANY_OPERATIONS; the others go on;
- **well-formed messages**: a message that is not an object, or a subscribe whose payload is
  not a GraphQL request (query a string, variables an object...) or holds a lone surrogate,
  closes the socket with 4400, as the protocol says for invalid messages (strawberry raised
  inside its handler on some of them);
- **failed authentication in connection_init**: the key sent in the payload is throttled like
  one sent over HTTP (gateway/auth_throttle.py): a throttled attempt is closed with 4429.

Refusals leave an audit record, like refused HTTP requests (no operation type: the
operation did not run).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)

from gateway.audit.middleware import record_refused_connection
from gateway.audit.service import AuditLog
from gateway.auth import key_id_of
from gateway.auth_throttle import source_of
from gateway.http_input import InputRefused, check_json_tree, check_request_object
from gateway.settings import WebSocketSettings
from gateway.shared_limits import AuthThrottle

log = logging.getLogger("switchboard.gateway")

PAYLOAD_KEY_NAMES = ("X-Api-Key", "apiKey", "x-api-key")  # as the view's on_ws_connect reads them


class LimitedTransportWSHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """Strawberry's graphql-transport-ws handler with the connection limits above."""

    limits: WebSocketSettings = WebSocketSettings()
    throttle: AuthThrottle | None = None
    audit: AuditLog | None = None
    max_json_depth: int = 32

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second = -1
        self._messages = 0

    @property
    def _scope(self) -> dict[str, Any]:
        return self.websocket.ws.scope  # type: ignore[attr-defined]

    async def handle_message(self, message: Any) -> None:
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._messages = second, 0
        self._messages += 1
        if self._messages > self.limits.max_messages_per_second:
            await self._refuse("RATE_LIMITED")
            await self.websocket.close(code=4429, reason="Too many messages")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.handle_invalid_message("A message must be an object with a type")
            return
        if message["type"] == "subscribe" and not self._well_formed(message):
            await self.handle_invalid_message("Invalid subscribe message")
            return
        await super().handle_message(message)  # type: ignore[arg-type]

    def _well_formed(self, message: dict[str, Any]) -> bool:
        if not isinstance(message.get("id"), str) or not message["id"]:
            return False
        try:
            # Strawberry decoded the message already; the same rules as an HTTP body.
            check_request_object(message.get("payload"))
            check_json_tree(message["payload"], self.max_json_depth)
        except InputRefused:
            return False
        return True

    async def handle_subscribe(self, message: Any) -> None:
        if (
            self.connection_acknowledged
            and message["id"] not in self.operations
            and len(self.operations) >= self.limits.max_operations_per_connection
        ):
            await self._refuse("TOO_MANY_OPERATIONS")
            await self.send_message(
                {
                    "id": message["id"],
                    "type": "error",
                    "payload": [
                        {
                            "message": "Too many operations on this connection at once "
                            f"(at most {self.limits.max_operations_per_connection}); "
                            "complete one first.",
                            "extensions": {"code": "TOO_MANY_OPERATIONS"},
                        }
                    ],
                }
            )
            return
        await super().handle_subscribe(message)

    async def handle_connection_init(self, message: Any) -> None:
        payload = message.get("payload")
        key = None
        if isinstance(payload, dict) and "switchboard.principal" not in self._scope:
            key = next((payload[n] for n in PAYLOAD_KEY_NAMES if n in payload), None)
        if not isinstance(key, str) or not key or self.throttle is None:
            await super().handle_connection_init(message)
            return
        source, key_id = source_of(self._scope), key_id_of(key)
        if await self.throttle.refused(source, key_id) is not None:
            await self._refuse("RATE_LIMITED")
            await self.websocket.close(code=4429, reason="Too many failed authentications")
            return
        await super().handle_connection_init(message)
        if not self.connection_acknowledged:
            await self.throttle.failed(source, key_id)

    async def _refuse(self, code: str) -> None:
        """The audit record of something refused on this connection (no operation ran)."""
        if self.audit is None:
            return
        context = self.context
        await record_refused_connection(
            self.audit,
            request_id=context.request_id,
            principal=context.principal if context.principal.credential_id else None,
            purpose=context.disclosure.purpose,
            code=code,
            started_us=time.time_ns() // 1000,
            started_perf=time.perf_counter(),
        )


def transport_ws_handler(
    limits: WebSocketSettings,
    throttle: AuthThrottle | None,
    audit: AuditLog | None,
    max_json_depth: int,
) -> type[LimitedTransportWSHandler]:
    """The handler class for the view, bound to this gateway's settings, throttle and log."""
    return type(
        "GatewayTransportWSHandler",
        (LimitedTransportWSHandler,),
        {
            "limits": limits,
            "throttle": throttle,
            "audit": audit,
            "max_json_depth": max_json_depth,
        },
    )
