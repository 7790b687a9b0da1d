"""Which arguments of the graph filter customers on personal data, and whether a caller may.

A search answers "who holds this value", so it discloses the value's class as surely as a
field does (policies/model.py `Policy.search_refusal` says when it may). Every argument that
filters on a classified value is listed here, so the resolvers and `policy explain` apply the
same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.masks import DataClass
from policies.model import Policy
from policies.principal import Principal
from schema.errors import GraphError


@dataclass(frozen=True, slots=True)
class SearchArgument:
    data_class: DataClass
    #: A part of the value (a prefix) rather than the whole of it.
    partial: bool
    #: How the error names it (never the value).
    what: str


#: (root field, argument) -> what it filters on.
SEARCH_ARGUMENTS: dict[tuple[str, str], SearchArgument] = {
    ("customers", "namePrefix"): SearchArgument(DataClass.NAME, partial=True, what="name"),
    ("customerByMsisdn", "msisdn"): SearchArgument(DataClass.MOBILE, partial=False, what="MSISDN"),
}


def search_refusal(
    policy: Policy, principal: Principal, purpose: str | None, root: str, argument: str
) -> str | None:
    found = SEARCH_ARGUMENTS[(root, argument)]
    return policy.search_refusal(found.data_class, principal, purpose, found.partial)


def ensure_may_search(info: object, root: str, argument: str) -> None:
    """SEARCH_NOT_ALLOWED unless the caller may filter customers on this argument."""
    disclosure = info.context.disclosure  # type: ignore[attr-defined]
    if not disclosure.enforced:
        return
    reason = search_refusal(
        disclosure.policy, disclosure.principal, disclosure.purpose, root, argument
    )
    if reason is not None:
        what = SEARCH_ARGUMENTS[(root, argument)].what
        raise GraphError(
            "SEARCH_NOT_ALLOWED", f"This caller may not look customers up by {what}: {reason}."
        )
