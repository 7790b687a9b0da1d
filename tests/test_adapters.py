"""Adapters against the real simulators: the error taxonomy, retries and idempotency keys."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from lxml import etree

from adapters.billing import BillingAdapter
from adapters.boss import BossAdapter
from adapters.care import CareAdapter
from adapters.declared.registry import BUNDLED_SYSTEMS_DIR, load_registry
from adapters.declared.roles import play
from adapters.errors import BadResponse, BusinessRejected, NotFound, TimedOut, Unavailable
from adapters.records import Money, StarLevel
from adapters.resilience import Endpoint
from tests.harness import free_ports

#: The [boss] table's own keys, as the wiring hands them to either engine.
BOSS_SETTINGS = {
    "wsdl_path": "/boss/services/BossService?wsdl",
    "service_path": "/boss/services/BossService",
    "login_system_code": "SWITCHBOARD",
}


def boss_adapter(url: str, engine: str = "handwritten", **endpoint: object):
    """The customer role: the hand-written adapter, or the bundled declared system."""
    reached = Endpoint("boss", url, **endpoint)  # type: ignore[arg-type]
    if engine == "handwritten":
        return BossAdapter(reached, **BOSS_SETTINGS)
    spec = load_registry(BUNDLED_SYSTEMS_DIR).playing("customer")
    assert spec is not None
    return play(spec, reached, BOSS_SETTINGS)


@pytest.fixture(params=["declared", "handwritten"])
async def boss(sims, request):
    adapter = boss_adapter(sims.boss, request.param, timeout_s=1.0)
    await adapter.start()
    yield adapter
    await adapter.close()


def declared_role(role: str, endpoint: Endpoint):
    """The bundled declaration that plays ``role``, reached through ``endpoint``."""
    spec = load_registry(BUNDLED_SYSTEMS_DIR).playing(role)
    assert spec is not None
    return play(spec, endpoint)


def billing_adapter(base_url: str, engine: str, timeout_s: float = 1.0):
    """The billing role: the hand-written adapter, or the bundled declared system."""
    endpoint = Endpoint("billing", base_url, timeout_s=timeout_s)
    return (
        BillingAdapter(endpoint) if engine == "handwritten" else declared_role("billing", endpoint)
    )


@pytest.fixture(params=["declared", "handwritten"])
async def billing(sims, request):
    adapter = billing_adapter(sims.billing, request.param)
    yield adapter
    await adapter.close()


def care_adapter(base_url: str, engine: str, timeout_s: float = 1.0):
    """The care role: the hand-written adapter, or the bundled declared system."""
    endpoint = Endpoint("care", base_url, timeout_s=timeout_s)
    return CareAdapter(endpoint) if engine == "handwritten" else declared_role("care", endpoint)


@pytest.fixture(params=["declared", "handwritten"])
async def care(sims, request):
    adapter = care_adapter(sims.care, request.param)
    yield adapter
    await adapter.close()


async def test_boss_reads_through_the_published_wsdl(boss, control, customers):
    bundle = customers[3]
    profiles = await boss.get_customers([bundle.customer.customer_no, "1999999999"])
    assert list(profiles) == [bundle.customer.customer_no]
    assert profiles[bundle.customer.customer_no].certificate_no == bundle.customer.cert_no
    lines = await boss.get_subscriptions([bundle.customer.customer_no])
    assert {s.msisdn for s in lines[bundle.customer.customer_no]} == {
        s.msisdn for s in bundle.subscribers
    }
    page = await boss.search_customers(0, 5, star_level=StarLevel.GOLD)
    assert page.total > 0 and all(p.star_level is StarLevel.GOLD for p in page.items)
    assert control.calls("boss") == {
        "QueryCustomer": 1,
        "QuerySubscribers": 1,
        "QueryCustomerList": 1,
    }


async def test_a_non_zero_result_code_is_not_found(boss):
    with pytest.raises(NotFound) as raised:
        await boss.find_subscription_by_msisdn("13000000000")
    assert raised.value.backend_code == "102010002"


async def test_a_soap_client_fault_becomes_the_taxonomy(boss, customers):
    with pytest.raises(NotFound) as raised:
        await boss.get_order("ORD2026010100000000")
    assert raised.value.backend_code == "103030004"
    line = customers[1].subscribers[0]
    with pytest.raises(BusinessRejected) as rejected:
        await boss.change_offering(line.subscriber_no, "OF9999", "key-unknown-offering")
    assert rejected.value.backend_code == "103020010"


async def test_reads_are_retried_but_writes_never_are(boss, control, customers):
    control.set("boss", failure_rate=1.0)
    with pytest.raises(Unavailable):
        await boss.get_customers([customers[0].customer.customer_no])
    assert control.calls("boss") == {"QueryCustomer": 3}

    control.reset()
    control.set("boss", failure_rate=1.0)
    line = customers[0].subscribers[0]
    with pytest.raises(Unavailable):
        await boss.change_offering(line.subscriber_no, "OF0011", f"key-{uuid.uuid4()}")
    assert control.calls("boss") == {"ChangeOffering": 1}


async def test_change_offering_is_idempotent_per_key(boss, control, customers):
    line = next(
        s
        for c in customers[40:]
        for s in c.subscribers
        if s.status == "A" and s.offering_id != "OF0011"
    )
    key = f"key-{uuid.uuid4()}"
    first = await boss.change_offering(line.subscriber_no, "OF0011", key)
    again = await boss.change_offering(line.subscriber_no, "OF0011", key)
    assert first.id == again.id and first.new_offering_id == "OF0011"
    cancelled = await boss.cancel_order(first.id, f"cancel-{key}")
    assert cancelled.status == "CANCELLED"


@pytest.mark.parametrize("engine", ["declared", "handwritten"])
async def test_a_slow_backend_times_out_within_its_budget(sims, control, customers, engine):
    adapter = boss_adapter(sims.boss, engine, timeout_s=0.3)
    await adapter.start()
    try:
        control.set("boss", latency_ms=[800, 800])
        with pytest.raises(TimedOut):
            await adapter.get_customers([customers[0].customer.customer_no])
        # The time budget covers retries: one attempt used it all.
        assert control.calls("boss") == {"QueryCustomer": 1}
    finally:
        await adapter.close()


async def test_garbage_and_outages_are_classified(boss, billing, care, control, customers):
    control.set("boss", bad_response=True)
    with pytest.raises(BadResponse):
        await boss.get_offerings()
    control.set("billing", bad_response=True)
    with pytest.raises(BadResponse):
        await billing.get_balances([customers[0].account.id])
    control.set("care", down=True)
    with pytest.raises(Unavailable):
        await care.get_tickets([customers[0].party.id])


@pytest.mark.parametrize("engine", ["declared", "handwritten"])
async def test_an_unreachable_backend_is_unavailable(engine):
    (port,) = free_ports(1)
    adapter = billing_adapter(f"http://127.0.0.1:{port}", engine, timeout_s=0.5)
    try:
        with pytest.raises(Unavailable):
            await adapter.get_accounts(["BA0000000001"])
    finally:
        await adapter.close()


@pytest.mark.parametrize("engine", ["declared", "handwritten"])
async def test_a_boss_unreachable_at_start_is_unavailable_not_fatal(engine):
    (port,) = free_ports(1)
    adapter = boss_adapter(f"http://127.0.0.1:{port}", engine, timeout_s=0.5)
    try:
        if engine == "handwritten":  # it fetches the WSDL from BOSS
            with pytest.raises(Unavailable):
                await adapter.start()
        else:  # the declaration's WSDL is a file beside it: start loads it
            await adapter.start()
        with pytest.raises(Unavailable):
            await adapter.get_customers(["1000000001"])
    finally:
        await adapter.close()


@pytest.mark.parametrize("engine", ["declared", "handwritten"])
async def test_the_wsdl_is_loaded_on_first_use_when_start_was_missed(sims, customers, engine):
    adapter = boss_adapter(sims.boss, engine, timeout_s=1.0)
    try:
        profiles = await adapter.get_customers([customers[0].customer.customer_no])
        assert customers[0].customer.customer_no in profiles
    finally:
        await adapter.close()


async def test_billing_and_care_map_tmf_resources(billing, care, customers):
    bundle = customers[2]
    (account,) = await billing.find_accounts(certificate_nos=[bundle.account.certificate_number])
    assert account.id == bundle.account.id
    bills = await billing.list_bills(account.id, 0, 5)
    assert bills.total == 12 and len(bills.items) == 5
    balance = (await billing.get_balances([account.id]))[account.id]
    assert balance.amount.currency == "CNY"
    with pytest.raises(NotFound):
        await billing.adjust_balance("BA0000000000", Money(Decimal("1.00")), "test", "k-404")
    (party,) = await care.find_parties(id_card_numbers=[bundle.customer.cert_no])
    assert party.id == bundle.party.id
    key = f"ticket-{uuid.uuid4()}"
    created = await care.create_ticket(
        party.id,
        ticket_type="complaint",
        name="test",
        description="signal drops at home",
        severity="minor",
        channel="app",
        idempotency_key=key,
    )
    repeated = await care.create_ticket(
        party.id,
        ticket_type="complaint",
        name="test",
        description="signal drops at home",
        severity="minor",
        channel="app",
        idempotency_key=key,
    )
    assert repeated.id == created.id
    updated = await care.update_ticket(created.id, status="inProgress", note="looking")
    assert updated.status == "inProgress" and updated.notes[-1].text == "looking"


async def test_the_declared_billing_reads_what_the_hand_written_adapter_reads(sims, customers):
    """The bundled billing files against the adapter they replace: the same canonical
    records for every read of the role, on a spread of the dataset's customers."""
    declared = billing_adapter(sims.billing, "declared")
    written = billing_adapter(sims.billing, "handwritten")
    try:
        bundles = customers[:40]
        ids = [b.account.id for b in bundles]
        certificates = [b.account.certificate_number for b in bundles]
        msisdns = [line.msisdn for b in bundles for line in b.subscribers][:60]
        for method, arguments in (
            ("get_accounts", (ids,)),
            ("get_balances", (ids,)),
        ):
            mine, theirs = await asyncio.gather(
                getattr(declared, method)(*arguments), getattr(written, method)(*arguments)
            )
            assert mine == theirs and len(mine) == len(set(ids)), method
        for kwargs in ({"certificate_nos": certificates}, {"msisdns": msisdns}):
            mine, theirs = await asyncio.gather(
                declared.find_accounts(**kwargs), written.find_accounts(**kwargs)
            )
            assert sorted(mine, key=lambda a: a.id) == sorted(theirs, key=lambda a: a.id)
            assert mine
        for account_id in ids[:5]:
            for method in ("list_bills", "list_payments"):
                for offset, limit in ((0, 5), (3, 20)):
                    mine = await getattr(declared, method)(account_id, offset, limit)
                    theirs = await getattr(written, method)(account_id, offset, limit)
                    assert mine == theirs, (method, offset, limit)
        assert await declared.get_accounts(["BA0000000000"]) == {}
    finally:
        await declared.close()
        await written.close()


async def test_the_declared_billing_adjusts_once_per_key(sims, customers):
    declared = billing_adapter(sims.billing, "declared")
    try:
        account = customers[5].account.id
        before = (await declared.get_balances([account]))[account].amount.amount
        key = f"adjust-{uuid.uuid4()}"
        first = await declared.adjust_balance(account, Money(Decimal("-2.50")), "test", key)
        again = await declared.adjust_balance(account, Money(Decimal("-2.50")), "test", key)
        assert first == again
        after = (await declared.get_balances([account]))[account].amount.amount
        assert after == before - Decimal("2.50")
    finally:
        await declared.close()


async def test_the_declared_care_reads_what_the_hand_written_adapter_reads(sims, customers):
    """The bundled care files against the adapter they replace: the same parties, tickets
    (with their notes) and interactions, on a spread of the dataset's customers."""
    declared = care_adapter(sims.care, "declared")
    written = care_adapter(sims.care, "handwritten")
    try:
        bundles = customers[:40]
        parties = [b.party.id for b in bundles] + ["P000000000000"]
        for method in ("get_tickets", "get_interactions"):
            mine, theirs = await asyncio.gather(
                getattr(declared, method)(parties), getattr(written, method)(parties)
            )
            assert mine == theirs, method
            assert set(mine) == set(parties) and mine["P000000000000"] == []
            assert any(mine.values()), method
        tickets = await declared.get_tickets(parties)
        assert any(t.notes for found in tickets.values() for t in found)
        for kwargs in (
            {"id_card_numbers": [b.party.id_card for b in bundles]},
            {"msisdns": [b.party.phone for b in bundles]},
        ):
            mine, theirs = await asyncio.gather(
                declared.find_parties(**kwargs), written.find_parties(**kwargs)
            )
            assert sorted(mine, key=lambda p: p.id) == sorted(theirs, key=lambda p: p.id)
            assert len(mine) == len(bundles)
            assert all(p.msisdns and p.id_card_numbers for p in mine)
    finally:
        await declared.close()
        await written.close()


async def test_the_declared_boss_reads_what_the_hand_written_adapter_reads(sims, customers):
    """The bundled BOSS files against the adapter they replace: the same canonical records
    (star levels, nested usage, dates, amounts) for every read of the role."""
    declared = boss_adapter(sims.boss, "declared", timeout_s=2.0)
    written = boss_adapter(sims.boss, "handwritten", timeout_s=2.0)
    await declared.start()
    await written.start()

    async def both(method: str, *arguments: object, **kwargs: object) -> object:
        mine, theirs = await asyncio.gather(
            getattr(declared, method)(*arguments, **kwargs),
            getattr(written, method)(*arguments, **kwargs),
        )
        assert mine == theirs, (method, arguments, kwargs)
        return mine

    try:
        bundles = customers[:120]
        numbers = [b.customer.customer_no for b in bundles]
        profiles = await both("get_customers", [*numbers, "1999999999"])
        assert len(profiles) == len(numbers)
        assert {p.star_level for p in profiles.values()} == set(StarLevel)
        lines = await both("get_subscriptions", numbers)
        assert sum(len(v) for v in lines.values()) >= len(numbers)
        for bundle in bundles[:10]:
            await both("find_customer_by_certificate", bundle.customer.cert_no)
            for line in bundle.subscribers:
                await both("find_subscription_by_msisdn", line.msisdn)
        for level in (None, *StarLevel):
            await both("search_customers", 0, 20, star_level=level)
        await both("search_customers", 7, 13)
        first = profiles[numbers[0]].name[:1]
        await both("search_customers", 0, 50, name_prefix=first)
        catalogue = await both("get_offerings")
        assert catalogue
        ids = [o.id for o in catalogue]
        await both("get_offerings", [ids[2], ids[0], ids[2]])
        line = bundles[3].subscribers[0]
        for offering in ids[:6]:
            await both("check_eligibility", line.subscriber_no, offering)
        target = next(
            s
            for c in customers[60:]
            for s in c.subscribers
            if s.status == "A" and s.offering_id != "OF0011"
        )
        order = await written.change_offering(target.subscriber_no, "OF0011", f"k-{uuid.uuid4()}")
        assert await both("get_order", order.id) == order
        for engine in (declared, written):
            with pytest.raises(NotFound):
                await engine.find_customer_by_certificate("110101190001010000")
    finally:
        await declared.close()
        await written.close()


@pytest.mark.parametrize("engine", ["declared", "handwritten"])
async def test_care_sends_one_message_per_key_and_a_change_names_only_what_it_changes(
    sims, customers, engine
):
    care = care_adapter(sims.care, engine)
    try:
        key = f"sms-{uuid.uuid4()}"
        msisdn = customers[3].party.phone
        first = await care.send_message(msisdn, "your code is 123456", key)
        assert first == await care.send_message(msisdn, "your code is 123456", key)
        created = await care.create_ticket(
            customers[3].party.id,
            ticket_type="inquiry",
            name="",
            description="what is my plan",
            severity="minor",
            channel="web",
            idempotency_key=f"t-{uuid.uuid4()}",
        )
        assert created.notes == () and created.priority == "medium"
        # Only the priority: the status and notes stay as they are, no header is sent.
        changed = await care.update_ticket(created.id, priority="high")
        assert (changed.priority, changed.status, changed.notes) == ("high", created.status, ())
        patch_key = f"p-{uuid.uuid4()}"
        noted = await care.update_ticket(created.id, note="called back", idempotency_key=patch_key)
        again = await care.update_ticket(created.id, note="called back", idempotency_key=patch_key)
        assert [n.text for n in again.notes] == [n.text for n in noted.notes] == ["called back"]
        with pytest.raises(NotFound):
            await care.update_ticket("TT0000000000", status="resolved")
    finally:
        await care.close()


async def test_the_declared_boss_sends_its_settings_in_every_request_header(sims):
    """login_system_code and service_path from the [boss] table reach the declaration; every
    attempt has a message id of its own, and names its operation."""
    spec = load_registry(BUNDLED_SYSTEMS_DIR).playing("customer")
    assert spec is not None
    adapter = play(
        spec,
        Endpoint("boss", sims.boss, timeout_s=1.0),
        {**BOSS_SETTINGS, "login_system_code": "CRM-EAST"},
    )
    engine = adapter.system.instances["boss"].engine
    await adapter.start()
    sent: list[dict] = []
    real = engine._http.send

    async def recording(method, path, **kwargs):
        # What went on the wire: the RequestHeader part of each envelope.
        envelope = etree.fromstring(kwargs["body"])
        part = next(e for e in envelope.iter() if etree.QName(e).localname == "RequestHeader")
        sent.append({etree.QName(c).localname: c.text for c in part})
        return await real(method, path, **kwargs)

    engine._http.send = recording
    try:
        await adapter.get_offerings()
        await adapter.get_customers(["1000000001"])
    finally:
        await adapter.close()
    assert [h["BusinessCode"] for h in sent] == ["QueryOfferings", "QueryCustomer"]
    assert {h["LoginSystemCode"] for h in sent} == {"CRM-EAST"}
    assert len({h["MessageSeq"] for h in sent}) == 2
    # service_path is where the calls go: elsewhere, BOSS is not there.
    moved = play(spec, Endpoint("boss", sims.boss, timeout_s=1.0), {"service_path": "/nowhere"})
    try:
        with pytest.raises((Unavailable, BadResponse)):
            await moved.get_offerings()
    finally:
        await moved.close()


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        ("102010002", "102010002"),  # a BOSS result code
        ("LTY-422", "LTY-422"),
        ("500", "500"),
        ("13800138000", None),  # a mobile number
        ("138-0013-8000", None),
        ("110101199003078888", None),  # an ID-card number
        ("13800138000 110101199003078888", None),
        ("x" * 33, None),  # long text
        ("{'phone': '13800138000'}", None),
        ("", None),
        (None, None),
    ],
)
def test_a_backend_s_error_code_is_shown_only_when_it_is_a_short_token(code, shown):
    from adapters.errors import BusinessRejected

    assert BusinessRejected("billing", "refused", backend_code=code).backend_code == shown
