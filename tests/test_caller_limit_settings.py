"""The limits callers meet in single fields and in bearer tokens, as settings: the largest
``nextBestOffers(first:)`` (``graphql.max_offers``), ``auditLog(first:)``
(``audit.max_search_page``), a complaint's description (``workflows.max_description_chars``),
and a token's ``kid``, scope count and scope item length (``auth.oidc.max_kid_length``,
``max_scopes``, ``max_scope_length``). Each reaches the settings from the TOML file and the
environment, refuses a value out of its bounds, defaults to what the docs say, and is what
the code that enforces it enforces."""

from __future__ import annotations

import functools
import os
import re
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.credentials import CredentialRefused
from gateway.jwt_auth import JwtVerifier, SigningKey
from gateway.policy_store import DEFAULT_POLICY_FILE
from gateway.settings import OidcSettings, load_settings
from simulators.seed import seed_dataset
from tests.harness import gateway_env, issue_key, post_graphql, running_gateway, running_simulators
from tests.test_systems import members
from tests.workflow_hub import active_line, clean_customers

REPO = Path(__file__).resolve().parents[1]

#: (table, key, default, too small, too large)
LIMITS = [
    ("graphql", "max_offers", 20, 0, 1001),
    ("audit", "max_search_page", 200, 0, 1001),
    ("workflows", "max_description_chars", 2000, 0, 100_001),
    ("workflows", "max_agent_credit", 500, 0, 1_000_001),
    ("auth.oidc", "max_kid_length", 128, 0, 1025),
    ("auth.oidc", "max_scopes", 64, 0, 1025),
    ("auth.oidc", "max_scope_length", 128, 0, 1025),
]
IDS = [f"{table}.{key}" for table, key, *_ in LIMITS]


@pytest.fixture
def no_switchboard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")


def _value(settings: object, table: str, key: str) -> object:
    return getattr(functools.reduce(getattr, table.split("."), settings), key)


def _variable(table: str, key: str) -> str:
    return "SWITCHBOARD_" + "__".join([*table.split("."), key]).upper()


# --- the settings ------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_switchboard_env")
@pytest.mark.parametrize(("table", "key", "default", "too_small", "too_large"), LIMITS, ids=IDS)
def test_each_limit_comes_from_the_file_and_the_environment_within_its_bounds(
    tmp_path, monkeypatch, table, key, default, too_small, too_large
):
    config = tmp_path / "switchboard.toml"
    config.write_text(f"[{table}]\n{key} = 7\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    assert _value(load_settings(), table, key) == 7
    monkeypatch.setenv(_variable(table, key), "9")
    assert _value(load_settings(), table, key) == 9  # the environment wins over the file
    for bad in (too_small, too_large):
        monkeypatch.setenv(_variable(table, key), str(bad))
        with pytest.raises(ValueError, match=rf"{table}\.{key}"):
            load_settings()
    monkeypatch.delenv(_variable(table, key))
    config.write_text(f"[{table}]\n{key} = {too_large}\n")
    with pytest.raises(ValueError, match=re.escape(f"{table}.{key} (in {config})")):
        load_settings()


@pytest.mark.usefixtures("no_switchboard_env")
def test_the_defaults_are_the_documented_ones():
    settings = load_settings()
    example = tomllib.loads((REPO / "switchboard.example.toml").read_text())
    security = (REPO / "docs/security.md").read_text()
    for table, key, default, *_ in LIMITS:
        assert _value(settings, table, key) == default, (table, key)
        assert functools.reduce(dict.__getitem__, table.split("."), example)[key] == default
        assert f"`{table}.{key}`" in security, (table, key)


# --- bearer tokens ------------------------------------------------------------------------------

ISSUER = "https://idp.example.test/realms/operator"


@dataclass
class AnyKid:
    """Keys that know every kid: the kid's length is the only thing checked about it."""

    key: SigningKey

    async def get(self, kid: str) -> SigningKey | None:
        return self.key

    def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _verifier(rsa_key: rsa.RSAPrivateKey, **limits: int) -> JwtVerifier:
    settings = OidcSettings(issuer=ISSUER, audience=["switchboard"], **limits)
    keys = AnyKid(SigningKey(rsa_key.public_key(), "RSA", None, "RS256"))
    return JwtVerifier(settings, lambda: {"agent"}, keys=keys)  # type: ignore[arg-type]


def _token(rsa_key: rsa.RSAPrivateKey, scope: object, kid: str = "rsa-1") -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "switchboard",
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "channel": "agent",
        "role": "agent",
        "scope": scope,
    }
    return jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": kid})


async def _refusal(verifier: JwtVerifier, token: str) -> CredentialRefused:
    with pytest.raises(CredentialRefused) as refused:
        await verifier.authenticate(token)
    return refused.value


async def test_a_token_with_more_scopes_than_max_scopes_is_refused(rsa_key):
    scopes = [f"s{i}" for i in range(4)]
    verifier = _verifier(rsa_key, max_scopes=3)
    for form in (" ".join, list):  # OAuth2's space-separated string and a list claim alike
        refused = await _refusal(verifier, _token(rsa_key, form(scopes)))
        assert (refused.status, refused.code, refused.reason) == (
            401,
            "UNAUTHENTICATED",
            "too many scopes",
        )
        principal = await verifier.authenticate(_token(rsa_key, form(scopes[:3])))
        assert principal.scopes == frozenset(scopes[:3])
    # The default is today's: 64 scopes pass, 65 are refused.
    default = _verifier(rsa_key)
    many = [f"s{i}" for i in range(65)]
    assert len((await default.authenticate(_token(rsa_key, many[:64]))).scopes) == 64
    assert (await _refusal(default, _token(rsa_key, many))).reason == "too many scopes"


async def test_a_scope_longer_than_max_scope_length_is_dropped(rsa_key):
    verifier = _verifier(rsa_key, max_scope_length=5)
    principal = await verifier.authenticate(_token(rsa_key, "abcde abcdef"))
    assert principal.scopes == frozenset({"abcde"})
    long = "x" * 128
    default = await _verifier(rsa_key).authenticate(_token(rsa_key, [long, long + "y"]))
    assert default.scopes == frozenset({long})


async def test_a_kid_longer_than_max_kid_length_is_refused(rsa_key):
    verifier = _verifier(rsa_key, max_kid_length=5)
    refused = await _refusal(verifier, _token(rsa_key, "s", kid="abcdef"))
    assert (refused.status, refused.reason) == (401, "no kid in the token header")
    assert (await verifier.authenticate(_token(rsa_key, "s", kid="abcde"))).subject == "user-1"
    default = _verifier(rsa_key)
    assert (await default.authenticate(_token(rsa_key, "s", kid="k" * 128))).subject == "user-1"
    assert (await _refusal(default, _token(rsa_key, "s", kid="k" * 129))).status == 401


# --- the graph's fields -------------------------------------------------------------------------

SEED = 5252
CUSTOMERS = 12
OFFERS = "query($id: ID!, $n: Int!) { customer(id: $id) { nextBestOffers(first: $n) { offerId } } }"
AUDIT_LOG = "query($n: Int!) { auditLog(first: $n) { nodes { seq } pageInfo { hasNextPage } } }"
FILE_COMPLAINT = """
mutation($input: FileComplaintInput!) { fileComplaint(input: $input) { id kind status } }"""


@dataclass(frozen=True)
class LimitedHub:
    url: str
    keys: dict[str, str]
    customer_id: str
    member_customer_id: str  # a customer with a loyalty membership (a declared connection)

    def post(self, channel: str, document: str, variables: dict) -> dict:
        response = post_graphql(self.url, self.keys[channel], document, variables)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def limited_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedHub]:
    """A hub (workflows and campaigns on) whose three field limits are set to 3, 3 and 12."""
    state = tmp_path_factory.mktemp("caller-limits")
    data_dir = state / "simdata"
    data_dir.mkdir()
    seed_dataset(data_dir, CUSTOMERS, SEED)
    policy = state / "policy.yaml"
    policy.write_text(DEFAULT_POLICY_FILE.read_text())
    with running_simulators(data_dir) as sims:
        env = gateway_env(
            sims,
            f"sqlite+aiosqlite:///{state / 'hub.db'}",
            SWITCHBOARD_POLICY_FILE=str(policy),
            SWITCHBOARD_CACHE__ENABLED="false",
            SWITCHBOARD_AUDIT__STATE_DIR=str(state / "keys"),
            SWITCHBOARD_WORKFLOWS__EXECUTOR_ID="caller-limits",
            SWITCHBOARD_GRAPHQL__MAX_OFFERS="3",
            SWITCHBOARD_AUDIT__MAX_SEARCH_PAGE="3",
            SWITCHBOARD_WORKFLOWS__MAX_DESCRIPTION_CHARS="12",
            SWITCHBOARD_GRAPHQL__MAX_PAGE_SIZE="5",
            SWITCHBOARD_WORKFLOWS__MAX_AGENT_CREDIT="5.00",
        )
        keys = {
            "agent": issue_key(env, channel="agent", role="agent", scopes=("customer:read",)),
            "audit": issue_key(env, channel="audit", role="auditor"),
        }
        with running_gateway(env, state / "gateway.log") as url:

            def found_by(msisdn: str) -> str:
                document = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"
                answer = post_graphql(url, keys["agent"], document, {"m": msisdn}).json()
                return answer["data"]["customerByMsisdn"]["id"]

            msisdn = active_line(next(clean_customers(SEED, CUSTOMERS))).msisdn
            member = next(m for m in members(data_dir) if m["status"] == "ACTIVE")
            yield LimitedHub(
                url, keys, found_by(msisdn), found_by(member["msisdn"].removeprefix("+86"))
            )


def _refused(answer: dict, message: str) -> None:
    assert [(e["extensions"]["code"], e["message"]) for e in answer["errors"]] == [
        ("BAD_USER_INPUT", message)
    ], answer


def test_next_best_offers_take_at_most_graphql_max_offers(limited_hub):
    variables = {"id": limited_hub.customer_id}
    for first in (4, 0):
        answer = limited_hub.post("agent", OFFERS, {**variables, "n": first})
        _refused(answer, "first must be between 1 and 3.")
    answer = limited_hub.post("agent", OFFERS, {**variables, "n": 3})
    assert "errors" not in answer, answer["errors"]
    assert isinstance(answer["data"]["customer"]["nextBestOffers"], list)


def test_the_audit_log_pages_take_at_most_audit_max_search_page(limited_hub):
    for _ in range(4):  # records enough for a full page (each request leaves one)
        limited_hub.post("audit", AUDIT_LOG, {"n": 1})
    _refused(limited_hub.post("audit", AUDIT_LOG, {"n": 4}), "first must be between 1 and 3.")
    answer = limited_hub.post("audit", AUDIT_LOG, {"n": 3})
    assert "errors" not in answer, answer["errors"]
    page = answer["data"]["auditLog"]
    assert len(page["nodes"]) == 3 and page["pageInfo"]["hasNextPage"] is True


def test_a_complaint_description_takes_at_most_workflows_max_description_chars(limited_hub):
    def complaint(description: str) -> dict:
        given = {
            "customerId": limited_hub.customer_id,
            "category": "network",
            "description": description,
            "idempotencyKey": f"test-{uuid.uuid4().hex[:16]}",
        }
        return limited_hub.post("agent", FILE_COMPLAINT, {"input": given})

    _refused(complaint("x" * 13), "description must be 1 to 12 characters.")
    _refused(complaint("   "), "description must be 1 to 12 characters.")
    answer = complaint("  No signal.  ")  # 10 characters once trimmed
    assert "errors" not in answer, answer["errors"]
    answer = complaint("No signal!!!")  # exactly 12
    assert "errors" not in answer, answer["errors"]
    assert answer["data"]["fileComplaint"]["kind"] == "complaint"


NESTED_PAGES = """
query($id: ID!, $n: Int!) { customer(id: $id) {
  billingAccounts { bills(first: $n) { totalCount } payments(first: $n) { totalCount } }
  tickets(first: $n) { id } interactions(first: $n) { id }
  loyaltyMembers { pointsHistory(first: $n) { totalCount } } } }"""


def test_every_nested_page_takes_at_most_graphql_max_page_size(limited_hub):
    """bills, payments, tickets, interactions and a declared system's connection alike:
    past graphql.max_page_size (5 here) a page is refused, as the cost limit assumes."""
    for customer in (limited_hub.customer_id, limited_hub.member_customer_id):
        answer = limited_hub.post("agent", NESTED_PAGES, {"id": customer, "n": 6})
        messages = {(e["extensions"]["code"], e["message"]) for e in answer["errors"]}
        assert messages == {("BAD_USER_INPUT", "first must be between 1 and 5.")}, answer
        answer = limited_hub.post("agent", NESTED_PAGES, {"id": customer, "n": 5})
        assert "errors" not in answer, answer["errors"]
    member = limited_hub.post("agent", NESTED_PAGES, {"id": limited_hub.member_customer_id, "n": 6})
    refused = {tuple(e["path"][-1:]) for e in member["errors"]}
    assert ("pointsHistory",) in refused and ("bills",) in refused


DEFAULT_PAGES = """
query($id: ID!) { customer(id: $id) {
  billingAccounts { bills { totalCount items { id } } payments { totalCount } }
  tickets { id } interactions { id }
  loyaltyMembers { pointsHistory { totalCount items { entryId } } } } }"""


def test_a_field_s_default_page_above_the_setting_is_cut_to_it_not_refused(limited_hub):
    """The defaults (bills 12, the others 10) are above max_page_size (5): a caller that chose
    no size gets at most 5 items, not an error."""
    answer = limited_hub.post("agent", DEFAULT_PAGES, {"id": limited_hub.member_customer_id})
    assert "errors" not in answer, answer["errors"]
    customer = answer["data"]["customer"]
    assert all(len(a["bills"]["items"]) <= 5 for a in customer["billingAccounts"])
    assert len(customer["tickets"]) <= 5 and len(customer["interactions"]) <= 5
    (member,) = customer["loyaltyMembers"]
    assert len(member["pointsHistory"]["items"]) <= 5


RESOLVE = """
mutation($id: ID!, $key: String!, $credit: String) {
  resolveComplaint(requestId: $id, idempotencyKey: $key, credit: $credit) { id } }"""


def test_an_agent_credit_takes_at_most_workflows_max_agent_credit(limited_hub):
    unknown = {"id": "complaint-" + "0" * 24, "key": f"test-{uuid.uuid4().hex[:16]}"}
    _refused(
        limited_hub.post("agent", RESOLVE, {**unknown, "credit": "5.01"}),
        "credit must be above 0 and at most 5.00, in cents.",
    )
    within = limited_hub.post("agent", RESOLVE, {**unknown, "credit": "5.00"})
    # Past the credit check: the request itself is looked up next (and is not there).
    assert [e["extensions"]["code"] for e in within["errors"]] != ["BAD_USER_INPUT"], within
