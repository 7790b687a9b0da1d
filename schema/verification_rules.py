"""Channel rules that depend on the request's verification, checked before execution.

- `requires_verification`: an operation a channel profile lists there needs a verification at
  that level or above (the level it counts at in this channel): VERIFICATION_REQUIRED otherwise,
  naming the level needed.
- `rows: verified_customer`: such a channel acts for one customer, so root fields that page
  through customers (their type is a ...Connection) are refused with CUSTOMER_NOT_IN_SCOPE;
  single customers are checked where they resolve (schema/customer_scope.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLSchema, get_named_type
from strawberry.extensions import SchemaExtension

from policies.model import ROWS_VERIFIED_CUSTOMER
from policies.verification import rank
from schema.channel_rules import operation_fields
from schema.errors import GraphError


def paging_roots(schema: GraphQLSchema, roots: set[str]) -> list[str]:
    """The root fields among `roots` whose answers page through many records."""
    found = []
    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        for name in roots:
            field = root.fields.get(name) if root is not None else None
            if field is not None and get_named_type(field.type).name.endswith("Connection"):
                found.append(name)
    return sorted(found)


class VerificationRules(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        request = context.context
        disclosure = request.disclosure
        document = context.graphql_document
        principal = request.principal
        profile = disclosure.policy.channel(principal.channel)
        if document is not None and disclosure.enforced and profile is not None:
            policy = disclosure.policy
            needs = profile.requires_verification
            scoped = profile.rows == ROWS_VERIFIED_CUSTOMER
            if needs or scoped:
                roots, _ = operation_fields(document, context.operation_name)
                held = principal.verification.level if principal.verification else None
                levels = policy.verification_levels
                for op in sorted(roots):
                    required = needs.get(op)
                    if required is not None and rank(levels, held) < rank(levels, required):
                        raise GraphError(
                            "VERIFICATION_REQUIRED",
                            f"{op} needs a verification at level {required} or above in the "
                            f"{principal.channel} channel (send it in X-Verification).",
                            required=required,
                        )
                if scoped:
                    refused = paging_roots(context.schema._schema, roots)
                    if refused:
                        raise GraphError(
                            "CUSTOMER_NOT_IN_SCOPE",
                            f"The {principal.channel} channel acts for one verified customer "
                            f"and may not page through customers: {', '.join(refused)}.",
                        )
        yield
