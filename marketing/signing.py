"""Signed notifications: HMAC-SHA256 over ``"<timestamp>." + body`` with the shared secret.

The timestamp (Unix seconds, its own header) is inside the signature, so a captured request
cannot be replayed once it is older than the tolerance, nor re-dated. The comparison is
constant-time. The same scheme signs in the simulators (their own copy: they share no code
with the hub, only the wire contract).
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


class SignatureRefused(ValueError):
    """A notification whose signature does not prove the source sent it (answered 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return PREFIX + digest


def verify(
    secret: bytes,
    timestamp: str | None,
    signed: str | None,
    body: bytes,
    now: float,
    tolerance_s: float,
) -> None:
    """Return if the signature is good and fresh; raise SignatureRefused otherwise."""
    if not timestamp or not signed:
        raise SignatureRefused("SIGNATURE_MISSING", "The notification is not signed.")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureRefused("SIGNATURE_INVALID", "The signature timestamp is not Unix seconds.")
    if abs(now - int(timestamp)) > tolerance_s:
        raise SignatureRefused(
            "SIGNATURE_STALE", "The signature timestamp is outside the accepted window."
        )
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signed.strip().encode()):
        raise SignatureRefused("SIGNATURE_INVALID", "The signature does not match.")
