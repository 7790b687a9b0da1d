"""Probes of the hardening issue, against a real gateway and the simulators over loopback.

1. One operation must not take a backend away from every channel: operation limits (cost,
   aliases, root fields, tokens) refuse it before execution, with no backend call.
4. A search must not be an oracle for a value the caller sees masked.
5. A stranger's attempts must not lock the customer out: OTP sends and failed ID-card checks
   count per requesting key (and customer), under a higher ceiling per customer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.policy_store import DEFAULT_POLICY_FILE
from tests.harness import gateway_env, issue_key, post_graphql, running_gateway
from tests.verification_helpers import START, inbox, version_line

CHECK = """mutation($id: ID!, $n: String!) {
  checkIdCard(customerId: $id, idCardNumber: $n) { token level } }"""


@dataclass(frozen=True)
class Hub:
    url: str
    keys: dict[str, str]
    policy_file: Path
    log_file: Path

    def query(self, document, variables=None, *, key="agent", purpose="service"):
        return post_graphql(self.url, self.keys[key], document, variables, purpose=purpose)


@pytest.fixture(scope="module")
def hub(sims, tmp_path_factory) -> Iterator[Hub]:
    """A gateway of its own (the default policy, an SMS key and two store keys)."""
    state = tmp_path_factory.mktemp("probe")
    policy_file = state / "policy.yaml"
    policy_file.write_text(DEFAULT_POLICY_FILE.read_text())
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{state / 'hub.db'}",
        SWITCHBOARD_BOSS__TIMEOUT_S="1.0",
        SWITCHBOARD_BILLING__TIMEOUT_S="1.0",
        SWITCHBOARD_CARE__TIMEOUT_S="1.0",
        SWITCHBOARD_CACHE__ENABLED="false",  # every backend call shows in /_sim/stats
        SWITCHBOARD_POLICY_FILE=str(policy_file),
        SWITCHBOARD_POLICY_RELOAD_INTERVAL_S="0.2",
    )
    keys = {
        name: issue_key(env, channel=channel, role=role)
        for name, channel, role in (
            ("agent", "agent", "agent"),
            ("store", "store", "clerk"),
            ("store2", "store", "clerk"),
            ("app", "app", "customer"),
            ("sms", "sms", "sms"),
        )
    }
    log_file = state / "gateway.log"
    with running_gateway(env, log_file) as url:
        yield Hub(url, keys, policy_file, log_file)


def errors_of(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json().get("errors") or []


def code_of(response: httpx.Response) -> str | None:
    errors = errors_of(response)
    return errors[0]["extensions"]["code"] if errors else None


def with_active_line(customers, start: int):
    return next(c for c in customers[start:] if any(s.status == "A" for s in c.subscribers))


def hub_id_of(hub: Hub, bundle) -> str:
    msisdn = next(s.msisdn for s in bundle.subscribers if s.status == "A")
    found = hub.query("query($m: String!) { customerByMsisdn(msisdn: $m) { id } }", {"m": msisdn})
    return found.json()["data"]["customerByMsisdn"]["id"]


def backend_calls(control) -> int:
    return sum(control.total(system) for system in ("boss", "billing", "care"))


@contextmanager
def policy_changed(hub: Hub, edit, tag: str) -> Iterator[None]:
    """The hub under an edited policy (it reloads every 0.2 s, and logs it); restored after."""
    original = hub.policy_file.read_text()
    edited = edit(original).replace(version_line(original), f'version: "{tag}"')
    assert edited != original
    hub.policy_file.write_text(edited)
    try:
        assert _eventually(lambda: f"policy {tag} in force" in hub.log_file.read_text()), (
            "the edited policy was not taken"
        )
        yield
    finally:
        hub.policy_file.write_text(original)
        version = re.search(r'"(.*)"', version_line(original)).group(1)
        assert _eventually(
            lambda: (
                hub.log_file.read_text().rfind(f"policy {version} in force")
                > hub.log_file.read_text().rfind(f"policy {tag} in force")
            )
        )


def _eventually(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


# --- 1. operation limits --------------------------------------------------------------------


def test_a_hundred_aliased_pages_are_refused_before_any_backend_call(hub, control):
    document = (
        "{ "
        + " ".join(
            f"a{i}: customers(first: 200) {{ nodes {{ id profile {{ name }} }} }}"
            for i in range(100)
        )
        + " }"
    )
    refused = hub.query(document)
    (error,) = errors_of(refused)
    assert error["extensions"]["code"] == "ALIAS_LIMIT_EXCEEDED"
    assert error["extensions"]["budget"] == "max_aliases"
    assert (error["extensions"]["limit"], error["extensions"]["found"]) == ("30", "100")
    assert refused.json()["data"] is None
    assert backend_calls(control) == 0
    # Another channel right after is served: nothing was spent on the refused operation.
    offered = hub.query("{ offerings { id } }", key="store", purpose=None)
    assert code_of(offered) is None and offered.json()["data"]["offerings"]


def test_an_operation_past_its_cost_budget_is_refused_naming_budget_and_cost(hub, control):
    # 200 customers x 2 accounts (assumed) = 400 bill pages, one billing call each.
    document = "{ customers(first: 200) { nodes { billingAccounts { bills { items { id } } } } } }"
    refused = hub.query(document)
    (error,) = errors_of(refused)
    assert error["extensions"]["code"] == "COST_LIMIT_EXCEEDED"
    assert error["extensions"]["budget"] == "max_cost"
    assert error["extensions"]["limit"] == "100"  # the agent channel's own budget
    assert int(error["extensions"]["found"]) > 400
    assert "max_cost" in error["message"]
    assert backend_calls(control) == 0
    # The same shape within the budget runs.
    small = hub.query(
        "{ customers(first: 5) { nodes { billingAccounts { bills(first: 1) { totalCount } } } } }"
    )
    assert code_of(small) is None
    assert len(small.json()["data"]["customers"]["nodes"]) == 5


def test_variables_and_fragments_are_costed_like_literals(hub, control):
    document = """query($n: Int!) { customers(first: $n) { ...Page } }
        fragment Page on CustomerConnection { nodes { ...Bills ...Bills } }
        fragment Bills on Customer { billingAccounts { bills(first: 1) { totalCount } } }"""
    refused = hub.query(document, {"n": 60})
    assert code_of(refused) == "COST_LIMIT_EXCEEDED"
    assert backend_calls(control) == 0
    assert code_of(hub.query(document, {"n": 3})) is None


def test_root_fields_and_tokens_are_limited_per_channel(hub, control):
    roots = "{ " + " ".join(f"o{i}: offerings {{ id }}" for i in range(11)) + " }"
    refused = hub.query(roots, key="store", purpose=None)
    assert code_of(refused) == "ROOT_FIELD_LIMIT_EXCEEDED"
    huge = "{ offerings { " + "id " * 2500 + "} }"
    too_long = hub.query(huge, key="store", purpose=None)
    (error,) = errors_of(too_long)
    assert error["extensions"]["code"] == "TOKEN_LIMIT_EXCEEDED"
    assert error["extensions"]["limit"] == "2000"
    assert backend_calls(control) == 0


def test_dry_run_logs_without_personal_data_and_lets_the_operation_through(hub, control, customers):
    bundle = with_active_line(customers, 5)
    msisdn = next(s.msisdn for s in bundle.subscribers if s.status == "A")
    document = (
        "{ "
        + " ".join(f"o{i}: offerings {{ id }}" for i in range(11))
        + f' c: customerByMsisdn(msisdn: "{msisdn}") {{ id }} }}'
    )
    assert code_of(hub.query(document)) == "ROOT_FIELD_LIMIT_EXCEEDED"

    def dry_run(text: str) -> str:
        return text.replace("limits: {max_cost: 100}", "limits: {max_cost: 100, mode: dry_run}")

    with policy_changed(hub, dry_run, "probe-dry-run"):
        answered = hub.query(document)
        assert code_of(answered) is None
        assert answered.json()["data"]["c"]["id"].startswith("cus_")
        log = hub.log_file.read_text()
        line = next(
            line for line in log.splitlines() if "dry run: operation past max_root_fields" in line
        )
        assert "channel agent" in line and "(12 > 10)" in line
        assert msisdn not in log


# --- 4. search cannot be an oracle ----------------------------------------------------------

BY_NAME = """query($p: String!) { customers(namePrefix: $p, first: 5) {
  nodes { id profile { name } } } }"""


def test_a_name_masked_to_the_caller_cannot_be_searched_by_prefix(hub, control, customers):
    bundle = customers[7]
    name = bundle.customer.name
    refused = hub.query(BY_NAME, {"p": name}, purpose=None)  # the agent sees names masked
    (error,) = errors_of(refused)
    assert error["extensions"]["code"] == "SEARCH_NOT_ALLOWED"
    assert name not in refused.text and name[:1] not in error["message"]
    assert control.total("boss") == 0
    # With a purpose the name goes out clear to the agent, and the search is allowed.
    allowed = hub.query(BY_NAME, {"p": name}, purpose="service")
    assert code_of(allowed) is None
    names = [n["profile"]["name"] for n in allowed.json()["data"]["customers"]["nodes"]]
    assert name in names


# --- 5. lockouts that protect the victim ----------------------------------------------------


def test_wrong_id_cards_lock_the_failing_key_not_the_customer(hub, customers):
    bundle, other = customers[11], customers[12]
    hub_id = hub_id_of(hub, bundle)
    wrong = {"id": hub_id, "n": other.customer.cert_no}
    for _ in range(5):
        failed = hub.query(CHECK, wrong, key="store", purpose=None)
        assert code_of(failed) == "VERIFICATION_FAILED"
    right = {"id": hub_id, "n": bundle.customer.cert_no}
    locked = hub.query(CHECK, right, key="store", purpose=None)
    assert code_of(locked) == "VERIFICATION_LOCKED"
    # The customer at another counter (another key) is checked as usual.
    checked = hub.query(CHECK, right, key="store2", purpose=None)
    assert code_of(checked) is None
    assert checked.json()["data"]["checkIdCard"]["level"] == "id_card"


def test_one_keys_otp_requests_do_not_lock_the_customers_own_app_out(hub, sims, customers):
    bundle = with_active_line(customers, 14)
    hub_id = hub_id_of(hub, bundle)

    def per_key(text: str) -> str:
        return text.replace("otp_sends_per_credential: 5 ", "otp_sends_per_credential: 3 ").replace(
            "otp_sends_per_customer: 5 ", "otp_sends_per_customer: 8 "
        )

    def sent() -> int:
        return sum(len(inbox(sims, s.msisdn)) for s in bundle.subscribers)

    with policy_changed(hub, per_key, "probe-otp-per-key"):
        before = sent()
        codes = [
            code_of(hub.query(START, {"id": hub_id}, key="sms", purpose=None)) for _ in range(5)
        ]
        assert codes == [None, None, None, "OTP_RATE_LIMITED", "OTP_RATE_LIMITED"]
        assert sent() == before + 3
        own = hub.query(START, {"id": hub_id}, key="app", purpose=None)
        assert code_of(own) is None
        assert sent() == before + 4
