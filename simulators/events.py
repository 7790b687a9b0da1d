"""Business events the TM Forum way (TMF630 / TMF688): hub registration and signed callbacks.

Each simulated system owns one ``EventHub``:

- ``POST /hub`` with ``{"callback": url, "query": "eventType=A,B"}`` registers a listener
  (201 with ``{"id", "callback", "query"}``); registering the same callback and query again
  answers the same registration (200), so a listener that restarts does not get everything
  twice. ``DELETE /hub/{id}`` removes it (204), ``GET /hub`` lists them.
- Notifications ``{"eventId", "eventTime", "eventType", "event": {...}}`` are POSTed to each
  matching callback, signed: ``X-Hub-Timestamp`` (Unix seconds) and ``X-Hub-Signature-256:
  sha256=<hex HMAC-SHA256 over "<timestamp>." + body>`` with the shared secret. A delivery
  that fails (connection refused, non-2xx) is retried with a capped backoff, re-signed each
  time, up to ``max_attempts``; the hub on the other side must dedupe by eventId.
- ``POST /_sim/events`` makes events happen (tests and the demo): the system builds them from
  its own store (``builder``); ``GET /_sim/events/stats`` says what was delivered;
  ``POST /_sim/events/control`` changes the retry policy or starts a seeded generator.

Nothing here is shared with the hub: the simulators only share the wire contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("simulators.events")

SECRET_ENV = "SIMULATORS_EVENTS_SECRET"  # noqa: S105 -- a variable's name
#: The demo's secret; `switchboard demo` gives the hub the same one.
DEMO_SECRET = "switchboard-demo-events-secret"  # noqa: S105 -- the demo's, documented
SIGNATURE_HEADER = "X-Hub-Signature-256"
TIMESTAMP_HEADER = "X-Hub-Timestamp"
MAX_EMIT = 10_000  # events per /_sim/events call
MAX_REGISTRATIONS = 100
_CST = dt.timezone(dt.timedelta(hours=8))


class EventRequestError(ValueError):
    """A /_sim/events body the system cannot turn into events (answered 400)."""


#: Builds the notifications of one /_sim/events request: (eventType, event body) pairs.
Builder = Callable[[dict[str, Any], random.Random], list[tuple[str, dict[str, Any]]]]


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass
class Registration:
    id: str
    callback: str
    query: str
    types: frozenset[str] | None  # None: every event type

    def item(self) -> dict[str, Any]:
        return {"id": self.id, "callback": self.callback, "query": self.query}

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types


@dataclass
class DeliveryPolicy:
    max_attempts: int = 100  # about three minutes at the capped backoff
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    concurrency: int = 16
    timeout_s: float = 5.0


@dataclass
class Stats:
    emitted: int = 0
    delivered: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    by_type: Counter[str] = field(default_factory=Counter)


def _parse_query(query: str) -> frozenset[str] | None:
    """The event types of a TMF630 query (``eventType=A,B``); empty: every type."""
    if not query.strip():
        return None
    name, _, values = query.partition("=")
    if name.strip() != "eventType" or not values.strip():
        raise EventRequestError("query must be eventType=<type>[,<type>...]")
    return frozenset(v.strip() for v in values.split(",") if v.strip())


class EventHub:
    """Registrations, the delivery queue and its workers for one system."""

    def __init__(self, system: str, builder: Builder, secret: str | None = None) -> None:
        self.system = system
        self._builder = builder
        self._secret = (secret or os.environ.get(SECRET_ENV) or DEMO_SECRET).encode()
        self._registrations: dict[str, Registration] = {}
        self._queue: asyncio.Queue[tuple[Registration, bytes, str]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._generator: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._random = random.Random()
        self._in_flight = 0
        self.policy = DeliveryPolicy()
        self.stats = Stats()

    # -- lifecycle (the app's lifespan) --

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=None)
        )
        self._resize_workers()

    async def stop(self) -> None:
        if self._generator is not None:
            self._generator.cancel()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _resize_workers(self) -> None:
        while len(self._workers) < self.policy.concurrency:
            self._workers.append(asyncio.create_task(self._deliver_forever()))

    # -- emitting --

    def notification(self, event_type: str, event: dict[str, Any]) -> bytes:
        body = {
            "eventId": uuid.uuid4().hex,
            "eventTime": dt.datetime.now(_CST).isoformat(timespec="milliseconds"),
            "eventType": event_type,
            "event": event,
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def publish(self, event_type: str, event: dict[str, Any]) -> int:
        """Queue one notification for every registration that wants it; how many."""
        self.stats.emitted += 1
        self.stats.by_type[event_type] += 1
        body = self.notification(event_type, event)
        wanted = [r for r in self._registrations.values() if r.wants(event_type)]
        for registration in wanted:
            self._queue.put_nowait((registration, body, event_type))
        return len(wanted)

    async def _deliver_forever(self) -> None:
        while True:
            registration, body, event_type = await self._queue.get()
            self._in_flight += 1
            try:
                await self._deliver(registration, body)
            except Exception as error:  # a worker must outlive any one delivery
                log.error("delivery of %s failed with %s", event_type, type(error).__name__)
            finally:
                self._in_flight -= 1
                self._queue.task_done()

    async def _deliver(self, registration: Registration, body: bytes) -> None:
        assert self._session is not None
        policy = self.policy
        for attempt in range(1, policy.max_attempts + 1):
            if registration.id not in self._registrations:
                return  # unregistered meanwhile: nobody to tell
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            }
            self.stats.attempts += 1
            try:
                async with self._session.post(
                    registration.callback,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=policy.timeout_s),
                ) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self.stats.delivered += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.stats.failed_attempts += 1
            backoff = min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1))
            await asyncio.sleep(backoff * self._random.uniform(0.5, 1.0))
        self.stats.given_up += 1

    # -- routes --

    def routes(self) -> list[Route]:
        return [
            Route("/hub", self._register, methods=["POST"]),
            Route("/hub", self._list, methods=["GET"]),
            Route("/hub/{id}", self._unregister, methods=["DELETE"]),
            Route("/_sim/events", self._emit, methods=["POST"]),
            Route("/_sim/events/stats", self._stats, methods=["GET"]),
            Route("/_sim/events/control", self._control, methods=["POST"]),
        ]

    async def _register(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            callback = body.get("callback") if isinstance(body, dict) else None
            query = body.get("query") or "" if isinstance(body, dict) else ""
            if not isinstance(callback, str) or not callback.startswith(("http://", "https://")):
                raise EventRequestError("callback must be an http(s) URL")
            if not isinstance(query, str):
                raise EventRequestError("query must be a string")
            types = _parse_query(query)
        except (ValueError, AttributeError) as error:
            message = str(error) if isinstance(error, EventRequestError) else "body must be JSON"
            return JSONResponse({"code": "22", "reason": message}, status_code=400)
        for existing in self._registrations.values():
            if existing.callback == callback and existing.query == query:
                return JSONResponse(existing.item(), status_code=200)
        if len(self._registrations) >= MAX_REGISTRATIONS:
            return JSONResponse({"code": "22", "reason": "too many registrations"}, 400)
        registration = Registration(uuid.uuid4().hex[:16], callback, query, types)
        self._registrations[registration.id] = registration
        return JSONResponse(
            registration.item(), status_code=201, headers={"Location": f"/hub/{registration.id}"}
        )

    async def _list(self, request: Request) -> Response:
        return JSONResponse([r.item() for r in self._registrations.values()])

    async def _unregister(self, request: Request) -> Response:
        if self._registrations.pop(request.path_params["id"], None) is None:
            return JSONResponse({"code": "60", "reason": "no such registration"}, 404)
        return Response(status_code=204)

    async def _emit(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise EventRequestError("the body must be a JSON object")
            count = body.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_EMIT:
                raise EventRequestError(f"count must be 1-{MAX_EMIT}")
            events = [e for _ in range(count) for e in self._builder(body, self._random)]
        except EventRequestError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        queued = sum(self.publish(event_type, event) for event_type, event in events)
        return JSONResponse({"emitted": len(events), "deliveries": queued}, status_code=202)

    async def _stats(self, request: Request) -> Response:
        s = self.stats
        return JSONResponse(
            {
                "emitted": s.emitted,
                "delivered": s.delivered,
                "attempts": s.attempts,
                "failed_attempts": s.failed_attempts,
                "given_up": s.given_up,
                "pending": self._queue.qsize() + self._in_flight,
                "by_type": dict(s.by_type),
                "registrations": len(self._registrations),
            }
        )

    async def _control(self, request: Request) -> Response:
        """Retry policy and the seeded generator: ``{"max_attempts", "backoff_s",
        "max_backoff_s", "concurrency", "timeout_s", "generator": {"rate_per_s", "seed",
        "request"} | null}``."""
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise EventRequestError("the body must be a JSON object")
            self._apply_policy(body)
            if "generator" in body:
                self._set_generator(body["generator"])
        except EventRequestError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        p = self.policy
        return JSONResponse(
            {
                "max_attempts": p.max_attempts,
                "backoff_s": p.backoff_s,
                "max_backoff_s": p.max_backoff_s,
                "concurrency": p.concurrency,
                "timeout_s": p.timeout_s,
                "generator": self._generator is not None and not self._generator.done(),
            }
        )

    def _apply_policy(self, body: dict[str, Any]) -> None:
        limits = {
            "max_attempts": (1, 1000, int),
            "backoff_s": (0, 60, float),
            "max_backoff_s": (0, 600, float),
            "concurrency": (1, 256, int),
            "timeout_s": (0.1, 120, float),
        }
        unknown = set(body) - set(limits) - {"generator"}
        if unknown:
            raise EventRequestError(f"unknown control fields: {', '.join(sorted(unknown))}")
        for name, (low, high, kind) in limits.items():
            if name not in body:
                continue
            value = body[name]
            ok = not isinstance(value, bool) and isinstance(
                value, int if kind is int else int | float
            )
            if not ok or not low <= value <= high:
                raise EventRequestError(f"{name} must be a number between {low} and {high}")
            setattr(self.policy, name, kind(value))
        self._resize_workers()

    def _set_generator(self, spec: Any) -> None:
        if self._generator is not None:
            self._generator.cancel()
            self._generator = None
        if spec is None:
            return
        if not isinstance(spec, dict) or not isinstance(spec.get("request"), dict):
            raise EventRequestError("generator must be {rate_per_s, seed, request: {...}}")
        rate = spec.get("rate_per_s", 1)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1000:
            raise EventRequestError("generator.rate_per_s must be a number in (0, 1000]")
        seeded = random.Random(spec.get("seed", 0))
        request = spec["request"]
        self._builder(request, seeded)  # refused now rather than in the background

        async def generate() -> None:
            while True:
                for event_type, event in self._builder(request, seeded):
                    self.publish(event_type, event)
                await asyncio.sleep(1 / rate)

        self._generator = asyncio.create_task(generate())


@contextlib.asynccontextmanager
async def running(hub: EventHub) -> AsyncIterator[None]:
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()
