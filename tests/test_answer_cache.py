"""The answer cache (gateway/answer_cache.py): whole answers reused only for callers the
policy treats alike, only while every record they were built from is cached and unchanged,
and logged in the access log like the request that built them.

The units run in process; the gateway tests run a real gateway (cache on) over the real
simulators, and count what reached a backend in the simulators' own counters.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from types import SimpleNamespace

import httpx
import pytest
from graphql import GraphQLObjectType, get_named_type, parse

from adapters.cache import BALANCE, LINE_OWNER, PROFILE, RecordCache
from adapters.read_ledger import ReadLedger, note_direct, open_read_ledger
from gateway.answer_cache import AnswerCache, replay
from policies.masks import mask_name
from policies.model import Level
from policies.principal import Principal, Verified
from schema.answer_scope import (
    HUB_STATE_FIELDS,
    REUSABLE_ROOTS,
    ReusableDocuments,
    document_is_reusable,
    reusable_types,
)
from schema.build import build_schema
from tests.harness import gateway_env, issue_key, running_gateway

AGENT = Principal(subject="a-1", role="agent", channel="agent", scopes=frozenset({"r"}))
QUERY_360 = """query($id: ID!) { customer(id: $id) {
  id profile { name certificateNumber starLevel }
  subscriptions { msisdn status offering { name } }
  billingAccounts { id balance { amount { amount } } }
  tickets(first: 5) { id status description }
} }"""
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"


def context_of(principal: Principal = AGENT, purpose: str | None = "service", **extra):
    """What AnswerCache reads of a RequestContext, nothing more."""
    disclosure = SimpleNamespace(
        principal=principal,
        purpose=purpose,
        enforced=extra.pop("enforced", True),
        policy=SimpleNamespace(version=extra.pop("version", "v1")),
        disclosed={},
    )
    return SimpleNamespace(
        principal=principal,
        disclosure=disclosure,
        customers_touched=set(),
        backends_called=set(),
        operation_type="query",
        operation_name=None,
        document_sha256="d" * 64,
        **extra,
    )


def cached_ledger(ttl: float = 30.0) -> ReadLedger:
    ledger = ReadLedger()
    ledger.min_ttl_s = ttl
    return ledger


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(clock=None, **options) -> AnswerCache:
    return AnswerCache(reusable=lambda query: True, clock=clock or Clock(), **options)


# --- the key: everything the policy reads of the caller, nothing else ------------------------


def test_the_key_separates_callers_the_policy_may_treat_differently():
    verified = Verified("v-1", "cus_1", "otp", "app")
    base = AnswerCache.key("q", None, {"id": "1"}, context_of())
    others = [
        AnswerCache.key("q2", None, {"id": "1"}, context_of()),  # another document
        AnswerCache.key("q", "Op", {"id": "1"}, context_of()),  # another operation
        AnswerCache.key("q", None, {"id": "2"}, context_of()),  # other variables
        AnswerCache.key("q", None, {"id": "1"}, context_of(Principal("a-1", "clerk", "agent"))),
        AnswerCache.key("q", None, {"id": "1"}, context_of(Principal("a-1", "agent", "store"))),
        AnswerCache.key(
            "q", None, {"id": "1"}, context_of(Principal("a-1", "agent", "agent", frozenset()))
        ),
        AnswerCache.key(
            "q",
            None,
            {"id": "1"},
            context_of(Principal("a-1", "agent", "agent", frozenset({"r"}), partner="p")),
        ),
        AnswerCache.key(
            "q",
            None,
            {"id": "1"},
            context_of(Principal("a-1", "agent", "agent", frozenset({"r"}), verification=verified)),
        ),
        AnswerCache.key("q", None, {"id": "1"}, context_of(purpose="marketing")),
        AnswerCache.key("q", None, {"id": "1"}, context_of(purpose=None)),
        AnswerCache.key("q", None, {"id": "1"}, context_of(enforced=False)),
        AnswerCache.key("q", None, {"id": "1"}, context_of(version="v2")),
    ]
    assert base not in others
    assert len(set(others)) == len(others)


def test_the_key_ignores_who_by_name_and_the_order_of_variables():
    other_agent = Principal(
        subject="a-2", role="agent", channel="agent", scopes=frozenset({"r"}), credential_id="k2"
    )
    one = AnswerCache.key("q", None, {"a": 1, "b": [1, 2]}, context_of())
    two = AnswerCache.key("q", None, {"b": [1, 2], "a": 1}, context_of(other_agent))
    assert one == two


def test_a_verification_counts_by_its_customer_level_and_channel_not_its_id():
    first = Verified("v-1", "cus_1", "otp", "app")
    renewed = Verified("v-2", "cus_1", "otp", "app")
    higher = Verified("v-3", "cus_1", "id_card", "app")

    def with_(verified):
        return AnswerCache.key(
            "q", None, None, context_of(Principal("c", "customer", "app", verification=verified))
        )

    assert with_(first) == with_(renewed)
    assert with_(first) != with_(higher)
    assert with_(first) != with_(Verified("v-4", "cus_2", "otp", "app"))


# --- what is kept, for how long -------------------------------------------------------------


def test_an_answer_is_kept_no_longer_than_its_ttl_or_the_shortest_record_ttl():
    clock = Clock()
    answers = cache(clock, ttl_s=5.0)
    key = AnswerCache.key("q", None, None, context_of())
    assert answers.offer(key, "q", {"x": 1}, context_of(), cached_ledger(30.0), 0)
    clock.now += 4.9
    assert answers.get(key).data == {"x": 1}
    clock.now += 0.2
    assert answers.get(key) is None
    # Built from a record kind cached for 2 s: reused for 2 s only.
    assert answers.offer(key, "q", {"x": 2}, context_of(), cached_ledger(2.0), 0)
    clock.now += 2.1
    assert answers.get(key) is None


def test_an_answer_that_read_around_the_cache_is_not_kept():
    answers = cache()
    key = AnswerCache.key("q", None, None, context_of())
    ledger = cached_ledger()
    ledger.direct_calls = 1  # e.g. a search page, an eligibility check, a TTL-0 kind
    assert not answers.offer(key, "q", {"x": 1}, context_of(), ledger, 0)
    assert answers.get(key) is None


def test_an_answer_reading_no_backend_at_all_is_kept_for_the_answer_ttl():
    clock = Clock()
    answers = cache(clock, ttl_s=5.0)
    key = AnswerCache.key("q", None, None, context_of())
    assert answers.offer(key, "q", {"offerings": []}, context_of(), ReadLedger(), 0)
    clock.now += 5.1
    assert answers.get(key) is None


def test_only_queries_of_records_only_are_kept():
    answers = AnswerCache(reusable=lambda query: query == "records", clock=Clock())
    ledger = cached_ledger()
    assert not answers.offer(("k1",), "hub state", {"x": 1}, context_of(), ledger, 0)
    mutation = context_of()
    mutation.operation_type = "mutation"
    assert not answers.offer(("k2",), "records", {"x": 1}, mutation, ledger, 0)
    assert answers.offer(("k3",), "records", {"x": 1}, context_of(), ledger, 0)
    assert len(answers) == 1


def test_an_eviction_ends_every_answer_and_one_built_across_it_is_not_kept():
    answers = cache()
    key = AnswerCache.key("q", None, None, context_of())
    assert answers.offer(key, "q", {"x": 1}, context_of(), cached_ledger(), answers.generation)
    started = answers.generation
    answers.invalidate()  # the record cache evicted something
    assert answers.get(key) is None
    assert len(answers) == 0 and answers.bytes == 0
    # A request that began before the eviction finishes after it: its answer is not kept.
    assert not answers.offer(key, "q", {"x": 0}, context_of(), cached_ledger(), started)
    assert answers.get(key) is None


def test_memory_is_bounded_in_bytes_and_per_answer():
    answers = cache(max_bytes=100, max_entry_bytes=60)
    ledger = cached_ledger()
    big = {"v": "x" * 70}
    assert not answers.offer(("big",), "q", big, context_of(), ledger, 0)
    for n in range(5):
        assert answers.offer((n,), "q", {"v": "y" * 30}, context_of(), ledger, 0)
    assert answers.bytes <= 100
    assert answers.get((4,)) is not None  # the newest stay
    assert answers.get((0,)) is None  # the least recently used went first


def test_a_reused_answer_carries_what_the_access_log_records():
    answers = cache()
    built = context_of()
    built.disclosure.disclosed.update({"customer.profile.name": Level.CLEAR})
    built.customers_touched.add("cus_1")
    built.backends_called.update({"boss", "care"})
    built.operation_name = "C360"
    key = AnswerCache.key("q", "C360", None, built)
    assert answers.offer(key, "q", {"x": 1}, built, cached_ledger(), 0)
    again = context_of()
    replay(answers.get(key), again)
    assert again.disclosure.disclosed == {"customer.profile.name": Level.CLEAR}
    assert again.customers_touched == {"cus_1"}
    assert again.backends_called == {"boss", "care"}
    assert (again.operation_name, again.operation_type) == ("C360", "query")
    assert again.document_sha256 == built.document_sha256


# --- which documents: records only ----------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    from gateway.backends import load_systems
    from gateway.settings import load_settings

    return build_schema(0, load_systems(load_settings()))._schema


@pytest.mark.parametrize(
    ("document", "reusable"),
    [
        (QUERY_360, True),
        (FIND, True),
        ("{ offerings { id name } }", True),
        ("query($id: ID!) { customer(id: $id) { __typename id loyaltyMembers { tier } } }", True),
        ("query($id: ID!) { customer(id: $id) { insight { tags churnRisk { score } } } }", True),
        ("query($id: ID!) { customer(id: $id) { id identity { links { key } } } }", False),
        ("query($id: ID!) { customer(id: $id) { nextBestOffers { offerId } } }", False),
        (
            "query($id: ID!) { customer(id: $id) { ...F } } "
            "fragment F on Customer { id identity { hubId } }",
            False,
        ),
        ("{ openRequests(first: 5) { id } }", False),
        ("{ auditLog(first: 1) { nodes { seq } } }", False),
        ("{ __schema { types { name } } }", False),
        ('query($id: ID!) { customer(id: $id) { id } __type(name: "Customer") { name } }', False),
        ('mutation { startOtp(customerId: "x", msisdn: "1") { challengeId } }', False),
    ],
)
def test_only_documents_made_of_records_are_reusable(graph, document, reusable):
    assert document_is_reusable(graph, parse(document)) is reusable


def test_a_document_that_does_not_parse_is_not_reusable(graph):
    assert ReusableDocuments(graph)("{ customer(") is False


def test_every_type_reachable_from_the_reusable_roots_was_classified(graph):
    """A new type under Customer is not reusable until it is listed on purpose: this test
    names it, so whoever adds it decides whether it is records only or hub state."""
    allowed = reusable_types()
    unclassified, seen = set(), set()
    todo = [
        get_named_type(graph.query_type.fields[root].type)
        for root in REUSABLE_ROOTS
        if root in graph.query_type.fields
    ]
    while todo:
        kind = todo.pop()
        if not isinstance(kind, GraphQLObjectType) or kind.name in seen:
            continue
        seen.add(kind.name)
        if kind.name not in allowed:
            unclassified.add(kind.name)
            continue
        for name, field in kind.fields.items():
            if (kind.name, name) not in HUB_STATE_FIELDS:
                todo.append(get_named_type(field.type))
    assert unclassified == set()
    assert {"Customer", "CustomerProfile", "LoyaltyMember"} <= seen


# --- the ledger: what the record cache and the guard note ---------------------------------


async def test_the_ledger_notes_the_shortest_ttl_and_calls_made_around_the_cache():
    records = RecordCache.in_memory(ttls={"profile": 300, "balance": 30})

    async def fetch(keys):
        note_direct()  # what the backend guard does for the call: here it is the cache's
        return {key: object() for key in keys}

    async def request():
        ledger = open_read_ledger()
        await records.many(PROFILE, ["1"], fetch)
        await records.many(BALANCE, ["a"], fetch)
        return ledger

    ledger = await asyncio.create_task(request())
    assert (ledger.min_ttl_s, ledger.direct_calls) == (30, 0)

    async def around():
        ledger = open_read_ledger()
        note_direct()  # a call no cache fill makes: a search page, an eligibility check
        return ledger

    assert (await asyncio.create_task(around())).reusable_for_s == 0
    uncached = RecordCache.in_memory(ttls={"profile": 0})

    async def ttl_zero():
        ledger = open_read_ledger()
        await uncached.many(PROFILE, ["1"], fetch)
        return ledger

    assert (await asyncio.create_task(ttl_zero())).direct_calls == 1
    await records.close()
    await uncached.close()


async def test_every_eviction_tells_the_answer_cache_before_and_after():
    records = RecordCache.in_memory()
    answers = cache()
    records.on_eviction(answers.invalidate)
    start = answers.generation
    await records.evict([(PROFILE, "1")])
    assert answers.generation == start + 2
    await records.drop_local([f"{records.prefix}profile:1"])  # another process's eviction
    assert answers.generation == start + 4
    await records.clear_local()
    assert answers.generation == start + 6
    await records.close()


# --- a real gateway -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(sims, tmp_path_factory):
    state = tmp_path_factory.mktemp("answers")
    env = gateway_env(sims, f"sqlite+aiosqlite:///{state}/hub.db")
    keys = {
        "agent": issue_key(env, channel="agent", role="agent", scopes=("customer:read",)),
        "agent2": issue_key(env, channel="agent", role="agent", scopes=("customer:read",)),
        "app": issue_key(env, channel="app", role="customer", scopes=("customer:read",)),
    }
    with running_gateway(env, state / "gateway.log") as url:
        yield SimpleNamespace(url=url, keys=keys, database=state / "hub.db")


def ask(hub, key: str, document: str, variables: dict, **headers: str) -> dict:
    response = httpx.post(
        f"{hub.url}/graphql",
        json={"query": document, "variables": variables},
        headers={"X-Api-Key": hub.keys[key], "X-Purpose": "service", **headers},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def answer_metric(hub, outcome: str) -> float:
    text = httpx.get(f"{hub.url}/metrics").text
    prefix = f'switchboard_answer_cache_total{{outcome="{outcome}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def active_msisdn(bundle) -> str:
    return next(s for s in bundle.subscribers if s.status == "A").msisdn


def audit_rows(hub, document: str) -> list[dict]:
    import hashlib

    digest = hashlib.sha256(document.encode()).hexdigest()
    with sqlite3.connect(hub.database) as db:
        rows = db.execute(
            "SELECT request_id, outcome, disclosed, customers, backends, channel, credential_id"
            " FROM audit_record WHERE document_sha256 = ? ORDER BY seq",
            (digest,),
        ).fetchall()
    names = ("request_id", "outcome", "disclosed", "customers", "backends", "channel", "key")
    return [dict(zip(names, row, strict=True)) for row in rows]


def test_a_repeated_360_is_answered_whole_and_logged_like_the_first(hub, control, customers):
    hub_id = ask(hub, "agent", FIND, {"m": active_msisdn(customers[41])})["data"][
        "customerByMsisdn"
    ]["id"]
    first = ask(hub, "agent", QUERY_360, {"id": hub_id})  # the records are cached now...
    assert "errors" not in first, first
    second = ask(hub, "agent", QUERY_360, {"id": hub_id})  # ...and this answer is kept
    hits = answer_metric(hub, "hit")
    control.reset()
    third = ask(hub, "agent2", QUERY_360, {"id": hub_id})  # another agent: same policy
    assert first == second == third
    assert {s: control.total(s) for s in ("boss", "billing", "care")} == {
        "boss": 0,
        "billing": 0,
        "care": 0,
    }
    assert answer_metric(hub, "hit") == hits + 1
    rows = audit_rows(hub, QUERY_360)
    built, reused = rows[-2], rows[-1]
    assert built["request_id"] != reused["request_id"]
    for field in ("outcome", "disclosed", "customers", "backends", "channel"):
        assert built[field] == reused[field], field
    assert reused["key"] != built["key"]  # the log names whose credential asked, each time
    assert json.loads(reused["disclosed"])  # the paths and levels went out again: recorded


def test_a_caller_the_policy_treats_differently_never_gets_the_kept_answer(
    hub, control, customers, sims
):
    from gateway.compare import verify_by_otp

    bundle = customers[42]
    line = active_msisdn(bundle)
    hub_id = ask(hub, "agent", FIND, {"m": line})["data"]["customerByMsisdn"]["id"]
    for _ in range(2):
        clear = ask(hub, "agent", QUERY_360, {"id": hub_id})
    assert bundle.customer.name in json.dumps(clear, ensure_ascii=False)
    with httpx.Client(timeout=30) as client:
        token = verify_by_otp(client, hub.url, hub.keys["app"], hub_id, line, sims.care)
    masked = ask(hub, "app", QUERY_360, {"id": hub_id}, **{"X-Verification": token})
    text = json.dumps(masked, ensure_ascii=False)
    assert bundle.customer.name not in text
    assert mask_name(bundle.customer.name) in text
    # Another purpose is another key too (the policy decides per purpose).
    stored = answer_metric(hub, "stored")
    ask(hub, "agent", QUERY_360, {"id": hub_id}, **{"X-Purpose": "marketing"})
    assert answer_metric(hub, "stored") == stored + 1


def test_fields_of_the_hubs_own_state_are_never_reused(hub, customers):
    document = "query($id: ID!) { customer(id: $id) { id identity { hubId links { system } } } }"
    hub_id = ask(hub, "agent", FIND, {"m": active_msisdn(customers[43])})["data"][
        "customerByMsisdn"
    ]["id"]
    refused = answer_metric(hub, "not_reusable")
    hits = answer_metric(hub, "hit")
    for _ in range(3):
        assert "errors" not in ask(hub, "agent", document, {"id": hub_id})
    assert answer_metric(hub, "not_reusable") == refused + 3
    assert answer_metric(hub, "hit") == hits


# --- the settings: file, environment, and what they build -----------------------------------


def test_answer_cache_settings_from_the_toml_file_and_the_environment(tmp_path, monkeypatch):
    import os

    from gateway.app import build_answer_cache
    from gateway.settings import load_settings

    for name in list(os.environ):
        if name.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)
    config = tmp_path / "switchboard.toml"
    config.write_text("[cache.answers]\nttl_s = 2.5\nmax_bytes = 1000\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    monkeypatch.setenv("SWITCHBOARD_CACHE__ANSWERS__MAX_ENTRY_BYTES", "500")
    settings = load_settings().cache.answers
    assert (settings.enabled, settings.ttl_s) == (True, 2.5)
    assert (settings.max_bytes, settings.max_entry_bytes) == (1000, 500)
    graph = build_schema(0)
    records = RecordCache.in_memory()
    built = build_answer_cache(settings, records, graph)
    assert built is not None
    assert (built._ttl_s, built._max_bytes, built._max_entry_bytes) == (2.5, 1000, 500)
    monkeypatch.setenv("SWITCHBOARD_CACHE__ANSWERS__ENABLED", "false")
    assert build_answer_cache(load_settings().cache.answers, records, graph) is None
    # No record cache (cache.enabled = false): no answers kept either.
    assert build_answer_cache(settings, None, graph) is None
    monkeypatch.setenv("SWITCHBOARD_CACHE__ANSWERS__ENABLED", "true")
    monkeypatch.setenv("SWITCHBOARD_CACHE__ANSWERS__TTL_S", "0")
    assert build_answer_cache(load_settings().cache.answers, records, graph) is None


# --- several processes over one Redis cache -------------------------------------------------


@pytest.mark.redis
async def test_over_a_redis_cache_another_process_s_eviction_ends_this_process_s_answers(
    redis_url,
):
    """Two hub processes over one shared record cache: B keeps answers; A's write evicts in
    Redis and on the feed; B's answers end, and B deletes nothing of the shared cache again."""
    import uuid

    import redis.asyncio as aioredis

    from adapters.cache_fanout import EvictionFeed

    namespace = f"sbtest-answers-{uuid.uuid4().hex[:8]}"
    channel = f"{namespace}:cache-evictions"
    processes = []
    for _ in range(2):
        records = RecordCache.on_redis(redis_url, namespace=namespace)
        answers = cache()
        records.on_eviction(answers.invalidate)
        feed = EvictionFeed(
            aioredis.Redis.from_url(redis_url), channel, records, timeout_s=1, reconnect_max_s=1
        )
        await feed.start(wait_s=5)
        processes.append((records, answers, feed))
    (a, _, _), (b, b_answers, _) = processes
    try:
        assert b.shared
        key = AnswerCache.key("q", None, None, context_of())
        assert b_answers.offer(key, "q", {"x": 1}, context_of(), cached_ledger(), 0)
        await b.remember(LINE_OWNER, {"2": ["c", "m"]})  # an entry nobody evicts
        await a.evict([(PROFILE, "1")])
        deadline = asyncio.get_running_loop().time() + 10
        while b_answers.get(key) is not None:
            assert asyncio.get_running_loop().time() < deadline, "the eviction never reached b"
            await asyncio.sleep(0.05)
        await b.clear_local()  # what a resubscribing feed does: the shared entries stay
        assert await b.recall(LINE_OWNER, ["2"]) == {"2": ["c", "m"]}
    finally:
        for records, _, feed in processes:
            await feed.close()
            await records.evict([(LINE_OWNER, "2")])
            await records.close()


def test_a_kept_answer_goes_out_as_the_first_did_in_each_media_type_and_over_get(
    hub, control, customers
):
    hub_id = ask(hub, "agent", FIND, {"m": active_msisdn(customers[44])})["data"][
        "customerByMsisdn"
    ]["id"]
    base = {"X-Api-Key": hub.keys["agent"], "X-Purpose": "service"}
    for accept in ("application/json", "application/graphql-response+json"):
        answers = []
        for _ in range(3):  # built (first sight of these records), kept, reused
            answers.append(
                httpx.post(
                    f"{hub.url}/graphql",
                    json={"query": QUERY_360, "variables": {"id": hub_id}},
                    headers={**base, "Accept": accept},
                    timeout=30,
                )
            )
        first, reused = answers[0], answers[-1]
        assert reused.status_code == first.status_code == 200
        assert reused.headers["content-type"] == first.headers["content-type"]
        assert reused.json() == first.json() and "errors" not in first.json()
        assert reused.headers["x-request-id"] != first.headers["x-request-id"]
    hits = answer_metric(hub, "hit")
    control.reset()
    params = {"query": QUERY_360, "variables": json.dumps({"id": hub_id})}
    over_get = [
        httpx.get(f"{hub.url}/graphql", params=params, headers=base, timeout=30) for _ in range(2)
    ]
    assert over_get[0].json() == over_get[1].json() == first.json()
    assert answer_metric(hub, "hit") >= hits + 1
    assert sum(control.total(s) for s in ("boss", "billing", "care")) == 0
