"""The policy: channel profiles, search grants and disclosure rules, as plain data.

Disclosure rules are an ordered list, first match wins, like a firewall: an operator reads them
top to bottom and `switchboard policy explain` names the rule that decided. A rule leaves a
dimension open by not naming it; naming it restricts the rule to the values listed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from policies.masks import BUILTIN_CLASSES, DataClass, DeclaredMask, mask
from policies.principal import Principal


class Level(enum.Enum):
    CLEAR = "clear"
    MASKED = "masked"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Decision:
    level: Level
    rule_id: str  # "default" when no rule matched


@dataclass(frozen=True, slots=True)
class Continuity:
    """A verification obtained in another channel that the receiving channel accepts."""

    from_channel: str
    max_age_minutes: int
    #: The highest level it counts at here (a weaker channel's OTP never becomes an ID check).
    carries: str
    line: int = 0


#: Row scopes: a channel reads any customer, or only the customer its request is verified for.
ROWS_ALL = "all"
ROWS_VERIFIED_CUSTOMER = "verified_customer"

#: Documents a channel may run: any, or only the trusted documents of the hub's manifest
#: (gateway/trusted_documents.py), sent in full or by hash.
DOCUMENTS_ANY = "any"
DOCUMENTS_TRUSTED_ONLY = "trusted_only"


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """What one operation may ask for, checked on the parsed document before it executes.

    `max_cost` is in backend calls the operation can cause (schema/cost.py estimates it);
    the others bound the document itself. `dry_run` only logs an operation past a limit
    and lets it through, to measure a new limit before enforcing it.
    """

    max_cost: int = 50
    max_depth: int = 10
    max_aliases: int = 30
    max_root_fields: int = 10
    max_tokens: int = 2000
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class VerificationLimits:
    """Lifetimes and attempt limits of verifications (policy key `verification_limits`).

    Sends and failures are counted per customer and requesting credential (API key), with a
    higher ceiling per customer: one credential's attempts use up its own allowance for that
    customer, not the customer's other channels, while the ceiling still bounds what every
    credential together can do to one customer (SMS flooding, guessing an ID card).
    """

    otp_code_minutes: int = 5
    otp_attempts: int = 3
    otp_send_window_minutes: int = 10
    otp_sends_per_credential: int = 5
    otp_sends_per_customer: int = 5
    id_card_failure_window_minutes: int = 15
    id_card_failures_per_credential: int = 5
    id_card_failures_per_customer: int = 20
    token_minutes: int = 30


@dataclass(frozen=True, slots=True)
class ChannelProfile:
    name: str
    #: Root fields (queries, mutations) the channel may use; None means all.
    operations: frozenset[str] | None
    introspection: bool = False
    rate_limit_per_minute: int | None = None
    #: How answers are adapted: "standard", "full", "speech" (IVR), "text" (SMS).
    rendering: str = "standard"
    #: Operation -> the minimum verification level a request must present to use it.
    requires_verification: dict[str, str] = field(default_factory=dict)
    #: Verifications from other channels this channel accepts, and within which limits.
    continuity: tuple[Continuity, ...] = ()
    #: ROWS_ALL, or ROWS_VERIFIED_CUSTOMER: callers act for their verified customer only.
    rows: str = ROWS_ALL
    #: Operation limits for this channel (the policy's `limits`, with this channel's own).
    limits: OperationLimits = field(default_factory=OperationLimits)
    #: DOCUMENTS_ANY, or DOCUMENTS_TRUSTED_ONLY: nothing but the manifest's documents.
    documents: str = DOCUMENTS_ANY

    def allows(self, operation: str) -> bool:
        return self.operations is None or operation in self.operations


def _open_or_in(allowed: frozenset[str] | None, value: str | None) -> bool:
    return allowed is None or (value is not None and value in allowed)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    decision: Level
    classes: frozenset[DataClass] | None = None
    channels: frozenset[str] | None = None
    roles: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    line: int = 0
    #: `verified:` the minimum level, as the set of levels at or above it (None: any level).
    verified: frozenset[str] | None = None
    verified_min: str | None = None

    def matches(
        self,
        data_class: DataClass,
        channel: str,
        role: str,
        purpose: str | None,
        verified: str | None = None,
    ) -> bool:
        return (
            (self.classes is None or data_class in self.classes)
            and _open_or_in(self.channels, channel)
            and _open_or_in(self.roles, role)
            and _open_or_in(self.purposes, purpose)
            and _open_or_in(self.verified, verified)
        )

    def dimensions(self) -> tuple[frozenset | None, ...]:
        return (self.classes, self.channels, self.roles, self.purposes, self.verified)


@dataclass(frozen=True, slots=True)
class SearchGrant:
    """Who may look a customer up by the full value of a class (e.g. a whole MSISDN)."""

    classes: frozenset[DataClass]
    channels: frozenset[str] | None = None
    roles: frozenset[str] | None = None

    def grants(self, data_class: DataClass, principal: Principal) -> bool:
        return (
            data_class in self.classes
            and _open_or_in(self.channels, principal.channel)
            and _open_or_in(self.roles, principal.role)
        )


@dataclass(frozen=True)
class Policy:
    version: str
    source: str
    purposes: frozenset[str]
    channels: dict[str, ChannelProfile]
    rules: tuple[Rule, ...]
    default: Level = Level.MASKED
    search: tuple[SearchGrant, ...] = ()
    #: Verification levels, weakest first; the first is what an unverified request has.
    verification_levels: tuple[str, ...] = ("none",)
    #: Operation limits of channels that set none of their own.
    limits: OperationLimits = field(default_factory=OperationLimits)
    verification_limits: VerificationLimits = field(default_factory=VerificationLimits)
    #: Classes this policy declares beyond the built-in ones, with their masks.
    data_classes: Mapping[DataClass, DeclaredMask] = field(default_factory=dict)
    _decisions: dict = field(default_factory=dict, repr=False, compare=False)

    def unknown_terms(self, channel: str | None, purpose: str | None) -> str | None:
        """What a command asked for that this policy does not know (a channel, a purpose),
        as one line; None if both are known. An unknown one would quietly decide as the
        default, which reads like an answer."""
        if channel is not None and channel not in self.channels:
            return f"unknown channel '{channel}' (known: {', '.join(sorted(self.channels))})"
        if purpose and purpose not in self.purposes:
            return f"unknown purpose '{purpose}' (known: {', '.join(sorted(self.purposes))})"
        return None

    def decide(
        self,
        data_class: DataClass,
        principal: Principal,
        purpose: str | None,
        verified: str | None = None,
    ) -> Decision:
        """The decision for a field; `verified` is the level held for the data's own customer."""
        verified = verified if verified in self.verification_levels else self.unverified
        key = (data_class, principal.channel, principal.role, purpose, verified)
        found = self._decisions.get(key)
        if found is None:
            found = next(
                (
                    Decision(rule.decision, rule.id)
                    for rule in self.rules
                    if rule.matches(
                        data_class, principal.channel, principal.role, purpose, verified
                    )
                ),
                Decision(self.default, "default"),
            )
            # Bounded: classes x channels x roles x purposes x levels of one policy.
            self._decisions[key] = found
        return found

    def may_search(self, data_class: DataClass, principal: Principal) -> bool:
        return any(grant.grants(data_class, principal) for grant in self.search)

    def search_refusal(
        self, data_class: DataClass, principal: Principal, purpose: str | None, partial: bool
    ) -> str | None:
        """Why this caller may not filter customers on a class; None if it may.

        A search is an oracle for the value it filters on: the answer says which customers
        hold it. So it needs a search grant and also the right to see the class: a partial
        value (a name prefix) only where the class goes out clear to the caller (else a prefix
        walk spells the masked value back), a whole value only where the class goes out at
        all (the masked form of a whole value confirms it anyway). Decided as unverified: the
        customers a search finds are not known in advance.
        """
        if not self.may_search(data_class, principal):
            return f"no search grant for class {data_class.value}"
        decision = self.decide(data_class, principal, purpose)
        if partial and decision.level is not Level.CLEAR:
            return (
                f"class {data_class.value} goes out {decision.level.value} to this caller "
                f"(rule {decision.rule_id}); filtering on part of it needs it clear"
            )
        if decision.level is Level.DENIED:
            return f"class {data_class.value} is denied to this caller (rule {decision.rule_id})"
        return None

    def limits_for(self, channel: str) -> OperationLimits:
        profile = self.channels.get(channel)
        return profile.limits if profile is not None else self.limits

    def knows_class(self, data_class: DataClass) -> bool:
        return data_class in BUILTIN_CLASSES or data_class in self.data_classes

    def mask(self, data_class: DataClass, value: object) -> object:
        """A value of a class as its mask shows it (built-in or declared here)."""
        return mask(data_class, value, self.data_classes)

    @property
    def unverified(self) -> str:
        return self.verification_levels[0]

    def channel(self, name: str) -> ChannelProfile | None:
        return self.channels.get(name)
