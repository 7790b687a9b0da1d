"""One request's view of the policy: decisions for its caller, and what it disclosed.

It pins the policy in force when the request started (a reload mid-request never mixes two
versions) and records, per field path, the level at which data went out, for the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.masks import DataClass
from policies.model import Decision, Level, Policy
from policies.principal import Principal

_RANK = {Level.DENIED: 0, Level.MASKED: 1, Level.CLEAR: 2}


@dataclass
class Disclosure:
    policy: Policy
    principal: Principal
    purpose: str | None = None
    #: False only to measure what enforcement costs (the benchmark); everything goes out clear.
    enforced: bool = True
    #: Field path (list indices dropped) -> the most revealing level it went out at.
    disclosed: dict[str, Level] = field(default_factory=dict)
    #: Response path of each customer object -> its hub id (filled only for a verified
    #: request): a verification raises decisions for data under its own customer only.
    owners: dict[object, str] = field(default_factory=dict)

    def decide(self, data_class: DataClass, owner: str | None = None) -> Decision:
        """The decision for data of a class belonging to customer `owner` (a hub id).

        A verification counts only for the customer it names: data of anyone else, or of no
        known customer, is decided as unverified.
        """
        verified = self.principal.verification
        level = verified.level if verified is not None and verified.customer_id == owner else None
        return self.policy.decide(data_class, self.principal, self.purpose, level)

    def may_search(self, data_class: DataClass) -> bool:
        return self.policy.may_search(data_class, self.principal)

    def record(self, path: str, level: Level) -> None:
        known = self.disclosed.get(path)
        if known is None or _RANK[level] > _RANK[known]:
            self.disclosed[path] = level

    def clear_paths(self) -> list[str]:
        return sorted(p for p, level in self.disclosed.items() if level is Level.CLEAR)
