"""The decision and its guards on the hub's real database (SQLite and PostgreSQL): caps exact
under concurrent deciders, quiet hours, consent, complaint suppression, control group, replay."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import MetaData, func, select

from gateway.database import create_engine
from marketing import offer_store as marketing_store
from marketing.audience import in_control_group
from marketing.campaigns import CampaignBook, Guards, load_campaigns
from marketing.decide import Decider, GuardContext
from marketing.events import BusinessEvent
from marketing.offer_store import MarketingStore, hub_contact, hub_offer
from orchestration import store as request_store
from orchestration.store import RequestStore
from tests.conftest import engine_with_empty_tables

# 10:00 in Shanghai: outside the bundled quiet hours (21:00-08:00).
DAYTIME = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
NIGHT = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai


def _metadata() -> MetaData:
    merged = MetaData()
    for source in (marketing_store.metadata, request_store.metadata):
        for table in source.tables.values():
            table.to_metadata(merged)
    return merged


def _book(**guards: object) -> CampaignBook:
    book = load_campaigns()
    # Every customer in the treated group: the control share is tested on its own below.
    campaigns = tuple(dataclasses.replace(c, control_share=0.0) for c in book.campaigns)
    return dataclasses.replace(
        book, campaigns=campaigns, guards=dataclasses.replace(book.guards, **guards)
    )


def _event(
    n: int, customer: str, kind: str = "usage.threshold_crossed", **payload
) -> BusinessEvent:
    return BusinessEvent(
        event_id=f"boss:{kind}:{customer}:{n}",
        event_type=kind,
        source="boss",
        occurred_at=DAYTIME,
        customer_id=customer,
        subscriber="+8613800000000",
        payload=payload or {"percent": 85},
    )


def _customer(n: int) -> str:
    return f"cus_{n:020x}"


@pytest.fixture
async def engine(hub_database_url: str):
    engine = await engine_with_empty_tables(hub_database_url, _metadata())
    yield engine
    await engine.dispose()


def _decider(engine, book: CampaignBook, clock=lambda: DAYTIME) -> Decider:
    return Decider(engine, lambda: book, GuardContext("Asia/Shanghai", True, clock))


async def test_each_event_type_triggers_its_campaign(engine) -> None:
    decider = _decider(engine, _book())
    payloads = {
        "usage.threshold_crossed": {"percent": 80},
        "roaming.started": {"country": "JP"},
        "bill.issued": {},
        "bill.overdue": {"days_overdue": 31},
        "payment.received": {},
        "line.suspended": {},
        "line.resumed": {"days_off": 95},
        "ticket.resolved": {},
    }
    expected = {
        "usage.threshold_crossed": "data-topup-80",
        "roaming.started": "roaming-welcome",
        "bill.issued": "bill-issued-autopay",
        "bill.overdue": "overdue-retention",
        "payment.received": "thanks-for-paying",
        "line.suspended": "suspended-winback",
        "line.resumed": "welcome-back",
        "ticket.resolved": "ticket-resolved-care",
    }
    for n, (kind, payload) in enumerate(payloads.items()):
        decisions = await decider.decide([_event(n, _customer(100 + n), kind, **payload)])
        assert [d.campaign for d in decisions] == [expected[kind]], kind
        assert decisions[0].outcome in ("RESERVED", "AVAILABLE")
    # Below the payload condition nothing matches.
    assert await decider.decide([_event(99, _customer(200), percent=50)]) == []
    assert await decider.decide([_event(98, _customer(201), "line.resumed", days_off=10)]) == []


async def test_caps_are_exact_with_two_concurrent_deciders(engine, hub_database_url: str) -> None:
    # One customer, many campaigns' worth of events: the sms day cap is 1, overall 2.
    book = _book()
    other = create_engine(hub_database_url)
    try:
        first, second = _decider(engine, book), _decider(other, book)
        customers = [_customer(n) for n in range(30)]
        kinds = [
            ("usage.threshold_crossed", {"percent": 90}),
            ("roaming.started", {}),
            ("line.resumed", {"days_off": 120}),
            ("bill.issued", {}),
            ("payment.received", {}),
        ]
        events = [
            _event(i, c, kind, **payload)
            for c in customers
            for i, (kind, payload) in enumerate(kinds)
        ]
        half = len(events) // 2
        batches = [events[i : i + 7] for i in range(0, len(events), 7)]
        await asyncio.gather(
            *(first.decide(b) for b in batches[: len(batches) // 2]),
            *(second.decide(b) for b in batches[len(batches) // 2 :]),
            # The same events again, concurrently: a replay decides nothing more.
            second.decide(events[:half]),
        )
    finally:
        await other.dispose()
    store = MarketingStore(engine)
    caps = book.guards.caps["day"]
    async with engine.connect() as conn:
        offers = (await conn.execute(select(func.count()).select_from(hub_offer))).scalar()
        assert offers == len(events)  # one per (campaign, customer), replay included
        for customer in customers:
            rows = (
                await conn.execute(select(hub_contact).where(hub_contact.c.customer_id == customer))
            ).all()
            sms = [r for r in rows if r.channel == "sms"]
            assert len(rows) == caps["overall"], customer
            assert len(sms) <= caps["sms"], customer  # app campaigns may use the overall cap first
            counted = await store.contacts(customer)
            assert counted[("overall", rows[0].day)] == caps["overall"]
            assert counted[("sms", rows[0].day)] == len(sms)
            refused = (
                (
                    await conn.execute(
                        select(hub_offer.c.guard).where(
                            hub_offer.c.customer_id == customer, hub_offer.c.state == "SUPPRESSED"
                        )
                    )
                )
                .scalars()
                .all()
            )
            assert refused and all(g.startswith("cap_day_") for g in refused)


async def test_quiet_hours_refuse_contacts_but_not_the_agent_console(engine) -> None:
    decider = _decider(engine, _book(), clock=lambda: NIGHT)
    decisions = await decider.decide(
        [_event(1, _customer(1)), _event(2, _customer(1), "bill.overdue", days_overdue=40)]
    )
    by_campaign = {d.campaign: d for d in decisions}
    assert by_campaign["data-topup-80"].outcome == "SUPPRESSED"
    assert by_campaign["data-topup-80"].guard == "quiet_hours"
    assert by_campaign["data-topup-80"].refusals == {"sms": "quiet_hours", "app": "quiet_hours"}
    assert by_campaign["overdue-retention"].outcome == "AVAILABLE"


async def test_consent_withdrawn_on_one_channel_moves_to_the_next(engine) -> None:
    store = MarketingStore(engine)
    decider = _decider(engine, _book())
    customer = _customer(7)
    await store.set_consent(customer, "sms", "marketing", False, changed_in="app", changed_by="k1")
    first = await decider.decide([_event(1, customer)])
    assert (first[0].outcome, first[0].channel) == ("RESERVED", "app")
    assert first[0].refusals == {"sms": "consent"}
    await store.set_consent(
        customer, "app", "marketing", False, changed_in="agent", changed_by="k2"
    )
    second = await decider.decide([_event(2, customer, "roaming.started")])
    assert (second[0].outcome, second[0].guard) == ("SUPPRESSED", "consent")
    # Granted again: honoured on the next event.
    await store.set_consent(customer, "sms", "marketing", True, changed_in="web", changed_by="k3")
    third = await decider.decide([_event(3, customer, "line.resumed", days_off=100)])
    assert (third[0].outcome, third[0].channel) == ("RESERVED", "sms")


async def test_open_or_recent_complaint_suppresses(engine) -> None:
    requests = RequestStore(engine)
    decider = _decider(engine, _book())
    open_customer, recent_customer = _customer(11), _customer(12)
    await requests.create_request(
        "complaint-" + "a" * 24,
        kind="complaint",
        customer_id=open_customer,
        channel="app",
        started_by="k",
    )
    await requests.create_request(
        "complaint-" + "b" * 24,
        kind="complaint",
        customer_id=recent_customer,
        channel="app",
        started_by="k",
    )
    await requests.transition("complaint-" + "b" * 24, "archived", "ARCHIVED", status="DONE")
    decisions = await decider.decide([_event(1, open_customer), _event(2, recent_customer)])
    assert [(d.outcome, d.guard) for d in decisions] == [("SUPPRESSED", "complaint")] * 2
    # With no cool-down, an archived complaint no longer suppresses; an open one still does.
    # (A clock past the archive: 10:00 in Shanghai tomorrow, outside quiet hours.)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=2, minute=0)
    relaxed = _decider(engine, _book(complaint_cooldown_days=0), clock=lambda: tomorrow)
    again = await relaxed.decide(
        [_event(3, open_customer, "roaming.started"), _event(4, recent_customer, "roaming.started")]
    )
    assert [(d.outcome, d.guard) for d in again] == [
        ("SUPPRESSED", "complaint"),
        ("RESERVED", None),
    ]


async def test_replayed_event_decides_nothing_twice(engine) -> None:
    decider = _decider(engine, _book())
    event = _event(1, _customer(21))
    first = await decider.decide([event])
    second = await decider.decide([event])
    assert first[0].outcome == "RESERVED"
    assert second[0].outcome == "DUPLICATE" and second[0].existing_state == "RESERVED"
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(hub_contact))).scalar() == 1


async def test_control_group_is_a_fixed_share_never_contacted(engine) -> None:
    book = load_campaigns()  # bundled control shares (0.1)
    campaign = book.by_id("data-topup-80")
    assert campaign is not None
    customers = [_customer(n) for n in range(2000)]
    members = [c for c in customers if in_control_group(campaign, c)]
    assert 150 < len(members) < 250  # about 10 %, and the same on every call
    assert members == [c for c in customers if in_control_group(campaign, c)]
    decider = _decider(engine, book)
    decisions = await decider.decide([_event(1, c) for c in members[:5]])
    assert {d.outcome for d in decisions} == {"CONTROL"}
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(hub_contact))).scalar() == 0


def test_guards_quiet_hours_over_midnight() -> None:
    from datetime import time

    guards = Guards(caps={}, quiet_start=time(21), quiet_end=time(8))
    assert guards.in_quiet_hours(time(22)) and guards.in_quiet_hours(time(7, 59))
    assert not guards.in_quiet_hours(time(8)) and not guards.in_quiet_hours(time(20, 59))
