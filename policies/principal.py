"""Who is asking: the principal every request carries from authentication onwards.

It lives in policies (not in the gateway) because the rules that decide what a caller may see
are written in its terms; the gateway only builds it from a credential.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The channels the hub knows out of the box; operators may add their own.
KNOWN_CHANNELS = ("app", "web", "store", "agent", "ivr", "sms", "partner", "audit")


@dataclass(frozen=True, slots=True)
class Verified:
    """The verification a request presented, as it counts in the request's channel."""

    verification_id: str
    customer_id: str  # the one hub customer it names: it counts for no other
    level: str  # the effective level in this channel (continuity may cap it)
    obtained_in: str  # the channel that obtained it


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str
    channel: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    partner: str | None = None
    #: Which credential authenticated the request (an API key's public id, never the key).
    credential_id: str = ""
    #: The customer this request is verified for (X-Verification), if any.
    verification: Verified | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
