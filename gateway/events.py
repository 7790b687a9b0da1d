"""The events side from settings, and its HTTP listener ``POST /events/<source>``.

``build_events`` reads the declared event sources (``events.yaml`` in the systems folder),
their shared secrets (the environment variables the files name: never in a file), the base
URL of each source's system (a declared system's first instance, or the bundled BOSS, billing
and care sections), and builds ``marketing.wiring.EventWiring``. ``EventsEndpoint`` is the
listener: bounded body, then ``EventWiring.receive`` (signature, mapping, store, answer).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.declared.registry import BUNDLED_SYSTEMS_DIR, SystemRegistry
from adapters.errors import NotFound
from gateway.settings import Settings
from marketing.dispatcher import DispatchConfig
from marketing.sources import EventSources, load_sources
from marketing.wiring import EventConfig, EventWiring
from schema.context import Backends

log = logging.getLogger("switchboard.events")


def load_event_sources(settings: Settings) -> EventSources:
    """The declared event sources (DeclarationInvalid, file:line, on any problem)."""
    return load_sources(settings.systems_dir or BUNDLED_SYSTEMS_DIR)


def _base_urls(
    sources: EventSources, settings: Settings, registry: SystemRegistry
) -> dict[str, str]:
    overrides = settings.instance_urls
    core = {"boss": settings.boss, "billing": settings.billing, "care": settings.care}
    found: dict[str, str] = {}
    for source in sources:
        if source.base_url is not None:
            found[source.name] = source.base_url
        elif source.system in core:
            found[source.name] = core[source.system].base_url.rstrip("/")
        elif (spec := registry.systems.get(source.system)) is not None:
            first = spec.instances[0]
            found[source.name] = overrides.get(first.name, first.base_url).rstrip("/")
        else:
            log.warning("event source %s: no system named %s", source.name, source.system)
    return found


def _secrets(sources: EventSources) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for source in sources:
        if source.webhook is None:
            continue
        secret = os.environ.get(source.webhook.secret_env, "")
        if secret:
            found[source.name] = secret.encode()
        else:
            # The variable's name only. Unsigned notifications are never accepted: the
            # source is not registered and its callbacks answer 401.
            log.warning(
                "event source %s disabled: %s is not set", source.name, source.webhook.secret_env
            )
    return found


def build_events(
    settings: Settings,
    engine: AsyncEngine,
    registry: SystemRegistry,
    backends: Backends,
    sources: EventSources | None = None,
) -> EventWiring | None:
    if not settings.events.enabled:
        return None
    sources = sources if sources is not None else load_event_sources(settings)
    e = settings.events
    config = EventConfig(
        callback_base_url=e.callback_base_url or f"http://{settings.host}:{settings.port}",
        max_body_bytes=e.max_body_bytes,
        max_json_depth=e.max_json_depth,
        signature_tolerance_s=e.signature_tolerance_s,
        intake_max_batch=e.intake_max_batch,
        dispatch=e.dispatch,
        dispatch_config=DispatchConfig(
            batch_size=e.dispatch_batch_size,
            poll_s=e.dispatch_poll_s,
            lease_s=e.claim_lease_s,
            retry_after_s=e.retry_after_s,
            retention_s=e.retention_days * 86400,
            prune_interval_s=e.prune_interval_s,
        ),
        register=e.register_callbacks,
        register_timeout_s=e.register_timeout_s,
        register_retry_s=e.register_retry_s,
        nats_url=e.nats_url,
        nats_fetch_batch=e.nats_fetch_batch,
        nats_ack_wait_s=e.nats_ack_wait_s,
        max_line_lookups=e.max_line_lookups,
        customer_keys_remembered=e.customer_keys_remembered,
    )
    customer_system = backends.customer_system

    async def line_owner(msisdn: str) -> str | None:
        try:
            return (await customer_system.find_subscription_by_msisdn(msisdn)).customer_no
        except NotFound:
            return None

    worker = f"{settings.workflows.executor_id}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return EventWiring(
        config,
        engine,
        sources,
        base_urls=_base_urls(sources, settings, registry),
        secrets=_secrets(sources),
        worker=worker,
        line_owner=line_owner if e.resolve_by_line else None,
    )


PREFIX = "/events/"


class EventsEndpoint:
    """``POST /events/{source}``: nothing is parsed before the body is bounded and signed.

    A plain ASGI app. ``EventsFastPath`` serves it in front of Starlette's router; the route
    the app also declares (for its 405 to other methods) serves it the same way.
    """

    def __init__(self, wiring: EventWiring, max_body_bytes: int) -> None:
        self._wiring = wiring
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope["path_params"]["source"], scope, receive, send)

    async def serve(self, source: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def answer(status: int, code: str, message: str) -> None:
            nonlocal started
            started = True
            await _send_answer(send, status, code, message)

        try:
            await self._handle(source, scope, receive, answer)
        except Exception as error:
            # As Starlette's ServerErrorMiddleware would answer, the kind only in the log (the
            # message may quote event data).
            log.error("events webhook failed: %s", type(error).__name__)
            if not started:
                await answer(500, "INTERNAL", "Internal error.")

    async def _handle(self, source: str, scope: Scope, receive: Receive, answer: _Answer) -> None:
        headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self._max_body_bytes):
            await answer(413, "PAYLOAD_TOO_LARGE", "The notification body is too large.")
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            await answer(415, "UNSUPPORTED_MEDIA_TYPE", "Send application/json.")
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                await answer(400, "BAD_REQUEST", "The body was cut off.")
                return
            body += message.get("body", b"")
            if len(body) > self._max_body_bytes:
                await answer(413, "PAYLOAD_TOO_LARGE", "The notification body is too large.")
                return
            if not message.get("more_body", False):
                break
        receipt = await self._wiring.receive(source, headers, body)
        await answer(receipt.status, receipt.code, receipt.message)


_Answer = Callable[[int, str, str], Awaitable[None]]


class EventsFastPath:
    """Serves ``POST /events/{source}`` before the hub's Starlette app; anything else goes to
    ``app`` unchanged.

    Inside ``RequestIds`` (the request id, its log line and span are kept). Under a burst of
    webhooks Starlette's router, its two middlewares, the ``Request`` and the
    ``JSONResponse`` were a quarter of the gateway's CPU per event (py-spy, bench.events).
    """

    def __init__(self, app: ASGIApp, endpoint: EventsEndpoint) -> None:
        self.app = app  # like the other middlewares: what it wraps
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            source = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
            if source and "/" not in source:
                await self._endpoint.serve(source, scope, receive, send)
                return
        await self.app(scope, receive, send)


@functools.lru_cache(maxsize=256)
def _rendered(status: int, code: str, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The answer's body and headers (the same few answers over and over: built once)."""
    if status < 300:
        content: object = {"status": code.lower(), "message": message}
    else:
        content = {"errors": [{"message": message, "extensions": {"code": code}}]}
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    return body, headers


async def _send_answer(send: Send, status: int, code: str, message: str) -> None:
    body, headers = _rendered(status, code, message)
    # A fresh list each time: RequestIds appends its x-request-id header to it.
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})
