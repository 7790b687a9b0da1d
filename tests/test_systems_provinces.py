"""One role served by two systems: two provincial BOSS instances behind the content router.

The session's dataset is split between two real BOSS simulators (tests/province_boss.py): the
east holds customers numbered below FIRST_WEST, the west the others. The bundled BOSS files,
copied into a systems folder, declare both instances and what each owns
(``owns: {key_prefix: ...}``); nothing else changes. Reads by customer number go to the owner
only; what no rule places (an MSISDN, an ID card, a search page, a subscriber number) asks
both, and a province that answers NOT_FOUND holds none. A write goes to one province, the
owner, and a province down fails only its own customers.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from adapters.declared.registry import load_registry
from adapters.declared.roles import DeclaredCustomerSystem, play
from adapters.errors import NotFound, Unavailable
from adapters.resilience import Endpoint
from simulators.dataset import CustomerBundle
from tests.harness import REPO, free_ports, gateway_env, issue_key, post_graphql, running_gateway
from tests.harness import stop as stop_process
from tests.province_boss import split

FIRST_WEST = 1_000_000_200  # customers[199] onwards live in the west
INSTANCES = """instances:
  - name: boss-east
    base_url: http://127.0.0.1:9
    owns: {key_prefix: ["10000000-10000001"]}
  - name: boss-west
    base_url: http://127.0.0.1:9
    owns: {key_prefix: ["10000002-10000004"]}
"""
QUERY = """
query Customer($msisdn: String!) {
  customerByMsisdn(msisdn: $msisdn) {
    profile { customerNo name certificateNumber starLevel segment }
    subscriptions { msisdn status offering { id name } arpu usage { dataUsedMb } }
    billingAccounts { id balance { amount { amount } } }
    tickets { id status }
  }
}
"""
PAGE = """
query Page($first: Int!, $after: String) {
  customers(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { profile { customerNo } }
  }
}
"""


@dataclass
class Provinces:
    url: str
    key: str
    urls: dict[str, str]
    dirs: dict[str, Path]
    folder: Path
    http: httpx.Client

    def calls(self, instance: str) -> dict[str, int]:
        return self.http.get(f"{self.urls[instance]}/_sim/stats").json()["calls"]

    def reset(self) -> None:
        for url in self.urls.values():
            self.http.post(f"{url}/_sim/reset").raise_for_status()

    def control(self, instance: str, **state: object) -> None:
        self.http.post(f"{self.urls[instance]}/_sim/control", json=state).raise_for_status()

    def ask(self, document: str, variables: dict | None = None) -> dict:
        response = post_graphql(self.url, self.key, document, variables, purpose="service")
        assert response.status_code == 200, response.text
        return response.json()

    def orders(self, instance: str) -> list[tuple[str, str]]:
        path = self.dirs[instance] / "boss.db"
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT order_id, subscriber_no FROM offering_order").fetchall()


def province_folder(root: Path) -> Path:
    """The bundled BOSS files with two instances in place of one: the only change."""
    folder = root / "systems"
    shutil.copytree(REPO / "systems" / "boss", folder / "boss")
    system = folder / "boss" / "system.yaml"
    text = system.read_text()
    start = text.index("instances:\n")
    end = text.index("call:\n", start)
    system.write_text(text[:start] + INSTANCES + text[end:])
    return folder


@pytest.fixture(scope="module")
def provinces(sims, hub_data_dir, tmp_path_factory) -> Iterator[Provinces]:
    state = tmp_path_factory.mktemp("provinces")
    dirs = {"boss-east": state / "east", "boss-west": state / "west"}
    split(hub_data_dir, dirs["boss-east"], dirs["boss-west"], FIRST_WEST)
    east_port, west_port = free_ports(2)
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.province_boss"),
            *(str(dirs["boss-east"]), str(east_port), str(dirs["boss-west"]), str(west_port)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("provinces ready"), line
        urls = {
            "boss-east": f"http://127.0.0.1:{east_port}",
            "boss-west": f"http://127.0.0.1:{west_port}",
        }
        folder = province_folder(state)
        env = gateway_env(
            sims,
            f"sqlite+aiosqlite:///{state / 'hub.db'}",
            SWITCHBOARD_SYSTEMS_DIR=str(folder),
            SWITCHBOARD_AUDIT__STATE_DIR=str(state),
            SWITCHBOARD_SYSTEM_URLS=json.dumps(urls),
        )
        key = issue_key(env, channel="agent", role="agent", scopes=("customer:read",))
        with (
            httpx.Client(timeout=10) as http,
            running_gateway(env, state / "gateway.log") as url,
        ):
            yield Provinces(url, key, urls, dirs, folder, http)
    finally:
        stop_process(server)


def active(bundle: CustomerBundle) -> str:
    return next(s.msisdn for s in bundle.subscribers if s.status != "D")


def test_each_customer_is_read_from_the_province_that_holds_it(provinces, gateway, customers):
    for bundle, home, other in (
        (customers[10], "boss-east", "boss-west"),
        (customers[250], "boss-west", "boss-east"),
    ):
        provinces.reset()
        found = provinces.ask(QUERY, {"msisdn": active(bundle)})
        assert "errors" not in found, found
        # The same answer as the one BOSS that holds everyone (the session's gateway).
        single = gateway.query(QUERY, {"msisdn": active(bundle)}).json()
        assert found["data"] == single["data"]
        assert found["data"]["customerByMsisdn"]["profile"]["customerNo"] == (
            bundle.customer.customer_no
        )
        # The number says nothing of its province: both are asked, the other holds none.
        assert provinces.calls(other).get("QuerySubscriberByMsisdn") == 1
        # By customer number only the owner is asked.
        assert provinces.calls(home).get("QueryCustomer", 0) >= 1
        assert provinces.calls(home).get("QuerySubscribers", 0) >= 1
        assert "QueryCustomer" not in provinces.calls(other)
        assert "QuerySubscribers" not in provinces.calls(other)


def test_a_search_runs_through_both_provinces_as_one_list(provinces, customers):
    provinces.reset()
    numbers: list[str] = []
    after = None
    while True:
        page = provinces.ask(PAGE, {"first": 50, "after": after})["data"]["customers"]
        assert page["totalCount"] == len(customers)
        numbers += [n["profile"]["customerNo"] for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    # Every customer once, in the order one BOSS would list them (east's numbers first).
    assert numbers == [c.customer.customer_no for c in customers]
    # One list call per province per page (each tells its total).
    pages = -(-len(customers) // 50)
    assert provinces.calls("boss-east")["QueryCustomerList"] == pages
    assert provinces.calls("boss-west")["QueryCustomerList"] == pages


@pytest.fixture
async def played(provinces) -> Iterator[DeclaredCustomerSystem]:
    spec = load_registry(provinces.folder).playing("customer")
    assert spec is not None
    adapter = play(spec, Endpoint("boss", "http://127.0.0.1:9"), urls=provinces.urls)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close()


def west_line(customers: list[CustomerBundle]):
    return next(
        s
        for c in customers[300:]
        for s in c.subscribers
        if s.status == "A" and s.offering_id != "OF0011"
    )


async def test_a_write_goes_once_to_the_province_that_holds_the_line(played, provinces, customers):
    line = west_line(customers)
    east_before, west_before = provinces.orders("boss-east"), provinces.orders("boss-west")
    key = f"key-{uuid.uuid4()}"
    first = await played.change_offering(line.subscriber_no, "OF0011", key)
    again = await played.change_offering(line.subscriber_no, "OF0011", key)
    assert first.id == again.id and first.new_offering_id == "OF0011"
    cancelled = await played.cancel_order(first.id, f"cancel-{key}")
    assert cancelled.status == "CANCELLED"
    # Counted in the provinces' own stores: one order, in the west, none in the east.
    assert provinces.orders("boss-east") == east_before
    assert set(provinces.orders("boss-west")) - set(west_before) == {(first.id, line.subscriber_no)}
    # A subscriber neither province holds is NOT_FOUND, and nothing is written anywhere.
    with pytest.raises(NotFound):
        await played.change_offering("S999999999999", "OF0011", f"key-{uuid.uuid4()}")
    assert provinces.orders("boss-east") == east_before


async def test_the_catalogue_is_one_list_and_eligibility_asks_where_the_line_is(
    played, provinces, customers
):
    offerings = await played.get_offerings()
    assert len({o.id for o in offerings}) == len(offerings) > 0  # both sell the same ones
    line = west_line(customers)
    eligible, _ = await played.check_eligibility(line.subscriber_no, "OF0011")
    assert eligible
    by_certificate = await played.find_customer_by_certificate(customers[20].customer.cert_no)
    assert by_certificate.customer_no == customers[20].customer.customer_no


async def test_a_province_down_fails_only_its_own_customers(played, provinces, customers):
    provinces.reset()
    provinces.control("boss-west", failure_rate=1.0)
    try:
        east, west = customers[30].customer.customer_no, customers[330].customer.customer_no
        assert set(await played.get_customers([east])) == {east}
        with pytest.raises(Unavailable):
            await played.get_customers([west])
        # The gateway stays up for the east; /readyz names the west (a required system).
        ready = httpx.get(f"{provinces.url}/readyz", timeout=10)
        assert ready.status_code == 503
        backends = ready.json()["backends"]
        assert backends["boss-east"]["status"] == "up"
        assert backends["boss-west"]["status"] != "up"
        found = provinces.ask(QUERY, {"msisdn": active(customers[40])})
        assert "errors" not in found, found
    finally:
        provinces.reset()
