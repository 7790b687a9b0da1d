"""OAuth2/OIDC bearer tokens beside API keys, against a real gateway with its own JWKS file.

The tests make their own RSA and EC keys, publish the public halves as a JWKS file, sign tokens
with PyJWT and send them as ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from gateway.jwt_auth import JwksInvalid, parse_jwks
from gateway.policy_store import DEFAULT_POLICY_FILE
from gateway.settings import SettingsInvalid, load_settings
from policies.masks import mask_name
from tests.harness import SimulatorUrls, gateway_env, issue_key, running_gateway

ISSUER = "https://idp.example.test/realms/operator"
AUDIENCE = "switchboard"
NAME_AND_ADDRESS = """
query($m: String!) { customerByMsisdn(msisdn: $m) { id profile { name address } } }
"""


def _public_jwk(algorithm: type, key, kid: str, alg: str) -> dict:
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": alg}


@dataclass
class Issuer:
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    stranger_key: rsa.RSAPrivateKey  # not in the JWKS
    rsa_public_pem: bytes

    def claims(self, **overrides) -> dict:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-7f3a",
            "iat": now,
            "exp": now + 300,
            "channel": "agent",
            "role": "agent",
            "scope": "customer:read",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def rsa(self, kid: str = "rsa-1", key=None, **claims) -> str:
        return jwt.encode(
            self.claims(**claims),
            key or self.rsa_key,
            algorithm="RS256",
            headers={"kid": kid},
        )

    def ec(self, **claims) -> str:
        return jwt.encode(
            self.claims(**claims), self.ec_key, algorithm="ES256", headers={"kid": "ec-1"}
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, claims: dict, sign) -> str:
    """A token PyJWT refuses to make: alg none, or HS256 keyed with the RSA public key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Issuer(
        rsa_key=rsa_key,
        ec_key=ec.generate_private_key(ec.SECP256R1()),
        stranger_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_public_pem=rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


@dataclass(frozen=True)
class TokenGateway:
    url: str
    log: Path
    database: Path
    agent_key: str

    def post(self, token: str | None, document: str, variables=None, **headers) -> httpx.Response:
        sent = {"X-Purpose": "service", **headers}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return httpx.post(
            f"{self.url}/graphql",
            json={"query": document, "variables": variables or {}},
            headers=sent,
            timeout=30,
        )

    def audit_rows(self, request_id: str) -> list[dict]:
        with sqlite3.connect(self.database) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT * FROM audit_record WHERE request_id = ?", (request_id,)
            ).fetchall()
        return [dict(r) for r in rows]


@pytest.fixture(scope="module")
def token_gateway(
    sims: SimulatorUrls, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TokenGateway]:
    state = tmp_path_factory.mktemp("jwt")
    jwks = state / "jwks.json"
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    _public_jwk(RSAAlgorithm, issuer.rsa_key, "rsa-1", "RS256"),
                    _public_jwk(ECAlgorithm, issuer.ec_key, "ec-1", "ES256"),
                ]
            }
        )
    )
    policy = state / "policy.yaml"
    policy.write_text(DEFAULT_POLICY_FILE.read_text())
    database = state / "hub.db"
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{database}",
        SWITCHBOARD_POLICY_FILE=str(policy),
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(state / "keys"),
        SWITCHBOARD_AUDIT__REFUSAL_INDIVIDUAL_RECORDS="1000",  # every refusal on record
        SWITCHBOARD_AUTH__OIDC__JWKS_FILE=str(jwks),
        SWITCHBOARD_AUTH__OIDC__ISSUER=ISSUER,
        SWITCHBOARD_AUTH__OIDC__AUDIENCE=json.dumps([AUDIENCE]),
        SWITCHBOARD_AUTH__OIDC__MAX_TOKEN_AGE_S="600",
        SWITCHBOARD_AUTH__OIDC__LEEWAY_S="5",
        SWITCHBOARD_AUTH__MAX_FAILURES_PER_SOURCE="1000",  # the throttle has its own test
    )
    agent_key = issue_key(env, channel="agent", role="agent")
    log = state / "gateway.log"
    with running_gateway(env, log) as url:
        yield TokenGateway(url=url, log=log, database=database, agent_key=agent_key)


def _msisdn(customers) -> str:
    return next(s.msisdn for s in customers[3].subscribers if s.status != "D")


def test_an_agent_token_gets_the_agent_channel_clear_fields(token_gateway, issuer, customers):
    response = token_gateway.post(issuer.rsa(), NAME_AND_ADDRESS, {"m": _msisdn(customers)})
    assert response.status_code == 200, response.text
    profile = response.json()["data"]["customerByMsisdn"]["profile"]
    assert profile["name"] == customers[3].customer.name  # agent + service purpose: clear


def test_a_store_token_gets_the_store_masking(token_gateway, issuer, customers):
    token = issuer.ec(channel="store", role="clerk")  # an ES256 token, the EC key
    response = token_gateway.post(token, NAME_AND_ADDRESS, {"m": _msisdn(customers)})
    assert response.status_code == 200, response.text
    profile = response.json()["data"]["customerByMsisdn"]["profile"]
    assert profile["name"] == mask_name(customers[3].customer.name)


def test_a_partner_token_gets_the_partner_operations_only(token_gateway, issuer, customers):
    partner = issuer.rsa(channel="partner", role="partner", sub="partner-acme", partner="acme")
    refused = token_gateway.post(partner, NAME_AND_ADDRESS, {"m": _msisdn(customers)})
    assert refused.json()["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
    hub_id = token_gateway.post(issuer.rsa(), NAME_AND_ADDRESS, {"m": _msisdn(customers)}).json()[
        "data"
    ]["customerByMsisdn"]["id"]
    answer = token_gateway.post(
        partner,
        "query($id: ID!) { customer(id: $id) { profile { name address } } }",
        {"id": hub_id},
    ).json()
    assert answer["data"]["customer"]["profile"]["address"] is None  # denied to partners
    assert {e["extensions"]["code"] for e in answer["errors"]} == {"FIELD_DENIED"}


def test_api_keys_still_work_beside_tokens(token_gateway, customers):
    for headers in (
        {"X-Api-Key": token_gateway.agent_key},
        {"Authorization": f"Bearer {token_gateway.agent_key}"},
    ):
        response = token_gateway.post(None, NAME_AND_ADDRESS, {"m": _msisdn(customers)}, **headers)
        assert response.status_code == 200
        assert response.json()["data"]["customerByMsisdn"]["profile"]["name"]


def _failures(issuer: Issuer) -> dict[str, tuple[str, str]]:
    """name -> (token, the reason the log must give)."""
    old = int(time.time()) - 3600
    claims = issuer.claims()
    public_pem = issuer.rsa_public_pem
    return {
        "expired": (issuer.rsa(exp=int(time.time()) - 60), "token expired"),
        "wrong issuer": (issuer.rsa(iss="https://evil.example.test"), "wrong issuer"),
        "wrong audience": (issuer.rsa(aud="another-api"), "wrong audience"),
        "bad signature": (issuer.rsa(key=issuer.stranger_key), "bad signature"),
        "unknown kid": (issuer.rsa(kid="rsa-9", key=issuer.stranger_key), "unknown kid"),
        "issued too long ago": (issuer.rsa(iat=old, exp=old + 7200), "older than max_token_age"),
        "not valid yet": (issuer.rsa(iat=int(time.time()) + 600), "not valid yet"),
        "no expiry": (issuer.rsa(exp=None), "missing claim exp"),
        "alg none": (
            hand_made({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims, lambda _: b""),
            "algorithm not allowed",
        ),
        "HS256 keyed with the public key": (
            hand_made(
                {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
                claims,
                lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
            ),
            "algorithm not allowed",
        ),
        "RS256 under the EC key's kid": (issuer.rsa(kid="ec-1"), "does not fit"),
        "no channel claim": (issuer.rsa(channel=None), "no usable channel claim"),
        "no role claim": (issuer.rsa(role=None), "no usable role claim"),
        "not a token": ("eyJhbGciOi.not-a-token", "malformed token"),
    }


def test_each_bad_token_is_a_401_with_its_reason_in_the_log(token_gateway, issuer, customers):
    for name, (token, reason) in _failures(issuer).items():
        request_id = uuid.uuid4().hex
        response = token_gateway.post(
            token, NAME_AND_ADDRESS, {"m": _msisdn(customers)}, **{"X-Request-Id": request_id}
        )
        assert response.status_code == 401, (name, response.text)
        body = response.json()
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", name
        assert "data" not in body
        line = next(
            (
                ln
                for ln in token_gateway.log.read_text().splitlines()
                if request_id in ln and "refused" in ln
            ),
            "",
        )
        assert reason in line, (name, line)
        # The audit log has the refusal, without a principal.
        rows = token_gateway.audit_rows(request_id)
        assert [(r["outcome"], r["code"], r["subject"]) for r in rows] == [
            ("refused", "UNAUTHENTICATED", None)
        ], name
    log = token_gateway.log.read_text()
    assert "user-7f3a" not in log  # no claim values
    assert issuer.rsa().split(".")[1][:20] not in log  # no token contents


def test_a_token_for_a_channel_the_policy_lacks_is_refused_with_its_code(token_gateway, issuer):
    response = token_gateway.post(issuer.rsa(channel="kiosk"), "{ offerings { id } }")
    assert response.status_code == 403
    assert response.json()["errors"][0]["extensions"]["code"] == "TOKEN_CHANNEL_UNKNOWN"


def test_a_token_principal_is_audited_by_a_hash_of_issuer_kid_and_subject(token_gateway, issuer):
    request_id = uuid.uuid4().hex
    token = issuer.rsa()
    response = token_gateway.post(token, "{ offerings { id } }", **{"X-Request-Id": request_id})
    assert response.status_code == 200, response.text
    (row,) = token_gateway.audit_rows(request_id)
    expected = hashlib.sha256(f"{ISSUER}\0rsa-1\0user-7f3a".encode()).hexdigest()[:12]
    assert row["credential_id"] == f"jwt_{expected}"
    assert row["channel"] == "agent" and row["outcome"] == "ok"
    assert token not in json.dumps(row)


def test_oidc_settings_from_toml_and_env(tmp_path, monkeypatch):
    config = tmp_path / "switchboard.toml"
    config.write_text(
        f"""
[auth.oidc]
jwks_url = "https://idp.example.test/jwks"
issuer = "{ISSUER}"
audience = ["switchboard", "switchboard-web"]
algorithms = ["ES256"]
channel_claim = "https://operator.example/channel"
jwks_cache_ttl_s = 60

[trusted_documents]
manifest_file = "documents.json"
"""
    )
    for name in list(os.environ):
        if name.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    monkeypatch.setenv("SWITCHBOARD_AUTH__OIDC__LEEWAY_S", "10")
    oidc = load_settings().auth.oidc
    assert oidc.enabled and oidc.audience == ["switchboard", "switchboard-web"]
    assert oidc.algorithms == ["ES256"] and oidc.jwks_cache_ttl_s == 60 and oidc.leeway_s == 10
    assert oidc.channel_claim == "https://operator.example/channel"
    assert str(load_settings().trusted_documents.manifest_file) == "documents.json"

    for unsafe in ('["HS256"]', '["none"]', '["RS256", "HS512"]'):
        monkeypatch.setenv("SWITCHBOARD_AUTH__OIDC__ALGORITHMS", unsafe)
        with pytest.raises(SettingsInvalid, match="not allowed"):
            load_settings()
    monkeypatch.delenv("SWITCHBOARD_AUTH__OIDC__ALGORITHMS")
    monkeypatch.setenv("SWITCHBOARD_AUTH__OIDC__AUDIENCE", "[]")
    with pytest.raises(SettingsInvalid, match="issuer and audience are required"):
        load_settings()


def test_a_jwks_with_a_private_or_symmetric_key_is_refused(issuer):
    private = json.loads(RSAAlgorithm.to_jwk(issuer.rsa_key))
    for keys, problem in (
        ([{**private, "kid": "k"}], "not a public key"),
        ([{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}], "not a public key"),
        ([{"kty": "RSA", "kid": "k", "n": "AQAB"}], "not a usable key"),
        ([_public_jwk(RSAAlgorithm, issuer.rsa_key, "k", "RS256")] * 2, "appears twice"),
        ([], "no signing keys"),
    ):
        with pytest.raises(JwksInvalid, match=problem):
            parse_jwks(json.dumps({"keys": keys}).encode(), 65536, "jwks.json")
    with pytest.raises(JwksInvalid, match="larger than"):
        parse_jwks(b" " * 2000, 1024, "jwks.json")


def test_bad_tokens_are_throttled_like_bad_keys(sims, issuer, tmp_path, customers):
    """Three bad tokens from one address, then even a good one waits (429), unchecked."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [_public_jwk(RSAAlgorithm, issuer.rsa_key, "rsa-1", "RS256")]})
    )
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(tmp_path / "keys"),
        SWITCHBOARD_AUTH__OIDC__JWKS_FILE=str(jwks),
        SWITCHBOARD_AUTH__OIDC__ISSUER=ISSUER,
        SWITCHBOARD_AUTH__OIDC__AUDIENCE=json.dumps([AUDIENCE]),
        SWITCHBOARD_AUTH__MAX_FAILURES_PER_SOURCE="3",
    )
    with running_gateway(env, tmp_path / "gateway.log") as url:
        gateway = TokenGateway(
            url=url, log=tmp_path / "gateway.log", database=tmp_path, agent_key=""
        )
        assert gateway.post(issuer.rsa(), "{ offerings { id } }").status_code == 200
        for _ in range(3):
            bad = gateway.post(issuer.rsa(key=issuer.stranger_key), "{ offerings { id } }")
            assert bad.status_code == 401
        throttled = gateway.post(issuer.rsa(), "{ offerings { id } }")
        assert throttled.status_code == 429
        assert throttled.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert int(throttled.headers["Retry-After"]) >= 1


def test_tokens_work_in_the_websocket_connection_init(token_gateway, issuer):
    url = token_gateway.url.replace("http://", "ws://") + "/graphql"
    for token, expected in ((issuer.rsa(), "connection_ack"), (issuer.rsa(aud="other"), None)):
        with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": token}}))
            try:
                reply = json.loads(ws.recv(timeout=10))["type"]
            except ConnectionClosed as closed:
                reply, code = None, closed.rcvd.code if closed.rcvd else None
                assert code == 4403
            assert reply == expected


class _JwksServer:
    """A loopback issuer's JWKS endpoint: its key set can change, and it can hang."""

    def __init__(self) -> None:
        self.jwks: dict = {"keys": []}
        self.delay_s = 0.0
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                time.sleep(server.delay_s)
                body = json.dumps(server.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_jwks_url_follows_key_rotation_and_never_waits_past_its_timeout(sims, issuer, tmp_path):
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with _JwksServer() as jwks:
        jwks.jwks = {"keys": [_public_jwk(RSAAlgorithm, issuer.rsa_key, "rsa-1", "RS256")]}
        env = gateway_env(
            sims,
            f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            SWITCHBOARD_CACHE__ENABLED="false",
            SWITCHBOARD_AUDIT__STATE_DIR=str(tmp_path / "keys"),
            SWITCHBOARD_AUTH__OIDC__JWKS_URL=jwks.url,
            SWITCHBOARD_AUTH__OIDC__ISSUER=ISSUER,
            SWITCHBOARD_AUTH__OIDC__AUDIENCE=json.dumps([AUDIENCE]),
            SWITCHBOARD_AUTH__OIDC__JWKS_TIMEOUT_S="1",
            SWITCHBOARD_AUTH__OIDC__JWKS_MIN_REFRESH_INTERVAL_S="0",
        )
        log = tmp_path / "gateway.log"
        with running_gateway(env, log) as url:
            gateway = TokenGateway(url=url, log=log, database=tmp_path, agent_key="")
            assert gateway.post(issuer.rsa(), "{ offerings { id } }").status_code == 200
            # The issuer rotates: a token with the new kid makes the gateway fetch again.
            jwks.jwks = {"keys": [_public_jwk(RSAAlgorithm, rotated, "rsa-2", "RS256")]}
            new = issuer.rsa(kid="rsa-2", key=rotated)
            assert gateway.post(new, "{ offerings { id } }").status_code == 200
            # The issuer hangs: an unknown kid waits for the fetch at most jwks_timeout_s.
            jwks.delay_s = 5
            started = time.monotonic()
            hung = gateway.post(issuer.rsa(kid="rsa-3", key=rotated), "{ offerings { id } }")
            assert hung.status_code == 401
            assert time.monotonic() - started < 3
            # Keys already held keep working while the issuer is down.
            assert gateway.post(new, "{ offerings { id } }").status_code == 200
            jwks.delay_s = 0
        assert "JWKS refresh failed: TimeoutError" in log.read_text()
