"""X-Verification on websockets, presented the two ways a key is.

- On the upgrade request, next to the key (``Authenticate`` resolves both before the socket
  opens): a bad verification is refused with ``deny_upgrade``, the same coded JSON answer as on
  HTTP where the server supports the ASGI ``websocket.http.response`` extension (uvicorn does),
  else a close whose reason is the code.
- In the ``connection_init`` payload (``X-Verification`` or ``verification``), for clients that
  cannot set headers: ``apply_payload_verification`` resolves it once the caller is known and
  refuses a bad one with ConnectionRejectionError (strawberry closes with 4403; the code is
  logged, never the token).

Either way it is resolved by gateway.verification_gate.resolve_verification, once per
connection, and holds for every subscription on it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from strawberry.exceptions import ConnectionRejectionError

from gateway.verification_gate import resolve_verification
from policies.disclosure import Disclosure
from policies.model import Policy
from policies.verification import VerificationStore
from schema.context import RequestContext

log = logging.getLogger("switchboard.verification")

PAYLOAD_NAMES = ("X-Verification", "verification", "x-verification")


def refusal_code(refusal: JSONResponse) -> str:
    """The extensions.code of a coded refusal (gateway/verification_gate.py's shape)."""
    return json.loads(bytes(refusal.body))["errors"][0]["extensions"]["code"]


async def deny_upgrade(scope: Scope, receive: Receive, send: Send, refusal: JSONResponse) -> None:
    """Refuse a websocket before it opens, saying why."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await refusal(scope, receive, send)  # Starlette sends it as a denial response
        return
    code = 4401 if refusal.status_code == 401 else 4403
    await send({"type": "websocket.close", "code": code, "reason": refusal_code(refusal)})


def payload_token(params: dict[str, Any]) -> object | None:
    """The verification a connection_init payload presents, if any (not yet checked)."""
    for name in PAYLOAD_NAMES:
        if name in params:
            return params[name]
    return None


async def apply_payload_verification(
    context: RequestContext, policy: Policy, store: VerificationStore | None
) -> None:
    """Put the payload's verification on the connection's principal, or refuse the connection."""
    token = payload_token(context.connection_params or {})
    if token is None:
        return
    principal = context.principal
    if not isinstance(token, str) or principal.verification is not None:
        # One verification per connection: a second one (or one that is not a string) is
        # refused rather than one of them silently ignored.
        raise ConnectionRejectionError({"code": "VERIFICATION_INVALID"})
    principal, refusal = await resolve_verification(token, principal, policy, store)
    if refusal is not None:
        code = refusal_code(refusal)
        log.info("websocket verification refused: %s", code)
        raise ConnectionRejectionError({"code": code})
    context.principal = principal
    context.disclosure = Disclosure(
        policy, principal, context.disclosure.purpose, enforced=context.disclosure.enforced
    )
