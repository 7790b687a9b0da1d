"""The events side in process, on real databases and a real NATS server: declarations
(file:line), mapping, signatures, the store, two dispatchers, NATS JetStream as a source."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy.exc import DataError

from adapters.declared.registry import BUNDLED_SYSTEMS_DIR
from adapters.declared.yaml_lines import DeclarationInvalid
from gateway.settings import load_settings
from marketing.customers import CustomerResolver
from marketing.dispatcher import DispatchConfig, Dispatcher
from marketing.events import EVENT_TYPES, BusinessEvent
from marketing.intake import GroupWriter, StoreUnavailable
from marketing.mapping import MappedEvent, NotificationInvalid, map_notification
from marketing.signing import SignatureRefused, signature, verify
from marketing.sources import load_sources, parse_source
from marketing.store import EventStore, metadata
from tests.conftest import REQUIRE_SERVICES, engine_with_empty_tables

NATS_URL = os.environ.get("SWITCHBOARD_TEST_NATS", "nats://127.0.0.1:4222")


def test_bundled_sources_declare_every_event_type() -> None:
    sources = load_sources(BUNDLED_SYSTEMS_DIR)
    assert {s.name for s in sources} == {"boss", "billing", "care"}
    mapped = {t for s in sources for t in s.mapping.types.values()}
    assert mapped == set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("source: boss\ntransport: carrier-pigeon\nmapping: {types: {A: roaming.started}}\n"
         "webhook: {hub: /hub, secret_env: S}\n", 1, "transport must be one of"),
        ("source: boss\nwebhook: {hub: /hub, secret_env: S}\nmapping:\n  types:\n"
         "    A: roaming.begun\n", 5, "'roaming.begun' is not an event type"),
        ("source: boss\nwebhook:\n  hub: hub\n  secret_env: S\n"
         "mapping: {types: {A: bill.issued}}\n", 3, "webhook.hub must be the registration path"),
        ("source: boss\nwebhook: {hub: /hub, secret_env: lower}\n"
         "mapping: {types: {A: bill.issued}}\n", 2, "secret_env must name the environment"),
        ("source: boss\nwebhook: {hub: /hub, secret_env: S}\nmapping:\n  types: {A: bill.issued}\n"
         "  payload:\n    amount: {path: a.b, type: money}\n", 6, "type must be one of"),
        ("source: boss\nwebhook: {hub: /hub, secret_env: S}\nmapping:\n  types: {A: bill.issued}\n"
         "  colour: red\n", 4, "unknown key 'colour' in mapping"),
        ("source: feed\ntransport: nats\nnats: {stream: 'bad stream', subject: a.b, durable: d}\n"
         "mapping: {types: {A: bill.issued}}\n", 3, "nats.stream must be a stream name"),
    ],
)  # fmt: skip
def test_declaration_problems_name_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "events.yaml"
    path.write_text(text)
    with pytest.raises(DeclarationInvalid) as raised:
        parse_source(path)
    problems = [p for p in raised.value.problems if message in p.message]
    assert problems, [str(p) for p in raised.value.problems]
    assert problems[0].line == line and problems[0].file == str(path)


def _boss_mapping():  # type: ignore[no-untyped-def]
    source = load_sources(BUNDLED_SYSTEMS_DIR).get("boss")
    assert source is not None
    return source.mapping


def test_a_notification_maps_onto_the_business_event() -> None:
    mapped = map_notification(
        _boss_mapping(),
        {
            "eventId": "E1",
            "eventTime": "2026-12-02T10:00:00+08:00",
            "eventType": "UsageThresholdCrossedEvent",
            "event": {
                "customer": {"customerNo": "1000000007"},
                "subscriber": {"msisdn": "18899407311"},
                "usage": {"thresholdPercent": 80, "allowanceMb": 10240, "usedMb": 8192},
            },
        },
    )
    assert mapped.event_type == "usage.threshold_crossed"
    assert mapped.customer_key == "1000000007"
    assert mapped.subscriber == "+8618899407311"
    assert mapped.occurred_at.utcoffset() == dt.timedelta(hours=8)
    assert mapped.payload == {"percent": 80, "allowance_mb": 10240, "used_mb": 8192}


@pytest.mark.parametrize(
    ("change", "code", "named"),
    [
        ({"eventType": "Nope"}, "EVENT_TYPE_UNKNOWN", "eventType"),
        ({"eventId": None}, "EVENT_INVALID", "eventId"),
        ({"eventId": "has space"}, "EVENT_INVALID", "eventId"),
        ({"eventTime": "2026-12-02T10:00:00"}, "EVENT_INVALID", "eventTime"),
        ({"event": {"usage": {"thresholdPercent": "eighty"}}}, "EVENT_INVALID", "percent"),
        ({"event": {"subscriber": {"msisdn": "not-a-number"}}}, "EVENT_INVALID", "msisdn"),
    ],
)
def test_unreadable_notifications_are_refused_naming_the_path_not_the_value(
    change: dict, code: str, named: str
) -> None:
    document = {
        "eventId": "E1",
        "eventTime": "2026-12-02T10:00:00+08:00",
        "eventType": "RoamingStartedEvent",
        "event": {"customer": {"customerNo": "1"}},
        **change,
    }
    with pytest.raises(NotificationInvalid) as raised:
        map_notification(_boss_mapping(), document)
    assert raised.value.code == code
    assert named in raised.value.message
    assert "eighty" not in raised.value.message and "not-a-number" not in raised.value.message


def test_signatures_are_checked_in_constant_time_and_against_a_window() -> None:
    body, now = b'{"a": 1}', time.time()
    good = signature(b"k", str(int(now)), body)
    verify(b"k", str(int(now)), good, body, now, 300)
    for timestamp, signed, secret, code in [
        (None, good, b"k", "SIGNATURE_MISSING"),
        (str(int(now)), None, b"k", "SIGNATURE_MISSING"),
        (str(int(now)), good, b"other", "SIGNATURE_INVALID"),
        (str(int(now) - 301), signature(b"k", str(int(now) - 301), body), b"k", "SIGNATURE_STALE"),
        ("12ab", good, b"k", "SIGNATURE_INVALID"),
    ]:
        with pytest.raises(SignatureRefused) as raised:
            verify(secret, timestamp, signed, body, now, 300)
        assert raised.value.code == code


def test_event_settings_reach_the_code_by_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "switchboard.toml"
    toml.write_text("[events]\ndispatch_batch_size = 7\nretention_days = 2\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(toml))
    monkeypatch.setenv("SWITCHBOARD_EVENTS__SIGNATURE_TOLERANCE_S", "42")
    settings = load_settings()
    assert settings.events.dispatch_batch_size == 7
    assert settings.events.retention_days == 2
    assert settings.events.signature_tolerance_s == 42
    toml.write_text("[events]\ndispatch_batch_sise = 7\n")
    with pytest.raises(ValueError, match=r"events\.dispatch_batch_sise"):
        load_settings()


def _events(count: int, prefix: str) -> list[BusinessEvent]:
    now = dt.datetime.now(dt.UTC)
    return [
        BusinessEvent(f"{prefix}:{i}", "bill.issued", "billing", now, None, None, {"i": i})
        for i in range(count)
    ]


class Counting:
    """A real handler for the dispatch tests: counts what it was handed."""

    def __init__(self, seen: Counter[str], fail_first: bool = False) -> None:
        self.seen = seen
        self.fail_first = fail_first

    async def handle(self, events: Sequence[BusinessEvent]) -> None:
        await asyncio.sleep(0.001)  # let the other worker interleave
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("handler down")
        self.seen.update(e.event_id for e in events)


async def test_store_keeps_one_row_per_event_id(hub_database_url: str) -> None:
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    try:
        store = EventStore(engine)
        events = _events(5, "s")
        assert await store.store(events) == {e.event_id for e in events}
        assert await store.store(events[:3] + _events(1, "t")) == {"t:0"}
        assert (await store.counts())["stored"] == 6
    finally:
        await engine.dispose()


async def test_two_dispatchers_hand_each_event_exactly_once(hub_database_url: str) -> None:
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    try:
        store = EventStore(engine)
        await store.store(_events(500, "two"))
        seen: Counter[str] = Counter()
        config = DispatchConfig(batch_size=20, poll_s=0.01)
        workers = [Dispatcher(EventStore(engine), config, f"w{i}") for i in range(2)]
        for worker in workers:
            worker.install(Counting(seen))

        async def drain(worker: Dispatcher) -> None:
            while await worker.run_once():
                pass

        await asyncio.gather(*(drain(w) for w in workers))
        assert len(seen) == 500 and set(seen.values()) == {1}
        assert all(w.handed > 0 for w in workers), [w.handed for w in workers]
        assert (await store.counts())["unhandled"] == 0
    finally:
        await engine.dispose()


async def test_a_failing_handler_gets_the_batch_again_and_nothing_before_install(
    hub_database_url: str,
) -> None:
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    try:
        store = EventStore(engine)
        await store.store(_events(10, "retry"))
        seen: Counter[str] = Counter()
        dispatcher = Dispatcher(store, DispatchConfig(batch_size=10, retry_after_s=0), "w")
        assert await dispatcher.run_once() == 0  # no handler yet: stays stored, unhandled
        assert (await store.counts())["unhandled"] == 10
        dispatcher.install(Counting(seen, fail_first=True))
        assert await dispatcher.run_once() == 0  # raised: released
        assert await dispatcher.run_once() == 10
        assert set(seen.values()) == {1}
    finally:
        await engine.dispose()


async def test_a_lease_that_ends_hands_the_events_again(hub_database_url: str) -> None:
    """A dispatcher that died holding a claim: after the lease another one gets its events."""
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    try:
        store = EventStore(engine)
        await store.store(_events(3, "lease"))
        dead = await store.claim("dead", 10, lease_s=0.2)
        assert len(dead.events) == 3
        assert not (await store.claim("other", 10, lease_s=60)).events
        await asyncio.sleep(0.3)
        again = await store.claim("other", 10, lease_s=60)
        assert {e.event_id for e in again.events} == {e.event_id for e in dead.events}
        assert await store.mark_handled(dead) == 0  # no longer the dead one's
        assert await store.mark_handled(again) == 3
    finally:
        await engine.dispose()


async def test_handled_events_are_pruned_after_the_retention(hub_database_url: str) -> None:
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    try:
        store = EventStore(engine)
        await store.store(_events(4, "prune"))
        await store.mark_handled(await store.claim("w", 2, 60))
        pruned = await store.prune(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
        assert pruned == 2
        assert await store.counts() == {"stored": 2, "unhandled": 2}
    finally:
        await engine.dispose()


async def _nats_or_skip():  # type: ignore[no-untyped-def]
    import nats

    try:
        return await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as error:
        reason = f"NATS not reachable at {NATS_URL}: {type(error).__name__}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (SWITCHBOARD_REQUIRE_SERVICES=1: CI must not skip)")
        pytest.skip(reason)


async def test_nats_jetstream_as_source_acks_after_commit_and_dedupes_redelivery(
    tmp_path: Path,
) -> None:
    from nats.js.errors import NotFoundError
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.database import create_engine
    from gateway.migrate import upgrade
    from marketing.wiring import EventConfig, EventWiring

    client = await _nats_or_skip()
    run = uuid.uuid4().hex[:10]
    stream, subject = f"SB_EVENTS_{run}", f"sb.{run}.boss"
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"sb.{run}.>"])
    folder = tmp_path / "systems"
    shutil.copytree(BUNDLED_SYSTEMS_DIR, folder)
    (folder / "feed").mkdir()
    boss = (folder / "boss" / "events.yaml").read_text()
    (folder / "feed" / "events.yaml").write_text(
        boss.replace("source: boss", "source: feed")
        .replace("transport: webhook", "transport: nats")
        .replace("webhook:\n  hub: /hub", f"nats:\n  stream: {stream}\n  subject: {subject}")
        .replace(
            "  secret_env: SWITCHBOARD_EVENTS_BOSS_SECRET   # the shared HMAC secret "
            "(never in a file)",
            f"  durable: switchboard-{run}",
        )
    )
    sources = load_sources(folder)
    engine: AsyncEngine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await upgrade(engine)
    wiring = EventWiring(
        EventConfig(
            callback_base_url="http://127.0.0.1:1",
            register=False,
            dispatch=False,
            nats_url=NATS_URL,
            nats_fetch_timeout_s=0.2,
            nats_ack_wait_s=2,
        ),
        engine,
        sources,
        base_urls={},
        secrets={},
        worker="t",
    )
    try:
        ids = [uuid.uuid4().hex for _ in range(50)]

        def message(event_id: str) -> bytes:
            return json.dumps(
                {
                    "eventId": event_id,
                    "eventTime": "2026-12-02T10:00:00+08:00",
                    "eventType": "LineResumedEvent",
                    "event": {"customer": {"customerNo": "1"}, "line": {"daysOff": 120}},
                }
            ).encode()

        for event_id in ids:
            await js.publish(subject, message(event_id))
        for event_id in ids[:10]:  # the system published some twice
            await js.publish(subject, message(event_id))
        await js.publish(subject, b"not json")  # terminated, not stored, not redelivered
        await wiring.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            try:
                info = await js.consumer_info(stream, f"switchboard-{run}")
            except NotFoundError:  # the hub has not created its consumer yet
                continue
            if info.num_ack_pending == 0 and info.num_pending == 0:
                break
        counts = await wiring.store.counts()
        assert counts["stored"] == 50
        info = await js.consumer_info(stream, f"switchboard-{run}")
        assert info.num_pending == 0 and info.num_ack_pending == 0
        claim = await wiring.store.claim("t", 100, 60)
        assert {e.event_id for e in claim.events} == {f"feed:{i}" for i in ids}
        assert all(e.payload == {"days_off": 120} for e in claim.events)
    finally:
        await wiring.stop()
        await js.delete_stream(stream)
        await client.close()
        await engine.dispose()


def test_the_example_file_documents_the_event_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in list(os.environ):
        if variable.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(variable)
    example = Path(__file__).resolve().parents[1] / "switchboard.example.toml"
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(example))
    documented = load_settings().events
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")
    assert documented == load_settings().events


def _mapped(event_id: str) -> MappedEvent:
    return MappedEvent(
        system_event_id=event_id,
        event_type="roaming.started",
        occurred_at=dt.datetime.now(dt.UTC),
        customer_key=None,
        subscriber=None,
        payload={"country": "JP"},
    )


class RefusingStore(EventStore):
    """The real store, refusing (as a database does a row's data) any group holding "bad"."""

    async def store(self, events: Sequence[BusinessEvent]) -> set[str]:
        if any(e.event_id.endswith(":bad") for e in events):
            raise DataError("INSERT", {}, ValueError("refused"))
        return await super().store(events)


async def test_a_refused_event_fails_only_itself_not_its_group(hub_database_url: str) -> None:
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    boss = load_sources(BUNDLED_SYSTEMS_DIR).get("boss")
    assert boss is not None
    writer = GroupWriter(RefusingStore(engine), CustomerResolver(engine, None), 256)
    writer.start()
    try:
        ids = ["a", "bad", "b", "c"]
        answers = await asyncio.gather(
            *(writer.submit(boss, _mapped(i)) for i in ids), return_exceptions=True
        )
        assert answers[0] is True and answers[2] is True and answers[3] is True
        assert isinstance(answers[1], StoreUnavailable)
        assert (await EventStore(engine).counts())["stored"] == 3
    finally:
        await writer.stop()
        await engine.dispose()


async def test_a_nul_byte_refused_by_postgres_fails_only_that_event(
    hub_database_url: str,
) -> None:
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    boss = load_sources(BUNDLED_SYSTEMS_DIR).get("boss")
    assert boss is not None
    writer = GroupWriter(EventStore(engine), CustomerResolver(engine, None), 256)
    writer.start()
    try:
        answers = await asyncio.gather(
            *(writer.submit(boss, _mapped(i)) for i in ("x", "y\x00z", "w")),
            return_exceptions=True,
        )
        assert answers[0] is True and answers[2] is True
        # PostgreSQL refuses a NUL byte in a text (SQLSTATE 22021); SQLite stores it.
        stored = 3 if engine.dialect.name == "sqlite" else 2
        assert (answers[1] is True) if stored == 3 else isinstance(answers[1], StoreUnavailable)
        assert (await EventStore(engine).counts())["stored"] == stored
    finally:
        await writer.stop()
        await engine.dispose()


async def test_a_replay_within_a_group_is_stored_once(hub_database_url: str) -> None:
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    boss = load_sources(BUNDLED_SYSTEMS_DIR).get("boss")
    assert boss is not None
    writer = GroupWriter(EventStore(engine), CustomerResolver(engine, None), 256)
    writer.start()
    try:
        assert await writer.submit(boss, _mapped("old")) is True
        # One group: a new event twice, an event stored before, another new one.
        answers = await asyncio.gather(
            *(writer.submit(boss, _mapped(i)) for i in ("n", "n", "old", "m"))
        )
        assert answers == [True, False, False, True]
        assert (await EventStore(engine).counts())["stored"] == 3
    finally:
        await writer.stop()
        await engine.dispose()
