"""Attribute fields with one rule that applies to the value are resolved directly
(schema/direct_fields.py); every other field keeps strawberry's extension chain."""

from __future__ import annotations

from typing import Any, ClassVar

import strawberry
from strawberry.extensions import FieldExtension

from schema.build import build_schema
from schema.direct_fields import resolve_attributes_directly


class Shout(FieldExtension):
    """A rule of the kind the policy's are: a function of the value (and counts its calls)."""

    calls: ClassVar[list[str]] = []

    def applied(self, value: Any, source: Any, info: Any) -> Any:
        Shout.calls.append(f"{info.field_name}@{info.context['who']}")
        return value.upper()

    def resolve(self, next_: Any, source: Any, info: Any, **kwargs: Any) -> Any:
        return self.applied(next_(source, info, **kwargs), source, info)


class Suffix(FieldExtension):
    """A rule without ``applied``: only strawberry's chain knows how to run it."""

    def resolve(self, next_: Any, source: Any, info: Any, **kwargs: Any) -> Any:
        return next_(source, info, **kwargs) + "!"


@strawberry.type
class Thing:
    plain: str = "plain"
    ruled: str = strawberry.field(default="ruled", extensions=[Shout()])
    twice: str = strawberry.field(default="twice", extensions=[Suffix(), Shout()])
    other: str = strawberry.field(default="other", extensions=[Suffix()])

    @strawberry.field(extensions=[Shout()])
    def computed(self) -> str:
        return "computed"

    @strawberry.field(extensions=[Shout()])
    def argued(self, n: int = 1) -> str:
        return "argued" * n


@strawberry.type
class Query:
    @strawberry.field
    def thing(self) -> Thing:
        return Thing()


def test_only_attributes_with_one_applying_rule_are_resolved_directly():
    schema = strawberry.Schema(query=Query)
    assert resolve_attributes_directly(schema) == ["Thing.ruled"]
    Shout.calls.clear()
    result = schema.execute_sync(
        "{ thing { plain ruled twice other computed argued(n: 2) } }", context_value={"who": "a"}
    )
    assert result.errors is None, result.errors
    assert result.data == {
        "thing": {
            "plain": "plain",
            "ruled": "RULED",  # directly: the same rule, the same context
            "twice": "TWICE!",  # strawberry's chain, its order (Shout outermost)
            "other": "other!",
            "computed": "COMPUTED",
            "argued": "ARGUEDARGUED",
        }
    }
    assert sorted(Shout.calls) == ["argued@a", "computed@a", "ruled@a", "twice@a"]


def test_the_hubs_policy_fields_are_resolved_directly_and_resolvers_are_not():
    schema = build_schema(0)
    changed = set(resolve_attributes_directly(schema))  # again: the same fields
    assert {
        "Customer.id",  # the row scope
        "CustomerProfile.name",  # a classified attribute
        "Subscription.msisdn",
        "IdentityLink.key",  # a crosswalk key, its class its system's
        "ChurnRisk.score",  # insight
    } <= changed
    # Resolvers may fetch: their scope check stays before them, in strawberry's chain.
    assert not {"Customer.profile", "Customer.tickets", "Customer.subscriptions"} & changed
