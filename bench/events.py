"""Business events per second on SQLite and PostgreSQL: arrival to stored, and arrival to decision.

    python -m bench.events [--events 5000] [--concurrency 64] [--backends sqlite,postgres]
                           [--scenarios stored,decided]

The real gateway over the real simulators on loopback. A load generator plays the BOSS event
hub: ``--events`` signed TMF notifications, each for a line of the dataset with its BOSS
customer number, POSTed to ``/events/boss`` with ``--concurrency`` in flight. Two scenarios:

- ``stored``: the recording handler installed (``events.handler = "record"``: one
  ``event_decision`` row per event, a real write), roaming events for customers the hub has
  never seen (each new line costs a BOSS lookup by line). Figures: ``stored_per_s``, events
  acknowledged (2xx: committed) per second of sending, and ``handled_per_s``, events per
  second from the first POST until the last event's decision row exists.
- ``decided``: end to end, the issue's figure. The customers are first seen through the graph
  (``customerByMsisdn`` with an agent key, not timed), so the intake finds them in the
  crosswalk; the campaigns' handler decides (workflows on: the delivery pump starts each
  reserved send's workflow), over the bundled campaigns with quiet hours off (the figure must not
  depend on the hour). The events are usage, roaming, suspended and resumed lines in turn.
  Figure: ``decided_per_s``, events per second from the first POST until every event is
  marked handled, which the dispatcher does only after the handler returned, i.e. after the
  batch's decision was committed. The handler starts no workflow: the delivery pump does
  (docs/marketing.md "## Delivery"), so the run also waits until the sends are done: no offer
  left ``RESERVED`` and the care simulator's message store holding one message per offer
  ``SENT`` by sms. Figures: ``sent_s`` (first POST until then), ``sent_per_s`` (events per
  second over that time), ``sms_sent`` (the care store's count of new messages, its repeats
  of a key apart in ``sms_replayed``). Afterwards the caps are checked exactly
  (bench.campaigns' check: no counter over its cap, the daily overall counters equal to the
  contacts reserved; the run fails otherwise), and every customer with an sms offer is
  accounted for: sent one (``sms_customers_sent``; the day cap is 1), or held back by design
  (``sms_customers_held_back``: every sms offer CONTROL or SUPPRESSED). Fewer SMS than
  customers is expected: each campaign keeps a 10 % control group by a hash of the hub's
  random customer id, so a customer in the control group of all three sms campaigns
  (``sms_customers_all_control``; 0-3 of 400 in most runs) gets none. An offer left RESERVED
  or FAILED fails the run, as does a wait that ran out.

Both read the database directly to know when they are done (watching costs the gateway
nothing). Bounded: a fixed number of events, and a deadline on the wait for the handler.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import cpu
from bench.campaigns import _check
from bench.workflows import _postgres_database, _sqlite_database
from gateway.database import create_engine
from gateway.policy_store import DEFAULT_POLICY_FILE
from marketing.campaigns import DEFAULT_CAMPAIGNS, load_campaigns
from marketing.offer_store import hub_offer
from marketing.recording import event_decision
from marketing.store import hub_event
from simulators.dataset import generate
from simulators.seed import seed_dataset
from tests.harness import gateway_env, issue_key, running_simulators, start_gateway, stop

SEED = 9191
CUSTOMERS = 400
SECRET = "bench-events-" + uuid.uuid4().hex
HANDLE_DEADLINE_S = 120.0
SCENARIOS = ("stored", "decided")
#: Offer states that mean "not sent, on purpose": a campaign's control group, a guard's refusal.
HELD_BACK = frozenset({"CONTROL", "SUPPRESSED"})
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"
#: The decided scenario's events in turn: (TMF type, its "event" part besides customer/line).
DECIDED_KINDS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("UsageThresholdCrossedEvent", {"usage": {"thresholdPercent": 85, "allowanceMb": 10240}}),
    ("RoamingStartedEvent", {"roaming": {"country": "JP"}}),
    ("LineSuspendedEvent", {"line": {"reason": "nonpayment"}}),
    ("LineResumedEvent", {"line": {"daysOff": 120}}),
)
ROAMING_ONLY = DECIDED_KINDS[1:2]


def _lines() -> list[tuple[str, str]]:
    """(BOSS customer number, MSISDN) of every line of the dataset."""
    return [
        (b.customer.customer_no, s[2]) for b in map(lambda i: generate(SEED, i), range(CUSTOMERS))
        for s in b.subscribers
    ]  # fmt: skip


def _notifications(count: int, kinds: tuple[tuple[str, dict[str, Any]], ...]) -> list[bytes]:
    lines = _lines()
    bodies = []
    for i in range(count):
        customer_no, msisdn = lines[i % len(lines)]
        kind, extra = kinds[(i // len(lines)) % len(kinds)]
        event = {"customer": {"customerNo": customer_no}, "subscriber": {"msisdn": msisdn}}
        bodies.append(
            json.dumps(
                {
                    "eventId": uuid.uuid4().hex,
                    "eventTime": "2026-12-02T10:00:00+08:00",
                    "eventType": kind,
                    "event": {**event, **extra},
                }
            ).encode()
        )
    return bodies


def _headers(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Hub-Timestamp": ts,
        "X-Hub-Signature-256": f"sha256={digest}",
    }


async def _decision_rows(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(event_decision))).scalar() or 0)


async def _handled_events(conn: AsyncConnection) -> int:
    handled = select(func.count()).select_from(hub_event).where(hub_event.c.handled_at.is_not(None))
    return int((await conn.execute(handled)).scalar() or 0)


async def _reserved_offers(conn: AsyncConnection) -> int:
    reserved = select(func.count()).select_from(hub_offer).where(hub_offer.c.state == "RESERVED")
    return int((await conn.execute(reserved)).scalar() or 0)


async def _sms_sent(conn: AsyncConnection) -> int:
    sent = (
        select(func.count())
        .select_from(hub_offer)
        .where(hub_offer.c.state == "SENT", hub_offer.c.channel == "sms")
    )
    return int((await conn.execute(sent)).scalar() or 0)


async def _sms_customers(conn: AsyncConnection) -> dict[str, int]:
    """Customers with an sms offer, by what became of them: one ``SENT`` (the day cap is 1),
    held back by design (every sms offer ``CONTROL``, a campaign's holdout, or refused by a
    guard: ``SUPPRESSED``), or neither (an offer still ``RESERVED`` or ``FAILED``: a loss)."""
    rows = (
        await conn.execute(
            select(hub_offer.c.customer_id, hub_offer.c.state).where(hub_offer.c.channel == "sms")
        )
    ).all()
    states: dict[str, set[str]] = {}
    for customer_id, state in rows:
        states.setdefault(customer_id, set()).add(state)
    sent = sum(1 for found in states.values() if "SENT" in found)
    control = sum(1 for found in states.values() if found == {"CONTROL"})
    held = sum(1 for found in states.values() if "SENT" not in found and found <= HELD_BACK)
    return {
        "sms_customers": len(states),
        "sms_customers_sent": sent,
        "sms_customers_all_control": control,
        "sms_customers_held_back": held,
        "sms_customers_unaccounted": len(states) - sent - held,
    }


def _care_stats(care_url: str) -> dict[str, int]:
    return dict(httpx.get(f"{care_url}/_sim/messages/stats", timeout=10).json())


async def _drive(
    url: str,
    database_url: str,
    bodies: list[bytes],
    concurrency: int,
    done: Callable[[AsyncConnection], Any],
    care_url: str | None = None,
) -> dict[str, Any]:
    """POST every body, then wait until ``done`` counts them all; the timings. With
    ``care_url``, then also until every send is done (no offer RESERVED, the care store
    holding a message per sms offer SENT)."""
    count = len(bodies)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    statuses: dict[int, int] = {}
    care_before = _care_stats(care_url) if care_url else {}
    # The gateway's CPU per event: steadier than events/s on a shared machine (bench/cpu.py).
    pids = cpu.listening_pids(url)
    cpu_before = cpu.cpu_seconds(pids)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(
                    f"{url}/events/boss", data=body, headers=_headers(body)
                ) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        sent = time.perf_counter() - started
    engine = create_engine(database_url)
    try:
        deadline = time.monotonic() + HANDLE_DEADLINE_S
        handled = 0
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                handled = await done(conn)
            if handled >= count:
                break
            await asyncio.sleep(0.02)
        finished = time.perf_counter() - started
        cpu_after = cpu.cpu_seconds(pids)
        sends: dict[str, Any] = {}
        while care_url and time.monotonic() < deadline:
            async with engine.connect() as conn:
                reserved, sms = await _reserved_offers(conn), await _sms_sent(conn)
            care = _care_stats(care_url)
            if reserved == 0 and care["sent"] - care_before["sent"] >= sms:
                sent_s = time.perf_counter() - started
                cpu_sent = cpu.cpu_seconds(pids)
                sends = {
                    "sent_s": round(sent_s, 2),
                    "sent_per_s": round(count / sent_s, 1),
                    "sms_sent": care["sent"] - care_before["sent"],
                    "sms_replayed": care["replayed"] - care_before["replayed"],
                }
                if pids and cpu_before is not None and cpu_sent is not None:
                    ms = (cpu_sent - cpu_before) * 1000 / count
                    sends["gateway_cpu_ms_per_event_to_sent"] = round(ms, 3)
                break
            await asyncio.sleep(0.05)
        if handled < count:
            raise AssertionError(
                f"{count - handled} of {count} events not handled within {HANDLE_DEADLINE_S} s"
            )
        if care_url and not sends:
            raise AssertionError(f"the sends were not done within {HANDLE_DEADLINE_S} s")
        if care_url:
            async with engine.connect() as conn:
                sends.update(await _sms_customers(conn))
    finally:
        await engine.dispose()
    spent = {}
    if pids and cpu_before is not None and cpu_after is not None:
        spent["gateway_cpu_ms_per_event"] = round((cpu_after - cpu_before) * 1000 / count, 3)
    return {
        "events": count,
        "concurrency": concurrency,
        "statuses": statuses,
        "stored_per_s": round(statuses.get(201, 0) / sent, 1),
        "handled": handled,
        "handled_per_s": round(handled / finished, 1),
        "seconds": round(finished, 2),
        **sends,
        **spent,
    }


async def _first_sight(url: str, key: str, msisdns: list[str]) -> int:
    """Every customer seen once through the graph (the crosswalk learns them); how many."""
    slots = asyncio.Semaphore(8)
    headers = {"X-Api-Key": key, "X-Purpose": "service"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def find(msisdn: str) -> bool:
            async with slots:
                answer = await client.post(
                    "/graphql", json={"query": FIND, "variables": {"m": msisdn}}
                )
                return bool((answer.json().get("data") or {}).get("customerByMsisdn"))

        return sum(await asyncio.gather(*(find(m) for m in msisdns)))


def _decided_files(state: Path) -> dict[str, str]:
    """The bundled policy without the agent's rate limit (the untimed look-ups) and the
    bundled campaigns without quiet hours."""
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["channels"]["agent"].pop("rate_limit_per_minute", None)
    policy_file = state / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
    campaigns = yaml.safe_load(DEFAULT_CAMPAIGNS.read_text())
    campaigns["guards"].pop("quiet_hours", None)
    campaigns_file = state / "campaigns.yaml"
    campaigns_file.write_text(yaml.safe_dump(campaigns, allow_unicode=True))
    return {
        "SWITCHBOARD_POLICY_FILE": str(policy_file),
        "SWITCHBOARD_CAMPAIGNS__RULES_FILE": str(campaigns_file),
    }


def _run_scenario(
    scenario: str, sims: Any, database_url: str, state: Path, count: int, concurrency: int
) -> dict[str, Any]:
    common = {
        "SWITCHBOARD_EVENTS__REGISTER_CALLBACKS": "false",
        "SWITCHBOARD_EVENTS_BOSS_SECRET": SECRET,
        "SWITCHBOARD_AUDIT__ENABLED": "false",
    }
    if scenario == "stored":
        env = gateway_env(
            sims,
            database_url,
            SWITCHBOARD_EVENTS__HANDLER="record",
            SWITCHBOARD_WORKFLOWS__ENABLED="false",
            **common,
        )
    else:
        files = _decided_files(state)
        env = gateway_env(
            sims,
            database_url,
            SWITCHBOARD_EVENTS__HANDLER="campaigns",
            SWITCHBOARD_WORKFLOWS__EXECUTOR_ID=f"bench-events-{uuid.uuid4().hex[:6]}",
            **files,
            **common,
        )
    key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
    # A loaded machine starts a gateway slowly: a generous start deadline.
    url, process = start_gateway(env, state / f"{scenario}.log", timeout_s=180)
    try:
        if scenario == "stored":
            bodies = _notifications(count, ROAMING_ONLY)
            return asyncio.run(_drive(url, database_url, bodies, concurrency, _decision_rows))
        known = asyncio.run(_first_sight(url, key, sorted({m for _, m in _lines()})))
        bodies = _notifications(count, DECIDED_KINDS)
        row = asyncio.run(
            _drive(url, database_url, bodies, concurrency, _handled_events, care_url=sims.care)
        )
        row["decided_per_s"] = row.pop("handled_per_s")
        row["decided"] = row.pop("handled")
        row["lines_known"] = known
        row.update(
            asyncio.run(_checked(database_url, Path(files["SWITCHBOARD_CAMPAIGNS__RULES_FILE"])))
        )
        if row["sms_customers_unaccounted"]:
            raise AssertionError(
                f"{row['sms_customers_unaccounted']} customers with an sms offer neither sent "
                "nor held back (an offer left RESERVED or FAILED)"
            )
        return row
    finally:
        stop(process)


async def _checked(database_url: str, campaigns_file: Path) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        return await _check(engine, load_campaigns(campaigns_file))
    finally:
        await engine.dispose()


def run(
    count: int,
    concurrency: int,
    backends: tuple[str, ...],
    scenarios: tuple[str, ...] = SCENARIOS,
) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        state = Path(tmp)
        seed_dataset(state / "data", CUSTOMERS, SEED)
        with running_simulators(state / "data") as sims:
            for backend in backends:
                for scenario in scenarios:
                    here = state / f"{backend}-{scenario}"
                    here.mkdir()
                    databases = (
                        _sqlite_database(here) if backend == "sqlite" else _postgres_database()
                    )
                    with databases as database_url:
                        row = _run_scenario(scenario, sims, database_url, here, count, concurrency)
                    name = "events" if scenario == "stored" else "events_decided"
                    rows.append({"scenario": name, "backend": backend, **row})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    if not 1 <= args.events <= 100_000 or not set(scenarios) <= set(SCENARIOS):
        parser.error(f"--events must be 1-100000 and --scenarios among {','.join(SCENARIOS)}")
    for row in run(args.events, args.concurrency, tuple(args.backends.split(",")), scenarios):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
