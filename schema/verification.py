"""Verification mutations: an OTP sent to the customer's line, an ID card checked at a counter.

Each success stores a verification (gateway/verification_store.py) and returns its token once;
requests present it in X-Verification. Codes are sent through the care system over the wire
(TMF681), stored only as keyed digests, expire, and allow few attempts. Nothing a caller
presents (a code, an ID-card number) is ever echoed back, logged or stored in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated

import strawberry

from policies.masks import mask_mobile
from policies.model import VerificationLimits
from policies.verification import OtpChallenge, Verification, VerificationStore
from schema.errors import GraphError, bad_input, not_found
from schema.types import GraphInfo

HUB_ID = re.compile(r"cus_[0-9a-f]{20}")
CHALLENGE_ID = re.compile(r"otp_[0-9a-f]{24}")
MSISDN = re.compile(r"1[3-9][0-9]{9}")
OTP_CODE = re.compile(r"[0-9]{6}")
ID_CARD = re.compile(r"[0-9]{17}[0-9Xx]")

ACTIVE_LINE = "A"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def code_hash(challenge_id: str, code: str) -> str:
    # Keyed by the challenge: the same code in two challenges never has the same digest.
    return hmac.new(challenge_id.encode(), code.encode(), hashlib.sha256).hexdigest()


def failed(message: str, **extensions: str) -> GraphError:
    return GraphError("VERIFICATION_FAILED", message, **extensions)


def _store(info: GraphInfo) -> VerificationStore:
    store = info.context.backends.verifications
    if store is None:
        raise GraphError("VERIFICATION_UNAVAILABLE", "This hub keeps no verifications.")
    return store


def _limits(info: GraphInfo) -> VerificationLimits:
    """Lifetimes and attempt limits: the policy's `verification_limits`."""
    return info.context.disclosure.policy.verification_limits


def _level(info: GraphInfo, method: str) -> str:
    """The policy's level for a method (levels are named after methods: otp, id_card)."""
    if method not in info.context.disclosure.policy.verification_levels:
        raise GraphError(
            "VERIFICATION_UNAVAILABLE", f"The policy has no '{method}' verification level."
        )
    return method


async def _customer_no(info: GraphInfo, customer_id: str) -> str:
    if not HUB_ID.fullmatch(customer_id):
        raise bad_input("customerId must be a hub customer id (cus_ followed by 20 hex digits).")
    identity = await info.context.loaders.identity_by_hub_id.load(customer_id)
    if identity is None:
        raise not_found("customer")
    return identity.customer_no


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@strawberry.type(description="A one-time code on its way to the customer's line.")
class OtpStarted:
    challenge_id: str
    sent_to: str = strawberry.field(description="The line the code went to, masked.")
    expires_at: datetime
    attempts: int


@strawberry.type(description="Proof that the caller is acting for one customer.")
class VerificationToken:
    token: str = strawberry.field(
        description="Send it in X-Verification. Shown once; the hub keeps only its digest."
    )
    customer_id: strawberry.ID
    level: str
    method: str
    channel: str
    expires_at: datetime


async def _issue(
    info: GraphInfo, store: VerificationStore, customer_id: str, method: str, now: float
) -> VerificationToken:
    principal = info.context.principal
    token = f"sbv_{secrets.token_urlsafe(32)}"
    found = Verification(
        id=f"ver_{secrets.token_hex(12)}",
        customer_id=customer_id,
        level=_level(info, method),
        method=method,
        channel=principal.channel,
        credential_id=principal.credential_id,
        created_at=now,
        expires_at=now + _limits(info).token_minutes * 60.0,
    )
    await store.add_verification(found, token_hash(token))
    return VerificationToken(
        token=token,
        customer_id=strawberry.ID(customer_id),
        level=found.level,
        method=method,
        channel=found.channel,
        expires_at=_when(found.expires_at),
    )


@strawberry.type(description="The verification this request presented, as it counts here.")
class CurrentVerification:
    customer_id: strawberry.ID
    level: str = strawberry.field(description="The level in this channel (continuity caps it).")
    obtained_in: str = strawberry.field(description="The channel that obtained it.")


@strawberry.type
class VerificationQuery:
    @strawberry.field(
        description="The verification this request presented (X-Verification), as it counts "
        "in the caller's channel; null without one."
    )
    def verification(self, info: GraphInfo) -> CurrentVerification | None:
        verified = info.context.principal.verification
        if verified is None:
            return None
        return CurrentVerification(
            customer_id=strawberry.ID(verified.customer_id),
            level=verified.level,
            obtained_in=verified.obtained_in,
        )


@strawberry.type
class VerificationMutation:
    @strawberry.mutation(
        description="Send a one-time code to the customer's line (through the care system)."
    )
    async def start_otp(
        self,
        info: GraphInfo,
        customer_id: strawberry.ID,
        msisdn: Annotated[
            str | None,
            strawberry.argument(
                description="Which of the customer's active lines gets the code (default: the "
                "first). Never echoed back."
            ),
        ] = None,
    ) -> OtpStarted:
        store = _store(info)
        _level(info, "otp")
        if msisdn is not None and not MSISDN.fullmatch(msisdn):
            raise bad_input("msisdn must be 11 digits starting with 13-19.")
        customer_no = await _customer_no(info, str(customer_id))
        lines = await info.context.loaders.subscriptions.load(customer_no)
        line = next(
            (
                s
                for s in lines
                if s.status == ACTIVE_LINE
                and (msisdn is None or hmac.compare_digest(s.msisdn, msisdn))
            ),
            None,
        )
        if line is None:
            raise GraphError(
                "NO_ACTIVE_LINE", "The customer has no such active line to send a code to."
            )
        now = time.time()
        limits = _limits(info)
        principal = info.context.principal
        since = now - limits.otp_send_window_minutes * 60.0
        # Per requesting key first: one key's requests use up its own allowance for this
        # customer, and leave the customer's other channels theirs. The ceiling bounds what
        # all keys together send to one phone.
        if (
            await store.challenges_since(str(customer_id), since, principal.credential_id)
            >= limits.otp_sends_per_credential
        ):
            raise GraphError(
                "OTP_RATE_LIMITED",
                "This caller asked for too many codes for this customer recently; try again later.",
                limit="otp_sends_per_credential",
            )
        if await store.challenges_since(str(customer_id), since) >= limits.otp_sends_per_customer:
            raise GraphError(
                "OTP_RATE_LIMITED",
                "Too many codes were sent to this customer recently; try again later.",
                limit="otp_sends_per_customer",
            )
        challenge_id = f"otp_{secrets.token_hex(12)}"
        code = f"{secrets.randbelow(10**6):06d}"
        code_ttl_s = limits.otp_code_minutes * 60.0
        # Stored before it is sent: a code that went out can always be confirmed.
        await store.add_challenge(
            OtpChallenge(
                id=challenge_id,
                customer_id=str(customer_id),
                code_hash=code_hash(challenge_id, code),
                channel=principal.channel,
                credential_id=principal.credential_id,
                created_at=now,
                expires_at=now + code_ttl_s,
                attempts_left=limits.otp_attempts,
                used=False,
            )
        )
        minutes = limits.otp_code_minutes
        await info.context.backends.care.send_message(
            line.msisdn,
            f"【Switchboard】您的验证码是{code}，{minutes}分钟内有效。工作人员不会向您索要验证码。",
            idempotency_key=challenge_id,
        )
        return OtpStarted(
            challenge_id=challenge_id,
            sent_to=mask_mobile(line.msisdn),
            expires_at=_when(now + code_ttl_s),
            attempts=limits.otp_attempts,
        )

    @strawberry.mutation(description="Answer a one-time code; a verification token if it is right.")
    async def confirm_otp(self, info: GraphInfo, challenge_id: str, code: str) -> VerificationToken:
        store = _store(info)
        if not CHALLENGE_ID.fullmatch(challenge_id):
            raise bad_input("challengeId is not one this hub issued.")
        if not OTP_CODE.fullmatch(code):
            raise bad_input("code must be 6 digits.")
        now = time.time()
        challenge = await store.challenge(challenge_id)
        if challenge is None or challenge.channel != info.context.principal.channel:
            raise failed("No such challenge in this channel; start a new one.")
        if not await store.take_attempt(challenge_id, now):
            # Expired, used, or out of attempts: the challenge is burnt either way.
            raise failed("The challenge has expired or is used up; start a new one.")
        if not hmac.compare_digest(challenge.code_hash, code_hash(challenge_id, code)):
            left = max(challenge.attempts_left - 1, 0)
            raise failed("The code is not right.", attemptsLeft=str(left))
        if not await store.mark_used(challenge_id):
            raise failed("The challenge has expired or is used up; start a new one.")
        return await _issue(info, store, challenge.customer_id, "otp", now)

    @strawberry.mutation(
        description="Check the ID card a customer presents against the customer system."
    )
    async def check_id_card(
        self, info: GraphInfo, customer_id: strawberry.ID, id_card_number: str
    ) -> VerificationToken:
        store = _store(info)
        _level(info, "id_card")
        if not ID_CARD.fullmatch(id_card_number):
            # The value is never repeated back: it is personal data.
            raise bad_input("idCardNumber must be 18 characters: 17 digits and a digit or X.")
        customer_no = await _customer_no(info, str(customer_id))
        now = time.time()
        limits = _limits(info)
        principal = info.context.principal
        since = now - limits.id_card_failure_window_minutes * 60.0
        # A credential that keeps presenting wrong cards locks itself out for this customer;
        # the customer, at another counter, is still checked. The ceiling stops many
        # credentials together from guessing the number (its hidden digits are a birth date).
        own = await store.failures_since(
            str(customer_id), "id_card", since, principal.credential_id
        )
        if own >= limits.id_card_failures_per_credential:
            raise GraphError(
                "VERIFICATION_LOCKED",
                "Too many failed ID-card checks for this customer from this caller; try again "
                "later.",
                limit="id_card_failures_per_credential",
            )
        if (
            await store.failures_since(str(customer_id), "id_card", since)
            >= limits.id_card_failures_per_customer
        ):
            raise GraphError(
                "VERIFICATION_LOCKED",
                "Too many failed ID-card checks for this customer; try again later.",
                limit="id_card_failures_per_customer",
            )
        profile = await info.context.loaders.profiles.load(customer_no)
        if profile is None:
            raise not_found("customer")
        presented = id_card_number.upper().encode()
        if not hmac.compare_digest(profile.certificate_no.upper().encode(), presented):
            await store.add_failure(
                str(customer_id), "id_card", principal.channel, now, principal.credential_id
            )
            raise failed("The ID card does not match this customer's certificate.")
        return await _issue(info, store, str(customer_id), "id_card", now)
