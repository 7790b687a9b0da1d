"""The business event: the one shape every event source is mapped onto at intake.

This module is the contract between the intake side (``marketing.intake``, the listener, the
NATS consumer and the dispatcher) and whatever reacts to events (the campaigns handler). Both
sides keep exactly these names (docs/marketing.md, ``## Events``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

EVENT_TYPES = (
    "usage.threshold_crossed",
    "roaming.started",
    "bill.issued",
    "bill.overdue",
    "payment.received",
    "line.suspended",
    "line.resumed",
    "ticket.resolved",
)


@dataclass(frozen=True)
class BusinessEvent:
    """One event as the hub stored it.

    ``event_id`` is ``"<source>:<the system's event id>"``: unique, and a replay of the same
    notification carries the same id, so the store ignores it.
    """

    event_id: str
    event_type: str  # one of EVENT_TYPES
    source: str  # declared system / instance name that emitted it
    occurred_at: datetime  # timezone-aware
    customer_id: str | None  # hub customer id, resolved through the crosswalk at intake
    subscriber: str | None  # the line it concerns (E.164 MSISDN) when there is one
    payload: Mapping[str, Any]  # e.g. {"percent": 80, "allowance_mb": ...}, {"days_off": 95}


class EventHandler(Protocol):
    """What the dispatcher hands stored events to, in batches.

    At least once: an event is marked handled only after ``handle`` returns, and handed again
    after a crash, so an implementation must be idempotent per ``event_id``.
    """

    async def handle(self, events: Sequence[BusinessEvent]) -> None: ...
