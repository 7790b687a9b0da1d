"""How the hub calls a backend: per-call timeout, pooled connections and retries for reads.

Retries apply to idempotent reads only, and only to errors that may pass (unavailable, timed
out), with jittered exponential backoff, inside one time budget per call so that a dead backend
costs the caller at most its timeout. Writes are never retried here: they carry idempotency keys
and are repeated, if at all, by the durable workflow that owns them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from adapters.errors import AdapterError, BadResponse, TimedOut, Unavailable

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a backend lives and how patiently to call it."""

    system: str
    base_url: str
    timeout_s: float = 2.0
    max_connections: int = 50
    retry_attempts: int = 3
    retry_backoff_s: float = 0.05


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, AdapterError) and error.retryable


class CallPolicy:
    """Runs calls to one backend: reads with retries, writes once."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._template = AsyncRetrying(
            stop=stop_after_attempt(endpoint.retry_attempts) | stop_after_delay(endpoint.timeout_s),
            wait=wait_random_exponential(multiplier=endpoint.retry_backoff_s, max=1.0),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )

    async def read(self, call: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        # A copy per call: a retrying object keeps per-call state and calls run concurrently.
        return await self._template.copy()(call, *args, **kwargs)

    async def write(self, call: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        return await call(*args, **kwargs)


def make_http_client(endpoint: Endpoint) -> httpx.AsyncClient:
    """A pooled client for one backend; the timeout covers connect, write, read and pool wait."""
    return httpx.AsyncClient(
        base_url=endpoint.base_url,
        timeout=httpx.Timeout(endpoint.timeout_s),
        limits=httpx.Limits(
            max_connections=endpoint.max_connections,
            max_keepalive_connections=endpoint.max_connections,
        ),
        headers={"User-Agent": "switchboard-hub"},
    )


def transport_error(system: str, error: httpx.HTTPError) -> AdapterError:
    """Translate an httpx failure into the taxonomy (the URL may hold keys: never echo it)."""
    if isinstance(error, httpx.TimeoutException):
        return TimedOut(system, "did not answer within the timeout")
    if isinstance(error, httpx.TransportError):
        return Unavailable(system, "could not be reached")
    return BadResponse(system, "answered with an unusable HTTP response")


def status_error(system: str, status: int) -> AdapterError | None:
    """Server-side HTTP statuses that mean the system is not serving right now."""
    if status in (502, 503, 504):
        return Unavailable(system, f"is unavailable (HTTP {status})", backend_code=str(status))
    if status >= 500:
        return Unavailable(system, f"failed internally (HTTP {status})", backend_code=str(status))
    return None
