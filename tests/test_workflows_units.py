"""The workflow pieces that need no gateway: rules, keys, the request store, engine wiring."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestration.engine import claim_worker_slot, system_database_url
from orchestration.rules_loader import DEFAULT_RULES, load_categories
from orchestration.store import KeyReused, RequestStore, input_hash, workflow_id
from tests.conftest import migrated_engine


def test_the_bundled_complaint_rules_load() -> None:
    categories = load_categories(DEFAULT_RULES)
    assert {"billing", "network", "service", "outage_credit"} <= set(categories)
    assert categories["outage_credit"].auto_credit is not None
    assert all(c.sla_hours > 0 for c in categories.values())


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("severity: huge\n    sla_hours: 4", "severity"),
        ("severity: minor\n    sla_hours: 0", "sla_hours"),
        ("severity: minor\n    sla_hours: 4\n    auto_credit: lots", "auto_credit"),
        ("severity: minor\n    sla_hours: 4\n    auto_credit: -1", "auto_credit"),
    ],
)
def test_bad_complaint_rules_are_refused_naming_the_category(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    rules = tmp_path / "complaints.yaml"
    rules.write_text(f"categories:\n  roaming:\n    {entry}\n")
    with pytest.raises(ValueError, match=f"roaming: {complaint}"):
        load_categories(rules)


def test_request_ids_and_input_digests_are_stable() -> None:
    assert workflow_id("complaint", "key1", "abc") == workflow_id("complaint", "key1", "abc")
    assert workflow_id("complaint", "key1", "abc") != workflow_id("complaint", "key2", "abc")
    assert input_hash("m", {"a": 1, "b": 2}) == input_hash("m", {"b": 2, "a": 1})
    assert input_hash("m", {"a": 1}) != input_hash("n", {"a": 1})


def test_a_key_stands_for_one_input(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        store = RequestStore(engine)
        digest = input_hash("changePlan", {"x": 1})
        first = await store.claim_key("cred1", "key-0001", "changePlan", digest, "plan_change-a")
        again = await store.claim_key("cred1", "key-0001", "changePlan", digest, "plan_change-b")
        assert first == again == "plan_change-a"
        with pytest.raises(KeyReused):
            await store.claim_key(
                "cred1", "key-0001", "changePlan", input_hash("changePlan", {"x": 2}), "p"
            )
        with pytest.raises(KeyReused):
            await store.claim_key("cred1", "key-0001", "fileComplaint", digest, "p")
        other = await store.claim_key("cred2", "key-0001", "changePlan", digest, "plan_change-c")
        assert other == "plan_change-c"
        # History rows are written once per step, whatever repeats.
        await store.create_request(
            "plan_change-a", kind="plan_change", customer_id="cus_1", channel="app", started_by="c"
        )
        await store.create_request(
            "plan_change-a", kind="plan_change", customer_id="cus_1", channel="app", started_by="c"
        )
        for _ in range(2):
            await store.transition("plan_change-a", "eligible", "ELIGIBLE")
        assert [e.state for e in await store.history("plan_change-a")] == ["RECEIVED", "ELIGIBLE"]
        assert [r.id for r in await store.open_requests("cus_1")] == ["plan_change-a"]
        await store.transition("plan_change-a", "confirm", "CONFIRMED", status="DONE")
        assert await store.open_requests("cus_1") == []
        await engine.dispose()

    asyncio.run(scenario())


def test_system_database_follows_the_hub_database() -> None:
    assert system_database_url("sqlite+aiosqlite:///state/hub.db", None) == (
        "sqlite:///state/workflows.sqlite"
    )
    assert system_database_url("postgresql+asyncpg://u:p@h:5432/hub", None) == (
        "postgresql://u:p@h:5432/hub"
    )
    assert system_database_url("sqlite+aiosqlite:///x.db", "sqlite:///y.sqlite") == (
        "sqlite:///y.sqlite"
    )
    with pytest.raises(ValueError, match=r"workflows\.database_url"):
        system_database_url("sqlite+aiosqlite:///:memory:", None)


def test_each_worker_claims_its_own_executor_slot(tmp_path: Path) -> None:
    import os

    assert claim_worker_slot("r1", tmp_path, 1) == ("r1", None)
    first, lock1 = claim_worker_slot("r1", tmp_path, 2)
    second, lock2 = claim_worker_slot("r1", tmp_path, 2)
    assert (first, second) == ("r1-w0", "r1-w1")
    assert lock1 is not None and lock2 is not None
    os.close(lock1)  # the first worker dies: its successor takes its slot back
    successor, lock3 = claim_worker_slot("r1", tmp_path, 2)
    assert successor == "r1-w0"
    for fd in (lock2, lock3):
        assert fd is not None
        os.close(fd)
