"""Fair share of a backend: one request may hold only a few of its call slots at once.

The bulkhead (``adapters/breaker.py``) caps the calls in flight to a backend for the whole
process. Without a cap per request, one expensive operation (a hundred aliases of a page)
fills every slot, and every other caller then queues behind it until its own budget is gone.
A ``RequestShare`` holds one small semaphore per backend for one request: a request's calls
beyond ``max_concurrency_per_request`` wait for that request's own slots, within their own
deadline, and the rest of the bulkhead stays free for other requests.

The adapters know nothing of requests: the request layer opens a share for each request with
``open_request_share()`` (``schema/context.py``), and the share travels in a context variable
to the tasks that request's resolvers and DataLoaders start (asyncio copies the context into
each task it creates). A call made outside any request (a workflow step, a readiness probe, a
script) has no share and is bounded by the bulkhead alone.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

from adapters.breaker import NoFreeSlot


class NoRequestSlot(NoFreeSlot):
    """The request's own slots for a backend stayed busy with its other calls until the
    deadline: the request asked for more than its share; says nothing about the backend."""

    def __init__(self, system: str) -> None:
        super().__init__(system, "had no free call slot for this request within the timeout")


class RequestShare:
    """One request's call slots, one semaphore per backend, made on first use."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def acquire(self, system: str, limit: int, deadline: float) -> asyncio.Semaphore:
        """Take one of this request's ``limit`` slots for ``system``: the semaphore to release
        it on. ``NoRequestSlot`` if none frees up before ``deadline`` (the loop's clock)."""
        slots = self._slots.get(system)
        if slots is None:
            slots = self._slots[system] = asyncio.Semaphore(limit)
        if slots.locked():
            try:
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            except TimeoutError:
                raise NoRequestSlot(system) from None
        else:
            # A free slot is taken without suspending: no timer on the fast path.
            await slots.acquire()
        return slots


#: The share of the request being served; None outside any request.
CURRENT_SHARE: ContextVar[RequestShare | None] = ContextVar(
    "switchboard_request_share", default=None
)


def open_request_share() -> RequestShare:
    """Give the calling task (and the tasks it starts from now on) a share of its own."""
    share = RequestShare()
    CURRENT_SHARE.set(share)
    return share


def current_share() -> RequestShare | None:
    return CURRENT_SHARE.get()
