"""A small closed-loop load generator: N concurrent clients, bounded in time and requests.

Used for the sequential latency rows (one client, where the generator's own cost does not
distort what it measures) and, when wrk is not installed, for the throughput rows too.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else 0,
        }


async def run_load(
    operation: Callable[[int], Awaitable[bool]],
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> LoadResult:
    """Run `operation(n)` from N concurrent workers until the time or request budget runs out.

    The operation returns whether it succeeded; the loop stops by itself either way.
    """
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal errors, issued
        while time.perf_counter() < deadline and issued < max_requests:
            number = issued
            issued += 1
            started = time.perf_counter()
            try:
                ok = await operation(number)
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(len(latencies), errors, time.perf_counter() - started, latencies)


def graphql_operation(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body_for: Callable[[int], dict],
) -> Callable[[int], Awaitable[bool]]:
    """One GraphQL POST per operation; success means HTTP 200 and no errors in the answer."""

    async def operation(number: int) -> bool:
        async with session.post(url, json=body_for(number), headers=headers) as response:
            answer = await response.json()
            return response.status == 200 and "errors" not in answer

    return operation
