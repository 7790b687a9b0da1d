"""The policy as data: masks, the file format, its checks, and the bundled default."""

from __future__ import annotations

import pytest

from gateway.policy_store import DEFAULT_POLICY_FILE
from policies.loader import PolicyInvalid, load_policy, parse_policy
from policies.masks import DataClass, mask, scrub_free_text
from policies.model import Level
from policies.principal import Principal

OPERATIONS = {"customer", "customerByMsisdn", "customers", "offerings"}
OPERATIONS |= {"auditLog", "auditVerification"}  # schema/audit.py (the audit channel)


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
