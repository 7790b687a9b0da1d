"""Whose data a field is, and whether the request may see that customer at all.

Every field of ``Customer`` carries ``CustomerScope``. It notes, per response path, which
customer an object belongs to (so a verification raises decisions for its own customer's data
only, wherever in the answer that data sits), and it enforces a channel's row scope: a channel
whose profile says ``rows: verified_customer`` acts for one customer, and any other customer
comes back null with CUSTOMER_NOT_IN_SCOPE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from strawberry.extensions import FieldExtension
from strawberry.types import Info

from policies.disclosure import Disclosure
from policies.model import ROWS_VERIFIED_CUSTOMER
from schema.errors import GraphError
from schema.field_info import FieldInfo


def not_in_scope() -> GraphError:
    return GraphError(
        "CUSTOMER_NOT_IN_SCOPE",
        "This channel acts for the verified customer only; present a verification "
        "(X-Verification) for this customer.",
    )


def owner_of(info: FieldInfo) -> str | None:
    """The hub id of the customer whose object holds this field, if the request noted one."""
    owners = info.context.disclosure.owners
    if not owners:
        return None
    path = info.path.prev
    while path is not None:
        found = owners.get(path)
        if found is not None:
            return found
        path = path.prev
    return None


def row_scoped(disclosure: Disclosure) -> bool:
    """Whether the request's channel acts for its verified customer only."""
    if not disclosure.enforced:
        return False
    profile = disclosure.policy.channel(disclosure.principal.channel)
    return profile is not None and profile.rows == ROWS_VERIFIED_CUSTOMER


def in_scope(disclosure: Disclosure, customer_id: str) -> bool:
    """Whether the request may act on this customer: always, unless its channel's profile
    says ``rows: verified_customer`` and the request's verification names someone else."""
    if not disclosure.enforced:
        return True
    principal = disclosure.principal
    profile = disclosure.policy.channel(principal.channel)
    if profile is None or profile.rows != ROWS_VERIFIED_CUSTOMER:
        return True
    verified = principal.verification
    return verified is not None and verified.customer_id == customer_id


def ensure_in_scope(info: Info, customer_id: str) -> None:
    """Refuse (CUSTOMER_NOT_IN_SCOPE) a customer outside the channel's row scope.

    For resolvers that act on a customer by id rather than through a ``Customer`` object
    (the workflow roots): the same rule as the fields of ``Customer``.
    """
    if not in_scope(info.context.disclosure, customer_id):
        raise not_in_scope()


class CustomerScope(FieldExtension):
    """On each field of Customer: note the owner, and refuse customers out of row scope."""

    def _check(self, source: Any, info: FieldInfo) -> None:
        disclosure = info.context.disclosure
        if not disclosure.enforced:
            return
        customer_id = str(source.id)
        if disclosure.principal.verification is not None:
            # The path of the customer object itself: every field below it is its data.
            disclosure.owners[info.path.prev] = customer_id
        if not in_scope(disclosure, customer_id):
            raise not_in_scope()

    def applied(self, value: Any, source: Any, info: FieldInfo) -> Any:
        """For an attribute of the customer (schema/direct_fields.py): reading it first
        fetches nothing, so checking after it is checking before."""
        self._check(source, info)
        return value

    def resolve(self, next_: Callable[..., Any], source: Any, info: Info, **kwargs: Any) -> Any:
        # Before the resolver: a refused customer's data is never fetched.
        self._check(source, info)
        return next_(source, info, **kwargs)

    async def resolve_async(
        self,
        next_: Callable[..., Awaitable[Any]],
        source: Any,
        info: Info,
        **kwargs: Any,
    ) -> Any:
        self._check(source, info)
        return await next_(source, info, **kwargs)
