"""Notes, for the audit log, the customer of every workflow request a root field returns.

The customer queries note the customers they resolve themselves (schema/query.py). The
workflow fields (mutations that start or signal a request, ``request``, ``openRequests``, the
subscriptions' updates and notifications) return objects carrying the request's
``customer_id`` (a hub id): this extension notes those, so a mutation's or a subscription's
record names its customer whatever workflow fields are added later. Only root fields are
looked at: nested fields return without any other work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.types import Info


def _note(info: Info, value: Any) -> None:
    touched = getattr(info.context, "customers_touched", None)
    if touched is None:
        return  # a context without audit fields
    for item in value if isinstance(value, list) else (value,):
        customer_id = getattr(item, "customer_id", None)
        if isinstance(customer_id, str) and customer_id:
            touched.add(customer_id)


async def _noted(pending: Awaitable[Any], info: Info) -> Any:
    value = await pending
    _note(info, value)
    return value


class RequestCustomers(SchemaExtension):
    def resolve(
        self, _next: Callable[..., Any], root: Any, info: Info, *args: Any, **kwargs: Any
    ) -> Any:
        result = _next(root, info, *args, **kwargs)
        if info.path.prev is not None:
            return result
        if isawaitable(result):
            return _noted(result, info)
        _note(info, result)
        return result
