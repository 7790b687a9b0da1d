"""The identity crosswalk, on SQLite and on PostgreSQL (the scaled mode), and the matching rules."""

from __future__ import annotations

import asyncio

import pytest

from adapters.identity import Candidate, CustomerKeys, match
from adapters.identity_store import IdentityStore, Link, SystemResolution, metadata
from tests.conftest import engine_with_empty_tables

CUSTOMER = CustomerKeys("1000000001", "110101199001011234", ("13800000001", "13800000002"))


def test_certificate_and_msisdn_agreeing_link():
    found = match(
        "billing", CUSTOMER, [Candidate("BA1", (CUSTOMER.certificate_no,), ("13800000002",))], []
    )
    assert found.links == (Link("billing", "BA1", "certificate+msisdn"),)
    assert found.outcome == "linked"


def test_a_number_held_under_another_certificate_is_a_conflict_not_a_link():
    other = Candidate("BA9", ("110101199001019999",), ("13800000001",))
    found = match("billing", CUSTOMER, [], [other])
    assert found.links == ()
    assert [c.kind for c in found.conflicts] == ["msisdn_under_other_certificate"]
    assert "110101" not in found.conflicts[0].detail  # no personal data in the record


def test_a_certificate_without_any_common_number_is_a_conflict():
    stranger = Candidate("P1", (CUSTOMER.certificate_no,), ("13900000000",))
    found = match("care", CUSTOMER, [stranger], [])
    assert found.outcome == "conflict" and found.links == ()


def test_nothing_found_is_absent():
    assert match("care", CUSTOMER, [], []).outcome == "absent"


@pytest.fixture
async def store(hub_database_url: str):
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    yield IdentityStore(engine)
    await engine.dispose()


async def test_concurrent_first_sightings_mint_one_hub_id(store):
    minted = await asyncio.gather(*(store.ensure_customers(["1000000042"]) for _ in range(8)))
    assert len({m["1000000042"] for m in minted}) == 1


async def test_resolutions_are_recorded_per_system_and_read_back(store):
    hub_id = (await store.ensure_customers(["1000000007"]))["1000000007"]
    await store.record(
        {
            hub_id: [
                SystemResolution("billing", (Link("billing", "BA7", "certificate+msisdn"),)),
            ]
        }
    )
    identity = (await store.by_customer_nos(["1000000007"]))["1000000007"]
    assert identity.keys("billing") == ("BA7",)
    assert identity.is_resolved("billing") and not identity.is_resolved("care")
    assert (await store.by_hub_ids([hub_id]))[hub_id] == identity
    # Recording the same resolution twice (two requests racing) changes nothing.
    await store.record(
        {hub_id: [SystemResolution("billing", (Link("billing", "BA7", "certificate+msisdn"),))]}
    )
    assert (await store.by_hub_ids([hub_id]))[hub_id].links == identity.links


# --- "absent" is asked again once due ------------------------------------------------------------


def _care(*links: Link) -> SystemResolution:
    return SystemResolution("care", links)


def _billing() -> SystemResolution:
    return SystemResolution("billing", (Link("billing", "BA1", "certificate+msisdn"),))


@pytest.fixture
async def rechecking(hub_database_url: str):
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    yield IdentityStore(engine, absent_recheck_s=0.3)
    await engine.dispose()


async def test_an_absent_outcome_is_unresolved_again_once_due_then_replaced(rechecking):
    store = rechecking
    hub_id = (await store.ensure_customers(["1000000100"]))["1000000100"]
    await store.record({hub_id: [_billing(), _care()]})  # care had no record for them
    identity = (await store.by_customer_nos(["1000000100"]))["1000000100"]
    assert identity.is_resolved("care") and identity.recheck_at is not None
    await asyncio.sleep(0.35)
    # Due: the settled copy kept in memory is not served; care counts as unresolved again.
    due = (await store.by_customer_nos(["1000000100"]))["1000000100"]
    assert not due.is_resolved("care") and due.is_resolved("billing")
    # Asked again: care has opened a record since, and the link replaces "absent".
    await store.record({hub_id: [_care(Link("care", "P100", "certificate+msisdn"))]})
    linked = (await store.by_hub_ids([hub_id]))[hub_id]
    assert linked.outcomes == {"billing": "linked", "care": "linked"}
    assert linked.keys("care") == ("P100",) and linked.recheck_at is None
    # A link is final: a later "absent" (a racing request) does not undo it.
    await asyncio.sleep(0.35)
    await store.record({hub_id: [_care()]})
    assert (await store.by_hub_ids([hub_id]))[hub_id].outcomes["care"] == "linked"


async def test_absent_again_starts_a_new_period(rechecking):
    store = rechecking
    hub_id = (await store.ensure_customers(["1000000101"]))["1000000101"]
    await store.record({hub_id: [_billing(), _care()]})
    await asyncio.sleep(0.35)
    assert not (await store.by_hub_ids([hub_id]))[hub_id].is_resolved("care")
    await store.record({hub_id: [_care()]})  # asked again: still nothing there
    again = (await store.by_hub_ids([hub_id]))[hub_id]
    assert again.is_resolved("care") and again.outcomes["care"] == "absent"
