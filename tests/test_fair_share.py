"""Fair share of a backend: one expensive operation cannot starve other callers or trip the
breaker, and a backend that is really slow still opens it.

End to end: a real gateway with a small BOSS bulkhead over the real simulators, BOSS made slow
through /_sim/control. The guard-level tests pin the rule that decides whether a timeout was
the backend's (time spent in the call) or the hub's (time spent queueing for a slot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
import yaml

from adapters.breaker import CircuitBreaker, NoFreeSlot
from adapters.errors import TimedOut
from adapters.request_share import NoRequestSlot, open_request_share
from adapters.resilience import BackendGuard, CallPolicy, Endpoint
from gateway.policy_store import DEFAULT_POLICY_FILE
from tests.harness import gateway_env, issue_key, post_graphql, running_gateway

BOSS_TIMEOUT_S = 1.0
BOSS_BULKHEAD = 6
BOSS_PER_REQUEST = 2
#: An agent operation of many aliases, each its own BOSS page call.
EXPENSIVE = (
    "{ " + " ".join(f"c{i}: customers(first: 2) {{ nodes {{ id }} }}" for i in range(30)) + " }"
)
CHEAP = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"


@dataclass(frozen=True)
class FairGateway:
    url: str
    agent_key: str
    store_key: str

    def boss_circuit(self) -> dict:
        report = httpx.get(f"{self.url}/readyz", timeout=10).json()
        return report["backends"]["boss"]


@pytest.fixture(scope="module")
def fair_gateway(sims, tmp_path_factory) -> Iterator[FairGateway]:
    state = tmp_path_factory.mktemp("fairshare")
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    # The expensive operation must reach the backends: the agent's limits only log here, the
    # way an operation the cost estimate underrates would get through.
    policy["channels"]["agent"]["limits"] = {"mode": "dry_run"}
    policy["channels"]["agent"].pop("rate_limit_per_minute", None)
    policy_file = state / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{state / 'hub.db'}",
        SWITCHBOARD_POLICY_FILE=str(policy_file),
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_BOSS__TIMEOUT_S=str(BOSS_TIMEOUT_S),
        SWITCHBOARD_BOSS__MAX_CONCURRENCY=str(BOSS_BULKHEAD),
        SWITCHBOARD_BOSS__MAX_CONCURRENCY_PER_REQUEST=str(BOSS_PER_REQUEST),
        SWITCHBOARD_BOSS__BREAKER_RESET_S="30",
        SWITCHBOARD_AUDIT__STATE_DIR=str(state / "audit"),
    )
    agent = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
    store = issue_key(env, channel="store", role="clerk", scopes=("customer:read",))
    with running_gateway(env, state / "gateway.log") as url:
        yield FairGateway(url, agent, store)


def _codes(answer: httpx.Response) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in answer.json().get("errors") or []]


def test_an_expensive_operation_cannot_starve_another_key_or_open_the_breaker(
    fair_gateway, control, customers
):
    msisdns = [
        next(s.msisdn for s in c.subscribers if s.status != "D")
        for c in customers[:40]
        if any(s.status != "D" for s in c.subscribers)
    ][:6]
    gw = fair_gateway
    # Known to the hub before BOSS turns slow, so the cheap request is one BOSS call.
    for msisdn in msisdns:
        assert post_graphql(gw.url, gw.store_key, CHEAP, {"m": msisdn}).status_code == 200
    control.set("boss", latency_ms=[300, 300])
    before = control.total("boss")
    with ThreadPoolExecutor(max_workers=8) as pool:
        expensive = pool.submit(post_graphql, gw.url, gw.agent_key, EXPENSIVE)
        # The cheap requests come while the expensive one has all its calls queued.
        cheap = []
        for msisdn in msisdns:
            asyncio.run(asyncio.sleep(0.15))
            cheap.append(pool.submit(post_graphql, gw.url, gw.store_key, CHEAP, {"m": msisdn}))
        cheap_answers = [c.result() for c in cheap]
        expensive_answer = expensive.result()
    # The expensive operation did reach BOSS, several calls of it (it was not refused)...
    assert control.total("boss") - before >= BOSS_PER_REQUEST + len(msisdns)
    assert expensive_answer.status_code == 200
    # ...and every cheap request from the other key was answered in full.
    for answer in cheap_answers:
        assert answer.status_code == 200
        assert _codes(answer) == [], answer.json()
        assert answer.json()["data"]["customerByMsisdn"]["id"]
    # What the expensive one did not get in its budget failed its own fields, as timeouts
    # of its own share, never as a backend failure.
    assert set(_codes(expensive_answer)) <= {"BACKEND_TIMEOUT"}
    circuit = gw.boss_circuit()
    assert circuit["circuit"] == "closed"
    assert circuit.get("consecutive_failures", 0) == 0


def test_a_really_slow_backend_still_opens_the_breaker(fair_gateway, control, customers):
    gw = fair_gateway
    msisdns = [
        next(s.msisdn for s in c.subscribers if s.status != "D")
        for c in customers[40:80]
        if any(s.status != "D" for s in c.subscribers)
    ][:6]
    for msisdn in msisdns:
        assert post_graphql(gw.url, gw.store_key, CHEAP, {"m": msisdn}).status_code == 200
    # Slower than the timeout: every call reaches BOSS with its whole budget and times out.
    control.set("boss", latency_ms=[1500, 1500])
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(
            pool.map(lambda m: post_graphql(gw.url, gw.store_key, CHEAP, {"m": m}), msisdns)
        )
    assert all("BACKEND_TIMEOUT" in _codes(a) for a in answers)
    refused = post_graphql(gw.url, gw.store_key, CHEAP, {"m": msisdns[0]})
    assert _codes(refused) == ["BACKEND_UNAVAILABLE"]
    assert gw.boss_circuit()["circuit"] == "open"


# --- the guard's rule, on a fake backend (no network) ---------------------------------------


def _guard(max_concurrency: int = 1, per_request: int = 10) -> BackendGuard:
    return BackendGuard(
        "care",
        breaker=CircuitBreaker("care", failure_threshold=1, reset_s=30),
        max_concurrency=max_concurrency,
        max_concurrency_per_request=per_request,
        min_budget_share=0.5,
    )


async def test_a_timeout_after_queueing_for_a_slot_is_not_the_backends_failure():
    guard = _guard(max_concurrency=1)
    policy = CallPolicy(Endpoint("care", "http://unused", timeout_s=1.0, guard=guard))
    release = asyncio.Event()

    async def hang() -> None:
        await asyncio.Event().wait()

    async def hold() -> None:
        await release.wait()

    holder = asyncio.create_task(policy.write("test", hold))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(policy.write("test", hang))
    # The slot frees with 0.3 s of the waiting call's 1 s left: its timeout is the queue's.
    await asyncio.sleep(0.7)
    release.set()
    await holder
    with pytest.raises(TimedOut) as raised:
        await asyncio.wait_for(waiting, 5)
    assert not isinstance(raised.value, NoFreeSlot)
    assert guard.stats.queued_timeouts == 1
    assert guard.breaker.snapshot().consecutive_failures == 0


async def test_a_timeout_after_a_short_wait_is_still_the_backends_failure():
    guard = _guard(max_concurrency=1)
    policy = CallPolicy(Endpoint("care", "http://unused", timeout_s=1.0, guard=guard))
    release = asyncio.Event()

    async def hang() -> None:
        await asyncio.Event().wait()

    async def hold() -> None:
        await release.wait()

    holder = asyncio.create_task(policy.write("test", hold))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(policy.write("test", hang))
    # 0.3 s in the queue leaves 0.7 s, over half the budget: a hang past that is BOSS's own.
    await asyncio.sleep(0.3)
    release.set()
    await holder
    with pytest.raises(TimedOut):
        await asyncio.wait_for(waiting, 5)
    assert guard.stats.queued_timeouts == 0
    assert guard.breaker.state.value == "open"


async def test_one_request_holds_at_most_its_share_of_slots():
    guard = _guard(max_concurrency=10, per_request=3)
    policy = CallPolicy(Endpoint("care", "http://unused", timeout_s=0.5, guard=guard))
    in_flight = peak = 0

    async def call() -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return "ok"

    async def request(calls: int) -> list:
        open_request_share()  # as schema/context.py does per request
        return await asyncio.gather(
            *(policy.read("test", call) for _ in range(calls)), return_exceptions=True
        )

    # 20 calls of 50 ms, 3 at a time: about 7 rounds of 50 ms, 0.35 s, within the budget.
    assert await request(20) == ["ok"] * 20
    assert peak == 3
    # Two requests run side by side, each with its own share.
    peak = 0
    both = await asyncio.gather(asyncio.create_task(request(6)), asyncio.create_task(request(6)))
    assert both == [["ok"] * 6, ["ok"] * 6]
    assert peak == 6
    # Past its budget a request's extra calls fail on its own slots, without the breaker.
    outcomes = await request(60)
    assert any(isinstance(o, NoRequestSlot) for o in outcomes)
    assert guard.stats.request_slot_timeouts > 0
    assert guard.breaker.snapshot().consecutive_failures == 0
    assert guard.stats.failures == 0
