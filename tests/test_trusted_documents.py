"""Trusted documents (persisted operations) against a real gateway: a manifest, hash-only
requests in both conventions, and a channel (partner) that runs nothing else."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from websockets.sync.client import connect

from gateway.policy_store import DEFAULT_POLICY_FILE
from gateway.trusted_documents import ManifestInvalid, load_manifest, parse_manifest
from policies.loader import PolicyInvalid, parse_policy
from tests.harness import SimulatorUrls, gateway_env, issue_key, running_gateway, start_gateway

OFFERINGS = "query Offerings { offerings { id } }"
PARTNER_ONLY = "query PartnerOfferings { offerings { id name } }"
SUBSCRIBE_ONE = "query One { offerings { id } }"
UNLISTED = "{ offerings { id name } }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def manifest() -> dict:
    return {
        sha(OFFERINGS): OFFERINGS,
        sha(SUBSCRIBE_ONE): SUBSCRIBE_ONE,
        "channels": {"partner": {sha(PARTNER_ONLY): PARTNER_ONLY}},
    }


@dataclass(frozen=True)
class DocumentsGateway:
    url: str
    keys: dict[str, str]
    log: Path

    def post(self, body: dict | str, channel: str = "partner", **headers) -> httpx.Response:
        sent = {"X-Api-Key": self.keys[channel], **headers}
        if isinstance(body, str):
            return httpx.post(
                f"{self.url}/graphql",
                content=body,
                headers={**sent, "Content-Type": "application/json"},
                timeout=30,
            )
        return httpx.post(f"{self.url}/graphql", json=body, headers=sent, timeout=30)

    def get(self, params: dict, channel: str = "partner") -> httpx.Response:
        return httpx.get(
            f"{self.url}/graphql", params=params, headers={"X-Api-Key": self.keys[channel]}
        )


@pytest.fixture(scope="module")
def documents_gateway(
    sims: SimulatorUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DocumentsGateway]:
    state = tmp_path_factory.mktemp("trusted")
    manifest_file = state / "documents.json"
    manifest_file.write_text(json.dumps(manifest()))
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["channels"]["partner"]["documents"] = "trusted_only"
    policy_file = state / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{state / 'hub.db'}",
        SWITCHBOARD_POLICY_FILE=str(policy_file),
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(state / "keys"),
        SWITCHBOARD_TRUSTED_DOCUMENTS__MANIFEST_FILE=str(manifest_file),
    )
    keys = {
        "partner": issue_key(env, channel="partner", role="partner", scopes=("customer:read",)),
        "agent": issue_key(env, channel="agent", role="agent"),
    }
    log = state / "gateway.log"
    with running_gateway(env, log) as url:
        yield DocumentsGateway(url=url, keys=keys, log=log)


def code_of(response: httpx.Response) -> str:
    return response.json()["errors"][0]["extensions"]["code"]


def offerings_of(response: httpx.Response) -> list:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["offerings"]


def test_a_trusted_only_channel_refuses_an_unlisted_document_before_parsing(documents_gateway):
    for document in (UNLISTED, "{ this is not GraphQL", OFFERINGS + " "):
        response = documents_gateway.post({"query": document})
        assert response.status_code == 400, response.text
        assert code_of(response) == "PERSISTED_DOCUMENT_REQUIRED"
        assert "data" not in response.json()


def test_a_trusted_only_channel_runs_documents_by_hash_in_both_conventions(documents_gateway):
    by_id = documents_gateway.post({"documentId": f"sha256:{sha(OFFERINGS)}"})
    apollo = documents_gateway.post(
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(OFFERINGS)}}}
    )
    bare = documents_gateway.post({"documentId": sha(OFFERINGS)})
    assert offerings_of(by_id) and offerings_of(by_id) == offerings_of(apollo) == offerings_of(bare)


def test_a_listed_document_sent_in_full_is_accepted(documents_gateway):
    assert offerings_of(documents_gateway.post({"query": OFFERINGS}))


def test_an_unknown_hash_is_not_found_in_every_mode(documents_gateway):
    for channel in ("partner", "agent"):
        for body in (
            {"documentId": f"sha256:{sha(UNLISTED)}"},
            {"documentId": "sha256:not-a-hash"},
            {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}},
        ):
            response = documents_gateway.post(body, channel=channel)
            assert response.status_code == 400, (channel, body)
            assert code_of(response) == "PERSISTED_DOCUMENT_NOT_FOUND", (channel, body)


def test_channel_sections_count_for_their_channel_only(documents_gateway):
    body = {"documentId": f"sha256:{sha(PARTNER_ONLY)}"}
    assert offerings_of(documents_gateway.post(body, channel="partner"))
    assert code_of(documents_gateway.post(body, channel="agent")) == "PERSISTED_DOCUMENT_NOT_FOUND"


def test_a_hash_that_is_not_the_documents_is_refused(documents_gateway):
    response = documents_gateway.post(
        {"query": UNLISTED, "documentId": f"sha256:{sha(OFFERINGS)}"}, channel="agent"
    )
    assert response.status_code == 400
    assert code_of(response) == "PERSISTED_DOCUMENT_HASH_MISMATCH"


def test_other_channels_still_run_any_document_and_hashes(documents_gateway):
    assert offerings_of(documents_gateway.post({"query": UNLISTED}, channel="agent"))
    by_hash = documents_gateway.post({"documentId": f"sha256:{sha(OFFERINGS)}"}, channel="agent")
    assert offerings_of(by_hash)


def test_a_hash_under_an_escaped_key_is_still_resolved(documents_gateway):
    """The gate reads a body only if it could name a document: a key spelt with a JSON
    escape can, and is resolved like the plain one."""
    raw = '{"documentI\\u0064": "sha256:' + sha(OFFERINGS) + '"}'
    response = httpx.post(
        f"{documents_gateway.url}/graphql",
        content=raw.encode(),
        headers={"X-Api-Key": documents_gateway.keys["agent"], "Content-Type": "application/json"},
    )
    assert offerings_of(response)


def test_get_requests_are_checked_like_posts(documents_gateway):
    assert offerings_of(documents_gateway.get({"documentId": f"sha256:{sha(OFFERINGS)}"}))
    apollo = {"persistedQuery": {"version": 1, "sha256Hash": sha(OFFERINGS)}}
    assert offerings_of(documents_gateway.get({"extensions": json.dumps(apollo)}))
    refused = documents_gateway.get({"query": UNLISTED})
    assert refused.status_code == 400 and code_of(refused) == "PERSISTED_DOCUMENT_REQUIRED"


def test_bodies_the_gate_cannot_read_are_refused_on_a_trusted_only_channel(documents_gateway):
    for body in ("not json", "[]", json.dumps([{"query": OFFERINGS}])):
        response = documents_gateway.post(body)
        assert response.status_code == 400, body
        assert code_of(response) == "PERSISTED_DOCUMENT_REQUIRED", body
    form = httpx.post(
        f"{documents_gateway.url}/graphql",
        data={"query": UNLISTED},
        headers={"X-Api-Key": documents_gateway.keys["partner"]},
    )
    assert form.status_code == 400 and code_of(form) == "PERSISTED_DOCUMENT_REQUIRED"


def test_duplicate_keys_cannot_smuggle_another_document(documents_gateway):
    """The gate hands on the request it checked: no parser disagreement to exploit."""
    smuggled = '{"query": "' + UNLISTED + '", "query": "' + OFFERINGS + '"}'
    assert offerings_of(documents_gateway.post(smuggled))  # the last one, checked and run
    reverse = '{"query": "' + OFFERINGS + '", "query": "' + UNLISTED + '"}'
    assert code_of(documents_gateway.post(reverse)) == "PERSISTED_DOCUMENT_REQUIRED"


def test_the_websocket_is_checked_like_http(documents_gateway):
    url = documents_gateway.url.replace("http://", "ws://") + "/graphql"
    with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        init = {"type": "connection_init", "payload": {"apiKey": documents_gateway.keys["partner"]}}
        ws.send(json.dumps(init))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": UNLISTED}}))
        refused = json.loads(ws.recv(timeout=10))
        assert refused["id"] == "1" and refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "PERSISTED_DOCUMENT_REQUIRED"
        payload = {"documentId": f"sha256:{sha(SUBSCRIBE_ONE)}"}
        ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": payload}))
        answer = json.loads(ws.recv(timeout=10))
        assert answer["id"] == "2" and answer["type"] == "next", answer
        assert answer["payload"]["data"]["offerings"]


def test_refusals_are_logged_without_the_document(documents_gateway):
    marker = f"secret-{uuid.uuid4().hex}"
    documents_gateway.post({"query": f"{{ offerings {{ id }} }} # {marker}"})
    log = documents_gateway.log.read_text()
    assert "document refused: code=PERSISTED_DOCUMENT_REQUIRED channel=partner" in log
    assert marker not in log


def test_a_bad_manifest_stops_the_start(sims: SimulatorUrls, tmp_path: Path):
    manifest_file = tmp_path / "documents.json"
    manifest_file.write_text(json.dumps({sha(OFFERINGS): UNLISTED}))
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        SWITCHBOARD_AUDIT__STATE_DIR=str(tmp_path / "keys"),
        SWITCHBOARD_TRUSTED_DOCUMENTS__MANIFEST_FILE=str(manifest_file),
    )
    with pytest.raises(RuntimeError, match="not its key"):
        start_gateway(env, tmp_path / "gateway.log", timeout_s=20)


def test_manifest_loading_errors(tmp_path: Path):
    good = manifest()
    assert len(parse_manifest(json.dumps(good).encode(), "m.json")) == 3
    cases = {
        '{"a": 1,\n "b": }': r"m.json:2:7: not valid JSON",
        "[]": "must be a JSON object",
        json.dumps({"ABC": OFFERINGS}): "is not a sha256 hex digest",
        json.dumps({sha(OFFERINGS).upper(): OFFERINGS}): "is not a sha256 hex digest",
        json.dumps({sha(OFFERINGS): 7}): "the document must be a string",
        json.dumps({sha(OFFERINGS): UNLISTED}): f"sha256 is {sha(UNLISTED)}, not its key",
        json.dumps({"channels": []}): "channels must be an object",
        json.dumps({"channels": {"partner": {sha(OFFERINGS): UNLISTED}}}): "channels.partner",
        b"\xff\xfe": "not UTF-8",
    }
    for raw, problem in cases.items():
        data = raw if isinstance(raw, bytes) else raw.encode()
        with pytest.raises(ManifestInvalid, match=problem):
            parse_manifest(data, "m.json")
    big = tmp_path / "big.json"
    big.write_text(json.dumps(good))
    with pytest.raises(ManifestInvalid, match="larger than"):
        load_manifest(big, 1024 if big.stat().st_size > 1024 else 16)
    with pytest.raises(ManifestInvalid, match="cannot read"):
        load_manifest(tmp_path / "missing.json", 1024)
    assert len(load_manifest(None, 1024)) == 0


def test_the_policy_names_a_bad_documents_mode_with_its_line():
    text = DEFAULT_POLICY_FILE.read_text().replace(
        "    documents: any\n", "    documents: trusted_sometimes\n"
    )
    assert "trusted_sometimes" in text
    with pytest.raises(
        PolicyInvalid, match=r"policy.yaml:\d+: error: channel 'partner': documents"
    ):
        parse_policy(text, "policy.yaml")
    policy, _ = parse_policy(text.replace("trusted_sometimes", "trusted_only"), "policy.yaml")
    assert policy.channels["partner"].documents == "trusted_only"
    assert policy.channels["agent"].documents == "any"
