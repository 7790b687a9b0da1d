"""The hub's in-process memories and the scaled mode's message limits as settings: each reaches
the code from the TOML file and from the environment, out-of-bounds values are refused, the
defaults are the documented ones, and each does what it says: the failed-key throttle, the
API key cache (how long a revoked key keeps working), the settled identities, the event
customer keys, the eviction feed's messages and the replica summary."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from adapters.cache_fanout import MessageLimits, decode_message, encode_messages
from adapters.identity_store import IdentityStore, Link, SystemResolution, metadata
from gateway.auth_throttle import FailedAuthThrottle
from gateway.replica_board import SummaryLimits
from gateway.settings import AuthSettings, Settings, load_settings
from marketing.customers import CustomerRef, CustomerResolver
from tests.conftest import engine_with_empty_tables, migrated_engine
from tests.harness import starlette_of
from tests.test_telemetry import in_process_settings

#: (TOML section, key, a value in bounds, one out of bounds, the documented default)
SETTINGS = [
    ("auth", "failures_tracked", 500, 99, 100_000),
    ("auth", "key_cache_s", 0.0, -1, 30.0),
    ("events", "max_line_lookups", 4, 0, 16),
    ("events", "customer_keys_remembered", 0, -1, 100_000),
    ("scaled", "eviction_max_keys", 3, 0, 10_000),
    ("scaled", "eviction_max_message_bytes", 4096, 1023, 1_048_576),
    ("scaled", "summary_max_entries", 2, 0, 1000),
    ("scaled", "summary_max_entry_bytes", 2048, 1023, 65_536),
    ("identity", "settled_remembered", 0, -1, 200_000),
    ("identity", "absent_recheck_s", 60.0, 0, 3600.0),
]


def _value(settings: Settings, section: str | None, key: str) -> object:
    return getattr(getattr(settings, section) if section else settings, key)


def _env(section: str | None, key: str) -> str:
    return "SWITCHBOARD_" + (f"{section}__{key}" if section else key).upper()


@pytest.mark.parametrize(("section", "key", "value", "bad", "default"), SETTINGS)
def test_each_setting_comes_from_the_file_then_the_environment(
    section, key, value, bad, default, tmp_path, monkeypatch
):
    for variable in [v for v in os.environ if v.startswith("SWITCHBOARD_")]:
        monkeypatch.delenv(variable)
    assert _value(Settings(), section, key) == default
    config = tmp_path / "switchboard.toml"
    config.write_text((f"[{section}]\n" if section else "") + f"{key} = {value!r}\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    assert _value(load_settings(), section, key) == value
    monkeypatch.setenv(_env(section, key), str(default))  # the environment wins over the file
    assert _value(load_settings(), section, key) == default
    monkeypatch.setenv(_env(section, key), str(bad))
    with pytest.raises(ValueError, match=key):
        load_settings()


# --- the failed-key throttle ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("tracked", "kept"), [(100, 1), (100_000, 151)])
def test_the_throttle_forgets_idle_addresses_past_its_setting(tracked, kept):
    clock = Clock()
    throttle = FailedAuthThrottle(AuthSettings(failures_tracked=tracked), clock)
    for n in range(150):
        throttle.failed(f"10.0.{n // 250}.{n % 250}", f"id{n}")
    clock.now += 61  # all of them idle for longer than the window
    throttle.failed("10.9.9.9", "fresh")
    assert len(throttle._by_source) == kept
    assert len(throttle._by_key_id) == kept
    assert len(throttle._pairs) == (1 if tracked == 100 else 151)


# --- the API key cache: how long a revoked key keeps working ----------------------------------


@pytest.mark.parametrize(("cache_s", "after_revoking"), [("0", 401), (None, 200)])
async def test_a_revoked_key_stops_at_once_with_no_key_cache(
    cache_s, after_revoking, sims, tmp_path, monkeypatch
):
    from gateway.app import create_app

    settings_env = {"SWITCHBOARD_AUTH__KEY_CACHE_S": cache_s} if cache_s else {}
    for variable, value in settings_env.items():
        monkeypatch.setenv(variable, value)
    app = create_app(in_process_settings(sims, tmp_path, tracing_on=False))
    starlette = starlette_of(app)
    async with starlette.router.lifespan_context(starlette):
        keys = starlette.state.keys
        issued = await keys.issue(subject="t", role="agent", channel="agent", label="revoked")
        headers = {"X-Api-Key": issued.key, "X-Purpose": "service"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=30
        ) as client:

            async def status() -> int:
                body = {"query": "{ __typename }"}
                return (await client.post("/graphql", json=body, headers=headers)).status_code

            assert await status() == 200
            await keys.revoke_where_label("revoked")
            assert await status() == after_revoking  # the default keeps it up to 30 s


# --- the settled identities each process keeps ------------------------------------------------


def _settled(hub_id: str, n: int) -> dict[str, list[SystemResolution]]:
    return {
        hub_id: [
            SystemResolution("billing", (Link("billing", f"BA{n}", "certificate+msisdn"),)),
            SystemResolution("care", (Link("care", f"P{n}", "certificate+msisdn"),)),
        ]
    }


@pytest.mark.parametrize("remembered", [0, 2, 200_000])
async def test_settled_identities_are_kept_up_to_the_setting_and_read_alike(remembered, tmp_path):
    engine = await engine_with_empty_tables(f"sqlite+aiosqlite:///{tmp_path}/id.db", metadata)
    try:
        store = IdentityStore(engine, remembered=remembered)
        numbers = [f"100000000{n}" for n in range(5)]
        hub_ids = await store.ensure_customers(numbers)
        for n, number in enumerate(numbers):
            await store.record(_settled(hub_ids[number], n))
        first = await store.by_customer_nos(numbers)
        assert len(store._settled_by_hub_id) == {0: 0, 2: 1, 200_000: 5}[remembered]
        again = await store.by_customer_nos(numbers)
        assert again == first and {i.keys("care") for i in again.values()} == {
            (f"P{n}",) for n in range(5)
        }
    finally:
        await engine.dispose()


async def test_the_hub_keeps_as_many_settled_identities_as_its_setting(sims, tmp_path, monkeypatch):
    from gateway.backends import build_backends
    from gateway.database import create_engine

    monkeypatch.setenv("SWITCHBOARD_IDENTITY__SETTLED_REMEMBERED", "7")
    monkeypatch.setenv("SWITCHBOARD_IDENTITY__ABSENT_RECHECK_S", "90")
    settings = in_process_settings(sims, tmp_path, tracing_on=False)
    engine = create_engine(settings.database_url)
    try:
        store = build_backends(settings, engine).backends.identity_store
        assert (store._remembered, store._absent_recheck.total_seconds()) == (7, 90)
    finally:
        await engine.dispose()


# --- the event customer keys each process keeps -----------------------------------------------


@pytest.mark.parametrize("remembered", [0, 1, 100_000])
async def test_event_customer_keys_are_kept_up_to_the_setting(remembered, tmp_path):
    engine = await migrated_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    try:
        numbers = [f"20000000{n:02d}" for n in range(3)]
        hub_ids = await IdentityStore(engine).ensure_customers(numbers)
        resolver = CustomerResolver(engine, None, remembered=remembered)
        refs = [CustomerRef("boss", number, None) for number in numbers]
        for _ in range(2):
            found = await resolver.resolve(refs)
            assert found == {ref: hub_ids[ref.key] for ref in refs}
            # A batch bigger than the memory is not kept: the next one asks the crosswalk.
            assert len(resolver._known) == {0: 0, 1: 0, 100_000: 3}[remembered]
    finally:
        await engine.dispose()


# --- the eviction feed's messages -------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "keys", "messages"),
    [
        (MessageLimits(3, 1_048_576), [f"profile:C{n}" for n in range(7)], 3),  # by count
        (MessageLimits(10_000, 1024), [f"profile:{n:0200d}" for n in range(14)], 4),  # by size
    ],
)
def test_a_big_eviction_is_published_in_messages_every_process_accepts(limits, keys, messages):
    published = encode_messages("me", keys, limits)
    assert len(published) == messages
    received: list[str] = []
    for message in published:
        assert len(message.encode()) <= limits.max_bytes
        decoded = decode_message(message, limits)
        assert decoded is not None and decoded[0] == "me"
        received += decoded[1]
    assert received == keys
    # The same keys in one message are refused, as a hostile publisher's would be.
    assert decode_message(json.dumps({"origin": "x", "keys": keys}), limits) is None


def test_a_key_too_long_for_any_message_is_left_out_and_the_rest_published():
    limits = MessageLimits(10_000, 1024)
    published = encode_messages("me", ["a", "x" * 2000, "b"], limits)
    assert [decode_message(m, limits) for m in published] == [("me", ["a", "b"])]


def test_the_summary_limits_come_from_the_scaled_settings():
    scaled = load_settings(scaled={"summary_max_entries": 3, "summary_max_entry_bytes": 4096})
    assert SummaryLimits.of(scaled.scaled) == SummaryLimits(3, 4096)
