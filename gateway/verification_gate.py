"""X-Verification: the verification a request presents, resolved before the graph runs.

An unknown or expired token is refused (401 VERIFICATION_INVALID), so is one the request's
channel does not accept (403 VERIFICATION_NOT_CARRIED: another channel's verification outside
the policy's continuity limits). An accepted one goes onto the principal with the level it
counts at in this channel. The token itself is never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time

from starlette.responses import JSONResponse

from policies.model import Policy
from policies.principal import Principal, Verified
from policies.verification import VerificationStore, standing
from schema.verification import token_hash

log = logging.getLogger("switchboard.verification")

TOKEN = re.compile(r"sbv_[A-Za-z0-9_-]{20,64}")


def _refused(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status
    )


async def resolve_verification(
    token: str | None,
    principal: Principal,
    policy: Policy,
    store: VerificationStore | None,
) -> tuple[Principal, JSONResponse | None]:
    """The principal carrying its verification, or the refusal to answer with."""
    if token is None:
        return principal, None
    token = token.strip()
    found = None
    if store is not None and TOKEN.fullmatch(token):
        found = await store.verification_by_token_hash(token_hash(token))
    now = time.time()
    if found is None or now >= found.expires_at:
        return principal, _refused(
            401,
            "VERIFICATION_INVALID",
            "Unknown or expired verification: obtain a new one (startOtp / checkIdCard).",
        )
    counts = standing(policy, found, principal.channel, now)
    if counts.level is None:
        log.info(
            "verification %s refused in channel %s: %s",
            found.id,
            principal.channel,
            counts.code,
        )
        status = 401 if counts.code in ("VERIFICATION_EXPIRED", "VERIFICATION_INVALID") else 403
        return principal, _refused(
            status, counts.code, f"The verification does not count here: {counts.reason}."
        )
    verified = Verified(
        verification_id=found.id,
        customer_id=found.customer_id,
        level=counts.level,
        obtained_in=found.channel,
    )
    return dataclasses.replace(principal, verification=verified), None
