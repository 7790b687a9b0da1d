"""Registers the hub's callback with each webhook source's hub (TMF630 ``POST /hub``).

At start-up, in the background, per source: ``POST <hub>`` with ``{"callback", "query"}``
until the source answers (a source down at start is retried every ``retry_s``). The source
answers the same registration for the same callback and query, so a restart (clean or not)
registers once. On a clean shutdown: ``DELETE <hub>/<id>``, bounded in time. Registration
ids are not personal data; callback URLs hold none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import httpx

log = logging.getLogger("switchboard.events")


@dataclass(frozen=True, slots=True)
class HubTarget:
    source: str
    hub_url: str  # the system's base URL + its hub path
    callback: str
    query: str


class HubRegistrar:
    def __init__(self, targets: list[HubTarget], timeout_s: float, retry_s: float) -> None:
        self._targets = targets
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self.registered: dict[str, str] = {}  # source -> registration id
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout_s)
        self._tasks = [
            asyncio.create_task(self._register(t), name=f"events-register-{t.source}")
            for t in self._targets
        ]

    async def _register(self, target: HubTarget) -> None:
        assert self._client is not None
        while True:
            try:
                response = await self._client.post(
                    target.hub_url, json={"callback": target.callback, "query": target.query}
                )
                if response.status_code in (200, 201):
                    registration = response.json().get("id")
                    if isinstance(registration, str) and registration:
                        self.registered[target.source] = registration
                        log.info("registered with the %s event hub", target.source)
                        return
                log.warning(
                    "the %s event hub refused the registration: HTTP %d",
                    target.source,
                    response.status_code,
                )
            except (httpx.HTTPError, ValueError) as error:
                log.warning(
                    "the %s event hub is unreachable: %s", target.source, type(error).__name__
                )
            await asyncio.sleep(self._retry_s)

    async def wait_registered(self, timeout_s: float) -> bool:
        """All targets registered within ``timeout_s`` (tests)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks), timeout_s)
        return len(self.registered) == len(self._targets)

    async def stop(self, unregister: bool = True) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is None:
            return
        if unregister:
            for target in self._targets:
                registration = self.registered.pop(target.source, None)
                if registration is None:
                    continue
                try:
                    await self._client.delete(f"{target.hub_url}/{registration}")
                except httpx.HTTPError as error:
                    log.warning(
                        "could not unregister from the %s event hub: %s",
                        target.source,
                        type(error).__name__,
                    )
        await self._client.aclose()
        self._client = None
