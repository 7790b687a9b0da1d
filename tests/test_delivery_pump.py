"""The delivery pump (marketing/pump.py) on the hub's real database (SQLite and PostgreSQL):
the handler only decides; pumps start each reserved offer's delivery once, however many run;
a pump that died between its claim and its starts is covered by the claim's expiry.

The start function here is a counting stand-in for ``delivery.start_delivery`` (the DBOS
start): what is proved is what the pumps hand to it. That a repeated start with the same
workflow id sends nothing is DBOS's, proved end to end with the gateway killed in
tests/test_campaigns.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import MetaData, select, update

from adapters import identity_store
from adapters.identity_store import IdentityStore
from gateway.database import create_engine
from marketing import offer_store
from marketing import store as event_store
from marketing.campaigns import CampaignBook, load_campaigns
from marketing.decide import Decider, GuardContext
from marketing.events import BusinessEvent
from marketing.handler import CampaignHandler
from marketing.offer_store import hub_offer
from marketing.pump import DeliveryPump, PumpConfig
from marketing.store import EventStore
from orchestration import store as request_store
from tests.conftest import engine_with_empty_tables

DAYTIME = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def _metadata() -> MetaData:
    merged = MetaData()
    for source in (
        offer_store.metadata,
        event_store.metadata,
        identity_store.metadata,
        request_store.metadata,
    ):
        for table in source.tables.values():
            table.to_metadata(merged)
    return merged


def _book() -> CampaignBook:
    book = load_campaigns()
    campaigns = tuple(dataclasses.replace(c, control_share=0.0) for c in book.campaigns)
    return dataclasses.replace(book, campaigns=campaigns)


class Starts:
    """Stands in for the DBOS start: counts the orders handed to it per offer id."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: Counter[str] = Counter()
        self.orders: dict[str, dict[str, Any]] = {}
        #: The size of each start: one workflow per claimed batch.
        self.batches: list[int] = []
        self.fail = fail

    async def __call__(self, orders: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.001)  # let the other pump interleave
        if self.fail:
            raise ConnectionError("system database away")
        self.batches.append(len(orders))
        for order in orders:
            self.seen[order["offer_id"]] += 1
            self.orders[order["offer_id"]] = order


@pytest.fixture
async def engine(hub_database_url: str):
    engine = await engine_with_empty_tables(hub_database_url, _metadata())
    yield engine
    await engine.dispose()


async def _events(engine, count: int, first: int = 1) -> list[BusinessEvent]:
    """``count`` usage events (data-topup-80, sms) of new customers, stored like the intake's."""
    numbers = [f"{1_000_000_000 + first + i}" for i in range(count)]
    hub_ids = await IdentityStore(engine).ensure_customers(numbers)
    events = [
        BusinessEvent(
            event_id=f"boss:usage:{n}",
            event_type="usage.threshold_crossed",
            source="boss",
            occurred_at=DAYTIME,
            customer_id=hub_ids[n],
            subscriber=f"+86138{n[-8:]}",
            payload={"percent": 85},
        )
        for n in numbers
    ]
    await EventStore(engine).store(events)
    return events


def _handler(engine, wakes: list[int]) -> CampaignHandler:
    book = _book()
    decider = Decider(engine, lambda: book, GuardContext("Asia/Shanghai", True, lambda: DAYTIME))
    return CampaignHandler(decider, lambda: wakes.append(1))


def _pump(engine, start: Starts, **config: Any) -> DeliveryPump:
    book = _book()
    return DeliveryPump(
        engine, lambda: book, IdentityStore(engine), start, PumpConfig(**{"poll_s": 0.01, **config})
    )


async def _reserved(engine) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(select(hub_offer).where(hub_offer.c.state == "RESERVED")))


async def _handle(handler: CampaignHandler, events: Sequence[BusinessEvent], size: int) -> None:
    for i in range(0, len(events), size):
        await handler.handle(events[i : i + size])


async def test_the_handler_decides_and_starts_nothing_the_pump_starts_each_once(engine) -> None:
    events = await _events(engine, 30)
    wakes: list[int] = []
    handler = _handler(engine, wakes)
    await _handle(handler, events, 10)
    reserved = await _reserved(engine)
    assert len(reserved) == 30 and wakes == [1, 1, 1]
    assert all(r.delivery_started_at is None for r in reserved)
    # Handed again (a crash between the commit and the marking): nothing decided twice, and
    # the reserved sends are still the pump's.
    await _handle(handler, events, 30)
    assert len(await _reserved(engine)) == 30
    start = Starts()
    pump = _pump(engine, start, batch_size=25, max_in_flight=100)
    rounds = [await pump.run_once() for _ in range(3)]
    assert [r.started for r in rounds] == [25, 5, 0]
    assert start.batches == [25, 5]  # one workflow start per claimed batch
    assert len(start.seen) == 30 and set(start.seen.values()) == {1}
    first = events[0]
    order = next(o for o in start.orders.values() if o["customer_id"] == first.customer_id)
    assert order["channel"] == "sms" and order["campaign"] == "data-topup-80"
    assert order["msisdn"] == first.subscriber and order["customer_no"] == "1000000001"
    assert "85%" in order["text"]
    assert all(r.delivery_started_at is not None for r in await _reserved(engine))


async def test_two_pumps_over_one_database_never_start_an_offer_twice(
    engine, hub_database_url: str
) -> None:
    events = await _events(engine, 300)
    await _handle(_handler(engine, []), events, 50)
    start = Starts()
    others = [create_engine(hub_database_url) for _ in range(2)]  # two processes' pools
    try:
        pumps = [_pump(e, start, batch_size=20) for e in others]

        async def drain(pump: DeliveryPump) -> None:
            while (await pump.run_once()).claimed:
                pass

        await asyncio.gather(*(drain(p) for p in pumps))
        assert len(start.seen) == 300 and set(start.seen.values()) == {1}
        assert all(p.started > 0 for p in pumps), [p.started for p in pumps]
        # And as the running loops, woken and polling at once.
        more = await _events(engine, 100, first=1000)
        await _handle(_handler(engine, []), more, 25)
        for pump in pumps:
            pump.start()
            pump.wake()
        for _ in range(500):
            if len(start.seen) == 400:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # a second start would have come by now
        for pump in pumps:
            await pump.stop()
        assert len(start.seen) == 400 and set(start.seen.values()) == {1}
    finally:
        for other in others:
            await other.dispose()


async def test_a_claim_whose_pump_died_is_started_after_it_expires(engine) -> None:
    events = await _events(engine, 5)
    await _handle(_handler(engine, []), events, 5)
    dead = _pump(engine, Starts(), restart_after_s=0.5)
    assert len(await dead.claim()) == 5  # ... and the process died before its starts
    start = Starts()
    live = _pump(engine, start, restart_after_s=0.5)
    assert (await live.run_once()).claimed == 0  # still claimed
    await asyncio.sleep(0.6)
    assert (await live.run_once()).started == 5
    assert set(start.seen.values()) == {1}


async def test_a_failed_start_gives_its_claim_back_at_once(engine) -> None:
    events = await _events(engine, 4)
    await _handle(_handler(engine, []), events, 4)
    failing = await _pump(engine, Starts(fail=True)).run_once()
    assert (failing.claimed, failing.started, failing.errors) == (4, 0, 4)
    start = Starts()
    assert (await _pump(engine, start).run_once()).started == 4
    assert set(start.seen.values()) == {1}


class Running:
    """Stands in for the DBOS start of a workflow that runs here: a handle with its ``task``."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Future[None]] = {}

    async def __call__(self, orders: list[dict[str, Any]]) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for order in orders:  # one workflow for the batch: its offers end together
            self.tasks[order["offer_id"]] = future
        return type("Handle", (), {"task": future})()


async def _until_started(start: Running, count: int, *, tries: int) -> None:
    """Wait (10 ms at a time, ``tries`` times at most) for ``count`` workflows started."""
    for _ in range(tries):
        if len(start.tasks) == count:
            return
        await asyncio.sleep(0.01)


async def _finish_every_delivery(start: Running, total: int) -> None:
    """End every started workflow until ``total`` have started, then the last ones."""
    while len(start.tasks) < total:
        for future in start.tasks.values():
            if not future.done():
                future.set_result(None)
        await asyncio.sleep(0.02)
    for future in start.tasks.values():
        if not future.done():
            future.set_result(None)
    await asyncio.sleep(0.02)


async def test_deliveries_in_flight_are_bounded_and_the_pump_goes_on_as_they_end(engine) -> None:
    events = await _events(engine, 10)
    await _handle(_handler(engine, []), events, 10)
    start = Running()
    pump = _pump(engine, start, batch_size=100, max_in_flight=4)
    first = await pump.run_once()
    assert (first.claimed, first.started, first.full, pump.in_flight) == (4, 4, True, 4)
    assert len(set(map(id, start.tasks.values()))) == 1  # one workflow for the four
    assert (await pump.run_once()).claimed == 0  # no room: nothing more claimed
    assert sum(r.delivery_started_at is None for r in await _reserved(engine)) == 6
    pump.start()
    next(iter(start.tasks.values())).set_result(None)  # the batch ends: four more at once
    await _until_started(start, 8, tries=200)
    assert len(start.tasks) == 8 and pump.in_flight == 4
    await _finish_every_delivery(start, 10)
    await pump.stop()
    assert pump.in_flight == 0 and pump.started == 10


async def test_while_the_intake_is_busy_fewer_deliveries_run_and_the_rest_drain_after(
    engine,
) -> None:
    events = await _events(engine, 10)
    await _handle(_handler(engine, []), events, 10)
    start = Running()
    pump = _pump(engine, start, batch_size=100, max_in_flight=4, busy_max_in_flight=1)
    busy = [30.0]
    pump.yield_to(lambda: busy[0])
    first = await pump.run_once()
    assert (first.claimed, first.full, pump.in_flight) == (1, True, 1)
    assert (await pump.run_once()).claimed == 0  # busy: no room beyond the one
    pump.start()
    next(iter(start.tasks.values())).set_result(None)  # it ends: one more, still one at a time
    await _until_started(start, 2, tries=200)
    assert len(start.tasks) == 2 and pump.in_flight == 1
    busy[0] = 0.0  # the burst is over: the pump fills up to max_in_flight at its next look
    await _until_started(start, 5, tries=300)
    assert len(start.tasks) == 5 and pump.in_flight == 4
    await _finish_every_delivery(start, 10)
    await pump.stop()
    assert pump.in_flight == 0 and pump.started == 10


async def test_the_dispatcher_counts_as_busy_for_a_window_after_an_event(engine) -> None:
    from marketing.dispatcher import DispatchConfig, Dispatcher

    dispatcher = Dispatcher(EventStore(engine), DispatchConfig(), "w")
    assert dispatcher.busy_for(0.5) == 0.0
    dispatcher.wake()  # an event stored
    assert 0.4 < dispatcher.busy_for(0.5) <= 0.5
    await asyncio.sleep(0.06)
    assert dispatcher.busy_for(0.05) == 0.0


async def test_an_offer_with_nothing_to_send_fails_with_a_code(engine) -> None:
    events = await _events(engine, 2)
    await _handle(_handler(engine, []), events, 2)
    async with engine.begin() as conn:  # its event pruned
        await conn.execute(
            event_store.hub_event.delete().where(
                event_store.hub_event.c.event_id == events[0].event_id
            )
        )
        await conn.execute(
            update(hub_offer)
            .where(hub_offer.c.event_id == events[1].event_id)
            .values(campaign="withdrawn")  # its campaign no longer in the file
        )
    start = Starts()
    done = await _pump(engine, start).run_once()
    assert (done.claimed, done.started, done.failed) == (2, 0, 2)
    async with engine.connect() as conn:
        rows = list(await conn.execute(select(hub_offer.c.state, hub_offer.c.detail)))
    assert sorted(r.detail for r in rows) == ['{"code": "CAMPAIGN_GONE"}', '{"code": "EVENT_GONE"}']
    assert {r.state for r in rows} == {"FAILED"}
