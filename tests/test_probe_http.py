"""Probes against the real gateway over loopback: bad client input, GraphQL over HTTP, failed
authentication, websocket floods and field suggestions (issue 13, "Hardening").

Each probe was reproduced against the demo gateway before the fix (HTTP 500s, INTERNAL_ERROR,
200 x 401 for wrong keys, 5000 websocket subscribes in 1.1 s, "Did you mean 'customer'?" for
channels that may not introspect). One gateway runs with the default limits; two more run
with small limits, one set through SWITCHBOARD_* variables and one through a TOML file, to
show each new setting reaching the code.

Throttling counts per client address: the tests that fail authentication on purpose connect
from addresses of their own (127.0.0.2 and up), so no other test is throttled.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from gateway.policy_store import DEFAULT_POLICY_FILE
from gateway.settings import load_settings
from tests.audit_support import CUSTOMER_KEY, AuditedGateway
from tests.harness import gateway_env, issue_key, running_gateway

JSON = {"Content-Type": "application/json"}
GRAPHQL_RESPONSE = "application/graphql-response+json"
FILE_COMPLAINT = """
mutation File($description: String!, $customer: ID!, $key: String!) {
  fileComplaint(input: {customerId: $customer, category: "network",
                        description: $description, idempotencyKey: $key}) { id }
}"""
FOLLOW = "subscription Follow($c: ID!) { requestUpdates(customerId: $c) { state } }"

# Small limits for the configured gateways: the same values through the environment and TOML.
SMALL = {
    ("http", "max_body_bytes"): 4096,
    ("http", "max_json_depth"): 6,
    ("auth", "failure_window_s"): 3.0,
    ("auth", "max_failures_per_source"): 3,
    ("auth", "max_failures_per_key_id"): 2,
    ("websocket", "max_operations_per_connection"): 2,
    ("websocket", "max_messages_per_second"): 10,
}


@dataclass(frozen=True)
class Probe:
    gateway: AuditedGateway
    log: Path

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/graphql"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def key(self, channel: str = "agent") -> str:
        return self.gateway.keys[channel]

    def headers(self, channel: str = "agent", **extra: str) -> dict[str, str]:
        return {"X-Api-Key": self.key(channel), "X-Purpose": "service", **extra}

    def raw(
        self,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> httpx.Response:
        sent = {**self.headers(), **JSON, **(headers or {})}
        if request_id:
            sent["X-Request-Id"] = request_id
        return httpx.post(self.url, content=body, headers=sent, timeout=30)

    def post(self, payload: Any, **kwargs: Any) -> httpx.Response:
        return self.raw(json.dumps(payload).encode(), **kwargs)

    def customer_id(self) -> str:
        found = self.post({"query": "{ customers(first: 1) { nodes { id } } }"}).json()
        return found["data"]["customers"]["nodes"][0]["id"]


def _start(sims, state: Path, **extra_env: str) -> Iterator[Probe]:
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    for profile in policy["channels"].values():
        profile["rate_limit_per_minute"] = 100_000  # only the throttles under test refuse
    policy_file = state / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    database = state / "hub.db"
    config = extra_env.pop("SWITCHBOARD_CONFIG", None)
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_POLICY_FILE=str(policy_file),
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(state / "keys"),
        SWITCHBOARD_AUDIT__CUSTOMER_KEY=CUSTOMER_KEY,
        **extra_env,
    )
    if config:
        env["SWITCHBOARD_CONFIG"] = config
    keys = {
        channel: issue_key(env, channel=channel, role=role, scopes=scopes)
        for channel, role, scopes in (
            ("agent", "agent", ("customer:read", "complaints:write")),
            ("app", "customer", ("customer:read",)),
        )
    }
    log = state / "gateway.log"
    with running_gateway(env, log) as url:
        yield Probe(AuditedGateway(url=url, keys=keys, database=database, env=env), log)


@pytest.fixture(scope="module")
def probe(sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    """A gateway with every limit at its default."""
    yield from _start(sims, tmp_path_factory.mktemp("probe"))


def _small_env() -> dict[str, str]:
    return {
        f"SWITCHBOARD_{section.upper()}__{name.upper()}": str(value)
        for (section, name), value in SMALL.items()
    }


def _small_toml() -> str:
    sections: dict[str, list[str]] = {}
    for (section, name), value in SMALL.items():
        sections.setdefault(section, []).append(f"{name} = {value}")
    return "\n".join(f"[{s}]\n" + "\n".join(lines) for s, lines in sections.items()) + "\n"


@pytest.fixture(scope="module", params=["environment", "toml"])
def small(request, sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    """A gateway with the small limits of SMALL, set one way or the other."""
    state = tmp_path_factory.mktemp(f"small-{request.param}")
    if request.param == "environment":
        yield from _start(sims, state, **_small_env())
    else:
        config = state / "switchboard.toml"
        config.write_text(_small_toml())
        yield from _start(sims, state, SWITCHBOARD_CONFIG=str(config))


def rid() -> str:
    return uuid.uuid4().hex


def code_of(response: httpx.Response) -> str:
    return response.json()["errors"][0]["extensions"]["code"]


def only_record(probe: Probe, request_id: str) -> dict:
    found = probe.gateway.records(request_id)
    assert len(found) == 1, found
    return found[0]


def client_from(address: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (a loopback address)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


# --- 3. bad client input: a coded 4xx, a record, nothing changed --------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
BAD_BODIES = {
    # name: (body, content type, status, code)
    "a JSON string": (b'"{ offerings { id } }"', "application/json", 400, "BAD_REQUEST"),
    "a JSON number": (b"42", "application/json", 400, "BAD_REQUEST"),
    "JSON null": (b"null", "application/json", 400, "BAD_REQUEST"),
    "invalid UTF-8": (b'{"query": "{ offerings { id } }\xff"}', "application/json", 400, None),
    "an overlong UTF-8 sequence": (
        b'{"query": "\xc0\xaf{ offerings { id } }"}',
        "application/json",
        400,
        "BAD_REQUEST",
    ),
    "a batch array": (b'[{"query": "{ offerings { id } }"}]', "application/json", 400, None),
    "JSON nested too deep": (
        b'{"query": "{ offerings { id } }", "extensions": {"a": ' + DEEP + b"}}",
        "application/json",
        400,
        "BAD_REQUEST",
    ),
    "not JSON": (b"{query: offerings}", "application/json", 400, "BAD_REQUEST"),
    "query not a string": (b'{"query": 7}', "application/json", 400, "BAD_REQUEST"),
    "variables not an object": (
        b'{"query": "{ offerings { id } }", "variables": "x"}',
        "application/json",
        400,
        "BAD_REQUEST",
    ),
    "operationName not a string": (
        b'{"query": "{ offerings { id } }", "operationName": {"a": 1}}',
        "application/json",
        400,
        "BAD_REQUEST",
    ),
    "a text/plain body": (b'{"query": "{ offerings { id } }"}', "text/plain", 415, None),
    "a form body": (
        b"query=%7B%20offerings%20%7B%20id%20%7D%20%7D",
        "application/x-www-form-urlencoded",
        415,
        None,
    ),
    "a body in latin-1": (
        b'{"query": "{ offerings { id } }"}',
        "application/json; charset=latin-1",
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_bodies_get_a_coded_4xx_and_a_record(probe, name):
    body, content_type, status, code = BAD_BODIES[name]
    code = code or {400: "BAD_REQUEST", 415: "UNSUPPORTED_MEDIA_TYPE"}[status]
    request_id = rid()
    response = probe.raw(body, headers={"Content-Type": content_type}, request_id=request_id)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "data" not in response.json()
    assert code_of(response) == code
    record = only_record(probe, request_id)
    assert (record["outcome"], record["code"]) == ("refused", code)
    assert record["subject"] == "test-agent" and record["operation_type"] is None


def test_an_oversized_body_gets_413_without_being_read(probe):
    request_id = rid()
    padding = "x" * (1_048_576 + 10)
    response = probe.post(
        {"query": "{ offerings { id } }", "variables": {"pad": padding}}, request_id=request_id
    )
    assert response.status_code == 413
    assert code_of(response) == "PAYLOAD_TOO_LARGE"
    assert only_record(probe, request_id)["code"] == "PAYLOAD_TOO_LARGE"
    # Without a Content-Length (chunked), it is cut at the limit as it arrives.
    chunks = (b'{"query": "{ offerings { id } }", "variables": {"pad": "', b"x" * 1_100_000, b'"}}')
    chunked = httpx.post(
        probe.url, content=iter(chunks), headers={**probe.headers(), **JSON}, timeout=30
    )
    assert chunked.status_code == 413 and code_of(chunked) == "PAYLOAD_TOO_LARGE"
    # Under the limit is served.
    fits = probe.post({"query": "{ offerings { id } }", "extensions": {"pad": "x" * 500_000}})
    assert fits.status_code == 200 and fits.json()["data"]["offerings"]


def test_a_mutation_over_get_is_405_and_runs_nothing(probe):
    customer = probe.customer_id()
    request_id = rid()
    response = httpx.get(
        probe.url,
        params={
            "query": FILE_COMPLAINT,
            "variables": json.dumps(
                {"description": "via GET", "customer": customer, "key": f"probe-{rid()[:16]}"}
            ),
        },
        headers={**probe.headers(), "X-Request-Id": request_id},
        timeout=30,
    )
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    assert code_of(response) == "METHOD_NOT_ALLOWED"
    assert only_record(probe, request_id)["code"] == "METHOD_NOT_ALLOWED"
    assert _open_requests(probe, customer) == []
    # A query over GET still runs.
    answer = httpx.get(
        probe.url, params={"query": "{ offerings { id } }"}, headers=probe.headers(), timeout=30
    )
    assert answer.status_code == 200 and answer.json()["data"]["offerings"]


def _open_requests(probe: Probe, customer: str) -> list:
    answer = probe.post(
        {
            "query": "query($c: ID!) { openRequests(customerId: $c) { id } }",
            "variables": {"c": customer},
        }
    ).json()
    return answer["data"]["openRequests"]


def test_a_lone_surrogate_in_a_mutation_is_refused_and_starts_nothing(probe):
    customer = probe.customer_id()
    request_id = rid()
    # json.dumps writes the lone surrogate as the escape "\ud800", as a client would send it.
    body = json.dumps(
        {
            "query": FILE_COMPLAINT,
            "variables": {
                "description": "no signal \ud800 at home",
                "customer": customer,
                "key": f"probe-{rid()[:16]}",
            },
        }
    ).encode()
    assert b"\\ud800" in body
    response = probe.raw(body, request_id=request_id)
    assert response.status_code == 400, response.text
    assert code_of(response) == "BAD_REQUEST"
    assert only_record(probe, request_id)["code"] == "BAD_REQUEST"
    assert _open_requests(probe, customer) == []
    assert "Traceback" not in probe.log.read_text()


@pytest.mark.parametrize("value", [None, [], {}, {"a": "b"}, 1.5], ids=repr)
def test_a_bad_id_variable_is_bad_user_input_not_an_internal_error(probe, value):
    document = "query($id: ID!) { customer(id: $id) { id } }"
    request_id = rid()
    response = probe.post({"query": document, "variables": {"id": value}}, request_id=request_id)
    # application/json: 200, as GraphQL over HTTP requires for that media type.
    assert response.status_code == 200
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "Variable '$id' has invalid value."  # the value is not echoed
    assert only_record(probe, request_id)["code"] == "BAD_USER_INPUT"
    # application/graphql-response+json: a request error, 400 and no data.
    strict = probe.post(
        {"query": document, "variables": {"id": value}}, headers={"Accept": GRAPHQL_RESPONSE}
    )
    assert strict.status_code == 400
    assert "data" not in strict.json() and code_of(strict) == "BAD_USER_INPUT"


def test_a_bad_input_object_variable_does_not_echo_the_value_or_suggest_fields(probe):
    document = "mutation($i: FileComplaintInput!) { fileComplaint(input: $i) { id } }"
    complaint = {"customerId": "c", "category": "network", "idempotencyKey": "probe-k"}
    # A number where text belongs: graphql-core's reason quoted it back.
    wrong = probe.post(
        {"query": document, "variables": {"i": {**complaint, "description": 110101199003077777}}}
    )
    assert "110101199003077777" not in wrong.text
    error = wrong.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "Variable '$i' has invalid value at .description."
    # A misspelt field: graphql-core suggested the input type's fields.
    misspelt = probe.post({"query": document, "variables": {"i": {**complaint, "descripton": "x"}}})
    assert code_of(misspelt) == "BAD_USER_INPUT"
    assert "Did you mean" not in misspelt.text


# --- 10. GraphQL over HTTP -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{ offerings { id }", "GRAPHQL_PARSE_FAILED"),
        ("{ offerings { nope } }", "GRAPHQL_VALIDATION_FAILED"),
        ("query($n: Int!) { offerings { id } }", "GRAPHQL_VALIDATION_FAILED"),
    ],
    ids=["parse", "validation", "unused variable"],
)
def test_request_errors_are_400_without_data_for_graphql_response_json(probe, document, code):
    strict = probe.post({"query": document}, headers={"Accept": GRAPHQL_RESPONSE})
    assert strict.status_code == 400, strict.text
    assert strict.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert "data" not in strict.json()
    assert code_of(strict) == code
    # application/json (or no Accept, or */*): 200 with data null, as before.
    for accept in ("application/json", "*/*", None):
        headers = {"Accept": accept} if accept else {}
        plain = probe.post({"query": document}, headers=headers)
        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("application/json")
        assert plain.json()["data"] is None and code_of(plain) == code


def test_answers_take_the_media_type_the_client_accepts(probe):
    for accept, media in (
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
        ("application/json", "application/json"),
    ):
        response = probe.post({"query": "{ offerings { id } }"}, headers={"Accept": accept})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media), accept
        assert response.json()["data"]["offerings"]


def test_an_event_stream_subscription_is_refused_cleanly(probe):
    before = probe.log.read_text().count("Traceback")
    request_id = rid()
    sse = probe.post(
        {"query": 'subscription { requestUpdates(requestId: "x") { state } }'},
        headers={"Accept": "text/event-stream"},
        request_id=request_id,
    )
    assert sse.status_code == 406 and code_of(sse) == "NOT_ACCEPTABLE"
    assert only_record(probe, request_id)["code"] == "NOT_ACCEPTABLE"
    over_post = probe.post({"query": 'subscription { requestUpdates(requestId: "x") { state } }'})
    assert over_post.status_code == 400
    assert code_of(over_post) == "SUBSCRIPTION_REQUIRES_WEBSOCKET"
    time.sleep(0.2)
    assert probe.log.read_text().count("Traceback") == before
    assert "INTERNAL_ERROR" not in sse.text + over_post.text


# --- 8. field suggestions ------------------------------------------------------------------------


def test_suggestions_reach_only_channels_that_may_introspect(probe):
    document = '{ custmer(id: "x") { id } }'
    app = probe.post({"query": document}, headers=probe.headers("app"))
    message = app.json()["errors"][0]["message"]
    assert code_of(app) == "GRAPHQL_VALIDATION_FAILED"
    assert "Did you mean" not in message and "customer" not in message.replace("custmer", "")
    agent = probe.post({"query": document})
    assert "Did you mean 'customer'" in agent.json()["errors"][0]["message"]
    # The agent's cached answer does not leak to the app, nor the app's hide the agent's.
    again = probe.post({"query": document}, headers=probe.headers("app"))
    assert "Did you mean" not in again.json()["errors"][0]["message"]
    argument = probe.post(
        {"query": "{ offerings(frist: 1) { id } }"}, headers=probe.headers("app")
    ).json()
    assert "Did you mean" not in json.dumps(argument)


def test_suggestions_stay_off_the_websocket_too(probe):
    misspelt = 'subscription { requestUpdate(requestId: "x") { state } }'
    with open_socket(probe, "app") as ws:
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": misspelt}}))
        message = json.loads(ws.recv(timeout=10))
    assert message["type"] == "error"
    assert message["payload"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Did you mean" not in json.dumps(message)
    with open_socket(probe, "agent") as ws:
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": misspelt}}))
        assert "Did you mean 'requestUpdates'" in ws.recv(timeout=10)


# --- 6. failed authentication is throttled -------------------------------------------------------


def test_wrong_keys_are_throttled_per_source_without_locking_out_others(probe):
    statuses = []
    with client_from("127.0.0.2") as guesser:
        for attempt in range(200):
            response = guesser.post(
                probe.url,
                json={"query": "{ offerings { id } }"},
                headers={"X-Api-Key": f"sb_{attempt:08x}.wrong-secret"},
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                throttled = response
        assert statuses[:20] == [401] * 20
        assert set(statuses[20:]) == {429}
        assert code_of(throttled) == "RATE_LIMITED"
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        # From the throttled address even the right key waits: that address was guessing.
        assert (
            guesser.post(
                probe.url, json={"query": "{ __typename }"}, headers=probe.headers()
            ).status_code
            == 429
        )
    with client_from("127.0.0.3") as other:
        ok = other.post(probe.url, json={"query": "{ offerings { id } }"}, headers=probe.headers())
        assert ok.status_code == 200 and ok.json()["data"]["offerings"]


def test_a_throttled_attempt_is_recorded_as_refused(probe):
    with client_from("127.0.0.4") as guesser:
        # Twenty wrong keys of twenty key ids: the per-source limit, not the per-key one, and
        # the access log's first refusal of that kind for this source (recorded on its own).
        for attempt in range(20):
            guesser.post(
                probe.url,
                json={"query": "{ __typename }"},
                headers={"X-Api-Key": f"sb_feed{attempt:02d}.x"},
            )
        request_id = rid()
        response = guesser.post(
            probe.url,
            json={"query": "{ __typename }"},
            headers={"X-Api-Key": "sb_feed.x", "X-Request-Id": request_id},
        )
    assert response.status_code == 429
    record = only_record(probe, request_id)
    assert (record["outcome"], record["code"], record["subject"]) == (
        "refused",
        "RATE_LIMITED",
        None,
    )


def test_a_key_id_guessed_from_many_sources_is_throttled_per_source(small):
    key_id = small.key().split(".")[0]
    wrong = f"{key_id}.not-the-secret"
    limit = SMALL[("auth", "max_failures_per_key_id")]
    addresses = [f"127.0.1.{i}" for i in range(1, limit + 3)]
    statuses = []
    for address in addresses:
        with client_from(address) as guesser:
            for _ in range(2):  # under the per-source limit (3)
                statuses.append(
                    guesser.post(
                        small.url, json={"query": "{ __typename }"}, headers={"X-Api-Key": wrong}
                    ).status_code
                )
    # Each new address is checked once (401); its second try, once the id is over its
    # limit, is refused unchecked.
    assert statuses[:limit] == [401] * limit
    assert statuses[limit:] and all(s == 429 for s in statuses[limit + 1 :: 2])
    assert all(s == 401 for s in statuses[limit::2])
    # The right key from an address that did not guess works.
    with client_from("127.0.1.200") as owner:
        assert (
            owner.post(
                small.url, json={"query": "{ __typename }"}, headers=small.headers()
            ).status_code
            == 200
        )


def test_the_failure_window_ends(small):
    limit = SMALL[("auth", "max_failures_per_source")]
    with client_from("127.0.2.1") as guesser:
        statuses = [
            guesser.post(
                small.url, json={"query": "{ __typename }"}, headers={"X-Api-Key": "nope"}
            ).status_code
            for _ in range(limit + 1)
        ]
        assert statuses == [401] * limit + [429]
        throttled = guesser.post(
            small.url, json={"query": "{ __typename }"}, headers={"X-Api-Key": "nope"}
        )
        wait = int(throttled.headers["retry-after"])
        assert 1 <= wait <= SMALL[("auth", "failure_window_s")]
        time.sleep(wait + 0.2)
        after = guesser.post(
            small.url, json={"query": "{ __typename }"}, headers={"X-Api-Key": "nope"}
        )
        assert after.status_code == 401


@contextmanager
def socket_from(probe: Probe, address: str, **headers: str) -> Iterator[ClientConnection]:
    """A graphql-transport-ws connection from ``address`` (not yet initialised)."""
    target = urlparse(probe.gateway.url)
    sock = socket.create_connection((target.hostname, target.port), source_address=(address, 0))
    with connect(
        probe.ws_url,
        sock=sock,
        subprotocols=["graphql-transport-ws"],
        additional_headers=headers,
        open_timeout=10,
    ) as ws:
        yield ws


def closed_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server closes the socket; its close code (None if it stayed open)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    except TimeoutError:
        return None
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    return None


def test_wrong_keys_in_connection_init_are_throttled(small):
    limit = SMALL[("auth", "max_failures_per_source")]
    codes = []
    for attempt in range(limit + 1):  # a new key id each time: the per-address count decides
        with socket_from(small, "127.0.3.1") as ws:
            init = {"type": "connection_init", "payload": {"apiKey": f"sb_{attempt}.x"}}
            ws.send(json.dumps(init))
            codes.append(closed_code(ws))
    assert codes == [4403] * limit + [4429]
    with socket_from(small, "127.0.3.2") as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": small.key()}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"


# --- 7. websocket limits -------------------------------------------------------------------------


@contextmanager
def open_socket(probe: Probe, channel: str = "agent") -> Iterator[ClientConnection]:
    with connect(
        probe.ws_url,
        subprotocols=["graphql-transport-ws"],
        additional_headers=probe.headers(channel),
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        yield ws


def test_a_subscribe_flood_closes_the_socket_with_4429(probe):
    sent = 0
    started = time.monotonic()
    with open_socket(probe) as ws:
        try:
            for i in range(5000):
                message = {
                    "id": str(i),
                    "type": "subscribe",
                    "payload": {"query": "{ __typename }"},
                }
                ws.send(json.dumps(message))
                sent += 1
        except ConnectionClosed:
            pass
        code = closed_code(ws, timeout=15)
    assert code == 4429
    assert time.monotonic() - started < 20


def test_operations_per_connection_are_capped_with_a_coded_error(small):
    cap = SMALL[("websocket", "max_operations_per_connection")]
    customer = small.customer_id()
    with open_socket(small) as ws:
        for i in range(cap):
            ws.send(
                json.dumps(
                    {
                        "id": f"s{i}",
                        "type": "subscribe",
                        "payload": {"query": FOLLOW, "variables": {"c": customer}},
                    }
                )
            )
        time.sleep(0.5)  # the subscriptions are running
        ws.send(
            json.dumps(
                {
                    "id": "over",
                    "type": "subscribe",
                    "payload": {"query": FOLLOW, "variables": {"c": customer}},
                }
            )
        )
        refused = None
        deadline = time.monotonic() + 10
        while refused is None and time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=10))
            if message.get("id") == "over":
                refused = message
        assert refused is not None and refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "TOO_MANY_OPERATIONS"
        # Completing one frees a place.
        ws.send(json.dumps({"id": "s0", "type": "complete"}))
        time.sleep(0.3)
        ws.send(
            json.dumps({"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}})
        )
        answer = None
        while answer is None and time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=10))
            if message.get("id") == "q":
                answer = message
        assert answer is not None and answer["type"] == "next", answer


def test_messages_per_second_are_capped(small):
    rate = SMALL[("websocket", "max_messages_per_second")]
    with open_socket(small) as ws:
        time.sleep(1.05)  # a fresh second
        try:
            for _ in range(rate + 5):
                ws.send(json.dumps({"type": "ping"}))
        except ConnectionClosed:
            pass
        assert closed_code(ws) == 4429
    # Under the rate a connection lives on.
    with open_socket(small) as ws:
        for _ in range(3):
            for _ in range(rate // 2):
                ws.send(json.dumps({"type": "ping"}))
            time.sleep(1.0)
        ws.send(
            json.dumps({"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}})
        )
        seen = [json.loads(ws.recv(timeout=10)) for _ in range(3 * (rate // 2) + 1)]
        assert any(m.get("id") == "q" and m["type"] == "next" for m in seen)


@pytest.mark.parametrize(
    "message",
    [
        '"just a string"',
        "[1, 2]",
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": 7}}),
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "{ __typename }", "operationName": {"a": 1}},
            }
        ),
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": FILE_COMPLAINT, "variables": {"description": "\ud800"}},
            }
        ),
        '{"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }", "extensions": '
        + "[" * 5000
        + "]" * 5000
        + "}}",
    ],
    ids=[
        "string",
        "array",
        "query not a string",
        "operationName object",
        "lone surrogate",
        "too deep",
    ],
)
def test_malformed_websocket_messages_close_with_4400(probe, message):
    before = probe.log.read_text().count("Traceback")
    with open_socket(probe) as ws:
        ws.send(message)
        assert closed_code(ws) == 4400
    time.sleep(0.2)
    assert probe.log.read_text().count("Traceback") == before


# --- every new setting reaches the code, by environment and by TOML ------------------------------


def test_the_small_limits_reach_the_gateway(small):
    """Body size and JSON depth as configured (the other settings: the tests above)."""
    limit = SMALL[("http", "max_body_bytes")]
    big = small.post({"query": "{ __typename }", "extensions": {"pad": "x" * limit}})
    assert big.status_code == 413 and code_of(big) == "PAYLOAD_TOO_LARGE"
    fits = small.post({"query": "{ __typename }", "extensions": {"pad": "x" * (limit // 2)}})
    assert fits.status_code == 200
    depth = SMALL[("http", "max_json_depth")]
    nested: Any = "x"
    for _ in range(depth):
        nested = [nested]
    too_deep = small.post({"query": "{ __typename }", "extensions": {"a": nested}})
    assert (
        too_deep.status_code == 400 and "deeper than 6" in too_deep.json()["errors"][0]["message"]
    )
    shallow = small.post({"query": "{ __typename }", "extensions": {"a": [[["x"]]]}})
    assert shallow.status_code == 200


@pytest.mark.parametrize(("section", "name"), sorted(SMALL))
def test_each_setting_loads_from_the_environment_and_toml(tmp_path, monkeypatch, section, name):
    value = SMALL[(section, name)]
    for variable in list(__import__("os").environ):
        if variable.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(variable)
    config = tmp_path / "switchboard.toml"
    config.write_text(f"[{section}]\n{name} = {value}\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    assert getattr(getattr(load_settings(), section), name) == value
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")
    default = getattr(getattr(load_settings(), section), name)
    assert default != value
    monkeypatch.setenv(f"SWITCHBOARD_{section.upper()}__{name.upper()}", str(value))
    assert getattr(getattr(load_settings(), section), name) == value


def test_the_example_file_documents_the_defaults(monkeypatch):
    for variable in list(__import__("os").environ):
        if variable.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(variable)
    example = Path(__file__).resolve().parents[1] / "switchboard.example.toml"
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(example))
    documented = load_settings()
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")
    defaults = load_settings()
    for section in ("http", "auth", "websocket", "telemetry", "scaled", "database", "readiness"):
        assert getattr(documented, section) == getattr(defaults, section)
        assert f"[{section}]" in example.read_text()
