"""The read-through cache, against the real simulators (and the real Redis in scaled mode).

What reached a backend is read from the simulator's call counts: a hit must not add one.
Writes here use customers no other test module touches (index 360 and up).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from adapters import codec
from adapters.billing import BillingAdapter
from adapters.boss import BossAdapter
from adapters.cache import (
    DEFAULT_TTLS,
    CachedBillingSystem,
    CachedCareSystem,
    CachedCustomerSystem,
    RecordCache,
)
from adapters.care import CareAdapter
from adapters.contract import BillingSystem, CareSystem, CustomerSystem
from adapters.declared.roles import DeclaredBilling
from adapters.errors import Unavailable
from adapters.records import (
    Balance,
    Bill,
    BillingAccount,
    CustomerProfile,
    Interaction,
    Money,
    Offering,
    Order,
    Page,
    Party,
    Payment,
    StarLevel,
    Subscription,
    Ticket,
    TicketNote,
    Usage,
)
from adapters.resilience import Endpoint
from gateway.auth import ApiKeyStore
from gateway.backends import build_backends
from gateway.database import create_engine
from gateway.migrate import upgrade
from gateway.settings import CacheTtlSettings, load_settings
from tests.harness import free_ports, gateway_env, running_gateway


def posts(control, system: str) -> int:
    return sum(n for op, n in control.calls(system).items() if op.startswith(("POST", "PATCH")))


def active_line(bundle):
    return next(s for s in bundle.subscribers if s.status == "A" and s.offering_id != "OF0011")


@pytest.fixture
async def raw(sims):
    boss = BossAdapter(
        Endpoint("boss", sims.boss, timeout_s=1.0),
        wsdl_path="/boss/services/BossService?wsdl",
        service_path="/boss/services/BossService",
        login_system_code="SWITCHBOARD",
    )
    await boss.start()
    billing = BillingAdapter(Endpoint("billing", sims.billing, timeout_s=1.0))
    care = CareAdapter(Endpoint("care", sims.care, timeout_s=1.0))
    yield boss, billing, care
    for adapter in (boss, billing, care):
        await adapter.close()


@pytest.fixture
async def memory_cache():
    cache = RecordCache.in_memory()
    yield cache
    await cache.close()


@pytest.fixture
def cached(raw, memory_cache):
    boss, billing, care = raw
    return (
        CachedCustomerSystem(boss, memory_cache),
        CachedBillingSystem(billing, memory_cache),
        CachedCareSystem(care, memory_cache),
    )


# --- JSON of the records ------------------------------------------------------------------------

SHANGHAI = timezone(timedelta(hours=8))
WHEN = datetime(2026, 11, 20, 9, 30, 5, 123000, tzinfo=SHANGHAI)
USAGE = Usage(1024, 30720, 88, 500, 3, 100)
SAMPLES = [
    (codec.MONEY, Money(Decimal("-12.30"), "CNY")),
    (
        codec.PROFILE,
        CustomerProfile(
            "1000000001",
            "张三",
            "M",
            "IDCARD",
            "11010119900307123X",
            date(1990, 3, 7),
            "北京市东城区1号",
            None,
            StarLevel.DIAMOND,
            "HIGH_VALUE",
            date(2010, 1, 2),
            "A",
        ),
    ),
    (codec.USAGE, USAGE),
    (
        codec.SUBSCRIPTION,
        Subscription(
            "S000000000001",
            "1000000001",
            "13800138000",
            "460001234567890",
            "89860012345678901234",
            "A",
            None,
            "OF0006",
            "5G畅享套餐88元",
            Decimal("88.50"),
            321,
            USAGE,
        ),
    ),
    (codec.OFFERING, Offering("OF0006", "5G畅享套餐88元", Decimal("88.00"), 40960, 500, 100, True)),
    (
        codec.ORDER,
        Order("ORD2026112000000001", "S000000000001", "OF0006", "OF0011", "COMPLETED", WHEN),
    ),
    (
        codec.ACCOUNT,
        BillingAccount(
            "BA0000000001",
            "张三",
            "active",
            "postpaid",
            "11010119900307123X",
            ("13800138000", "13900139000"),
            Money(Decimal("500")),
            "bankCard",
            "6222020200112233",
        ),
    ),
    (codec.BALANCE, Balance("BA0000000001", Money(Decimal("-3.05")), Money(Decimal("0.00")), None)),
    (
        codec.BILL,
        Bill(
            "CB1",
            "BA0000000001",
            "B202610",
            date(2026, 11, 1),
            WHEN,
            WHEN.astimezone(UTC),
            Money(Decimal("88.00")),
            Money(Decimal("0")),
            None,
            "settled",
        ),
    ),
    (
        codec.PAYMENT,
        Payment("PM1", "BA0000000001", WHEN, Money(Decimal("88.00")), "succeeded", "app", "alipay"),
    ),
    (codec.PARTY, Party("P000000000001", "张三", ("13800138000",), ("11010119900307123X",), None)),
    (codec.TICKET_NOTE, TicketNote(None, "agent7", "回访客户")),
    (
        codec.TICKET,
        Ticket(
            "TT1",
            "P000000000001",
            "信号差",
            "客户反映家中信号差",
            "fault",
            "major",
            "high",
            "inProgress",
            WHEN,
            None,
            "app",
            (TicketNote(WHEN, "agent7", "已派单"),),
        ),
    ),
    (
        codec.INTERACTION,
        Interaction(
            "PI1",
            "P000000000001",
            WHEN,
            None,
            "ivr",
            "inbound",
            "查询话费",
            "客户查询余额",
            "completed",
        ),
    ),
    (codec.page_of(codec.BILL), Page(12, ())),
    (codec.tuple_of(codec.SUBSCRIPTION), ()),
]


@pytest.mark.parametrize(("record_codec", "record"), SAMPLES, ids=lambda v: type(v).__name__)
def test_every_record_type_survives_a_json_round_trip(record_codec, record):
    text = record_codec.dumps(record)
    json.loads(text)  # plain JSON, nothing else
    back = record_codec.loads(text)
    assert back == record
    assert type(back) is type(record)


async def test_records_read_from_the_simulators_survive_a_json_round_trip(raw, customers):
    boss, billing, care = raw
    bundle = customers[21]
    no, account, party = bundle.customer.customer_no, bundle.account.id, bundle.party.id
    checks = [
        (codec.PROFILE, (await boss.get_customers([no]))[no]),
        (codec.tuple_of(codec.SUBSCRIPTION), tuple((await boss.get_subscriptions([no]))[no])),
        (codec.tuple_of(codec.OFFERING), tuple(await boss.get_offerings())),
        (codec.ACCOUNT, (await billing.get_accounts([account]))[account]),
        (codec.BALANCE, (await billing.get_balances([account]))[account]),
        (codec.page_of(codec.BILL), await billing.list_bills(account, 0, 12)),
        (codec.page_of(codec.PAYMENT), await billing.list_payments(account, 0, 12)),
        (codec.tuple_of(codec.PARTY), tuple(await care.find_parties(msisdns=[bundle.party.phone]))),
        (codec.tuple_of(codec.TICKET), tuple((await care.get_tickets([party]))[party])),
        (codec.tuple_of(codec.INTERACTION), tuple((await care.get_interactions([party]))[party])),
    ]
    for record_codec, value in checks:
        assert record_codec.loads(record_codec.dumps(value)) == value


def test_the_ttl_defaults_agree_with_the_settings():
    assert CacheTtlSettings().model_dump() == DEFAULT_TTLS


# --- reads --------------------------------------------------------------------------------------


async def test_concurrent_misses_of_one_customer_make_one_backend_call(
    cached, memory_cache, control, customers
):
    boss, _, _ = cached
    no = customers[22].customer.customer_no
    control.set("boss", latency_ms=[50, 50])
    answers = await asyncio.gather(*(boss.get_customers([no]) for _ in range(20)))
    assert all(answer[no].customer_no == no for answer in answers)
    assert control.calls("boss") == {"QueryCustomer": 1}
    assert memory_cache.stats.shared["profile"] == 19

    again = await boss.get_customers([no])
    assert again == answers[0]
    assert control.calls("boss") == {"QueryCustomer": 1}
    assert memory_cache.stats.hits["profile"] == 1


async def test_batch_reads_fetch_only_the_missing_keys(
    raw, cached, memory_cache, control, customers
):
    boss, _, care = cached
    a, b, c = (customers[i].customer.customer_no for i in (23, 24, 25))
    await boss.get_subscriptions([a, b])
    lines = await boss.get_subscriptions([a, b, c, a])
    assert list(lines) == [a, b, c]
    assert control.calls("boss") == {"QuerySubscribers": 2}
    assert (
        memory_cache.stats.hits["subscriptions"],
        memory_cache.stats.misses["subscriptions"],
    ) == (
        2,
        3,
    )
    assert lines == {k: tuple(v) for k, v in (await raw[0].get_subscriptions([a, b, c])).items()}

    # A party without tickets is cached as such (an empty list), not asked again.
    parties = [customers[i].party.id for i in (23, 24, 25)]
    first = await care.get_tickets(parties)
    assert await care.get_tickets(parties) == first
    assert sum(control.calls("care").values()) == 1


async def test_a_failed_backend_call_is_shared_and_not_cached(cached, control, customers):
    boss, _, _ = cached
    no = customers[26].customer.customer_no
    control.set("boss", down=True)
    outcomes = await asyncio.gather(
        *(boss.get_customers([no]) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, Unavailable) for o in outcomes)
    assert control.calls("boss") == {"QueryCustomer": 3}  # one read, its retries, for all five
    control.set("boss", down=False)
    assert no in await boss.get_customers([no])
    assert control.calls("boss") == {"QueryCustomer": 4}


async def test_bills_and_payments_pages_are_sliced_from_one_cached_window(
    raw, cached, control, customers
):
    _, billing, _ = cached
    account = customers[27].account.id
    pages = [await billing.list_bills(account, offset, 3) for offset in (0, 3, 9)]
    payments = [await billing.list_payments(account, offset, 2) for offset in (0, 2)]
    assert sum(control.calls("billing").values()) == 2  # one window each
    raw_billing = raw[1]
    assert pages == [await raw_billing.list_bills(account, offset, 3) for offset in (0, 3, 9)]
    assert payments == [await raw_billing.list_payments(account, offset, 2) for offset in (0, 2)]
    assert pages[0].total == 12


async def test_identity_lookups_are_not_cached(cached, control, customers):
    _, billing, care = cached
    bundle = customers[28]
    for _ in range(2):
        await billing.find_accounts(certificate_nos=[bundle.account.certificate_number])
        await care.find_parties(id_card_numbers=[bundle.customer.cert_no])
    assert sum(control.calls("billing").values()) == 2
    assert sum(control.calls("care").values()) == 2


async def test_the_line_found_by_msisdn_is_cached(cached, control, customers):
    boss, _, _ = cached
    line = active_line(customers[29])
    first = await boss.find_subscription_by_msisdn(line.msisdn)
    assert await boss.find_subscription_by_msisdn(line.msisdn) == first
    assert control.calls("boss") == {"QuerySubscriberByMsisdn": 1}


# --- writes -------------------------------------------------------------------------------------


async def test_a_plan_change_evicts_the_customers_lines_and_bills(cached, control, customers):
    boss, billing, _ = cached
    bundle = customers[361]
    no, account, line = bundle.customer.customer_no, bundle.account.id, active_line(bundle)
    await billing.get_accounts([account])  # tells the cache which account serves the line
    before = await boss.get_subscriptions([no])
    await boss.find_subscription_by_msisdn(line.msisdn)
    await billing.get_balances([account])
    await billing.list_bills(account, 0, 3)
    await boss.get_subscriptions([no])
    control.reset()

    order = await boss.change_offering(line.subscriber_no, "OF0011", f"test-{uuid.uuid4()}")
    try:
        after = await boss.get_subscriptions([no])
        assert control.calls("boss")["QuerySubscribers"] == 1
        changed = next(s for s in after[no] if s.subscriber_no == line.subscriber_no)
        assert changed.offering_id == "OF0011"
        assert next(s for s in before[no] if s.subscriber_no == line.subscriber_no).offering_id == (
            line.offering_id
        )
        by_msisdn = await boss.find_subscription_by_msisdn(line.msisdn)
        assert by_msisdn.offering_id == "OF0011"
        await billing.get_balances([account])
        await billing.list_bills(account, 0, 3)
        assert sum(control.calls("billing").values()) == 2
    finally:
        await boss.cancel_order(order.id, f"test-cancel-{uuid.uuid4()}")
    # Cancelling is a plan change too: the old offering shows again.
    restored = await boss.get_subscriptions([no])
    assert next(s for s in restored[no] if s.subscriber_no == line.subscriber_no).offering_id == (
        line.offering_id
    )


async def test_a_balance_adjustment_evicts_the_accounts_balance_and_bills(
    cached, control, customers
):
    _, billing, _ = cached
    account = customers[362].account.id
    before = (await billing.get_balances([account]))[account]
    await billing.list_bills(account, 0, 3)
    await billing.get_balances([account])
    assert sum(control.calls("billing").values()) == 2

    await billing.adjust_balance(account, Money(Decimal("1.00")), "test", f"adj-{uuid.uuid4()}")
    after = (await billing.get_balances([account]))[account]
    await billing.list_bills(account, 0, 3)
    assert sum(control.calls("billing").values()) == 5  # 2 reads, the write, 2 reads again
    assert (
        after.amount.amount + after.overdue.amount != before.amount.amount + before.overdue.amount
    )


async def test_ticket_writes_evict_the_partys_tickets(cached, control, customers):
    _, _, care = cached
    party = customers[363].party.id
    await care.get_tickets([party])
    ticket = await care.create_ticket(
        party,
        ticket_type="inquiry",
        name="test",
        description="cache eviction test",
        severity="minor",
        channel="agent",
        idempotency_key=f"tt-{uuid.uuid4()}",
    )
    assert ticket.id in {t.id for t in (await care.get_tickets([party]))[party]}
    await care.update_ticket(ticket.id, status="resolved")
    (updated,) = [t for t in (await care.get_tickets([party]))[party] if t.id == ticket.id]
    assert updated.status == "resolved"
    assert sum(n for op, n in control.calls("care").items() if op.startswith("GET")) == 3


async def test_writes_through_the_cache_are_never_retried(cached, control, customers):
    boss, billing, care = cached
    bundle = customers[364]
    for system in ("boss", "billing", "care"):
        control.set(system, failure_rate=1.0)
    with pytest.raises(Unavailable):
        await boss.change_offering(active_line(bundle).subscriber_no, "OF0011", f"k-{uuid.uuid4()}")
    with pytest.raises(Unavailable):
        await billing.adjust_balance(
            bundle.account.id, Money(Decimal("1.00")), "test", f"k-{uuid.uuid4()}"
        )
    with pytest.raises(Unavailable):
        await care.create_ticket(
            bundle.party.id,
            ticket_type="inquiry",
            name="test",
            description="never twice",
            severity="minor",
            channel="agent",
            idempotency_key=f"k-{uuid.uuid4()}",
        )
    assert control.calls("boss") == {"ChangeOffering": 1}
    assert posts(control, "billing") == 1
    assert posts(control, "care") == 1


async def test_evict_customer_drops_everything_cached_about_them(
    cached, memory_cache, control, customers
):
    boss, billing, care = cached
    bundle = customers[30]
    no, account, party = bundle.customer.customer_no, bundle.account.id, bundle.party.id

    async def read_all() -> None:
        await boss.get_customers([no])
        await boss.get_subscriptions([no])
        await billing.get_accounts([account])
        await billing.get_balances([account])
        await care.get_tickets([party])
        await care.get_interactions([party])

    await read_all()
    await read_all()
    calls = {s: control.total(s) for s in ("boss", "billing", "care")}
    assert calls == {"boss": 2, "billing": 2, "care": 2}
    await memory_cache.evict_customer(no, [account], [party])
    await read_all()
    assert {s: control.total(s) for s in ("boss", "billing", "care")} == {
        "boss": 4,
        "billing": 4,
        "care": 4,
    }


async def test_a_cache_that_fails_is_only_a_miss(raw, control, customers):
    (port,) = free_ports(1)
    broken = RecordCache.on_redis(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    try:
        boss = CachedCustomerSystem(raw[0], broken)
        no = customers[31].customer.customer_no
        assert no in await boss.get_customers([no])
        assert no in await boss.get_customers([no])
        assert control.calls("boss") == {"QueryCustomer": 2}
        assert broken.stats.errors >= 2
    finally:
        await broken.close()


# --- wiring -------------------------------------------------------------------------------------


async def test_the_wiring_wraps_the_adapters_only_when_the_cache_is_on(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    try:
        on = build_backends(load_settings(), engine)
        off = build_backends(load_settings(cache={"enabled": False}), engine)
        assert isinstance(on.backends.billing, CachedBillingSystem) and on.cache is not None
        # Unwrapped: the adapter that plays the role itself (the declared billing system).
        assert isinstance(off.backends.billing, DeclaredBilling) and off.cache is None
        for wiring in (on, off):
            backends = wiring.backends
            assert isinstance(backends.customer_system, CustomerSystem)
            assert isinstance(backends.billing, BillingSystem)
            assert isinstance(backends.care, CareSystem)
            assert set(wiring.guards) == {"boss", "billing", "care"}
            await wiring.close()
    finally:
        await engine.dispose()


@pytest.mark.redis
async def test_the_wiring_builds_a_redis_cache_from_its_url(tmp_path, sims, redis_url, customers):
    import redis.asyncio as redis

    namespace = f"sbtest-{uuid.uuid4().hex[:12]}"
    settings = load_settings(
        boss={"base_url": sims.boss},
        cache={"backend": "redis", "redis_url": redis_url, "namespace": namespace},
    )
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    wiring = build_backends(settings, engine)
    client = redis.Redis.from_url(redis_url)
    no = customers[37].customer.customer_no
    try:
        assert no in await wiring.backends.customer_system.get_customers([no])
        assert await client.exists(f"{namespace}:v{codec.CODEC_VERSION}:profile:{no}")
    finally:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await wiring.close()
        await engine.dispose()


# --- Redis (scaled mode) ------------------------------------------------------------------------


@pytest.fixture
async def redis_cache(redis_url):
    import redis.asyncio as redis

    cache = RecordCache.on_redis(redis_url, namespace=f"sbtest-{uuid.uuid4().hex[:12]}")
    client = redis.Redis.from_url(redis_url)
    yield cache, client
    try:
        keys = [key async for key in client.scan_iter(match=f"{cache.prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
        await cache.close()


@pytest.mark.redis
async def test_redis_mode_shares_one_call_and_stores_json(raw, redis_cache, control, customers):
    cache, client = redis_cache
    boss = CachedCustomerSystem(raw[0], cache)
    billing = CachedBillingSystem(raw[1], cache)
    bundle = customers[32]
    no, account = bundle.customer.customer_no, bundle.account.id

    answers = await asyncio.gather(*(boss.get_subscriptions([no]) for _ in range(20)))
    assert control.calls("boss") == {"QuerySubscribers": 1}
    assert await boss.get_subscriptions([no]) == answers[0]
    assert control.calls("boss") == {"QuerySubscribers": 1}
    expected = (await raw[0].get_subscriptions([no]))[no]
    assert answers[0][no] == tuple(expected)

    page = await billing.list_bills(account, 0, 3)
    assert await billing.list_bills(account, 0, 3) == page
    assert sum(control.calls("billing").values()) == 1

    stored = await client.get(f"{cache.prefix}subscriptions:{no}")
    assert json.loads(stored)[0]["customer_no"] == no  # JSON, not pickle
    ttl = await client.pttl(f"{cache.prefix}subscriptions:{no}")
    assert 0 < ttl <= DEFAULT_TTLS["subscriptions"] * 1000


@pytest.mark.redis
async def test_redis_mode_evicts_on_write(raw, redis_cache, control, customers):
    cache, client = redis_cache
    care = CachedCareSystem(raw[2], cache)
    party = customers[365].party.id
    await care.get_tickets([party])
    assert await client.exists(f"{cache.prefix}tickets:{party}")
    ticket = await care.create_ticket(
        party,
        ticket_type="inquiry",
        name="test",
        description="redis eviction test",
        severity="minor",
        channel="agent",
        idempotency_key=f"tt-{uuid.uuid4()}",
    )
    assert not await client.exists(f"{cache.prefix}tickets:{party}")
    assert ticket.id in {t.id for t in (await care.get_tickets([party]))[party]}


@pytest.mark.redis
async def test_redis_mode_treats_an_unreadable_entry_as_a_miss(
    raw, redis_cache, control, customers
):
    cache, client = redis_cache
    boss = CachedCustomerSystem(raw[0], cache)
    no = customers[33].customer.customer_no
    await client.set(f"{cache.prefix}profile:{no}", '{"from": "older code"}', ex=60)
    assert (await boss.get_customers([no]))[no].customer_no == no
    assert control.calls("boss") == {"QueryCustomer": 1}
    assert cache.stats.errors == 1
    assert json.loads(await client.get(f"{cache.prefix}profile:{no}"))["customer_no"] == no


# --- the gateway with the cache on ----------------------------------------------------------------

QUERY_360 = """
query($id: ID!) { customer(id: $id) {
  profile { name } subscriptions { msisdn offering { id } }
  billingAccounts { id balance { amount { amount } } bills(first: 3) { totalCount } payments(first: 2) { totalCount } }
  tickets(first: 5) { id } interactions(first: 5) { id }
} }
"""  # noqa: E501
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"


def _issue_key_in_process(database_url: str, role: str = "agent", channel: str = "agent") -> str:
    """Like `switchboard keys create`, without paying a CLI process start."""

    async def issue() -> str:
        engine = create_engine(database_url)
        try:
            await upgrade(engine)
            issued = await ApiKeyStore(engine).issue(
                subject="test-cache", role=role, channel=channel, scopes=("customer:read",)
            )
            return issued.key
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(max_workers=1) as pool:  # the test may run inside a loop
        return pool.submit(asyncio.run, issue()).result()


CACHED_GATEWAY_APP_KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def cached_gateway(sims, tmp_path_factory):
    state = tmp_path_factory.mktemp("cachedhub")
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{state}/hub.db",
        SWITCHBOARD_BILLING__TIMEOUT_S="1.0",
        SWITCHBOARD_BILLING__RETRY_ATTEMPTS="1",
        SWITCHBOARD_BILLING__BREAKER_FAILURE_THRESHOLD="2",
        SWITCHBOARD_BILLING__BREAKER_RESET_S="600",
        # The record cache is what these tests read; whole answers have tests of their own
        # (tests/test_answer_cache.py), and a kept answer would spare the records any hit.
        SWITCHBOARD_CACHE__ANSWERS__ENABLED="false",
    )
    key = _issue_key_in_process(f"sqlite+aiosqlite:///{state}/hub.db")
    app_key = _issue_key_in_process(f"sqlite+aiosqlite:///{state}/hub.db", "customer", "app")
    with running_gateway(env, state / "gateway.log") as url:
        CACHED_GATEWAY_APP_KEYS[url] = app_key
        yield url, {"X-Api-Key": key, "X-Purpose": "service"}


def ask(gateway, query: str, variables: dict) -> dict:
    url, headers = gateway
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def metric(gateway, name: str) -> float:
    text = httpx.get(f"{gateway[0]}/metrics").text
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[-1])


def test_the_gateway_serves_a_repeated_360_from_the_cache(cached_gateway, control, customers):
    msisdn = active_line(customers[34]).msisdn
    hub_id = ask(cached_gateway, FIND, {"m": msisdn})["data"]["customerByMsisdn"]["id"]
    first = ask(cached_gateway, QUERY_360, {"id": hub_id})
    assert "errors" not in first, first
    control.reset()
    assert ask(cached_gateway, QUERY_360, {"id": hub_id}) == first
    assert ask(cached_gateway, FIND, {"m": msisdn})["data"]["customerByMsisdn"]["id"] == hub_id
    assert {s: control.total(s) for s in ("boss", "billing", "care")} == {
        "boss": 0,
        "billing": 0,
        "care": 0,
    }
    assert metric(cached_gateway, 'switchboard_cache_hits_total{kind="balance"}') >= 1
    assert metric(cached_gateway, "switchboard_cache_enabled") == 1


def test_the_gateway_opens_billings_circuit_and_reports_it(cached_gateway, control, customers):
    hub_ids = [
        ask(cached_gateway, FIND, {"m": active_line(customers[i]).msisdn})["data"][
            "customerByMsisdn"
        ]["id"]
        for i in (35, 36)
    ]
    control.set("billing", down=True)
    for hub_id in hub_ids:  # not cached yet: each asks billing, and fails
        body = ask(cached_gateway, QUERY_360, {"id": hub_id})
        assert body["data"]["customer"]["profile"] is not None  # BOSS and care still answer
        assert {e["extensions"]["code"] for e in body["errors"]} == {"BACKEND_UNAVAILABLE"}
    calls = control.total("billing")
    # Open: the next request fails fast, without a call to billing.
    body = ask(cached_gateway, QUERY_360, {"id": hub_ids[0]})
    assert {e["extensions"]["code"] for e in body["errors"]} == {"BACKEND_UNAVAILABLE"}
    assert "circuit open" in body["errors"][0]["message"]
    ready = httpx.get(f"{cached_gateway[0]}/readyz")
    assert ready.status_code == 503
    billing = ready.json()["backends"]["billing"]
    assert (billing["status"], billing["circuit"]) == ("down", "open")
    assert "opened_at" in billing
    assert ready.json()["backends"]["care"]["circuit"] == "closed"
    assert control.total("billing") == calls  # an open circuit is not probed
    assert metric(cached_gateway, 'switchboard_backend_circuit_state{backend="billing"}') == 2
    assert metric(cached_gateway, 'switchboard_backend_rejected_total{backend="billing"}') >= 1


def test_a_masked_channel_never_gets_a_clear_value_from_the_cache(
    cached_gateway, control, customers, sims
):
    from gateway.compare import verify_by_otp
    from policies.masks import mask_name

    bundle = customers[37]
    line = active_line(bundle).msisdn
    hub_id = ask(cached_gateway, FIND, {"m": line})["data"]["customerByMsisdn"]["id"]
    clear = ask(cached_gateway, QUERY_360, {"id": hub_id})  # the agent, purpose service
    assert bundle.customer.name in str(clear)
    url, _ = cached_gateway
    # The app reads only the customer verified by OTP (the code goes out through care).
    with httpx.Client(timeout=30) as client:
        token = verify_by_otp(client, url, CACHED_GATEWAY_APP_KEYS[url], hub_id, line, sims.care)
    control.reset()
    app = (url, {"X-Api-Key": CACHED_GATEWAY_APP_KEYS[url], "X-Verification": token})
    masked = ask(app, QUERY_360, {"id": hub_id})
    assert mask_name(bundle.customer.name) in str(masked)
    assert {s: control.total(s) for s in ("boss", "billing", "care")} == {
        "boss": 0,
        "billing": 0,
        "care": 0,
    }  # the app's answer came from the cache the agent filled...
    assert bundle.customer.name not in str(masked)  # ...and still went through the policy
    assert line not in str(masked)
