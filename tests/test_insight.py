"""Customer insight against the real simulators and gateway: the values, the reasons, the
policy on them (masking per channel, the access log, explain), the rules file's checks, the
setting's three ways in, the provider outside a request, and the trained model."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from adapters.declared.yaml_lines import DeclarationInvalid
from gateway.policy_store import DEFAULT_POLICY_FILE
from insight.evaluate import evaluate
from insight.features import compute_features
from insight.provider import CustomerFacts, operator_today
from insight.rules import DEFAULT_RULES_FILE, load_rules
from insight.store import RulesStore
from insight.train import history_records, train
from simulators.dataset import CustomerBundle, has_certificate_typo
from simulators.reference import OFFERINGS_BY_ID
from tests.conftest import HUB_SEED
from tests.harness import REPO, SWITCHBOARD, gateway_env

INSIGHT = """
query Insight($msisdn: String!) {
  customerByMsisdn(msisdn: $msisdn) {
    id
    insight {
      tags valueTier lifecycleStage
      rfm { recency frequency monetary segment }
      churnRisk { score level reasons }
    }
  }
}
"""
LEAVES = ("tags", "valueTier", "lifecycleStage")


def msisdn_of(bundle: CustomerBundle) -> str:
    return next(s.msisdn for s in bundle.subscribers if s.status != "D")


def insight_of(gateway, bundle: CustomerBundle, channel="agent", purpose="marketing") -> dict:
    response = gateway.query(
        INSIGHT, {"msisdn": msisdn_of(bundle)}, channel=channel, purpose=purpose
    )
    assert response.status_code == 200, response.text
    return response.json()


# --- what a customer's insight is, computed here from the dataset itself -------------------


def active_lines(b: CustomerBundle):
    return [s for s in b.subscribers if s.status == "A"]


def expected_tier(b: CustomerBundle) -> str:
    arpu = sum(s.arpu_cents for s in active_lines(b)) / 100
    mou = sum(s.mou for s in active_lines(b))
    if arpu >= 400:
        return "top"
    if arpu >= 200 and mou >= 500:
        return "high"
    return "middle" if arpu >= 80 else "low"


def expected_tags(b: CustomerBundle, today: date) -> set[str]:
    """The tags that need no model: from lines, usage, balance and tickets as seeded."""
    lines = active_lines(b)
    tags = set()
    if len(lines) >= 2:
        tags.add("multi_line")
    if not lines:
        tags.add("no_active_line")
    ratios = [
        s.data_used_mb / OFFERINGS_BY_ID[s.offering_id].data_mb
        for s in lines
        if OFFERINGS_BY_ID[s.offering_id].data_mb
    ]
    if ratios and max(ratios) >= 0.8:
        tags.add("data_heavy")
    if sum(s.mou for s in lines) >= 1500:
        tags.add("voice_heavy")
    if b.account.overdue_cents > 0:
        tags.add("in_arrears")
    year_ago = today - timedelta(days=365)
    complaints = [
        t
        for t in b.tickets
        if t.ticket_type == "complaint"
        and datetime.fromisoformat(t.creation_date).date() > year_ago
    ]
    if len(complaints) >= 2:
        tags.add("complainer")
    if (today - date.fromisoformat(b.customer.create_date)).days / 30.44 >= 60:
        tags.add("long_tenure")
    if expected_tier(b) in ("top", "high"):
        tags.add("high_value")
    return tags


MODEL_FREE = {
    "multi_line",
    "no_active_line",
    "data_heavy",
    "voice_heavy",
    "in_arrears",
    "complainer",
    "long_tenure",
    "high_value",
}


def pick(customers, test) -> CustomerBundle:
    # Customers with a line in service (customerByMsisdn finds them) whose billing account
    # links: a mistyped ID card is an identity conflict (no insight, tested below).
    return next(
        c
        for c in customers[:300]
        if any(s.status != "D" for s in c.subscribers)
        and not has_certificate_typo(HUB_SEED, c.customer.index)
        and test(c)
    )


@pytest.fixture(scope="module")
def chosen(customers) -> dict[str, CustomerBundle]:
    return {
        "suspended": pick(customers, lambda c: any(s.status == "S" for s in c.subscribers)),
        "arrears": pick(customers, lambda c: c.account.overdue_cents > 0),
        "multi_line": pick(customers, lambda c: len(active_lines(c)) >= 2),
        "complainer": pick(
            customers, lambda c: sum(t.ticket_type == "complaint" for t in c.tickets) >= 2
        ),
        "top": pick(customers, lambda c: expected_tier(c) == "top"),
        "low": pick(customers, lambda c: expected_tier(c) == "low" and active_lines(c)),
    }


def test_a_customers_insight_has_the_tags_tier_and_stage_the_dataset_implies(gateway, chosen):
    today = operator_today()
    for why, bundle in chosen.items():
        body = insight_of(gateway, bundle)
        assert "errors" not in body, (why, body)
        insight = body["data"]["customerByMsisdn"]["insight"]
        assert insight["valueTier"] == expected_tier(bundle), why
        assert set(insight["tags"]) & MODEL_FREE == expected_tags(bundle, today), why
        if why == "suspended":
            assert insight["lifecycleStage"] == "churn_warning"
        churn = insight["churnRisk"]
        assert 0 <= churn["score"] <= 1 and churn["level"] in ("low", "medium", "high")
        assert ("churn_risk" in insight["tags"]) == (churn["level"] != "low")


def test_the_graph_scores_exactly_what_the_model_was_trained_to_score(gateway, chosen):
    """No train/serve skew: the history the model learns from, turned into figures by the
    trainer, gives the same insight as the hub's live read through its adapters."""
    rules = load_rules()
    for bundle in chosen.values():
        records, _ = history_records(HUB_SEED, bundle.customer.index)
        offline = evaluate(rules, compute_features(records, operator_today()))
        live = insight_of(gateway, bundle)["data"]["customerByMsisdn"]["insight"]
        assert live["churnRisk"]["score"] == pytest.approx(offline.churn_risk.score, abs=1e-4)
        assert live["rfm"] == {
            "recency": offline.rfm.recency,
            "frequency": offline.rfm.frequency,
            "monetary": offline.rfm.monetary,
            "segment": offline.rfm.segment,
        }
        assert live["tags"] == list(offline.tags)
        assert live["lifecycleStage"] == offline.lifecycle_stage


def test_churn_reasons_name_the_raising_figures_in_words(gateway, chosen):
    reasons = insight_of(gateway, chosen["complainer"])["data"]["customerByMsisdn"]["insight"][
        "churnRisk"
    ]["reasons"]
    assert reasons and all("(+" in reason for reason in reasons)
    assert any(reason.startswith("complaints in the last 12 months: ") for reason in reasons)


def test_insight_is_masked_or_denied_per_channel_and_purpose(gateway, chosen):
    bundle = chosen["multi_line"]
    # An agent without the marketing purpose: withheld (masked), no error.
    body = insight_of(gateway, bundle, purpose="service")
    insight = body["data"]["customerByMsisdn"]["insight"]
    assert all(insight[leaf] is None for leaf in LEAVES)
    assert insight["churnRisk"] == {"score": None, "level": None, "reasons": None}
    assert "errors" not in body
    # The store counter: masked as well.
    body = insight_of(gateway, bundle, channel="store", purpose="service")
    assert body["data"]["customerByMsisdn"]["insight"]["valueTier"] is None
    # The IVR (self-service): denied, with FIELD_DENIED at each path.
    body = insight_of(gateway, bundle, channel="ivr", purpose=None)
    codes = {(tuple(error["path"][2:]), error["extensions"]["code"]) for error in body["errors"]}
    assert (("valueTier",), "FIELD_DENIED") in codes
    assert (("churnRisk", "score"), "FIELD_DENIED") in codes
    assert body["data"]["customerByMsisdn"]["insight"]["tags"] is None


def test_partners_are_denied_insight(gateway, chosen, customers):
    agent = insight_of(gateway, chosen["top"])
    hub_id = agent["data"]["customerByMsisdn"]["id"]
    response = gateway.query(
        "query($id: ID!) { customer(id: $id) { insight { valueTier churnRisk { level } } } }",
        {"id": hub_id},
        channel="partner",
        purpose=None,
    )
    body = response.json()
    assert body["data"]["customer"]["insight"] == {"valueTier": None, "churnRisk": {"level": None}}
    assert {e["extensions"]["code"] for e in body["errors"]} == {"FIELD_DENIED"}


def test_the_access_log_records_the_insight_paths(gateway, chosen):
    request_id = uuid.uuid4().hex
    response = gateway.query(
        INSIGHT,
        {"msisdn": msisdn_of(chosen["arrears"])},
        purpose="marketing",
        headers={"X-Request-Id": request_id},
    )
    assert response.status_code == 200
    with sqlite3.connect(gateway.database_path) as conn:
        rows = conn.execute(
            "SELECT purpose, disclosed FROM audit_record WHERE request_id = ?", (request_id,)
        ).fetchall()
    assert len(rows) == 1
    purpose, disclosed = rows[0][0], json.loads(rows[0][1])
    assert purpose == "marketing"
    for path in (
        "customerByMsisdn.insight.tags",
        "customerByMsisdn.insight.valueTier",
        "customerByMsisdn.insight.rfm.segment",
        "customerByMsisdn.insight.lifecycleStage",
        "customerByMsisdn.insight.churnRisk.score",
        "customerByMsisdn.insight.churnRisk.reasons",
    ):
        assert disclosed[path] == "clear", path


def test_policy_explain_covers_the_insight_fields(tmp_path):
    query = tmp_path / "q.graphql"
    query.write_text(INSIGHT)
    run = [*SWITCHBOARD, "policy", "explain", "--query", str(query)]
    agent = subprocess.run(
        [*run, "--channel", "agent", "--role", "agent", "--purpose", "marketing"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    ).stdout
    line = next(x for x in agent.splitlines() if "customerByMsisdn.insight.valueTier" in x)
    assert "clear" in line and "class insight" in line and "agent-insight-for-marketing" in line
    query.write_text('query { customer(id: "x") { insight { churnRisk { score } } } }')
    partner = subprocess.run(
        [*run, "--channel", "partner", "--role", "partner"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    ).stdout
    line = next(x for x in partner.splitlines() if "insight.churnRisk.score" in x)
    assert "denied" in line


def test_a_customer_in_identity_conflict_gets_no_insight_but_a_coded_error(gateway, typo_customer):
    body = insight_of(gateway, typo_customer)
    assert body["data"]["customerByMsisdn"]["insight"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["IDENTITY_CONFLICT"]


# --- explain ---------------------------------------------------------------------------------


def test_explain_says_why_with_the_figures_and_no_personal_data(gateway, sims, chosen):
    bundle = chosen["complainer"]
    env = gateway_env(sims, f"sqlite+aiosqlite:///{gateway.database_path}")
    msisdn = msisdn_of(bundle)
    done = subprocess.run(
        [*SWITCHBOARD, "insight", "explain", "--customer", msisdn],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "complaints_12m" in out and "value tier" in out and "lifecycle stage" in out
    assert "because complainer" not in out  # tags are named with their kind and rule
    assert re.search(r"^tag +[a-z_]+ +because [a-z]+: .+ \(line \d+\)$", out, re.M)
    assert "churn risk" in out and "raised most by" in out
    # Masked references only: no whole number, name, ID card or hub id.
    c = bundle.customer
    for personal in (msisdn, c.name, c.cert_no, c.customer_no, bundle.account.id, bundle.party.id):
        assert personal not in out
    hub_id = insight_of(gateway, bundle)["data"]["customerByMsisdn"]["id"]
    assert hub_id not in out and f"cus_****{hub_id[-4:]}" in out
    by_id = subprocess.run(
        [*SWITCHBOARD, "insight", "explain", "--customer", hub_id],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert by_id.returncode == 0 and by_id.stdout.splitlines()[1:] == out.splitlines()[1:]


# --- the provider, outside a request --------------------------------------------------------


def test_facts_read_the_systems_and_agree_with_the_graph(gateway, sims, chosen, typo_customer):
    from gateway.backends import build_backends, insight_engine
    from gateway.database import create_engine
    from gateway.settings import load_settings

    graph = {
        name: insight_of(gateway, bundle)["data"]["customerByMsisdn"]
        for name, bundle in chosen.items()
    }
    conflicted = insight_of(gateway, typo_customer)["data"]["customerByMsisdn"]["id"]
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{gateway.database_path}",
        boss={"base_url": sims.boss},
        billing={"base_url": sims.billing},
        care={"base_url": sims.care},
    )

    async def facts() -> dict[str, CustomerFacts]:
        engine = create_engine(settings.database_url)
        wiring = build_backends(settings, engine)
        try:
            await wiring.backends.customer_system.start()
            provider = insight_engine(wiring.backends, load_rules())
            ids = [g["id"] for g in graph.values()] + ["cus_" + "0" * 20, conflicted]
            return dict(await provider.facts(ids))
        finally:
            await wiring.close()
            await engine.dispose()

    found = asyncio.run(facts())
    assert "cus_" + "0" * 20 not in found  # unknown ids are left out
    assert conflicted not in found  # and so are customers whose records do not link
    for answer in graph.values():
        insight = answer["insight"]
        assert found[answer["id"]] == CustomerFacts(
            tags=tuple(insight["tags"]),
            value_tier=insight["valueTier"],
            rfm_segment=insight["rfm"]["segment"],
            lifecycle_stage=insight["lifecycleStage"],
            churn_level=insight["churnRisk"]["level"],
            churn_score=insight["churnRisk"]["score"],
        )


# --- the rules file --------------------------------------------------------------------------


def rules_copy(tmp_path: Path, edit) -> Path:
    text = DEFAULT_RULES_FILE.read_text()
    path = tmp_path / "rules.yaml"
    path.write_text(edit(text))
    (tmp_path / "churn-model.json").write_text(
        DEFAULT_RULES_FILE.with_name("churn-model.json").read_text()
    )
    return path


def line_of(path: Path, needle: str) -> int:
    return next(n for n, text in enumerate(path.read_text().splitlines(), 1) if needle in text)


def test_rule_file_errors_name_the_file_and_line(tmp_path):
    path = rules_copy(
        tmp_path,
        lambda t: (
            t.replace("{tier: high, arpu_min: 200, mou_min: 500}", "{tier: high, arpu_min: 500}")
            .replace("{complaints_12m: {gte: 2}}", "{complaints_12months: {gte: 2}}")
            .replace("{segment: loyal, f_min: 4, m_min: 3}", "{segment: loyal, f_min: 7}")
            .replace("  reasons: 3", "  reasons: 3\n  colour: red")
            .replace("[20, 35, 60, 120]", "[20, 60, 35, 120]")
        ),
    )
    with pytest.raises(DeclarationInvalid) as raised:
        load_rules(path)
    lines = {p.line for p in raised.value.problems}
    assert all(p.file == str(path) for p in raised.value.problems)
    assert line_of(path, "{tier: high, arpu_min: 500}") in lines  # unreachable tier
    assert line_of(path, "complaints_12months") in lines  # unknown figure
    assert line_of(path, "{segment: loyal, f_min: 7}") in lines  # score out of range
    assert (line_of(path, "recency_days: [20"), "rfm.recency_days must be strictly rising") in {
        (p.line, p.message) for p in raised.value.problems
    }
    assert any("unknown key 'colour'" in p.message for p in raised.value.problems)
    # The check command prints the same, and refuses.
    done = subprocess.run(
        [*SWITCHBOARD, "insight", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"{path}:{line_of(path, 'complaints_12months')}: error: " in done.stdout


def test_a_yaml_error_and_a_broken_model_are_refused_with_their_place(tmp_path):
    path = rules_copy(tmp_path, lambda t: t.replace("version:", "version: [\n"))
    with pytest.raises(DeclarationInvalid) as raised:
        load_rules(path)
    assert raised.value.problems[0].line > 0
    path = rules_copy(tmp_path, lambda t: t)
    (tmp_path / "churn-model.json").write_text('{"features": [{"name": "shoe_size"}]}')
    with pytest.raises(DeclarationInvalid) as raised:
        load_rules(path)
    assert any(
        p.line == line_of(path, "model: churn-model.json") and "shoe_size" in p.message
        for p in raised.value.problems
    )


def test_the_bundled_rules_check_clean():
    done = subprocess.run(
        [*SWITCHBOARD, "insight", "check"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0 and ": ok, version " in done.stdout


def test_a_broken_reload_keeps_the_rules_in_force(tmp_path):
    path = rules_copy(tmp_path, lambda t: t)
    store = RulesStore(path)
    version = store.current.version
    path.write_text(path.read_text().replace("tier: top", "tier: Top!"))
    assert store.reload() and store.current.version == version
    path.write_text(
        path.read_text().replace("tier: Top!", "tier: top").replace(version, "2099-01-01.1")
    )
    assert store.reload() == [] and store.current.version == "2099-01-01.1"


# --- the setting, by flag, environment and TOML ---------------------------------------------


def test_the_rules_file_setting_reaches_the_code_each_way(tmp_path, monkeypatch):
    from gateway.cli import _overrides, build_parser
    from gateway.settings import load_settings

    rules = rules_copy(tmp_path, lambda t: t)
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(tmp_path / "none.toml"))
    assert load_settings().insight_rules_file is None
    args = build_parser().parse_args(["serve", "--insight-rules", str(rules)])
    assert load_settings(**_overrides(args)).insight_rules_file == rules
    monkeypatch.setenv("SWITCHBOARD_INSIGHT_RULES_FILE", str(rules))
    assert load_settings().insight_rules_file == rules
    monkeypatch.delenv("SWITCHBOARD_INSIGHT_RULES_FILE")
    toml = tmp_path / "switchboard.toml"
    toml.write_text(f'insight_rules_file = "{rules}"\ninsight_reload_interval_s = 0.5\n')
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(toml))
    settings = load_settings()
    assert settings.insight_rules_file == rules and settings.insight_reload_interval_s == 0.5


def test_the_gateway_refuses_to_start_on_broken_rules_or_a_policy_without_the_class(tmp_path):
    from gateway.app import create_app
    from gateway.settings import load_settings
    from policies.loader import PolicyInvalid

    database = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    broken = rules_copy(tmp_path, lambda t: t.replace("kind: risk", "kind: danger", 1))
    with pytest.raises(DeclarationInvalid):
        create_app(load_settings(database_url=database, insight_rules_file=broken))
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    del policy["data_classes"]["insight"]
    for rule in policy["disclosure"]["rules"]:
        if isinstance(rule["class"], list):
            rule["class"] = [c for c in rule["class"] if c != "insight"] or ["name"]
        elif rule["class"] == "insight":
            rule["class"] = "location"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
    with pytest.raises(PolicyInvalid) as raised:
        create_app(load_settings(database_url=database, policy_file=policy_file))
    assert "data class 'insight'" in str(raised.value)
    done = subprocess.run(
        [*SWITCHBOARD, "policy", "check", str(policy_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1 and "'insight'" in done.stdout


# --- the model -------------------------------------------------------------------------------


def test_the_model_trains_deterministically_and_beats_chance_on_the_holdout(tmp_path):
    first = train(7, 3000, date(2026, 11, 20))
    second = train(7, 3000, date(2026, 11, 20))
    assert first.model == second.model
    assert first.holdout_auc > 0.65
    # Complaints and arrears raise the risk; a fuller data allowance lowers it.
    coefficients = {f["name"]: f["coefficient"] for f in first.model["features"]}
    assert coefficients["complaints_12m"] > 0 and coefficients["overdue"] > 0
    assert coefficients["data_usage_ratio"] < 0


def test_train_writes_a_model_the_rules_can_use(tmp_path):
    out = tmp_path / "churn-model.json"
    done = subprocess.run(
        [*SWITCHBOARD, "insight", "train", "--seed", "3", "--customers", "1500", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "holdout AUC 0." in done.stdout
    rules = tmp_path / "rules.yaml"
    rules.write_text(DEFAULT_RULES_FILE.read_text())
    loaded = load_rules(rules)
    assert loaded.churn.model.trained["customers"] == 1500


def test_the_shipped_model_is_the_one_train_reports():
    model = json.loads(DEFAULT_RULES_FILE.with_name("churn-model.json").read_text())
    trained = model["trained"]
    assert trained["seed"] == 42 and trained["customers"] == 20000
    assert trained["holdout_auc"] > 0.7


def test_a_customer_below_every_value_band_gets_the_lowest_tier():
    """A negative ARPU (refunds) is below every band's minimum: the lowest tier, not a crash."""
    rules = load_rules()
    records, _ = history_records(HUB_SEED, 0)
    figures = {**compute_features(records, operator_today()), "arpu": -50.0}
    insight = evaluate(rules, figures)
    assert insight.value_tier == rules.value_tiers[-1].tier
