"""The policy as data: masks, the file format, its checks, and the bundled default."""

from __future__ import annotations

import pytest

from gateway.policy_store import DEFAULT_POLICY_FILE
from policies.loader import PolicyInvalid, load_policy, parse_policy
from policies.masks import DataClass, mask, scrub_free_text
from policies.model import Level
from policies.principal import Principal
from schema.build import build_schema, operation_names

# The schema's own root fields: each feature adds its roots, and the bundled policy lists them.
OPERATIONS = operation_names(build_schema(0))


@pytest.mark.parametrize(
    ("data_class", "value", "masked"),
    [
        (DataClass.MOBILE, "13812345678", "138****5678"),
        (DataClass.ID_CARD, "110101199003071234", "110101********1234"),
        (DataClass.NAME, "张三", "张*"),
        (DataClass.NAME, "张小三", "张*三"),
        (DataClass.ADDRESS, "重庆市渝中区迎宾大道193号", "重庆市渝中区****"),
        (DataClass.EMAIL, "dong@x.com", "d***@x.com"),
        (DataClass.BANK_CARD, "6222021234567890123", "622202*********0123"),
        (DataClass.DEVICE_ID, "460002696157016", "46000******7016"),
        (DataClass.BIRTH_DATE, "1990-03-07", None),
    ],
)
def test_each_class_has_one_mask(data_class, value, masked):
    assert mask(data_class, value) == masked


def test_an_id_card_mask_never_shows_the_birth_date():
    assert "19900307" not in mask(DataClass.ID_CARD, "110101199003071234")


def test_free_text_is_scrubbed_of_numbers_cards_and_ids():
    text = "客户13812345678，证件11010119900307123X，卡6222021234567890，另+86 139-1234-5678"
    scrubbed = scrub_free_text(text)
    for secret in ("13812345678", "11010119900307123X", "6222021234567890", "1234-5678"):
        assert secret not in scrubbed
    assert "138****5678" in scrubbed and "110101********123X" in scrubbed


def test_the_bundled_policy_is_valid():
    policy, warnings = load_policy(DEFAULT_POLICY_FILE, OPERATIONS)
    assert policy.rules and not [w for w in warnings if w.severity == "error"]


def decide(policy, data_class, channel, role, purpose=None):
    return policy.decide(data_class, Principal("t", role, channel), purpose)


def test_first_matching_rule_decides_and_purpose_gates_clear():
    policy, _ = load_policy(DEFAULT_POLICY_FILE, OPERATIONS)
    assert decide(policy, DataClass.NAME, "agent", "agent", "service").level is Level.CLEAR
    assert decide(policy, DataClass.NAME, "agent", "agent").level is Level.MASKED
    assert decide(policy, DataClass.ID_CARD, "partner", "partner").rule_id == (
        "partner-never-sees-identity-documents"
    )
    assert decide(policy, DataClass.MOBILE, "app", "customer").rule_id == "default"


BROKEN = """\
version: "1"
purposes: [service]
channels:
  app:
    operations: [customer, deleteEverything]
    colour: blue
disclosure:
  rules:
    - id: a
      class: [mobile, telepathy]
      channel: kiosk
      decision: clear
    - id: b
      decision: maybe
"""


def test_check_names_file_and_line_of_every_problem():
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(BROKEN, "rules.yaml", OPERATIONS)
    text = str(raised.value)
    assert "rules.yaml:5: error: channel 'app' allows unknown operation 'deleteEverything'" in text
    assert "rules.yaml:5: error: unknown key 'colour'" in text
    assert "rules.yaml:9: error: unknown data class 'telepathy'" in text
    assert "rules.yaml:9: error: rule 'a' names unknown channel 'kiosk'" in text
    assert "rules.yaml:13: error: rule 'b': decision must be one of" in text


def test_unreachable_rules_are_errors_and_overlaps_warnings():
    text = """\
version: "1"
purposes: [service]
channels: {agent: {operations: "*"}}
disclosure:
  rules:
    - {id: wide, class: mobile, decision: masked}
    - {id: narrow, class: mobile, channel: agent, decision: clear}
"""
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(text, "p.yaml")
    assert "p.yaml:7: error: rule 'narrow' is unreachable: rule 'wide' (line 6)" in str(
        raised.value
    )
    overlapping = text.replace(
        "class: mobile, decision: masked", "channel: agent, decision: masked"
    )
    overlapping = overlapping.replace("class: mobile, channel: agent", "class: mobile")
    _, warnings = parse_policy(overlapping, "p.yaml")
    assert [w.severity for w in warnings] == ["warning"]
    assert "overlaps rule 'wide'" in warnings[0].message


def test_yaml_syntax_errors_name_the_line():
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy("version: 1\nchannels: [unclosed\n", "bad.yaml")
    assert str(raised.value).startswith("bad.yaml:")


@pytest.mark.parametrize(
    ("amount", "spoken"),
    [
        ("389.89", "三百八十九元八角九分"),
        ("10", "十元整"),
        ("1001.5", "一千零一元五角"),
        ("-90.91", "负九十元九角一分"),
        ("0.05", "五分"),
        ("120000", "十二万元整"),
    ],
)
def test_amounts_are_spoken_for_ivr(amount, spoken):
    from decimal import Decimal

    from policies.rendering import render_amount

    assert render_amount(Decimal(amount), "CNY", "speech") == spoken


def test_amounts_and_dates_are_short_text_for_sms():
    from datetime import date
    from decimal import Decimal

    from policies.rendering import render_amount, render_date

    assert render_amount(Decimal("-90.9"), "CNY", "text") == "-¥90.90"
    assert render_date(date(2026, 11, 21), "text") == "11月21日"
    assert render_date(date(2026, 11, 21), "speech") == "十一月二十一日"
    assert render_date(date(2026, 11, 21), "standard") == "2026-11-21"


# --- verification levels, continuity, row scope ---------------------------------------------

VERIFYING = """\
version: "1"
purposes: [service]
verification_levels: [none, otp, id_card]
channels:
  app:
    operations: [customer, startOtp, confirmOtp]
    rows: verified_customer
    requires_verification: {customer: otp}
  store:
    operations: "*"
    continuity:
      - {from: app, max_age_minutes: 30, carries: otp}
disclosure:
  rules:
    - {id: clerk-after-id-check, class: id_card, channel: store, verified: id_card, decision: clear}
    - {id: app-after-otp, class: bank_card, channel: app, verified: otp, decision: masked}
    - {id: app-without, class: bank_card, channel: app, decision: denied}
"""


def test_verified_is_a_minimum_level_and_counts_only_when_held():
    policy, _ = parse_policy(VERIFYING, "v.yaml", OPERATIONS)
    clerk = Principal("t", "clerk", "store")
    app = Principal("t", "customer", "app")
    assert policy.decide(DataClass.ID_CARD, clerk, None).level is Level.MASKED
    assert policy.decide(DataClass.ID_CARD, clerk, None, "otp").level is Level.MASKED
    assert policy.decide(DataClass.ID_CARD, clerk, None, "id_card").level is Level.CLEAR
    assert policy.decide(DataClass.BANK_CARD, app, None).level is Level.DENIED
    assert policy.decide(DataClass.BANK_CARD, app, None, "otp").level is Level.MASKED
    assert policy.decide(DataClass.BANK_CARD, app, None, "id_card").level is Level.MASKED
    # A level the policy does not know proves nothing.
    assert policy.decide(DataClass.BANK_CARD, app, None, "retina").level is Level.DENIED
    assert policy.channel("app").rows == "verified_customer"
    assert policy.channel("app").requires_verification == {"customer": "otp"}


def test_a_verification_counts_where_and_as_far_as_continuity_says():
    from policies.verification import Verification, standing

    policy, _ = parse_policy(VERIFYING, "v.yaml", OPERATIONS)
    now = 1_000_000.0

    def made(channel: str, level: str, age_min: float = 1) -> Verification:
        created = now - age_min * 60
        return Verification("v", "cus_1", level, level, channel, "k", created, created + 3600)

    assert standing(policy, made("app", "otp"), "app", now).level == "otp"
    assert standing(policy, made("app", "otp"), "store", now).level == "otp"
    assert standing(policy, made("app", "otp", 31), "store", now).code == (
        "VERIFICATION_NOT_CARRIED"
    )
    assert standing(policy, made("app", "otp", 61), "app", now).code == "VERIFICATION_EXPIRED"
    assert standing(policy, made("store", "id_card"), "app", now).code == (
        "VERIFICATION_NOT_CARRIED"
    )
    capped = policy.channel("store").continuity[0]
    assert capped.carries == "otp"
    assert standing(policy, made("app", "id_card"), "store", now).level == "otp"
    assert standing(policy, made("app", "otp"), "store", now, "cus_2").code == (
        "CUSTOMER_NOT_VERIFIED"
    )


BROKEN_VERIFYING = """\
version: "1"
purposes: [service]
verification_levels: [none, otp]
channels:
  app:
    operations: [customer]
    rows: everyone
    requires_verification: {customer: retina, launchRockets: otp}
  store:
    continuity:
      - {from: kiosk, max_age_minutes: 30, carries: otp}
      - {from: app, max_age_minutes: -5, carries: otp, forever: true}
      - {from: app, max_age_minutes: 5, carries: id_card}
disclosure:
  rules:
    - {id: a, class: id_card, channel: store, verified: id_card, decision: clear}
"""


def test_check_names_file_and_line_of_bad_verification_keys():
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(BROKEN_VERIFYING, "v.yaml", OPERATIONS)
    text = str(raised.value)
    assert "v.yaml:6: error: rows must be one of all, verified_customer" in text
    assert "v.yaml:8: error: channel 'app': requires_verification.customer must be a " in text
    assert "v.yaml:8: error: channel 'app' requires verification for unknown operation " in text
    assert "v.yaml:11: error: channel 'store': continuity from unknown channel 'kiosk'" in text
    assert "v.yaml:12: error: unknown key 'forever' in a continuity entry" in text
    assert "v.yaml:12: error: channel 'store': max_age_minutes must be a positive integer" in text
    assert "v.yaml:13: error: channel 'store': continuity carries must be a verification" in text
    assert "v.yaml:16: error: rule 'a': verified must be a verification level" in text


def test_a_rule_for_a_higher_level_behind_a_lower_one_is_unreachable():
    text = VERIFYING.replace(
        "    - {id: app-without",
        "    - {id: app-id-card, class: bank_card, channel: app, verified: id_card, "
        "decision: clear}\n    - {id: app-without",
    )
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(text, "v.yaml", OPERATIONS)
    assert "rule 'app-id-card' is unreachable: rule 'app-after-otp'" in str(raised.value)


def test_an_exception_written_before_its_rule_is_not_reported():
    text = """\
version: "1"
purposes: [service]
channels: {app: {operations: "*"}}
verification_levels: [none, otp]
disclosure:
  rules:
    - {id: after-otp, class: bank_card, channel: app, verified: otp, decision: masked}
    - {id: needs-otp, class: bank_card, channel: app, decision: denied}
    - {id: partly, class: [bank_card, mobile], verified: otp, decision: clear}
"""
    _, warnings = parse_policy(text, "p.yaml")
    # Line 7 lies wholly inside line 8 and inside line 9: an exception to each, not reported.
    # Line 8 (also unverified requests) only partly overlaps line 9: reported once.
    assert [w.line for w in warnings] == [9]
    assert "overlaps rule 'needs-otp'" in warnings[0].message


def test_a_policy_key_written_twice_is_refused_with_its_line():
    text = DEFAULT_POLICY_FILE.read_text()
    doubled = text.replace('version: "', 'version: "0"\nversion: "', 1)
    assert doubled != text
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(doubled, "rules.yaml")
    (problem,) = raised.value.problems
    assert "duplicate key 'version'" in problem.message and problem.line >= 2
