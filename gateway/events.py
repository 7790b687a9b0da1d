"""The events side from settings, and its HTTP listener ``POST /events/<source>``.

``build_events`` reads the declared event sources (``events.yaml`` in the systems folder),
their shared secrets (the environment variables the files name: never in a file), the base
URL of each source's system (a declared system's first instance, or the bundled BOSS, billing
and care sections), and builds ``marketing.wiring.EventWiring``. ``EventsEndpoint`` is the
listener: bounded body, then ``EventWiring.receive`` (signature, mapping, store, answer).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

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


def _answer(status: int, code: str, message: str) -> JSONResponse:
    if status < 300:
        return JSONResponse({"status": code.lower(), "message": message}, status_code=status)
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status
    )


class EventsEndpoint:
    """``POST /events/{source}``: nothing is parsed before the body is bounded and signed."""

    def __init__(self, wiring: EventWiring, max_body_bytes: int) -> None:
        self._wiring = wiring
        self._max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self._max_body_bytes):
            return _answer(413, "PAYLOAD_TOO_LARGE", "The notification body is too large.")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _answer(415, "UNSUPPORTED_MEDIA_TYPE", "Send application/json.")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self._max_body_bytes:
                    return _answer(413, "PAYLOAD_TOO_LARGE", "The notification body is too large.")
        except ClientDisconnect:
            return _answer(400, "BAD_REQUEST", "The body was cut off.")
        headers: Mapping[str, str] = {k.lower(): v for k, v in request.headers.items()}
        receipt = await self._wiring.receive(request.path_params["source"], headers, bytes(body))
        response = _answer(receipt.status, receipt.code, receipt.message)
        if receipt.status == 503:
            response.headers["Retry-After"] = "1"
        return response
