"""The scaled mode's parts one by one, against the real Redis (and PostgreSQL for the executor
lock): shared limits and their fallback when Redis is down, the eviction feed (reconnect,
hostile messages), the replica board, the settings, the executor liveness lock and the CLI
verbs' refusals. tests/test_replicas.py runs them together in two replicas."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from adapters.cache import PROFILE, RecordCache
from adapters.cache_fanout import EvictionFeed, MessageLimits, decode_message
from adapters.resilience import BackendGuard, Endpoint
from gateway.replica_board import ReplicaBoard, SummaryLimits, read_summary
from gateway.scaled import build_scaled
from gateway.settings import AuthSettings, ScaledSettings, SettingsInvalid, load_settings
from gateway.shared_limits import (
    LocalRequestLimiter,
    SharedAuthThrottle,
    SharedRequestLimiter,
    limits_storage,
)
from orchestration.executor_lock import advisory_key, try_lock
from tests.harness import REPO, SWITCHBOARD, free_ports


def _scaled(url: str, **extra) -> ScaledSettings:
    return ScaledSettings(redis_url=url, key_prefix=f"sbtest-{uuid.uuid4().hex[:12]}", **extra)


def _dead_redis() -> str:
    (port,) = free_ports(1)  # nothing listens there
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def _clean(client: aioredis.Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=f"{prefix}:*"):
        await client.delete(key)


# --- rate limits and the failed-key throttle ------------------------------------------------


@pytest.mark.redis
async def test_two_processes_share_one_rate_limit(redis_url, client) -> None:
    settings = _scaled(redis_url)
    one = SharedRequestLimiter(limits_storage(settings), settings)
    other = SharedRequestLimiter(limits_storage(settings), settings)
    try:
        assert (await one.allow("cred-1", 3))[0]
        assert (await other.allow("cred-1", 3))[0]
        assert (await one.allow("cred-1", 3))[0]
        allowed, retry_after = await other.allow("cred-1", 3)
        assert not allowed and 1 <= retry_after <= 60
        assert (await one.allow("cred-2", 3))[0]  # per credential
        assert (await one.allow("cred-1", None))[0]  # no limit in the profile
    finally:
        await _clean(client, settings.key_prefix)


async def test_redis_down_falls_back_to_a_limit_per_process() -> None:
    settings = _scaled(_dead_redis(), operation_timeout_s=0.2)
    limiter = SharedRequestLimiter(limits_storage(settings), settings)
    answers = [(await limiter.allow("cred", 2))[0] for _ in range(3)]
    assert answers == [True, True, False]  # counted in process, not refused wholesale


async def test_redis_down_refuses_limited_requests_when_closed() -> None:
    settings = _scaled(_dead_redis(), operation_timeout_s=0.2, rate_limit_on_redis_error="closed")
    limiter = SharedRequestLimiter(limits_storage(settings), settings)
    allowed, retry_after = await limiter.allow("cred", 100)
    assert not allowed and retry_after == 2  # the retry period, rounded up
    assert (await limiter.allow("cred", None))[0]  # nothing to count: let through


@pytest.mark.redis
async def test_failed_keys_are_throttled_across_processes(redis_url, client) -> None:
    settings = _scaled(redis_url)
    auth = AuthSettings(max_failures_per_source=3, max_failures_per_key_id=2)
    one = SharedAuthThrottle(limits_storage(settings), settings, auth)
    other = SharedAuthThrottle(limits_storage(settings), settings, auth)
    try:
        await one.failed("10.0.0.1", None)
        await other.failed("10.0.0.1", None)
        assert await one.refused("10.0.0.1", None) is None
        await other.failed("10.0.0.1", None)
        wait = await one.refused("10.0.0.1", None)
        assert wait is not None and 1 <= wait <= 60
        # A key id guessed from two addresses: each guessing address is refused for it,
        # an address that never failed with it is still checked.
        await one.failed("10.0.0.2", "kid1")
        await other.failed("10.0.0.3", "kid1")
        assert await one.refused("10.0.0.2", "kid1") is not None
        assert await other.refused("10.0.0.3", "kid1") is not None
        assert await one.refused("10.0.0.4", "kid1") is None
    finally:
        await _clean(client, settings.key_prefix)


async def test_the_throttle_counts_in_process_while_redis_is_down() -> None:
    settings = _scaled(_dead_redis(), operation_timeout_s=0.2)
    throttle = SharedAuthThrottle(
        limits_storage(settings), settings, AuthSettings(max_failures_per_source=2)
    )
    await throttle.failed("10.0.0.9", None)
    await throttle.failed("10.0.0.9", None)
    assert await throttle.refused("10.0.0.9", None) is not None


# --- the eviction feed ------------------------------------------------------------------------


async def _feed(
    redis_url: str, channel: str, limits: MessageLimits | None = None
) -> tuple[RecordCache, EvictionFeed]:
    cache = RecordCache.in_memory(namespace="sbtest-feed")
    feed = EvictionFeed(
        # Named, so that the test can cut exactly these connections (the server is shared).
        aioredis.Redis.from_url(redis_url, client_name=channel.replace(":", "-")),
        channel,
        cache,
        timeout_s=0.5,
        reconnect_max_s=0.5,
        limits=limits or MessageLimits(),
    )
    await feed.start(wait_s=5)
    assert feed.subscribed.is_set()
    return cache, feed


async def _cached(cache: RecordCache, key: str) -> bool:
    calls = []

    async def fetch(keys: list[str]) -> dict[str, str]:
        calls.append(keys)
        return {k: f"value-{k}" for k in keys}

    await cache.many(PROFILE, [key], fetch)
    return not calls  # served without a backend call


async def _until(probe, what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.redis
async def test_an_eviction_reaches_the_other_process_and_survives_a_lost_connection(
    redis_url, client
) -> None:
    channel = f"sbtest-{uuid.uuid4().hex[:12]}:cache-evictions"
    (a, feed_a), (b, feed_b) = await _feed(redis_url, channel), await _feed(redis_url, channel)
    try:
        for cache in (a, b):
            await _cached(cache, "C1")
            await _cached(cache, "C2")
        await a.evict([(PROFILE, "C1")])

        async def b_lost_c1() -> bool:
            return not await _cached(b, "C1")

        await _until(b_lost_c1, "the eviction to reach b")
        assert await _cached(b, "C2")  # only what was evicted
        assert b.stats.evictions["profile"] == 0  # a's eviction, not counted as b's
        # Garbage on the channel is dropped, and changes nothing.
        await client.publish(channel, b"\xff not json")
        await client.publish(channel, json.dumps({"keys": [1, 2]}))

        async def dropped() -> bool:
            return feed_b.dropped >= 2

        await _until(dropped, "two dropped messages")
        assert await _cached(b, "C2")
        # The server drops every subscriber: b subscribes again by itself and, having
        # possibly missed evictions, forgets its whole memory cache.
        name = channel.replace(":", "-")
        for entry in await client.client_list(_type="pubsub"):
            if entry.get("name") == name:
                await client.client_kill_filter(_id=entry["id"])

        async def resubscribed() -> bool:
            return feed_b.resubscribes >= 1 and feed_b.subscribed.is_set()

        await _until(resubscribed, "b to subscribe again")
        assert not await _cached(b, "C2")
        await _cached(b, "C3")
        await _until(lambda: _resubscribed_too(feed_a), "a to subscribe again")
        await a.evict([(PROFILE, "C3")])

        async def b_lost_c3() -> bool:
            return not await _cached(b, "C3")

        await _until(b_lost_c3, "an eviction after the reconnect")
    finally:
        await feed_a.close()
        await feed_b.close()


@pytest.mark.redis
async def test_an_eviction_past_the_message_limit_reaches_the_other_process_whole(
    redis_url,
) -> None:
    channel = f"sbtest-{uuid.uuid4().hex[:12]}:cache-evictions"
    limits = MessageLimits(max_keys=3)
    (a, feed_a), (b, feed_b) = (
        await _feed(redis_url, channel, limits),
        await _feed(redis_url, channel, limits),
    )
    try:
        customers = [f"C{n}" for n in range(7)]
        for cache in (a, b):
            for customer in customers:
                await _cached(cache, customer)
        await a.evict([(PROFILE, c) for c in customers])  # 7 keys: three messages

        async def b_lost_all() -> bool:
            return feed_b.applied >= 3

        await _until(b_lost_all, "three messages to reach b")
        assert feed_b.dropped == 0
        assert not any([await _cached(b, c) for c in customers])
    finally:
        await feed_a.close()
        await feed_b.close()


async def _resubscribed_too(feed: EvictionFeed) -> bool:
    return feed.resubscribes >= 1 and feed.subscribed.is_set()


def test_feed_messages_are_decoded_strictly() -> None:
    limits = MessageLimits()  # the defaults: 10,000 keys, 1 MiB
    assert decode_message(json.dumps({"origin": "x", "keys": ["a"]}), limits) == ("x", ["a"])
    assert decode_message(b"[]", limits) is None
    assert decode_message(json.dumps({"keys": ["a"] * 10_001}), limits) is None
    assert decode_message(b"x" * 2_000_000, limits) is None


async def test_a_publish_to_a_dead_redis_is_counted_not_raised() -> None:
    cache = RecordCache.in_memory(namespace="sbtest-dead")
    feed = EvictionFeed(
        aioredis.Redis.from_url(_dead_redis(), socket_connect_timeout=0.2),
        "x",
        cache,
        timeout_s=0.3,
        reconnect_max_s=0.2,
    )
    await feed.start(wait_s=0.3)
    try:
        await cache.evict([(PROFILE, "C1")])  # the write's eviction still completes
        assert feed.publish_errors == 1
    finally:
        await feed.close()


# --- the replica board --------------------------------------------------------------------------


def _guard(name: str) -> BackendGuard:
    return BackendGuard.for_endpoint(Endpoint(system=name, base_url="http://127.0.0.1:9"))


def _listed(summary: dict) -> list[tuple[str, list[str]]]:
    return [(r["replica"], [w["worker"] for w in r["workers"]]) for r in summary["replicas"]]


@pytest.mark.redis
async def test_the_board_lists_live_processes_and_forgets_dead_ones(redis_url, client) -> None:
    prefix = f"sbtest-{uuid.uuid4().hex[:12]}"
    guards = {"billing": _guard("billing")}
    for _ in range(3):  # three failures open billing's circuit in this "process"
        probe = guards["billing"].breaker.admit()
        guards["billing"].breaker.failed(probe)
    boards = [
        ReplicaBoard(
            client,
            prefix=prefix,
            replica_id=replica,
            worker=lambda w=worker: w,
            guards=lambda g=g: g,
            heartbeat_s=0.2,
            ttl_s=1.0 if worker == "x-w1" else 30,
            timeout_s=1,
        )
        for replica, worker, g in (
            ("x", "x-w0", {"billing": _guard("billing")}),
            ("x", "x-w1", guards),
            ("y", "y", {"billing": _guard("billing")}),
        )
    ]
    try:
        for board in boards:
            await board.publish()
        summary = await read_summary(client, prefix, 2)
        assert [
            (r["replica"], [w["worker"] for w in r["workers"]]) for r in summary["replicas"]
        ] == [
            ("x", ["x-w0", "x-w1"]),
            ("y", ["y"]),
        ]
        assert summary["backends"]["billing"] == {"closed": 3, "half_open": 0, "open": 0}
        # (the threshold is 5 by default: three failures leave it closed, counted)
        worker = summary["replicas"][0]["workers"][1]
        assert worker["breakers"]["billing"]["consecutive_failures"] == 3
        assert worker["breakers"]["billing"]["since"]
        await boards[2].close()  # a stopped process leaves at once
        await client.set(f"{prefix}:replicas:junk:1", b"not json")  # ignored
        # x-w1 is "killed": it stops publishing and drops out after its TTL.
        await asyncio.sleep(1.3)
        summary = await read_summary(client, prefix, 2)
        assert [
            (r["replica"], [w["worker"] for w in r["workers"]]) for r in summary["replicas"]
        ] == [("x", ["x-w0"])]
    finally:
        await _clean(client, prefix)


@pytest.mark.redis
async def test_a_summary_reads_no_more_entries_nor_bigger_ones_than_its_limits(client) -> None:
    prefix = f"sbtest-{uuid.uuid4().hex[:12]}"
    entry = {"replica": "r", "breakers": {}}
    try:
        for n in range(4):
            await client.set(f"{prefix}:replicas:r:w{n}", json.dumps({**entry, "worker": f"w{n}"}))
        big = {**entry, "worker": "fat", "padding": "x" * 3000}
        await client.set(f"{prefix}:replicas:r:fat", json.dumps(big))

        def workers(summary: dict) -> list[str]:
            return [w["worker"] for r in summary["replicas"] for w in r["workers"]]

        assert len(workers(await read_summary(client, prefix, 2))) == 5  # the defaults
        assert len(workers(await read_summary(client, prefix, 2, SummaryLimits(2)))) <= 2
        small = await read_summary(client, prefix, 2, SummaryLimits(max_entry_bytes=2048))
        assert sorted(workers(small)) == ["w0", "w1", "w2", "w3"]  # the fat one skipped
    finally:
        await _clean(client, prefix)


# --- settings -----------------------------------------------------------------------------------


def test_the_scaled_settings_reach_the_code_from_the_environment_and_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(tmp_path / "none.toml"))
    off = build_scaled(load_settings(), None, lambda: "w", dict)
    assert isinstance(off.limiter, LocalRequestLimiter) and off.board is None
    monkeypatch.setenv("SWITCHBOARD_SCALED__REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("SWITCHBOARD_SCALED__REPLICA_ID", "from-env")
    from_env = build_scaled(load_settings(), None, lambda: "w", dict)
    assert isinstance(from_env.limiter, SharedRequestLimiter)
    assert from_env.replica_id == "from-env"
    assert from_env.board is not None and from_env.board._limits == SummaryLimits()
    monkeypatch.setenv("SWITCHBOARD_SCALED__SUMMARY_MAX_ENTRIES", "9")
    monkeypatch.setenv("SWITCHBOARD_SCALED__EVICTION_MAX_KEYS", "5")
    cache = RecordCache.in_memory(namespace="sbtest-wiring")
    wired = build_scaled(load_settings(), cache, lambda: "w", dict)
    assert wired.board is not None and wired.board._limits == SummaryLimits(max_entries=9)
    assert wired.feed is not None and wired.feed._limits == MessageLimits(max_keys=5)
    monkeypatch.delenv("SWITCHBOARD_SCALED__SUMMARY_MAX_ENTRIES")
    monkeypatch.delenv("SWITCHBOARD_SCALED__EVICTION_MAX_KEYS")
    monkeypatch.delenv("SWITCHBOARD_SCALED__REDIS_URL")
    monkeypatch.delenv("SWITCHBOARD_SCALED__REPLICA_ID")
    config = tmp_path / "switchboard.toml"
    config.write_text(
        '[scaled]\nredis_url = "redis://127.0.0.1:6379/4"\nkey_prefix = "hub-1"\n'
        'rate_limit_on_redis_error = "closed"\n[workflows]\nexecutor_id = "rep-7"\n'
    )
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    settings = load_settings()
    assert settings.scaled.key_prefix == "hub-1"
    from_toml = build_scaled(settings, None, lambda: "w", dict)
    assert isinstance(from_toml.limiter, SharedRequestLimiter)
    assert from_toml.replica_id == "rep-7"  # the executor id when no replica id is set
    config.write_text("[scaled]\nheartbeat_s = 5\nreplica_ttl_s = 5\n")
    with pytest.raises(SettingsInvalid, match="replica_ttl_s"):
        load_settings()
    config.write_text('[scaled]\nredis_url = "http://x"\n')
    with pytest.raises(SettingsInvalid, match=r"scaled\.redis_url"):
        load_settings()


# --- the executor liveness lock and the CLI verbs ------------------------------------------------


def test_the_file_lock_is_held_by_one_process_and_freed_by_its_death(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/workflows.sqlite"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from orchestration.executor_lock import try_lock;"
            f"lock = try_lock('ex-1', {url!r}, Path({str(tmp_path)!r}));"
            "print('held' if lock else 'busy', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert try_lock("ex-1", url, tmp_path) is None
        other = try_lock("ex-2", url, tmp_path)  # another id is another lock
        assert other is not None
        other.release()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    lock = try_lock("ex-1", url, tmp_path)
    assert lock is not None
    lock.release()


@pytest.mark.postgres
def test_the_advisory_lock_is_freed_when_its_holder_is_killed(postgres_url: str) -> None:
    url = postgres_url.replace("+asyncpg", "")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path;"
            "from orchestration.executor_lock import try_lock;"
            f"lock = try_lock('ex-pg', {url!r}, Path('.'));"
            "print('held' if lock else 'busy', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert try_lock("ex-pg", url, Path(".")) is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    for _ in range(50):  # PostgreSQL notices the closed socket at once; allow it a moment
        lock = try_lock("ex-pg", url, Path("."))
        if lock is not None:
            lock.release()
            break
        import time

        time.sleep(0.1)
    else:
        raise AssertionError("the advisory lock outlived its holder")
    assert advisory_key("ex-pg") == advisory_key("ex-pg") != advisory_key("ex-pg2")


def _cli(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    base.update(
        SWITCHBOARD_CONFIG=str(tmp_path / "none.toml"),
        SWITCHBOARD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/hub.db",
        **env,
    )
    return subprocess.run(
        [*SWITCHBOARD, *argv], env=base, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_recover_refuses_an_executor_whose_lock_is_held(tmp_path: Path) -> None:
    lock = try_lock("alive-one", f"sqlite:///{tmp_path}/workflows.sqlite", tmp_path)
    assert lock is not None
    try:
        done = _cli(tmp_path, "workflows", "recover", "--executor", "alive-one")
    finally:
        lock.release()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is alive" in done.stderr and done.stdout == ""


def test_status_without_redis_says_the_scaled_mode_is_off(tmp_path: Path) -> None:
    done = _cli(tmp_path, "status")
    assert done.returncode == 1
    assert "scaled mode is off" in done.stderr


@pytest.mark.redis
def test_status_prints_the_live_replicas(tmp_path: Path, redis_url: str) -> None:
    prefix = f"sbtest-{uuid.uuid4().hex[:12]}"

    async def publish() -> None:
        redis = aioredis.Redis.from_url(redis_url)
        board = ReplicaBoard(
            redis,
            prefix=prefix,
            replica_id="r1",
            worker=lambda: "r1-w0",
            guards=lambda: {"care": _guard("care")},
            heartbeat_s=1,
            ttl_s=30,
            timeout_s=1,
        )
        await board.publish()
        await redis.aclose()

    asyncio.run(publish())
    env = {"SWITCHBOARD_SCALED__REDIS_URL": redis_url, "SWITCHBOARD_SCALED__KEY_PREFIX": prefix}
    try:
        done = _cli(tmp_path, "status", **env)
        assert done.returncode == 0, done.stderr
        assert "replica r1" in done.stdout and "r1-w0" in done.stdout
        assert "care: 1 closed, 0 half-open, 0 open" in done.stdout
        as_json = json.loads(_cli(tmp_path, "status", "--json", **env).stdout)
        assert as_json["backends"]["care"]["closed"] == 1
    finally:

        async def clean() -> None:
            redis = aioredis.Redis.from_url(redis_url)
            await _clean(redis, prefix)
            await redis.aclose()

        asyncio.run(clean())
