"""Verifications: proof that a caller is (acting for) one customer, and where that proof counts.

A verification is obtained in one channel (an OTP confirmed in the app, an ID card checked at a
store counter) and names exactly one hub customer. It counts in the channel that obtained it at
its own level until it expires; in another channel only where that channel's profile accepts it
(`continuity`), within the age limit and at most at the level the profile lets it carry.

This module holds the data and the rules; where verifications are stored is the gateway's
business (`VerificationStore` is the protocol it implements), so policies know nothing of SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from policies.model import Policy
from policies.principal import Verified

__all__ = ["OtpChallenge", "Standing", "Verification", "VerificationStore", "Verified", "standing"]


@dataclass(frozen=True, slots=True)
class Verification:
    """A stored verification (never its token: only the token's SHA-256 is kept)."""

    id: str
    customer_id: str  # hub customer id (cus_...)
    level: str  # one of the policy's verification_levels
    method: str  # "otp" | "id_card"
    channel: str  # the channel that obtained it
    credential_id: str  # the API key (public id) that obtained it
    created_at: float  # epoch seconds
    expires_at: float


@dataclass(frozen=True, slots=True)
class Standing:
    """Whether a verification counts for a channel and customer, and at what level."""

    level: str | None  # None: it does not count
    code: str = ""  # why not: VERIFICATION_EXPIRED, VERIFICATION_NOT_CARRIED, ...
    reason: str = ""

    @property
    def counts(self) -> bool:
        return self.level is not None


@dataclass(frozen=True, slots=True)
class OtpChallenge:
    id: str
    customer_id: str
    code_hash: str
    channel: str
    credential_id: str
    created_at: float
    expires_at: float
    attempts_left: int
    used: bool


class VerificationStore(Protocol):
    """Where verifications, OTP challenges and failed checks are kept (the gateway's database)."""

    async def add_verification(self, verification: Verification, token_hash: str) -> None: ...

    async def verification_by_token_hash(self, token_hash: str) -> Verification | None: ...

    async def add_challenge(self, challenge: OtpChallenge) -> None: ...

    async def challenge(self, challenge_id: str) -> OtpChallenge | None: ...

    async def challenges_since(
        self, customer_id: str, since: float, credential_id: str | None = None
    ) -> int:
        """How many codes were sent to a customer since then (a limit on SMS bombing); with
        `credential_id`, only those that credential asked for."""

    async def take_attempt(self, challenge_id: str, now: float) -> bool:
        """Use up one attempt of a live, unused challenge; False if none is left."""

    async def mark_used(self, challenge_id: str) -> bool:
        """Burn a challenge once it was answered right; False if it already was."""

    async def add_failure(
        self, customer_id: str, method: str, channel: str, at: float, credential_id: str = ""
    ) -> None:
        """Count a failed check, and the credential that made it (no value presented is
        stored)."""

    async def failures_since(
        self, customer_id: str, method: str, since: float, credential_id: str | None = None
    ) -> int:
        """Failed checks of a customer since then; with `credential_id`, that credential's."""


def rank(levels: Sequence[str], level: str | None) -> int:
    """A level's place in the policy's order; an unknown or missing level ranks lowest."""
    if level is None or level not in levels:
        return 0
    return levels.index(level)


def weaker(levels: Sequence[str], a: str, b: str) -> str:
    return a if rank(levels, a) <= rank(levels, b) else b


def standing(
    policy: Policy,
    verification: Verification,
    channel: str,
    now: float,
    customer_id: str | None = None,
) -> Standing:
    """Does this verification count for this channel (and customer), and at what level?

    In the channel that obtained it: at its own level until it expires. In another channel:
    only if that channel's profile lists the source channel under `continuity`, while the
    verification is younger than `max_age_minutes`, and at most at the level it `carries`.
    A verification never counts for a customer other than the one it names.
    """
    levels = policy.verification_levels
    if customer_id is not None and customer_id != verification.customer_id:
        return Standing(None, "CUSTOMER_NOT_VERIFIED", "it names another customer")
    if now >= verification.expires_at:
        return Standing(None, "VERIFICATION_EXPIRED", "it has expired")
    if verification.level not in levels:
        # The policy no longer knows the level (a reload removed it): it proves nothing now.
        return Standing(None, "VERIFICATION_INVALID", f"level '{verification.level}' is unknown")
    if channel == verification.channel:
        return Standing(verification.level)
    profile = policy.channel(channel)
    rule = next(
        (
            c
            for c in (profile.continuity if profile else ())
            if c.from_channel == verification.channel
        ),
        None,
    )
    if rule is None:
        return Standing(
            None,
            "VERIFICATION_NOT_CARRIED",
            f"the {channel} channel does not accept verifications from {verification.channel}",
        )
    if now - verification.created_at > rule.max_age_minutes * 60:
        return Standing(
            None,
            "VERIFICATION_NOT_CARRIED",
            f"the {channel} channel accepts verifications from {verification.channel} for "
            f"{rule.max_age_minutes} minutes only",
        )
    return Standing(weaker(levels, verification.level, rule.carries))
