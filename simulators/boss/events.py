"""BOSS business events: usage past a share of the allowance, roaming, lines off and back on.

A /_sim/events request names the line (``msisdn``) or asks for a random one
(``"random": true``, the generator's choice); the event carries the BOSS customer number and
subscriber number, as a BOSS event would.
"""

from __future__ import annotations

import random
from typing import Any

from simulators import event_requests as req
from simulators.boss.store import BossStore, SubscriberRow
from simulators.events import Builder, EventRequestError
from simulators.reference import OFFERINGS_BY_ID

TYPES = ("UsageThresholdCrossedEvent", "RoamingStartedEvent", "LineSuspendedEvent",
         "LineResumedEvent")  # fmt: skip


def _line(store: BossStore, body: dict[str, Any], rng: random.Random) -> SubscriberRow:
    msisdn = req.msisdn(body)
    if msisdn is not None:
        line = store.subscriber_by_msisdn(msisdn)
        if line is None:
            raise EventRequestError("no line has this msisdn")
        return line
    if body.get("random") is True:
        line = store.subscriber_at(rng.randrange(store.subscriber_count()))
        if line is not None:
            return line
    raise EventRequestError("name the line (msisdn) or ask for a random one (random: true)")


def builder(store: BossStore) -> Builder:
    def build(body: dict[str, Any], rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
        kind = req.event_type(body, TYPES)
        line = _line(store, body, rng)
        event: dict[str, Any] = {
            "customer": {"customerNo": str(line.customer_no)},
            "subscriber": {"subscriberNo": line.subscriber_no, "msisdn": line.msisdn},
        }
        if kind == "UsageThresholdCrossedEvent":
            percent = req.integer(body, "percent", 80, 1, 1000)
            offering = OFFERINGS_BY_ID.get(line.offering_id)
            allowance = offering.data_mb if offering is not None else 0
            event["usage"] = {
                "usageType": "data",
                "thresholdPercent": percent,
                "allowanceMb": allowance,
                "usedMb": max(line.data_used_mb, allowance * percent // 100),
            }
        elif kind == "RoamingStartedEvent":
            event["roaming"] = {
                "country": req.text(body, "country", "JP", 2),
                "visitedNetwork": req.text(body, "network", "NTT DOCOMO"),
            }
        elif kind == "LineSuspendedEvent":
            event["line"] = {"status": "suspended", "reason": req.text(body, "reason", "arrears")}
        else:
            event["line"] = {
                "status": "active",
                "daysOff": req.integer(body, "daysOff", 95, 0, 3650),
            }
        return [(kind, event)]

    return build
