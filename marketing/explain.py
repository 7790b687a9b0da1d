"""``switchboard campaigns explain``: would this customer get each campaign now, and if not,
which rule or guard stops it. Reads the hub's tables only; decides and changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from marketing.audience import Facts, FactsSource, in_control_group, match
from marketing.campaigns import CampaignBook
from marketing.decide import Decider, GuardContext, period_keys, refusal
from marketing.events import BusinessEvent
from marketing.offer_store import offer_id


async def explain(
    engine: AsyncEngine,
    book: CampaignBook,
    context: GuardContext,
    customer_id: str,
    event_type: str | None = None,
    payload: Mapping[str, Any] | None = None,
    facts: FactsSource | None = None,
) -> list[str]:
    """One line per campaign (of ``event_type``'s, or all): ``<id>: <verdict>``."""
    payload = payload or {}
    campaigns = book.for_event(event_type) if event_type else book.campaigns
    found: Mapping[str, Facts] = {}
    if facts is not None and any(c.needs_insight for c in campaigns):
        found = await facts.facts([customer_id])
    local = context.local_time(customer_id)
    periods = period_keys(local)
    decider = Decider(engine, lambda: book, context, facts)
    probe = BusinessEvent(
        event_id="explain",
        event_type=event_type or "",
        source="explain",
        occurred_at=datetime.now(local.tzinfo),
        customer_id=customer_id,
        subscriber=None,
        payload=payload,
    )
    async with engine.connect() as conn:
        batch = await decider._lock_and_read(
            conn,
            book,
            [customer_id],
            {customer_id: periods},
            [(probe, c) for c in campaigns],
            lock=False,
        )
    lines = []
    for campaign in campaigns:
        verdict = match(
            campaign, campaign.event_type, payload, found.get(customer_id), local.date()
        )
        if verdict.reason is not None:
            lines.append(f"{campaign.id}: no: {verdict.reason}")
            continue
        state = batch.offers.get((campaign.id, customer_id))
        if state is not None:
            lines.append(
                f"{campaign.id}: no: already decided "
                f"({state}, offer {offer_id(campaign.id, customer_id)})"
            )
            continue
        if in_control_group(campaign, customer_id):
            lines.append(f"{campaign.id}: no: the customer is in its control group")
            continue
        refusals: dict[str, str] = {}
        for channel in campaign.channels:
            guard = refusal(
                book.guards, context, batch, campaign, customer_id, channel, periods, local
            )
            if guard is None:
                how = "shown on the agent console" if channel == "nbo" else f"sent by {channel}"
                tried = "".join(f" ({c} refused: {g})" for c, g in refusals.items())
                lines.append(f"{campaign.id}: yes: {how}{tried}")
                break
            refusals[channel] = guard
        else:
            stops = ", ".join(f"{c}: {g}" for c, g in refusals.items())
            lines.append(f"{campaign.id}: no: guard {stops}")
    return lines
