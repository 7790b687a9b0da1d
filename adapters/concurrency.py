"""``asyncio.gather`` without a task for the one-awaitable case.

A backend read fans out per instance and per batch, and almost always there is one of each:
one instance, one batch. ``asyncio.gather`` wraps even a lone coroutine in a task of its own
(about 10 us of CPU each with uvloop), and a 360 request passed through three such gathers
per backend call. With one awaitable these await it in place; with several they are
``asyncio.gather`` itself.

Awaiting in place runs the coroutine in the caller's context rather than a copy of it: a
context variable it sets stays set for the caller. None of the read paths set one (the record
cache's fill, which does, runs in a task of its own: adapters/cache.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def gather_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Every result, in order; the first failure is raised (``asyncio.gather``)."""
    if len(awaitables) == 1:
        return [await awaitables[0]]
    return list(await asyncio.gather(*awaitables))


async def gather_outcomes(awaitables: Sequence[Awaitable[T]]) -> list[T | BaseException]:
    """Every result or the exception it raised, in order (``return_exceptions=True``).

    With one awaitable, a cancellation of the caller still propagates, as it does out of
    ``asyncio.gather``; only what the awaitable itself raised is returned."""
    if len(awaitables) == 1:
        try:
            return [await awaitables[0]]
        except Exception as error:
            return [error]
    return list(await asyncio.gather(*awaitables, return_exceptions=True))
