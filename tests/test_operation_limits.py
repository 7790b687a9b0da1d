"""Operation limits as policy: the static cost estimate, the other bounds, and the file keys.

The estimate is checked against what the resolvers do (tests/test_probe_policy.py checks
against the simulators that nothing runs past a limit)."""

from __future__ import annotations

import time

import pytest
from graphql import parse, validate

from policies.loader import PolicyInvalid, parse_policy
from policies.masks import DataClass
from policies.model import OperationLimits, VerificationLimits
from policies.principal import Principal
from schema.build import build_schema
from schema.cost import analyse_operation, count_tokens

SCHEMA = build_schema(0)._schema


def figures(document: str, variables: dict | None = None, name: str | None = None):
    parsed = parse(document)
    assert not validate(SCHEMA, parsed)
    return analyse_operation(SCHEMA, parsed, name, variables, max_page_size=200, detail=True)


def test_a_loader_field_costs_one_batched_call_per_level_a_direct_call_one_per_parent():
    found = figures(
        "{ customers(first: 150) { nodes { profile { name } "
        "billingAccounts { balance { overdue { amount } } bills(first: 2) { totalCount } } } } }"
    )
    assert found.paths == {
        "customers": 1,  # the search page
        "customers.nodes.profile": 2,  # 150 keys, 100 per call
        "customers.nodes.billingAccounts": 2,
        "customers.nodes.billingAccounts.balance": 3,  # 150 customers x 2 accounts assumed
        "customers.nodes.billingAccounts.bills": 300,  # one billing call per account
    }
    assert found.cost == 308
    assert (found.depth, found.aliases, found.root_fields) == (6, 0, 1)


def test_page_sizes_come_from_literals_variables_defaults_and_the_max_page_size():
    bills = "billingAccounts { bills(first: 1) { totalCount } }"
    literal = figures(f"{{ customers(first: 7) {{ nodes {{ {bills} }} }} }}")
    variable = figures(
        f"query($n: Int!) {{ customers(first: $n) {{ nodes {{ {bills} }} }} }}", {"n": 7}
    )
    defaulted = figures(f"query($n: Int = 7) {{ customers(first: $n) {{ nodes {{ {bills} }} }} }}")
    argument_default = figures(f"{{ customers {{ nodes {{ {bills} }} }} }}")  # first = 20
    capped = figures(f"{{ customers(first: 100000) {{ nodes {{ {bills} }} }} }}")
    assert literal.paths["customers.nodes.billingAccounts.bills"] == 14
    assert variable.cost == literal.cost == defaulted.cost
    assert argument_default.paths["customers.nodes.billingAccounts.bills"] == 40
    assert capped.paths["customers.nodes.billingAccounts.bills"] == 400


def test_aliases_and_fragments_count_as_often_as_they_run():
    aliased = figures(
        '{ a: customerByMsisdn(msisdn: "13800000000") { id } '
        'b: customerByMsisdn(msisdn: "13800000001") { id } offerings { id } }'
    )
    assert (aliased.cost, aliased.aliases, aliased.root_fields) == (3, 2, 3)
    spread = figures(
        "{ customers(first: 10) { ...P } } fragment P on CustomerConnection "
        "{ nodes { ...B ...B x: id } } fragment B on Customer "
        "{ billingAccounts { bills(first: 1) { totalCount } } }"
    )
    assert spread.paths["customers.nodes.billingAccounts.bills"] == 40
    assert spread.aliases == 1


def test_nested_fragment_spreads_are_costed_without_walking_every_expansion():
    # 2^24 expansions if walked naively; the walk memoises a fragment per multiplicity.
    levels = 24
    fragments = " ".join(
        f"fragment F{i} on Customer {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    document = (
        f'{{ customer(id: "cus_00000000000000000000") {{ ...F0 }} }} {fragments} '
        f"fragment F{levels} on Customer {{ id }}"
    )
    started = time.perf_counter()
    parsed = parse(document)
    found = analyse_operation(SCHEMA, parsed)
    assert time.perf_counter() - started < 1.0
    assert found.cost == 1 and found.depth == 2


def test_introspection_is_left_to_the_channel_profile():
    found = figures("{ __schema { types { fields { type { ofType { name } } } } } }")
    assert (found.cost, found.depth, found.root_fields) == (0, 0, 0)


def test_the_operation_named_is_the_one_costed():
    document = "query A { offerings { id } } query B { customers(first: 3) { totalCount } }"
    assert figures(document, name="A").paths == {"offerings": 1}
    assert figures(document, name="B").paths == {"customers": 1}


def test_tokens_are_counted_comments_included_and_counting_stops_at_the_limit():
    assert count_tokens("{ a b }") == 4
    assert count_tokens("# note\n{ a }") == 4
    assert count_tokens("{ " + "a " * 10_000 + "}", stop_after=50) == 51
    assert count_tokens('{ a(x: "unterminated }') == 5  # up to what does not lex


LIMITS = """\
version: "1"
limits: {max_cost: 40, max_depth: 8, mode: dry_run}
channels:
  agent:
    limits: {max_cost: 90, mode: enforce}
  store: {}
"""


def test_limits_default_per_policy_and_a_channel_replaces_the_keys_it_names():
    policy, problems = parse_policy(LIMITS, "p.yaml")
    assert not problems
    assert policy.limits_for("agent") == OperationLimits(max_cost=90, max_depth=8)
    assert policy.limits_for("store") == OperationLimits(max_cost=40, max_depth=8, dry_run=True)
    assert policy.limits_for("nowhere") == policy.limits
    bare, _ = parse_policy('version: "1"\n', "p.yaml")
    assert bare.limits == OperationLimits() and bare.verification_limits == VerificationLimits()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits: {max_cost: 0}\n", "p.yaml:2: error: the policy: limits.max_cost must be a"),
        ("limits: {max_depth: deep}\n", "limits.max_depth must be a positive integer"),
        ("limits: {mode: loud}\n", "limits.mode must be one of enforce, dry_run"),
        ("limits: {max_cots: 3}\n", "unknown key 'max_cots' in the limits of the policy"),
        (
            "channels:\n  agent:\n    limits: {max_aliases: -1}\n",
            "p.yaml:4: error: channel 'agent': limits.max_aliases must be a positive integer",
        ),
        ("verification_limits: {otp_attempts: 0}\n", "otp_attempts must be a positive integer"),
        ("verification_limits: {otp_tries: 3}\n", "unknown key 'otp_tries'"),
        (
            "verification_limits: {id_card_failures_per_credential: 9, "
            "id_card_failures_per_customer: 4}\n",
            "id_card_failures_per_credential (9) is above id_card_failures_per_customer (4)",
        ),
    ],
)
def test_bad_limits_are_refused_with_file_and_line(text, message):
    with pytest.raises(PolicyInvalid) as refused:
        parse_policy('version: "1"\n' + text, "p.yaml")
    assert message in str(refused.value)


def test_a_per_key_allowance_as_high_as_the_ceiling_is_warned_about():
    _, problems = parse_policy(
        'version: "1"\nverification_limits: {otp_sends_per_credential: 5, '
        "otp_sends_per_customer: 5}\n",
        "p.yaml",
    )
    assert [p.severity for p in problems] == ["warning"]
    assert "one credential alone can use up the customer's ceiling" in problems[0].message


SEARCH = """\
version: "1"
purposes: [service]
channels: {agent: {}, store: {}, partner: {}}
search:
  - {class: [name, mobile], channel: [agent, partner]}
disclosure:
  default: masked
  rules:
    - {id: agent-clear, class: name, channel: agent, purpose: service, decision: clear}
    - {id: no-mobile-for-partners, class: mobile, channel: partner, decision: denied}
"""


def test_a_partial_search_needs_the_class_clear_and_a_whole_value_search_not_denied():
    policy, _ = parse_policy(SEARCH, "p.yaml")
    agent, partner = Principal("a", "agent", "agent"), Principal("p", "partner", "partner")
    store = Principal("s", "clerk", "store")
    assert policy.search_refusal(DataClass.NAME, agent, "service", partial=True) is None
    masked = policy.search_refusal(DataClass.NAME, agent, None, partial=True)
    assert "goes out masked" in masked and "needs it clear" in masked
    assert policy.search_refusal(DataClass.MOBILE, agent, None, partial=False) is None
    denied = policy.search_refusal(DataClass.MOBILE, partner, None, partial=False)
    assert "denied" in denied and "no-mobile-for-partners" in denied
    assert "no search grant" in policy.search_refusal(DataClass.MOBILE, store, None, False)


def test_policy_explain_shows_the_cost_the_limits_and_the_search_rule(tmp_path):
    import subprocess
    import sys

    from tests.harness import REPO

    query = tmp_path / "q.graphql"
    query.write_text(
        '{ customers(first: 200, namePrefix: "王") { nodes { profile { name } '
        "billingAccounts { bills { items { id } } } } } }"
    )
    common = [sys.executable, "-m", "gateway.cli", "policy", "explain", "--channel", "agent"]
    common += ["--role", "agent", "--query", str(query)]
    masked = subprocess.run(common, cwd=REPO, capture_output=True, text=True)
    assert masked.returncode == 1
    assert "REFUSED  max_cost: 405 > 100 (COST_LIMIT_EXCEEDED)" in masked.stdout
    assert "  cost    400  customers.nodes.billingAccounts.bills" in masked.stdout
    assert "search customers(namePrefix:) on class name: refused: class name goes out masked" in (
        masked.stdout
    )
    clear = subprocess.run(
        [*common, "--purpose", "service"], cwd=REPO, capture_output=True, text=True
    )
    assert "search customers(namePrefix:) on class name: allowed" in clear.stdout
    assert "SEARCH_NOT_ALLOWED" not in clear.stdout


def test_remembered_figures_follow_the_page_size_variables():
    from schema.operation_limits import DocumentMeasures

    cache = DocumentMeasures(maxsize=2)
    text = (
        "query($n: Int!, $m: String) { customers(first: $n) { nodes { billingAccounts "
        "{ bills(first: 1) { totalCount } } } } }"
    )
    document = parse(text)

    def cost(variables: dict) -> int:
        return cache.figures(SCHEMA, text, document, None, variables, 200).cost

    assert cost({"n": 10, "m": "a"}) == cost({"n": 10, "m": "b"}) == 1 + 1 + 20
    assert cost({"n": 50}) == 1 + 1 + 100
    assert cost({"n": 10}) == 22
    assert len(cache._entries) == 2  # bounded
