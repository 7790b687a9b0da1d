"""Circuit breaker, bulkhead and time budget, against the real simulators.

The breaker's clock is a fake one the tests move by hand, so that cool-downs pass without
sleeping; what reached a backend is read from the simulator's own call counts.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from adapters.billing import BALANCES, BillingAdapter
from adapters.boss import BossAdapter
from adapters.breaker import CircuitBreaker, CircuitOpen, CircuitState, NoFreeSlot
from adapters.errors import BadResponse, NotFound, TimedOut, Unavailable
from adapters.request_share import open_request_share
from adapters.resilience import BackendGuard, CallPolicy, Endpoint
from adapters.rest import RestClient
from gateway.app import _probe


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def guarded(system: str, clock: FakeClock, *, threshold: int, max_concurrency: int = 50):
    breaker = CircuitBreaker(system, failure_threshold=threshold, reset_s=30.0, clock=clock)
    return BackendGuard(system, breaker=breaker, max_concurrency=max_concurrency)


class Hanging:
    """A backend call that never answers, counting how often it was made."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        await asyncio.Event().wait()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def billing_guarded(sims, clock):
    guard = guarded("billing", clock, threshold=3)
    adapter = BillingAdapter(
        Endpoint("billing", sims.billing, timeout_s=1.0, retry_attempts=1, guard=guard)
    )
    yield adapter, guard
    await adapter.close()


def boss_adapter(url: str, **endpoint: object) -> BossAdapter:
    return BossAdapter(
        Endpoint("boss", url, **endpoint),  # type: ignore[arg-type]
        wsdl_path="/boss/services/BossService?wsdl",
        service_path="/boss/services/BossService",
        login_system_code="SWITCHBOARD",
    )


async def test_the_breaker_opens_fails_fast_probes_and_closes(
    billing_guarded, control, customers, clock
):
    billing, guard = billing_guarded
    account = customers[2].account.id
    control.set("billing", down=True)
    for _ in range(3):
        with pytest.raises(Unavailable) as raised:
            await billing.get_balances([account])
        assert not isinstance(raised.value, CircuitOpen)
    assert control.total("billing") == 3
    assert guard.breaker.state is CircuitState.OPEN
    assert guard.breaker.snapshot().opened_at is not None

    # Open: refused at once, nothing reaches billing.
    for _ in range(5):
        with pytest.raises(CircuitOpen) as refused:
            await billing.get_balances([account])
    assert refused.value.code == "BACKEND_UNAVAILABLE"
    assert "circuit open" in str(refused.value)
    assert control.total("billing") == 3
    assert guard.stats.rejected == 5

    # Cool-down over, billing still down: the one probe fails and the circuit opens again.
    clock.advance(30)
    with pytest.raises(Unavailable) as probed:
        await billing.get_balances([account])
    assert not isinstance(probed.value, CircuitOpen)
    assert control.total("billing") == 4
    assert guard.breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        await billing.get_balances([account])
    assert control.total("billing") == 4

    # Cool-down over, billing back: the probe succeeds and closes the circuit.
    clock.advance(30)
    control.set("billing", down=False)
    assert account in await billing.get_balances([account])
    assert guard.breaker.state is CircuitState.CLOSED
    assert guard.breaker.snapshot().consecutive_failures == 0
    assert account in await billing.get_balances([account])
    assert control.total("billing") == 6


async def test_half_open_lets_exactly_one_probe_through(billing_guarded, control, customers, clock):
    billing, guard = billing_guarded
    account = customers[2].account.id
    control.set("billing", down=True)
    for _ in range(3):
        with pytest.raises(Unavailable):
            await billing.get_balances([account])
    control.set("billing", down=False, latency_ms=[150, 150])
    clock.advance(30)
    outcomes = await asyncio.gather(
        *(billing.get_balances([account]) for _ in range(6)), return_exceptions=True
    )
    assert sum(isinstance(o, CircuitOpen) for o in outcomes) == 5
    assert sum(isinstance(o, dict) and account in o for o in outcomes) == 1
    assert control.calls("billing") == {f"GET {BALANCES}": 4}  # 3 failures + the one probe
    assert guard.breaker.state is CircuitState.CLOSED


async def test_business_errors_and_bad_answers_do_not_open_the_circuit(sims, control, clock):
    guard = guarded("boss", clock, threshold=2)
    boss = boss_adapter(sims.boss, timeout_s=1.0, guard=guard)
    await boss.start()
    try:
        for _ in range(4):
            with pytest.raises(NotFound):
                await boss.get_order("ORD2026010100000000")
        control.set("boss", bad_response=True)
        for _ in range(3):
            with pytest.raises(BadResponse):
                await boss.get_offerings()
        assert control.calls("boss") == {"QueryOrder": 4, "QueryOfferings": 3}
        assert guard.breaker.state is CircuitState.CLOSED
        assert guard.breaker.snapshot().consecutive_failures == 0
        assert guard.stats.failures == 0
    finally:
        await boss.close()


async def test_retries_stop_at_an_open_circuit(sims, control, customers, clock):
    guard = guarded("boss", clock, threshold=2)
    boss = boss_adapter(sims.boss, timeout_s=2.0, retry_attempts=3, guard=guard)
    await boss.start()
    try:
        control.set("boss", failure_rate=1.0)
        with pytest.raises(CircuitOpen):
            await boss.get_customers([customers[0].customer.customer_no])
        # Two attempts failed and opened the circuit; the third was refused, not sent.
        assert control.calls("boss") == {"QueryCustomer": 2}
        assert (guard.stats.attempts, guard.stats.failures, guard.stats.rejected) == (2, 2, 1)
    finally:
        await boss.close()


async def test_writes_are_never_retried_and_an_open_circuit_refuses_them(
    sims, control, customers, clock
):
    guard = guarded("boss", clock, threshold=1)
    boss = boss_adapter(sims.boss, timeout_s=1.0, retry_attempts=5, guard=guard)
    await boss.start()
    try:
        control.set("boss", failure_rate=1.0)
        line = customers[0].subscribers[0]
        with pytest.raises(Unavailable) as failed:
            await boss.change_offering(line.subscriber_no, "OF0011", f"key-{uuid.uuid4()}")
        assert not isinstance(failed.value, CircuitOpen)
        assert control.calls("boss") == {"ChangeOffering": 1}
        with pytest.raises(CircuitOpen):
            await boss.change_offering(line.subscriber_no, "OF0011", f"key-{uuid.uuid4()}")
        assert control.calls("boss") == {"ChangeOffering": 1}
    finally:
        await boss.close()


async def test_the_bulkhead_caps_calls_in_flight(sims, control, customers):
    endpoint = Endpoint("billing", sims.billing, timeout_s=5.0, max_concurrency=2)
    policy = CallPolicy(endpoint)
    rest = RestClient(endpoint)
    in_flight = peak = 0

    async def call() -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            items, _ = await rest.get_list(BALANCES, {"billingAccount.id": customers[1].account.id})
            return len(items)
        finally:
            in_flight -= 1

    control.set("billing", latency_ms=[60, 60])
    try:
        results = await asyncio.gather(*(policy.read("test", call) for _ in range(8)))
    finally:
        await rest.close()
    assert results == [1] * 8
    assert peak == 2
    assert control.total("billing") == 8
    assert policy.guard.bulkhead.in_flight == 0


async def test_waiting_for_a_slot_counts_in_the_time_budget(clock):
    guard = guarded("care", clock, threshold=3, max_concurrency=1)
    patient = CallPolicy(Endpoint("care", "http://unused", timeout_s=30.0, guard=guard))
    hasty = CallPolicy(Endpoint("care", "http://unused", timeout_s=0.2, guard=guard))
    holding = asyncio.Event()
    release = asyncio.Event()
    hasty_calls = 0

    async def hold() -> str:
        holding.set()
        await release.wait()
        return "done"

    async def quick() -> str:
        nonlocal hasty_calls
        hasty_calls += 1
        return "never"

    holder = asyncio.create_task(patient.write("test", hold))
    await holding.wait()
    with pytest.raises(NoFreeSlot) as raised:
        await asyncio.wait_for(hasty.read("test", quick), 10)
    assert raised.value.code == "BACKEND_TIMEOUT"
    assert hasty_calls == 0
    assert guard.stats.slot_timeouts == 1
    # Waiting for a slot says nothing about the backend.
    assert guard.breaker.snapshot().consecutive_failures == 0
    release.set()
    assert await holder == "done"


async def test_a_cancelled_call_gives_its_slots_back(clock):
    """Both slots a call holds (the backend's bulkhead, the request's share) come back when
    its caller gives up, while it waits for the backend and while it waits for a slot."""
    guard = guarded("care", clock, threshold=3, max_concurrency=1)
    policy = CallPolicy(Endpoint("care", "http://unused", timeout_s=30.0, guard=guard))
    share = open_request_share()
    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    async def quick() -> str:
        return "done"

    holder = asyncio.create_task(policy.read("test", hang))
    await started.wait()
    waiter = asyncio.create_task(policy.read("test", quick))  # waits for the one slot
    await asyncio.sleep(0.01)
    assert guard.bulkhead.in_flight == 1 and not waiter.done()
    waiter.cancel()
    holder.cancel()
    for task in (waiter, holder):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert guard.bulkhead.in_flight == 0
    assert await asyncio.wait_for(policy.read("test", quick), 5) == "done"
    # The request's one slot for care is free again: taken at once, with no time to wait.
    slots = await share.acquire("care", 1, asyncio.get_running_loop().time() + 0.05)
    slots.release()
    # Cancellations say nothing about the backend.
    assert guard.breaker.snapshot().consecutive_failures == 0


async def test_an_attempt_is_cut_at_the_deadline_and_not_retried_past_it(clock):
    guard = guarded("billing", clock, threshold=5)
    policy = CallPolicy(
        Endpoint("billing", "http://unused", timeout_s=0.2, retry_attempts=5, guard=guard)
    )
    hang = Hanging()
    # The outer wait_for only keeps a broken budget from hanging the suite.
    with pytest.raises(TimedOut):
        await asyncio.wait_for(policy.read("test", hang), 10)
    assert hang.calls == 1
    assert guard.breaker.snapshot().consecutive_failures == 1


async def test_readiness_reports_an_open_circuit_without_probing(clock):
    guard = guarded("billing", clock, threshold=2)
    pings = 0

    async def down() -> None:
        nonlocal pings
        pings += 1
        raise Unavailable("billing", "could not be reached")

    async def up() -> None:
        nonlocal pings
        pings += 1

    # Closed: the ping reports, and leaves the count of real calls alone.
    guard.breaker.failed(False)
    name, report = await _probe("billing", down, guard, 3.0)
    assert (name, report["status"], report["circuit"]) == ("billing", "down", "closed")
    await _probe("billing", up, guard, 3.0)
    assert guard.breaker.snapshot().consecutive_failures == 1
    assert pings == 2

    guard.breaker.failed(False)  # the second real failure opens the circuit
    name, report = await _probe("billing", up, guard, 3.0)
    assert report == {
        "status": "down",
        "code": "BACKEND_UNAVAILABLE",
        "circuit": "open",
        "consecutive_failures": 2,
        "opened_at": guard.breaker.snapshot().opened_at.isoformat(),
    }
    assert pings == 2  # no network call while open

    clock.advance(30)
    name, report = await _probe("billing", down, guard, 3.0)
    # After the cool-down the readiness ping is the half-open probe: a failure re-opens...
    assert (report["status"], report["circuit"]) == ("down", "open")
    clock.advance(30)
    name, report = await _probe("billing", up, guard, 3.0)
    # ...and a success closes the circuit.
    assert (report["status"], report["circuit"]) == ("up", "closed")
    assert pings == 4


async def test_a_429_is_throttling_not_retried_and_counted_against_the_circuit(clock):
    """HTTP 429 is the system asking for fewer calls: BACKEND_UNAVAILABLE with backendCode
    429 from every engine, not a refusal of the caller's input, and not retried at once."""
    from types import SimpleNamespace

    from adapters.declared.registry import load_registry
    from adapters.declared.system import DeclaredSystem
    from adapters.errors import Throttled
    from tests.harness import REPO

    registry = load_registry(REPO / "systems")
    throttled = SimpleNamespace(status_code=429, headers={"retry-after": "5"}, content=b"")
    for name in ("billing", "boss"):
        spec = registry.systems[name]
        endpoints = {i.name: Endpoint(system=i.name, base_url=i.base_url) for i in spec.instances}
        engine = next(iter(DeclaredSystem(spec, endpoints).instances.values())).engine
        operation = next(iter(spec.operations.values()))
        with pytest.raises(Throttled) as raised:
            if name == "boss":
                engine.answer(operation, 429, b"")  # type: ignore[call-arg, arg-type]
            else:
                engine.answer(operation, throttled)  # type: ignore[call-arg, arg-type]
        assert (raised.value.code, raised.value.backend_code) == ("BACKEND_UNAVAILABLE", "429")

    guard = guarded("billing", clock, threshold=5)
    policy = CallPolicy(
        Endpoint("billing", "http://unused", timeout_s=1.0, retry_attempts=3, guard=guard)
    )
    calls = 0

    async def throttling() -> None:
        nonlocal calls
        calls += 1
        raise Throttled("billing", "is throttling calls (HTTP 429)", backend_code="429")

    with pytest.raises(Throttled):
        await policy.read("test", throttling)
    assert calls == 1
    assert guard.breaker.snapshot().consecutive_failures == 1


async def test_a_timed_out_write_says_a_repeat_with_the_same_key_is_safe(clock):
    guard = guarded("billing", clock, threshold=5)
    policy = CallPolicy(Endpoint("billing", "http://unused", timeout_s=0.2, guard=guard))
    hang = Hanging()
    with pytest.raises(TimedOut) as raised:
        await asyncio.wait_for(policy.write("test", hang), 10)
    assert hang.calls == 1  # sent once, never retried
    assert raised.value.code == "BACKEND_TIMEOUT"
    assert "repeat it with the same idempotency key" in raised.value.message
    assert guard.breaker.snapshot().consecutive_failures == 1
