"""The events side wired together: sources, intake, registration, NATS consumers, dispatcher.

The gateway builds one ``EventWiring`` (gateway/events.py: from settings) and starts it in its
lifespan. Whatever reacts to events installs itself explicitly::

    wiring.install_event_handler(handler)   # an EventHandler (marketing/events.py)

Until then events are stored and stay unhandled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from marketing.customers import CustomerResolver, LineOwner
from marketing.dispatcher import DispatchConfig, Dispatcher
from marketing.events import EventHandler
from marketing.intake import GroupWriter, Intake, Receipt
from marketing.nats_source import NatsSource
from marketing.registration import HubRegistrar, HubTarget
from marketing.sources import EventSources
from marketing.store import EventStore

log = logging.getLogger("switchboard.events")


@dataclass(frozen=True, slots=True)
class EventConfig:
    callback_base_url: str
    max_body_bytes: int = 65_536
    max_json_depth: int = 32
    signature_tolerance_s: float = 300.0
    intake_max_batch: int = 256
    dispatch: bool = True
    dispatch_config: DispatchConfig = field(default_factory=DispatchConfig)
    register: bool = True
    register_timeout_s: float = 5.0
    register_retry_s: float = 5.0
    nats_url: str = "nats://127.0.0.1:4222"
    nats_fetch_batch: int = 256
    nats_fetch_timeout_s: float = 1.0
    nats_ack_wait_s: float = 30.0
    max_line_lookups: int = 16
    customer_keys_remembered: int = 100_000


class EventWiring:
    def __init__(
        self,
        config: EventConfig,
        engine: AsyncEngine,
        sources: EventSources,
        *,
        base_urls: Mapping[str, str],
        secrets: Mapping[str, bytes],
        worker: str,
        line_owner: LineOwner | None = None,
    ) -> None:
        self.config = config
        self.sources = sources
        self.store = EventStore(engine)
        resolver = CustomerResolver(
            engine, line_owner, config.max_line_lookups, config.customer_keys_remembered
        )
        self.writer = GroupWriter(self.store, resolver, config.intake_max_batch)
        self.intake = Intake(
            sources,
            secrets,
            self.writer,
            tolerance_s=config.signature_tolerance_s,
            max_depth=config.max_json_depth,
        )
        self.dispatcher = Dispatcher(self.store, config.dispatch_config, worker)
        callback = config.callback_base_url.rstrip("/")
        targets = [
            HubTarget(
                source=s.name,
                hub_url=base_urls[s.name] + s.webhook.hub,
                callback=f"{callback}/events/{s.name}",
                query=s.registration_query(),
            )
            for s in sources
            if s.webhook is not None and s.name in secrets and s.name in base_urls
        ]
        self.registrar = HubRegistrar(targets, config.register_timeout_s, config.register_retry_s)
        self.nats = [
            NatsSource(
                s,
                config.nats_url,
                self.intake,
                fetch_batch=config.nats_fetch_batch,
                fetch_timeout_s=config.nats_fetch_timeout_s,
                ack_wait_s=config.nats_ack_wait_s,
                max_body_bytes=config.max_body_bytes,
                retry_s=config.register_retry_s,
            )
            for s in sources
            if s.nats is not None
        ]

    def install_event_handler(self, handler: EventHandler) -> None:
        """Hand stored events to ``handler`` from now on (explicit: the gateway lifespan)."""
        self.dispatcher.install(handler)

    async def receive(self, source: str, headers: Mapping[str, str], body: bytes) -> Receipt:
        receipt = await self.intake.receive(source, headers, body)
        if receipt.status == 201:
            self.dispatcher.wake()
        return receipt

    async def start(self) -> None:
        self.writer.start()
        for source in self.nats:
            source.start()
        if self.config.register:
            self.registrar.start()
        if self.config.dispatch:
            self.dispatcher.start()

    async def stop(self) -> None:
        """Clean shutdown: unregister first (no new deliveries), then drain and stop."""
        if self.config.register:
            await self.registrar.stop(unregister=True)
        for source in self.nats:
            await source.stop()
        await self.dispatcher.stop()
        await self.writer.stop()
