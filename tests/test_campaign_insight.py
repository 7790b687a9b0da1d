"""Campaign insight conditions against the real insight engine over the real simulators."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from gateway.backends import build_backends, insight_engine
from gateway.database import create_engine
from gateway.migrate import upgrade
from gateway.settings import load_settings
from insight.rules import load_rules
from marketing.campaigns import load_campaigns
from marketing.decide import Decider, GuardContext
from marketing.events import BusinessEvent
from simulators.dataset import CustomerBundle
from tests.harness import SimulatorUrls

DAYTIME = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


async def test_insight_conditions_use_the_insight_engines_facts(
    sims: SimulatorUrls, customers: list[CustomerBundle], tmp_path: Path
) -> None:
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        boss={"base_url": sims.boss},
        billing={"base_url": sims.billing},
        care={"base_url": sims.care},
        cache={"enabled": False},
    )
    engine = create_engine(settings.database_url)
    wiring = build_backends(settings, engine)
    try:
        await upgrade(engine)
        backends = wiring.backends
        await backends.customer_system.start()
        insight = insight_engine(backends, load_rules())
        numbers = [c.customer.customer_no for c in customers[50:56]]
        hub_ids = await backends.identity_store.ensure_customers(numbers)
        facts = await insight.facts(list(hub_ids.values()))
        assert facts, "the engine knows these customers"
        hub_id, their = next(iter(facts.items()))
        base = load_campaigns()
        topup = base.by_id("data-topup-80")
        assert topup is not None
        same = dataclasses.replace(
            topup, id="tier-same", control_share=0.0, insight={"value_tier": (their.value_tier,)}
        )
        other_tier = next(t for t in ("top", "high", "middle", "low") if t != their.value_tier)
        other = dataclasses.replace(
            topup, id="tier-other", control_share=0.0, insight={"value_tier": (other_tier,)}
        )
        book = dataclasses.replace(base, campaigns=(same, other))
        decider = Decider(
            engine, lambda: book, GuardContext("Asia/Shanghai", True, lambda: DAYTIME), insight
        )
        event = BusinessEvent(
            event_id="boss:insight-1",
            event_type="usage.threshold_crossed",
            source="boss",
            occurred_at=DAYTIME,
            customer_id=hub_id,
            subscriber=None,
            payload={"percent": 90},
        )
        decisions = await decider.decide([event])
        assert [d.campaign for d in decisions] == ["tier-same"]
        # Without an engine, a campaign that tests insight matches no one.
        blind = Decider(engine, lambda: book, GuardContext("Asia/Shanghai", True, lambda: DAYTIME))
        assert await blind.decide([dataclasses.replace(event, event_id="boss:insight-2")]) == []
    finally:
        await wiring.close()
        await engine.dispose()
