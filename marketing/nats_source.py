"""Event sources on NATS JetStream (the scaled mode): a durable pull consumer per source.

The stream belongs to the emitting side; the hub creates (or finds) its durable consumer on
it with explicit acks, fetches batches, and acks a message only after its event is committed
(or found already stored). Redeliveries (a hub that died before its ack) are deduped by
event id like webhook retries. A message that cannot be read (not JSON, unmapped type) is
terminated (``term``: never redelivered) and logged by code; one the store could not take is
nak'ed with a delay, so JetStream delivers it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from marketing.intake import Intake
from marketing.sources import EventSourceSpec

log = logging.getLogger("switchboard.events")


class NatsSource:
    def __init__(
        self,
        spec: EventSourceSpec,
        url: str,
        intake: Intake,
        *,
        fetch_batch: int,
        fetch_timeout_s: float,
        ack_wait_s: float,
        max_body_bytes: int,
        retry_s: float,
    ) -> None:
        assert spec.nats is not None
        self.spec = spec
        self._url = url
        self._intake = intake
        self._fetch_batch = fetch_batch
        self._fetch_timeout_s = fetch_timeout_s
        self._ack_wait_s = ack_wait_s
        self._max_body_bytes = max_body_bytes
        self._retry_s = retry_s
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.taken = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"events-nats-{self.spec.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None and not self._client.is_closed:
            with contextlib.suppress(Exception):
                await self._client.close()

    async def _run(self) -> None:
        assert self.spec.nats is not None
        n = self.spec.nats
        while True:
            try:
                self._client = await nats.connect(
                    self._url, connect_timeout=2, max_reconnect_attempts=-1, allow_reconnect=True
                )
                js = self._client.jetstream()
                subscription = await js.pull_subscribe(
                    n.subject,
                    durable=n.durable,
                    stream=n.stream,
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT,
                        deliver_policy=DeliverPolicy.ALL,
                        ack_wait=self._ack_wait_s,
                    ),
                )
                log.info("consuming events of %s from NATS", self.spec.name)
                while True:
                    try:
                        messages = await subscription.fetch(
                            self._fetch_batch, timeout=self._fetch_timeout_s
                        )
                    except (NatsTimeout, TimeoutError):
                        continue
                    await asyncio.gather(*(self._take(m) for m in messages))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("NATS source %s failed: %s", self.spec.name, type(error).__name__)
                if self._client is not None:
                    with contextlib.suppress(Exception):
                        await self._client.close()
                await asyncio.sleep(self._retry_s)

    async def _take(self, message: Msg) -> None:
        if len(message.data) > self._max_body_bytes:
            log.warning("NATS event of %s refused: EVENT_TOO_LARGE", self.spec.name)
            await message.term()
            return
        receipt = await self._intake.take(self.spec, message.data)
        if receipt.status < 300:
            await message.ack()
            self.taken += 1
        elif receipt.status >= 500:
            await message.nak(delay=self._retry_s)
        else:
            log.warning("NATS event of %s refused: %s", self.spec.name, receipt.code)
            await message.term()
