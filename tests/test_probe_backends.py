"""Hostile backends: replies too big, endless, too deep, too many, with entities, mislabelled.

A real gateway talks to the real care simulator and to two hostile proxies
(``tests/hostile_backends.py``) in front of the real BOSS (SOAP) and billing (REST) simulators.
Each case turns one system's replies hostile and checks, end to end, that the 360 of a known
customer answers that system's fields with BACKEND_BAD_RESPONSE only, every other system's
fields still answer, nothing of the hostile body is quoted back, and the gateway's memory
comes back to where it was.
"""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from adapters.boss import BossAdapter
from adapters.declared.registry import BUNDLED_SYSTEMS_DIR, load_registry
from adapters.declared.system import DeclaredSystem
from adapters.errors import BadResponse
from adapters.parsing import ReplyLimits, read_json, read_xml
from adapters.resilience import Endpoint
from simulators.dataset import CustomerBundle, has_certificate_typo
from tests.conftest import HUB_SEED
from tests.harness import (
    REPO,
    SimulatorUrls,
    free_ports,
    gateway_env,
    issue_key,
    post_graphql,
    start_gateway,
    stop,
)
from tests.hostile_backends import HUGE_PADDING, MARKER, WSDL_PADDING

#: The hub's default reply cap (BackendSettings.max_response_bytes).
DEFAULT_CAP = 8 * 1024 * 1024


def _tcp_buffer_max(name: str, fallback: int) -> int:
    """The most this machine's kernel lets one TCP socket buffer grow to (autotuning's top)."""
    try:
        return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return fallback


#: What may sit in socket buffers between the hostile server and the hub when it hangs up:
#: the server counts what it handed its socket, and a loaded machine lets the kernel grow the
#: hub's receive buffer to its top (32 MB on some machines) before the hub reads the cap. Still
#: well under what an uncapped read would take (WSDL_PADDING, HUGE_PADDING).
IN_FLIGHT_SLACK = max(
    16 * 1024 * 1024,
    _tcp_buffer_max("tcp_rmem", 6 * 1024 * 1024) + _tcp_buffer_max("tcp_wmem", 4 * 1024 * 1024),
)
# Else a hub that read everything would pass the checks below.
assert min(WSDL_PADDING, HUGE_PADDING) > DEFAULT_CAP + IN_FLIGHT_SLACK, "buffers too large here"

QUERY = """query($id: ID!) { customer(id: $id) {
  id
  profile { customerNo name }
  subscriptions { msisdn }
  billingAccounts { id balance { amount { amount } } }
  tickets(first: 3) { id }
} }"""
RESOLVE = "query($msisdn: String!) { customerByMsisdn(msisdn: $msisdn) { id } }"

#: The fields of the query each system answers.
PATHS = {
    "boss": {("customer", "profile"), ("customer", "subscriptions")},
    "billing": {("customer", "billingAccounts")},
}
#: Per system, each case and the hostile modes it runs in turn (tests/hostile_backends.py).
#: "deep" adds 100 levels (what a reader without a depth limit accepts), then 100,000;
#: "entities" a billion laughs (libxml2 itself refuses the expansion), then a DTD with an
#: external entity (which only the refusal of DTDs stops).
CASES = {
    "boss": {
        "endless": ("endless",),
        "huge": ("huge",),
        "deep": ("deep", "abyss"),
        "entities": ("laughs", "xxe"),
        "swarm": ("swarm",),
        "gzip_bomb": ("gzip_bomb",),
        "wrong_type": ("wrong_type",),
    },
    "billing": {
        "endless": ("endless",),
        "huge": ("huge",),
        "deep": ("deep", "abyss"),
        "swarm": ("swarm",),
        "gzip_bomb": ("gzip_bomb",),
        "wrong_type": ("wrong_type",),
    },
}
#: The limit a mode's refusal must name (the others are refused for what they are: a DTD, a
#: content type, libxml2's own depth ceiling).
LIMIT_NAMED = {
    "endless": "max_response_bytes",
    "huge": "max_response_bytes",
    "gzip_bomb": "max_response_bytes",
    "deep": "max_response_depth",
    "swarm": "max_response_items",
}
SIZE_MODES = ("endless", "huge")


@dataclass(frozen=True)
class Hostile:
    """One hostile proxy process and its control."""

    url: str
    process: subprocess.Popen

    def set(self, mode: str) -> None:
        httpx.post(f"{self.url}/_hostile/mode", json={"mode": mode}, timeout=10).raise_for_status()

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/_hostile/stats", timeout=10).json()


def start_hostile(kind: str, upstream: str) -> Hostile:
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.hostile_backends",
            "--kind",
            kind,
            "--upstream",
            upstream,
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("hostile ready"):
        stop(process)
        raise RuntimeError(f"hostile backend did not start: {line!r}")
    return Hostile(f"http://127.0.0.1:{port}", process)


@dataclass(frozen=True)
class HostileHub:
    url: str
    key: str
    pid: int
    log: Path
    hostile: dict[str, Hostile]

    def query(self, document: str, variables: dict) -> dict:
        response = post_graphql(self.url, self.key, document, variables)
        assert response.status_code == 200, response.text
        assert MARKER.decode() not in response.text
        return response.json()

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def hub(sims: SimulatorUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileHub]:
    hostile: dict[str, Hostile] = {}
    process = None
    try:
        hostile["boss"] = start_hostile("soap", sims.boss)
        hostile["billing"] = start_hostile("rest", sims.billing)
        state = tmp_path_factory.mktemp("hostilehub")
        env = gateway_env(
            SimulatorUrls(boss=hostile["boss"].url, billing=hostile["billing"].url, care=sims.care),
            f"sqlite+aiosqlite:///{state / 'hub.db'}",
            # Every call must reach the hostile backend; the reply limits keep their defaults.
            SWITCHBOARD_CACHE__ENABLED="false",
        )
        key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
        url, process = start_gateway(env, state / "gateway.log")
        yield HostileHub(url, key, process.pid, state / "gateway.log", hostile)
    finally:
        if process is not None:
            stop(process)
        for backend in hostile.values():
            stop(backend.process)


@pytest.fixture(scope="module")
def known(hub: HostileHub, customers: list[CustomerBundle]) -> tuple[str, CustomerBundle]:
    """A customer the hub has linked in all three systems (so BOSS is not needed to find it)."""
    bundle = next(
        c
        for c in customers[60:]
        if not has_certificate_typo(HUB_SEED, c.customer.index)
        and any(s.status != "D" for s in c.subscribers)
    )
    msisdn = next(s.msisdn for s in bundle.subscribers if s.status != "D")
    hub_id = hub.query(RESOLVE, {"msisdn": msisdn})["data"]["customerByMsisdn"]["id"]
    healthy = hub.query(QUERY, {"id": hub_id})
    assert "errors" not in healthy, healthy
    return hub_id, bundle


@pytest.fixture
def proxying(hub: HostileHub) -> Iterator[None]:
    yield
    for backend in hub.hostile.values():
        backend.set("proxy")


def assert_only_system_failed(body: dict, system: str, bundle: CustomerBundle) -> None:
    customer = body["data"]["customer"]
    assert customer is not None, body
    errors = body["errors"]
    assert {tuple(e["path"]) for e in errors} == PATHS[system], errors
    assert {e["extensions"]["code"] for e in errors} == {"BACKEND_BAD_RESPONSE"}, errors
    assert {e["extensions"]["system"] for e in errors} == {system}
    for path in PATHS[system]:
        assert customer[path[-1]] is None
    # Every other system still answers.
    assert customer["tickets"] is not None
    if system != "billing":
        assert [a["id"] for a in customer["billingAccounts"]] == [bundle.account.id]
    if system != "boss":
        assert customer["profile"]["customerNo"] == bundle.customer.customer_no
        assert customer["subscriptions"]


@pytest.mark.parametrize(("system", "case"), [(s, c) for s, cases in CASES.items() for c in cases])
def test_a_hostile_reply_fails_only_its_system(hub, known, proxying, system, case):
    hub_id, bundle = known
    backend = hub.hostile[system]
    for mode in CASES[system][case]:
        before = backend.stats()
        backend.set(mode)
        body = hub.query(QUERY, {"id": hub_id})
        assert_only_system_failed(body, system, bundle)
        if mode in LIMIT_NAMED:
            assert all(LIMIT_NAMED[mode] in e["message"] for e in body["errors"]), body
        if mode in SIZE_MODES:
            # The hub stopped reading near its cap and hung up: the stream never ran to its end.
            stats = wait_for_abort(backend, before["streams_aborted"])
            assert stats["max_bytes_before_abort"] < DEFAULT_CAP + IN_FLIGHT_SLACK
    # The same system answers again once its replies are sane: the hub kept nothing broken.
    backend.set("proxy")
    assert "errors" not in hub.query(QUERY, {"id": hub_id})


def wait_for_abort(backend: Hostile, aborted_before: int) -> dict[str, int]:
    # The hostile server notices the hang-up a moment after the hub answered (bounded wait).
    for _ in range(100):
        stats = backend.stats()
        if stats["streams_aborted"] > aborted_before:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"the hub never hung up on the stream: {stats}")


async def waited_for_abort(backend: Hostile, aborted_before: int) -> dict[str, int]:
    """``wait_for_abort`` for a hub in this process: the loop that owns the connection must
    keep running while we wait (the hang-up is a transport close it runs a pass later)."""
    for _ in range(100):
        stats = backend.stats()
        if stats["streams_aborted"] > aborted_before:
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"the hub never hung up on the stream: {stats}")


def hostile_burst(hub: HostileHub, hub_id: str, pool: ThreadPoolExecutor) -> int:
    """Every hostile mode of both systems, 8 requests each, 4 at a time; the RSS after, in kB."""
    for system, cases in CASES.items():
        for mode in (m for modes in cases.values() for m in modes):
            hub.hostile[system].set(mode)
            bodies = list(pool.map(lambda _: hub.query(QUERY, {"id": hub_id}), range(8)))
            assert all(
                {e["extensions"]["code"] for e in b["errors"]} == {"BACKEND_BAD_RESPONSE"}
                for b in bodies
            ), (system, mode, [[e["extensions"]["code"] for e in b["errors"]] for b in bodies])
        hub.hostile[system].set("proxy")
    return hub.rss_kb()


def test_bursts_of_hostile_replies_leave_memory_where_it_was(hub, known, proxying):
    hub_id, _ = known
    for _ in range(5):
        hub.query(QUERY, {"id": hub_id})
    before_kb = hub.rss_kb()
    with ThreadPoolExecutor(max_workers=4) as pool:
        after_kb = [hostile_burst(hub, hub_id, pool) for _ in range(3)]
    print(f"gateway RSS {before_kb} kB before, {after_kb} kB after each burst")
    # The first burst takes the allocator to its working set for the peak (4 requests at a
    # time, each up to two 8 MiB bodies in flight), and it keeps part of that; before the caps
    # one endless body alone added 640 MB, for good.
    first_mb = (after_kb[0] - before_kb) / 1024
    assert first_mb < 100, f"the first burst grew the gateway by {first_mb:.0f} MB"
    # Later bursts must not add to it: nothing of a refused reply is kept.
    later_mb = (max(after_kb[1:]) - after_kb[0]) / 1024
    assert later_mb < 50, f"later bursts grew the gateway by {later_mb:.0f} MB more"
    # Whatever the hub logged about all of it, none of it is the backends' bodies.
    assert MARKER.decode() not in hub.log.read_text(errors="replace")


async def test_an_oversized_wsdl_is_refused_at_its_cap(hub, proxying):
    """zeep's WSDL fetch (synchronous, at start-up) is capped like every call."""
    backend = hub.hostile["boss"]
    before = backend.stats()
    backend.set("huge_wsdl")
    adapter = BossAdapter(
        Endpoint("boss", backend.url, timeout_s=2.0),
        wsdl_path="/boss/services/BossService?wsdl",
        service_path="/boss/services/BossService",
        login_system_code="SWITCHBOARD",
    )
    try:
        with pytest.raises(BadResponse) as refused:
            await adapter.start()
    finally:
        await adapter.close()
    assert "max_response_bytes" in refused.value.message
    stats = wait_for_abort(backend, before["streams_aborted"])
    assert stats["max_bytes_before_abort"] < DEFAULT_CAP + IN_FLIGHT_SLACK


@pytest.fixture(scope="module")
def hostile_loyalty(sims: SimulatorUrls) -> Iterator[Hostile]:
    backend = start_hostile("soap", sims.loyalty_north)
    try:
        yield backend
    finally:
        stop(backend.process)


@pytest.mark.parametrize("case", list(CASES["boss"]))
async def test_the_declared_soap_engine_holds_the_same_limits(
    sims, hostile_loyalty, customers, case
):
    """The generic engine (a SOAP 1.2 system, two instances): only the hostile one fails."""
    spec = next(s for s in load_registry(BUNDLED_SYSTEMS_DIR) if s.name == "loyalty")
    urls = {"loyalty-north": hostile_loyalty.url, "loyalty-south": sims.loyalty_south}
    system = DeclaredSystem(spec, {n: Endpoint(n, urls[n], timeout_s=2.0) for n in urls})
    numbers = [s.msisdn for c in customers for s in c.subscribers]
    north = [m for m in numbers if system.owner_of(m) == "loyalty-north"][:20]
    south = [m for m in numbers if system.owner_of(m) == "loyalty-south"][:20]
    assert north and south
    await system.start()
    try:
        hostile_loyalty.set("proxy")
        await system.lookup_msisdns("membersByMsisdn", north)  # sane replies read fine
        for mode in CASES["boss"][case]:
            before = hostile_loyalty.stats()
            hostile_loyalty.set(mode)
            with pytest.raises(BadResponse) as refused:
                await system.lookup_msisdns("membersByMsisdn", north)
            assert refused.value.system == "loyalty-north"
            assert MARKER.decode() not in str(refused.value)
            if mode in LIMIT_NAMED:
                assert LIMIT_NAMED[mode] in refused.value.message
            if mode in SIZE_MODES:
                stats = await waited_for_abort(hostile_loyalty, before["streams_aborted"])
                assert stats["max_bytes_before_abort"] < DEFAULT_CAP + IN_FLIGHT_SLACK
            # The other instance of the same system still answers.
            await system.lookup_msisdns("membersByMsisdn", south)
    finally:
        hostile_loyalty.set("proxy")
        await system.close()


def test_every_adapter_decodes_replies_through_the_bounded_readers():
    """A reply decoded anywhere but adapters/parsing.py would skip the limits."""
    unbounded = {("json", "loads"), ("etree", "fromstring"), ("etree", "XML"), ("etree", "parse")}
    offenders = []
    for module in sorted((REPO / "adapters").rglob("*.py")):
        # parsing.py holds the readers; codec.py decodes the hub's own cache entries;
        # contract_check.py is `switchboard systems check`, run by hand, not by the gateway;
        # cache_fanout.py decodes the hub's own eviction messages, size-checked first.
        if module.name in ("parsing.py", "codec.py", "contract_check.py", "cache_fanout.py"):
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else None
            if (name, node.func.attr) in unbounded or (
                node.func.attr == "json" and not node.args and not node.keywords
            ):
                offenders.append(f"{module.name}:{node.lineno} {name}.{node.func.attr}()")
    assert not offenders, offenders


def _nested(levels: int) -> list:
    document: list = []
    for _ in range(levels - 1):
        document = [document]
    return document


# --- the readers on their own: what must pass, what must not ----------------------------

LIMITS = ReplyLimits(max_depth=64, max_items=1000)
JSON_TYPE = "application/json; charset=utf-8"


@pytest.mark.parametrize(
    "document",
    [
        # Brackets, commas and escaped quotes inside strings are text, not structure.
        json.dumps({"note": "[" * 500 + "," * 5000, "quoted": 'say "[[[" \\ then ]]]'}),
        json.dumps(["\\", '\\\\"[[[[', {"a": '\\"}}}}'}]),
        json.dumps(_nested(64)),
        json.dumps(list(range(990))),
    ],
)
def test_json_the_limits_allow_is_read(document):
    assert read_json("billing", document.encode(), JSON_TYPE, LIMITS) == json.loads(document)


@pytest.mark.parametrize(
    ("document", "limit"),
    [
        (json.dumps(_nested(65)), "max_response_depth"),
        (json.dumps({"a": [{"b": _nested(64)}]}), "max_response_depth"),
        (json.dumps(list(range(1001))), "max_response_items"),
        ('["\\\\"' + ", [" * 70 + "]" * 70 + "]", "max_response_depth"),
    ],
)
def test_json_past_the_limits_is_refused_naming_the_limit(document, limit):
    with pytest.raises(BadResponse) as refused:
        read_json("billing", document.encode(), JSON_TYPE, LIMITS)
    assert limit in refused.value.message


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json", True),
        ("text/json", False),
        ("text/html", False),
        (None, False),
    ],
)
def test_a_rest_reply_must_say_json(content_type, accepted):
    if accepted:
        assert read_json("billing", b"[]", content_type, LIMITS) == []
    else:
        with pytest.raises(BadResponse):
            read_json("billing", b"[]", content_type, LIMITS)


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("text/xml; charset=utf-8", True),
        ('application/soap+xml; charset=utf-8; action="urn:x"', True),
        ("application/xml", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_a_soap_reply_must_say_soap_xml(content_type, accepted):
    if accepted:
        assert read_xml("boss", b"<a/>", content_type, LIMITS).tag == "a"
    else:
        with pytest.raises(BadResponse):
            read_xml("boss", b"<a/>", content_type, LIMITS)


def test_xml_within_the_limits_is_read_and_past_them_refused():
    at_limit = b"<r>" + b'<a x="1"/>' * 499 + b"</r>"  # 1 + 499 elements + 499 attributes
    assert len(read_xml("boss", at_limit, "text/xml", LIMITS)) == 499
    deep_enough = b"<a>" * 64 + b"</a>" * 64
    assert read_xml("boss", deep_enough, "text/xml", LIMITS).tag == "a"
    for body, limit in (
        (b"<r>" + b'<a x="1"/>' * 500 + b"</r>", "max_response_items"),
        (b"<a>" * 65 + b"</a>" * 65, "max_response_depth"),
        # Over the cheap bound ("<" and "=" counted), so counted exactly before any tree.
        (b"<r>" + b"<a>" * 65 + b"</a>" * 65 + b"<b/>" * 900 + b"</r>", "max_response_depth"),
    ):
        with pytest.raises(BadResponse) as refused:
            read_xml("boss", body, "text/xml", LIMITS)
        assert limit in refused.value.message


def test_a_refused_xml_census_leaves_nothing_for_the_garbage_collector():
    """One element with many attributes, refused by the census: what the parse made is
    freed as the call returns, not held in a reference cycle until the collector runs
    (a backend sending such replies grew the hub by gigabytes)."""
    import gc

    from adapters.errors import BadResponse
    from adapters.parsing import ReplyLimits, read_xml

    attributes = " ".join(f'a{n}="{n}"' for n in range(5000))
    body = f"<Envelope><Body {attributes}/></Envelope>".encode()
    gc.collect()
    gc.disable()  # no collection of its own while the reply is read
    try:
        with pytest.raises(BadResponse, match="max_response_items"):
            read_xml("boss", body, "text/xml", ReplyLimits(max_items=1000))
        assert gc.collect() == 0  # nothing was left in a cycle
    finally:
        gc.enable()


@pytest.mark.parametrize("threshold", [0, 1 << 30])
async def test_big_replies_are_parsed_off_the_event_loop(
    sims, hub_data_dir, monkeypatch, threshold
):
    """parse_in_thread_above_bytes: a SOAP reply longer than it is parsed in a worker thread
    (the loop serves others meanwhile); one within it on the loop, where a thread costs more
    than the parse; a swarm that must be counted first stays on the loop (the census holds
    the GIL). Against the live loyalty simulator."""
    import sqlite3
    import threading

    import adapters.declared.soap as soap_engine
    from adapters.declared.registry import load_registry
    from adapters.declared.system import DeclaredSystem
    from adapters.parsing import ReplyLimits, needs_census
    from adapters.resilience import Endpoint
    from tests.harness import REPO

    on_main: list[bool] = []
    reader = soap_engine.read_xml

    def watched(*args, **kwargs):
        on_main.append(threading.current_thread() is threading.main_thread())
        return reader(*args, **kwargs)

    monkeypatch.setattr(soap_engine, "read_xml", watched)
    with sqlite3.connect(hub_data_dir / "loyalty.db") as conn:
        member_no = conn.execute(
            "SELECT member_no FROM member WHERE msisdn LIKE '+8613%' LIMIT 1"
        ).fetchone()[0]
    spec = load_registry(REPO / "systems").systems["loyalty"]
    urls = {"loyalty-north": sims.loyalty_north, "loyalty-south": sims.loyalty_south}
    endpoints = {
        i.name: Endpoint(
            system=i.name, base_url=urls[i.name], parse_in_thread_above_bytes=threshold
        )
        for i in spec.instances
    }
    system = DeclaredSystem(spec, endpoints)
    await system.start()
    try:
        found = await system.read_by_keys("members", [("loyalty-north", member_no)])
    finally:
        await system.close()
    assert ("loyalty-north", member_no) in found
    assert on_main and all(main is (threshold > 0) for main in on_main), on_main
    swarm = b"<r>" + b"<a/>" * 2000 + b"</r>"
    assert needs_census(swarm, ReplyLimits(max_items=1000))
    assert not needs_census(swarm, ReplyLimits(max_items=10_000))
