"""What the policy's field rules read of a resolver's info.

Strawberry's ``Info`` and graphql-core's ``GraphQLResolveInfo`` both have these: strawberry's
extension chain passes the former, the direct resolvers of attribute fields
(schema/direct_fields.py) the latter, and the rules (schema/classified.py,
schema/customer_scope.py) read only this much of either.
"""

from __future__ import annotations

from typing import Any, Protocol

from graphql.pyutils import Path


class FieldInfo(Protocol):
    @property
    def context(self) -> Any: ...

    @property
    def path(self) -> Path: ...

    @property
    def field_name(self) -> str: ...
