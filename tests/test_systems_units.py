"""Units of the declared-systems layer: file checks, routing, values, masks, settings."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
from lxml import etree

from adapters.declared.registry import load_registry
from adapters.declared.soap import SoapEngine
from adapters.declared.system import DeclaredSystem
from adapters.declared.values import convert, from_json
from adapters.declared.yaml_lines import DeclarationInvalid
from adapters.errors import BadResponse, BusinessRejected, NotFound, TimedOut, Unavailable
from adapters.phone import to_e164
from adapters.resilience import Endpoint
from gateway.policy_store import PolicyStore
from gateway.settings import load_settings
from policies.loader import PolicyInvalid, parse_policy
from policies.masks import DataClass
from tests.harness import REPO

LOYALTY = REPO / "systems" / "loyalty"


def copy_loyalty(tmp_path: Path) -> Path:
    folder = tmp_path / "systems"
    shutil.copytree(LOYALTY, folder / "loyalty")
    return folder


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in a copied file, which must hold it."""
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(DeclarationInvalid) as raised:
        load_registry(folder)
    return [str(p) for p in raised.value.problems]


def line_of(path: Path, text: str, exact: bool = False) -> int:
    lines = enumerate(path.read_text().splitlines(), 1)
    return next(i for i, line in lines if (line.strip() == text if exact else text in line))


def test_the_bundled_loyalty_files_are_valid():
    registry = load_registry(REPO / "systems")
    spec = registry.systems["loyalty"]
    assert spec.instance_names == ("loyalty-north", "loyalty-south")
    assert spec.identity is not None and spec.identity.key_class == "loyalty_member_no"
    assert not spec.required and not spec.waits_at_first_sight


def test_mapping_problems_name_the_file_and_the_line(tmp_path):
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "mapping.yaml"
    text = mapping.read_text()
    text = text.replace(
        "    batch: 100\n    list: members/member\n    record: Member\n    key:",
        "    list: members/member\n    record: Member\n    key:",
        1,
    )
    text = text.replace("record: PointsEntry", "record: PointEntry")
    text = text.replace("type: int, description", "type: integer, description")
    text = text.replace("key: memberNo\n  key_class", "key: memberNumber\n  key_class")
    mapping.write_text(text)
    found = problems_of(folder)
    joined = "\n".join(found)
    members_line = line_of(mapping, "call: getMembers", exact=True)
    assert f"{mapping}:{members_line}: error: operation 'members' takes $keys" in joined
    assert "unknown record 'PointEntry'" in joined
    assert f"{mapping}:{line_of(mapping, 'type: integer')}:" in joined
    assert "identity.key 'memberNumber' is not a field" in joined


def test_a_yaml_syntax_error_names_its_line(tmp_path):
    folder = copy_loyalty(tmp_path)
    system = folder / "loyalty" / "system.yaml"
    system.write_text(system.read_text().replace("readiness: optional", "readiness: [optional"))
    (found,) = problems_of(folder)
    assert found.startswith(f"{system}:") and "not valid YAML" in found


def test_unknown_keys_are_refused_anywhere(tmp_path):
    folder = copy_loyalty(tmp_path)
    system = folder / "loyalty" / "system.yaml"
    system.write_text(system.read_text().replace("  timeout_s: 2.0", "  timout_s: 2.0"))
    (found,) = problems_of(folder)
    assert "unknown key 'timout_s' in call" in found
    assert found.startswith(f"{system}:{line_of(system, 'timout_s')}:")


def test_two_systems_cannot_share_an_instance_or_a_graph_name(tmp_path):
    folder = copy_loyalty(tmp_path)
    twin = folder / "loyalty2"
    shutil.copytree(folder / "loyalty", twin)
    (twin / "system.yaml").write_text(
        (twin / "system.yaml").read_text().replace("name: loyalty\n", "name: loyalty2\n")
    )
    (twin / "mapping.yaml").write_text(
        (twin / "mapping.yaml").read_text().replace("system: loyalty", "system: loyalty2")
    )
    joined = "\n".join(problems_of(folder))
    assert "instance 'loyalty-north' is also in system 'loyalty'" in joined
    assert "graph name 'loyaltyMembers' is also used by system 'loyalty'" in joined


def test_msisdns_route_to_the_instance_that_owns_them():
    spec = load_registry(REPO / "systems").systems["loyalty"]
    endpoints = {i.name: Endpoint(system=i.name, base_url=i.base_url) for i in spec.instances}
    system = DeclaredSystem(spec, endpoints)
    assert system.owner_of("13912345678") == "loyalty-north"
    assert system.owner_of("+8615912345678") == "loyalty-north"
    assert system.owner_of("8618899407311") == "loyalty-south"
    assert system.owner_of("19912345678") == "loyalty-south"
    assert system.owner_of("12012345678") is None  # owned by no instance: never asked
    assert system.owner_of("not a number") is None


def test_values_keep_ids_byte_for_byte_and_normalise_numbers():
    record = load_registry(REPO / "systems").systems["loyalty"].records["Member"]
    found = from_json(
        {
            "memberNo": "0000421733",
            "msisdn": "8618899407311",
            "fullName": "何丽",
            "tier": "GOLD",
            "pointsBalance": "120",
            "pointsExpiring": 0,
            "expiryDate": "2026-12-31",
            "enrolledOn": "2020-01-02",
            "status": "ACTIVE",
        },
        record,
        "loyalty-north",
    )
    assert found["memberNo"] == "0000421733"
    assert found["msisdn"] == "+8618899407311" == to_e164("18899407311")
    assert found["tier"] == "gold" and found["pointsBalance"] == 120
    with pytest.raises(BadResponse):
        convert("12.5", record.field("pointsBalance"), "loyalty-north")
    with pytest.raises(BadResponse):
        convert("DIAMOND", record.field("tier"), "loyalty-north")  # not in the value map
    with pytest.raises(BadResponse):
        convert(None, record.field("memberNo"), "loyalty-north")  # required


FAULT_12 = b"""<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"
  xmlns:lty="urn:aurora:loyalty:member:v2"><env:Body><env:Fault>
  <env:Code><env:Value>env:%s</env:Value></env:Code><env:Reason><env:Text xml:lang="en">x</env:Text>
  </env:Reason><env:Detail><lty:LoyaltyFault><lty:code>%s</lty:code></lty:LoyaltyFault></env:Detail>
  </env:Fault></env:Body></env:Envelope>"""
FAULT_11 = b"""<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
  <faultcode>s:%s</faultcode><faultstring>x</faultstring></s:Fault></s:Body></s:Envelope>"""
RESULT = b"""<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"
  xmlns:lty="urn:aurora:loyalty:member:v2"><env:Body><lty:redeemPointsResponse>
  <resultCode>%s</resultCode></lty:redeemPointsResponse></env:Body></env:Envelope>"""


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (500, FAULT_12 % (b"Receiver", b"LTY-404"), NotFound, "LTY-404"),
        (200, FAULT_12 % (b"Receiver", b"LTY-404"), NotFound, "LTY-404"),  # fault over 200
        (400, FAULT_12 % (b"Sender", b"LTY-413"), BusinessRejected, "LTY-413"),
        (400, FAULT_12 % (b"Sender", b"LTY-NEW"), BusinessRejected, "LTY-NEW"),  # undeclared
        (500, FAULT_12 % (b"Receiver", b"LTY-500"), Unavailable, "LTY-500"),
        (500, FAULT_11 % b"Server", Unavailable, None),  # SOAP 1.1
        (500, FAULT_11 % b"Client", BusinessRejected, None),
        (200, RESULT % b"LTY-422", BusinessRejected, "LTY-422"),  # a result code in the body
        (200, b"<html>no</html>", BadResponse, None),
        (200, b"not xml at all", BadResponse, None),
    ],
)
def test_soap_faults_and_result_codes_map_onto_the_taxonomy(status, body, error, code):
    spec = load_registry(REPO / "systems").systems["loyalty"]
    engine = SoapEngine(spec, spec.instances[0], Endpoint("loyalty-north", "http://127.0.0.1:9"))
    with pytest.raises(error) as raised:
        engine.answer(spec.operations["members"], status, body)
    assert raised.value.backend_code == code
    assert raised.value.system == "loyalty-north"


def test_an_ok_result_code_passes():
    spec = load_registry(REPO / "systems").systems["loyalty"]
    engine = SoapEngine(spec, spec.instances[0], Endpoint("loyalty-north", "http://127.0.0.1:9"))
    payload = engine.answer(spec.operations["members"], 200, RESULT % b"0")
    assert etree.QName(payload).localname == "redeemPointsResponse"


POLICY = """
version: "t1"
purposes: [service]
data_classes:
  member_no: {mask: {keep_last: 4, min_length: 8}}
  secret_note: {mask: withheld}
  phone_like: {mask: {like: mobile}}
channels:
  agent: {operations: "*"}
disclosure:
  default: masked
  rules:
    - {id: agent-members, class: member_no, channel: agent, purpose: service, decision: clear}
"""


def test_a_policy_declares_classes_and_their_masks():
    policy, _ = parse_policy(POLICY, "p.yaml")
    assert policy.mask(DataClass("member_no"), "0000421733") == "******1733"
    assert policy.mask(DataClass("member_no"), "0042") == "****"  # too short to show anything
    assert policy.mask(DataClass("secret_note"), "x") is None
    assert policy.mask(DataClass("phone_like"), "13812345678") == "138****5678"
    assert policy.mask(DataClass("never_declared"), "abc") == "****"  # fails closed
    assert policy.mask(DataClass.NAME, "何丽") == "何*"  # built-ins unchanged


def test_policy_class_declarations_are_checked_with_lines():
    broken = POLICY.replace("keep_last: 4, min_length: 8", "keep_lats: 4").replace(
        "class: member_no,", "class: member_number,"
    )
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(broken, "p.yaml")
    joined = "\n".join(str(p) for p in raised.value.problems)
    assert "p.yaml:5: error: unknown key 'keep_lats'" in joined
    assert "unknown data class 'member_number'" in joined


def test_the_hub_refuses_a_policy_without_a_class_its_systems_use(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)  # declares member_no, not loyalty_member_no
    registry = load_registry(REPO / "systems")
    with pytest.raises(PolicyInvalid) as raised:
        PolicyStore(policy, {"customer"}, required_classes=registry.data_classes())
    by_file = {Path(p.file).parent.name: p.message for p in raised.value.problems}
    # Every class a bundled system uses and the policy lacks is named, at the file using it.
    assert set(by_file) == {"loyalty", "billing"}
    assert "data class 'loyalty_member_no' is not declared" in by_file["loyalty"]
    assert "data class 'system_key' is not declared" in by_file["billing"]


def test_systems_settings_reach_the_code_from_the_environment_and_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SWITCHBOARD_SYSTEMS_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_SYSTEM_URLS", '{"loyalty-north": "http://127.0.0.1:1"}')
    settings = load_settings()
    assert settings.systems_dir == tmp_path
    assert settings.system_urls == {"loyalty-north": "http://127.0.0.1:1"}
    monkeypatch.delenv("SWITCHBOARD_SYSTEMS_DIR")
    monkeypatch.delenv("SWITCHBOARD_SYSTEM_URLS")
    config = tmp_path / "switchboard.toml"
    config.write_text(
        f'systems_dir = "{tmp_path}"\n[system_urls]\n"loyalty-south" = "http://127.0.0.1:2"\n'
    )
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    settings = load_settings()
    assert settings.systems_dir == tmp_path
    assert settings.system_urls == {"loyalty-south": "http://127.0.0.1:2"}


def run_cli(*args: str) -> tuple[int, str]:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"SWITCHBOARD_CONFIG": "/nonexistent.toml", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_systems_check_reports_each_problem_with_its_line_and_fails(tmp_path):
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "mapping.yaml"
    mapping.write_text(mapping.read_text().replace("class: name}", "class: full_name}"))
    code, out = run_cli("systems", "check", "--dir", str(folder), "--offline")
    assert code == 1
    line = line_of(mapping, "class: full_name")
    assert f"{mapping}:{line}: error: data class 'full_name' is not declared in the policy" in out
    code, out = run_cli(
        "systems", "check", "--dir", str(copy_loyalty(tmp_path / "ok")), "--offline"
    )
    assert code == 0 and "ok: 1 system(s) (loyalty)" in out


def test_systems_scaffold_starts_a_mapping_from_a_wsdl(tmp_path):
    wsdl = REPO / "simulators" / "loyalty" / "MemberService.wsdl"
    out = tmp_path / "systems" / "aurora"
    code, printed = run_cli("systems", "scaffold", str(wsdl), "--name", "aurora", "--out", str(out))
    assert code == 0, printed
    # Not usable before review: each placeholder would go to the system as it is.
    unreviewed = problems_of(tmp_path / "systems")
    assert unreviewed and all("is the scaffold's placeholder" in p for p in unreviewed)
    assert any("<memberNos>" in p for p in unreviewed)
    mapping = out / "mapping.yaml"
    text = mapping.read_text()
    assert "redeemPoints:  # a change? move it under writes:" in text
    mapping.write_text(re.sub(r"<[\w.-]+>", "$key", text))
    system = (out / "system.yaml").read_text()
    # The contract travels with the folder; the address is the WSDL's own.
    assert "contract: MemberService.wsdl\n" in system and (out / "MemberService.wsdl").exists()
    assert "base_url: http://127.0.0.1:8104" in system
    code, checked = run_cli("systems", "check", "--dir", str(tmp_path / "systems"), "--offline")
    assert code == 0 and "system 'aurora' adds nothing to the graph" in checked, checked
    spec = load_registry(tmp_path / "systems").systems["aurora"]
    assert {op.call for op in spec.operations.values()} == {
        "getMembersByMsisdn", "getMembers", "getPointsHistory", "redeemPoints", "ping",
    }  # fmt: skip
    member = spec.records["Member"]
    assert member.field("msisdn").type == "msisdn" and member.field("msisdn").data_class == "mobile"
    assert member.field("pointsBalance").type == "int"
    assert "# check" in (out / "mapping.yaml").read_text()


def test_personal_says_whether_a_field_that_looks_personal_is(tmp_path):
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "mapping.yaml"
    text = mapping.read_text()
    status = "      status: {path: status}\n"
    balance = "      pointsBalance: {path: pointsBalance, type: int}\n"
    mapping.write_text(
        text.replace(status, status.replace("}", ", personal: maybe}")).replace(
            balance, balance.replace("}", ", personal: true}"), 1
        )
    )
    joined = "\n".join(problems_of(folder))
    assert f"{mapping}:{line_of(mapping, 'personal: maybe')}:" in joined
    assert "personal must be true or false" in joined
    assert "'Member.pointsBalance': a personal field needs a class" in joined
    mapping.write_text(
        text.replace(
            "      status: {path: status}\n", "      status: {path: status, personal: false}\n"
        )
    )
    member = load_registry(folder).systems["loyalty"].records["Member"]
    assert member.field("status").personal is False


BOSS_ANSWER = b"""<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:b="http://boss.simulator.switchboard/crm/v1"><s:Body><b:%sResultMsg>%s
  <b:%sResult/></b:%sResultMsg></s:Body></s:Envelope>"""
RESULT_HEADER = b"<b:ResultHeader><b:ResultCode>0</b:ResultCode></b:ResultHeader>"


async def test_a_soap_answer_must_be_the_operations_own_message_with_its_result_code():
    """What the WSDL says an operation answers with is checked: another operation's message
    (a proxy mixing answers up, a vendor page dressed as SOAP) is a BadResponse, and so is an
    answer without the result code the mapping says every answer carries."""
    spec = load_registry(REPO / "systems").systems["boss"]
    engine = SoapEngine(spec, spec.instances[0], Endpoint("boss", "http://127.0.0.1:9"))
    await engine.start()  # the WSDL beside the declaration: no BOSS needed
    try:
        customers = spec.operations["customers"]
        own = BOSS_ANSWER % (b"QueryCustomer", RESULT_HEADER, b"QueryCustomer", b"QueryCustomer")
        assert etree.QName(engine.answer(customers, 200, own)).localname == "QueryCustomerResultMsg"
        other = BOSS_ANSWER % (
            b"QueryOfferings",
            RESULT_HEADER,
            b"QueryOfferings",
            b"QueryOfferings",
        )
        with pytest.raises(BadResponse, match="unexpected message"):
            engine.answer(customers, 200, other)
        bare = BOSS_ANSWER % (b"QueryCustomer", b"", b"QueryCustomer", b"QueryCustomer")
        with pytest.raises(BadResponse, match="without its result code"):
            engine.answer(customers, 200, bare)
    finally:
        await engine.close()


def test_result_required_needs_a_result_code(tmp_path):
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "mapping.yaml"
    text = mapping.read_text()
    mapping.write_text(text.replace("  result_code: resultCode\n", "  result_required: true\n"))
    assert any("result_required needs result_code" in p for p in problems_of(folder))


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("decimal", "NaN"),
        ("decimal", "sNaN"),
        ("decimal", "Infinity"),
        ("decimal", "1e400"),
        ("decimal", "1E+999999999"),
        ("decimal", "1e-400"),
        ("money", {"value": "Infinity", "unit": "CNY"}),
        ("money", "-1e20"),
        ("float", "nan"),
        ("float", "inf"),
        ("int", 2**31),
        ("int", "-2147483649"),
        ("int", "1" + "0" * 5000),
    ],
)
def test_a_value_the_graph_cannot_carry_is_a_bad_response(kind, raw):
    """Out-of-range numbers from a system (NaN, 1e400, integers past 32 bits) are refused at
    the system's field, not shown as amounts nor failing the caller's answer at output."""
    from adapters.declared.spec import FieldSpec

    with pytest.raises(BadResponse, match="not a"):
        convert(raw, FieldSpec("amount", ("amount",), type=kind), "billing")


@pytest.mark.parametrize(
    ("kind", "raw", "value"),
    [("decimal", "12.50", "12.50"), ("money", {"value": 0.1}, "0.1"), ("int", 2**31 - 1, None)],
)
def test_values_within_range_pass(kind, raw, value):
    from decimal import Decimal

    from adapters.declared.spec import FieldSpec

    got = convert(raw, FieldSpec("amount", ("amount",), type=kind), "billing")
    if kind == "money":
        assert got.amount == Decimal(value)
    elif kind == "decimal":
        assert got == Decimal(value)
    else:
        assert got == raw


@pytest.mark.parametrize("raw", ["-1", "2147483648", "1e3", None, True, "x"])
def test_a_list_total_must_be_a_whole_number_in_range(raw):
    from adapters.declared.values import count_of

    with pytest.raises(BadResponse, match="without a total"):
        count_of(raw, "billing", "bills")
    assert count_of(" 42 ", "billing", "bills") == 42


def test_a_rest_answer_without_a_body_is_bad_not_empty():
    """An empty 200 body or JSON null is no answer: read as "no records", a first sight
    would settle the customer as absent from the system."""
    from adapters.declared.rest import RestAnswer, records_at
    from adapters.declared.spec import OperationSpec

    operation = OperationSpec("accounts", "BillingAccount")
    with pytest.raises(BadResponse, match="without a body"):
        records_at(RestAnswer(None, {}), operation, "billing")
    assert records_at(RestAnswer([], {}), operation, "billing") == []
    assert records_at(RestAnswer({"items": []}, {}), operation, "billing") == [{"items": []}]


def _billing_with_endless_pages(delay_s: float, list_s: float) -> tuple[DeclaredSystem, list]:
    """Billing whose accounts list tells a total it never reaches: every page is full."""
    from adapters.declared.rest import RestAnswer

    spec = load_registry(REPO / "systems").systems["billing"]
    endpoints = {
        i.name: Endpoint(system=i.name, base_url=i.base_url, list_read_timeout_s=list_s)
        for i in spec.instances
    }
    system = DeclaredSystem(spec, endpoints)
    asked: list = []

    async def endless(operation, values):
        asked.append(values["$offset"])
        await asyncio.sleep(delay_s)
        page = [
            {"id": f"BA{values['$offset'] + n}", "state": "active"} for n in range(values["$limit"])
        ]
        return RestAnswer(page, {"X-Total-Count": "2000000000"})

    for instance in system.instances.values():
        instance.engine.call = endless  # type: ignore[method-assign]
    return system, asked


async def test_a_list_read_whole_is_bounded_in_time_by_the_calls_timeout():
    """Full pages, slowly, with a total never reached: the read ends at its time budget
    (list_read_timeout_s) as BACKEND_TIMEOUT, not when the system stops."""
    system, asked = _billing_with_endless_pages(delay_s=0.02, list_s=0.3)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimedOut, match="took too long to list"):
        await system.lookup_keys("accountsByCertificate", ["110101199001011234"])
    took = asyncio.get_running_loop().time() - started
    assert len(asked) > 1  # it did follow the pages
    assert took < 3  # generous: a loaded machine; without the budget it runs ~20 s


async def test_a_list_read_whole_stops_at_the_item_limit_when_pages_are_fast():
    system, asked = _billing_with_endless_pages(delay_s=0, list_s=30)
    for instance in system.instances.values():
        instance.max_items = 1000
    with pytest.raises(BadResponse, match="longer than the limit"):
        await system.lookup_keys("accountsByCertificate", ["110101199001011234"])
    assert len(asked) == 1000 // 200 + 1


def test_a_system_files_call_settings_set_the_list_read_timeout(tmp_path):
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "system.yaml"
    text = mapping.read_text()
    assert "\ncall:\n" in text
    mapping.write_text(text.replace("\ncall:\n", "\ncall:\n  list_read_timeout_s: 2.5\n", 1))
    assert load_registry(folder).systems["loyalty"].call.list_read_timeout_s == 2.5
    mapping.write_text(text.replace("\ncall:\n", "\ncall:\n  list_read_timeout_s: 0\n", 1))
    assert any("list_read_timeout_s" in p for p in problems_of(folder))


async def test_a_keyed_read_answered_with_another_record_is_a_bad_response():
    """Asked for one account's balance, answered with another's: not "no balance" for the
    one asked (a silent null), and the stray record is not kept."""
    from adapters.declared.rest import RestAnswer

    spec = load_registry(REPO / "systems").systems["billing"]
    endpoints = {i.name: Endpoint(system=i.name, base_url=i.base_url) for i in spec.instances}
    system = DeclaredSystem(spec, endpoints)
    (instance_name,) = system.instances

    def balance(account: str) -> dict:
        return {"billingAccount": {"id": account}, "amount": {"value": 1, "unit": "CNY"}}

    async def answer_with(accounts: list[str]):
        async def call(operation, values):
            return RestAnswer([balance(a) for a in accounts], {"X-Total-Count": str(len(accounts))})

        system.instances[instance_name].engine.call = call  # type: ignore[method-assign]
        return await system.read_by_keys("balances", [(instance_name, "BA1")])

    assert set(await answer_with(["BA1"])) == {(instance_name, "BA1")}
    assert await answer_with([]) == {}  # not found is an answer
    with pytest.raises(BadResponse, match="not asked for"):
        await answer_with(["BA2"])
    with pytest.raises(BadResponse, match="not asked for"):
        await answer_with(["BA1", "BA2"])


def copy_billing_view(tmp_path: Path) -> Path:
    folder = tmp_path / "systems"
    shutil.copytree(REPO / "tests" / "systems" / "billing_view", folder / "billing_view")
    return folder


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ("headers: {X-Idempotency-Key: $idempotencyKey}", "headers: {X-Idempotency-Key: $key}"),
            "headers.X-Idempotency-Key must be $idempotencyKey",
        ),
        (("idempotency: header:X-Idempotency-Key", "idempotency: 'header:'"), "headers.?"),
        (("    path: /tmf-api/prepayBalanceManagement/v4/adjustBalance\n", ""), "path (the"),
        (("headers: {X-Idempotency-Key: $idempotencyKey}", "headers: [1]"), "headers must be"),
        (
            (
                "headers: {X-Idempotency-Key: $idempotencyKey}",
                "headers: {X-Idempotency-Key: $idempotencyKey, X-Who: $who}",
            ),
            "unknown variable '$who'",
        ),
        (("idempotency: header:X-Idempotency-Key", "idempotency: requestId"), "request.requestId"),
    ],
)
def test_a_rest_writes_header_idempotency_is_checked_with_its_line(tmp_path, change, problem):
    folder = copy_billing_view(tmp_path)
    mapping = folder / "billing_view" / "mapping.yaml"
    edit(mapping, *change)
    line = line_of(mapping, "creditBillingView:") + 1  # a mapping's line: its first entry
    assert any(f"mapping.yaml:{line}:" in p and problem in p for p in problems_of(folder)), (
        problems_of(folder)
    )


def test_a_soap_write_cannot_put_its_key_in_a_header(tmp_path):
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "mapping.yaml"
    edit(mapping, "    idempotency: requestId\n", "    idempotency: header:X-Key\n")
    assert any("header: is for REST systems" in p for p in problems_of(folder))


def test_the_contract_check_covers_writes(tmp_path):
    from adapters.declared.contract_check import check_contract

    folder = copy_billing_view(tmp_path)
    spec = load_registry(folder).systems["billing_view"]
    assert check_contract(spec, "http://127.0.0.1:1") == []
    openapi = folder / "billing_view" / "openapi.json"
    openapi.write_text(openapi.read_text().replace("/v4/adjustBalance", "/v4/adjust"))
    spec = load_registry(folder).systems["billing_view"]
    (problem,) = check_contract(spec, "http://127.0.0.1:1")
    assert "write 'creditBillingView': the OpenAPI document has no path" in str(problem)


@pytest.mark.parametrize(
    ("form", "sent"),
    [(None, "+8613912345678"), ("national", "13912345678"), ("digits", "8613912345678")],
)
async def test_msisdns_go_out_in_the_form_the_system_writes_them(tmp_path, form, sent):
    """A system that keeps national numbers is asked by national numbers
    (``msisdn_format: national``), whatever form the caller typed."""
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "mapping.yaml"
    if form is not None:
        edit(mapping, "    input: msisdns\n", f"    input: msisdns\n    msisdn_format: {form}\n")
    spec = load_registry(folder).systems["loyalty"]
    endpoints = {i.name: Endpoint(system=i.name, base_url=i.base_url) for i in spec.instances}
    system = DeclaredSystem(spec, endpoints)
    asked: list = []

    async def capture(operation, request):
        asked.append(request)
        raise BusinessRejected("loyalty-north", "captured")  # not retried

    system.instances["loyalty-north"].engine.call = capture  # type: ignore[method-assign]
    for typed in ("13912345678", "+86 139 1234 5678", "8613912345678"):
        with pytest.raises(BusinessRejected):
            await system.lookup_msisdns("membersByMsisdn", [typed])
    assert [r["msisdns"]["msisdn"] for r in asked] == [[sent]] * 3


def test_an_unknown_msisdn_format_is_refused_at_its_line(tmp_path):
    folder = copy_loyalty(tmp_path)
    edit(
        folder / "loyalty" / "mapping.yaml",
        "    input: msisdns\n",
        "    input: msisdns\n    msisdn_format: local\n",
    )
    assert any(
        "msisdn_format must be one of e164, national, digits" in p for p in problems_of(folder)
    )


def test_a_key_written_twice_is_refused_at_its_second_line(tmp_path):
    """YAML's loaders keep a repeated key's last value silently; half a mapping would be
    lost without a word."""
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "mapping.yaml"
    edit(mapping, "    batch: 100\n", "    batch: 100\n    batch: 50\n")
    (problem,) = problems_of(folder)
    line = line_of(mapping, "batch: 50")
    assert f"mapping.yaml:{line}: error: not valid YAML: duplicate key 'batch'" in problem


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ("msisdn_lookup: accountsByMsisdn", "msisdn_lookup: nowhere"),
            "identity.msisdn_lookup 'nowhere' must name an operation",
        ),
        (
            ("match: certificate+msisdn", "match: certificate"),
            "identity.msisdn_lookup is for match: certificate+msisdn",
        ),
        (
            ("msisdn_lookup: accountsByMsisdn", "msisdn_lookup: bills"),
            "must find the same record as identity.lookup",
        ),
    ],
)
def test_an_identity_msisdn_lookup_is_checked(tmp_path, change, problem):
    folder = copy_billing_view(tmp_path)
    edit(folder / "billing_view" / "mapping.yaml", *change)
    assert any(problem in p for p in problems_of(folder)), problems_of(folder)


@pytest.mark.parametrize(("status", "error"), [(404, NotFound), (400, BusinessRejected)])
def test_a_rest_error_status_with_a_non_json_page_is_read_by_its_status(status, error):
    """A web server's text/plain or HTML error page: the status decides, as for a JSON one;
    not 'a content type that is not JSON'."""
    from types import SimpleNamespace

    spec = load_registry(REPO / "systems").systems["billing"]
    endpoints = {i.name: Endpoint(system=i.name, base_url=i.base_url) for i in spec.instances}
    engine = next(iter(DeclaredSystem(spec, endpoints).instances.values())).engine
    page = SimpleNamespace(
        status_code=status, headers={"content-type": "text/plain"}, content=b"Not Found"
    )
    with pytest.raises(error) as raised:
        engine.answer(spec.operations["accounts"], page)  # type: ignore[union-attr, arg-type]
    assert raised.value.backend_code in (str(status), None)
    ok_page = SimpleNamespace(
        status_code=200, headers={"content-type": "text/html"}, content=b"<p>"
    )
    with pytest.raises(BadResponse, match="not JSON"):
        engine.answer(spec.operations["accounts"], ok_page)  # type: ignore[union-attr, arg-type]


def test_systems_scaffold_reads_an_openapi_page_wrapper_and_its_changes(tmp_path):
    """A list answered inside a page ({items: [...], total}) becomes list: items with the item
    record; a POST becomes an operation with its body's fields, marked as a change."""
    import json

    contract = {
        "openapi": "3.0.3",
        "info": {"title": "CRM", "version": "1"},
        "servers": [{"url": "http://127.0.0.1:9310/crm/v1"}],
        "paths": {
            "/crm/v1/contacts": {
                "get": {
                    "operationId": "listContacts",
                    "parameters": [{"name": "msisdn", "in": "query"}],
                    "responses": {"200": {"content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ContactPage"}}}}},
                }
            },
            "/crm/v1/contacts/{contactId}/notes": {
                "post": {
                    "operationId": "addContactNote",
                    "requestBody": {"content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/NoteInput"}}}},
                    "responses": {"201": {"content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Note"}}}}},
                }
            },
        },
        "components": {"schemas": {
            "ContactPage": {"properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Contact"}},
                "total": {"type": "integer"}}},
            "Contact": {"properties": {"contactId": {"type": "string"},
                                       "msisdn": {"type": "string"}}},
            "NoteInput": {"properties": {"text": {"type": "string"}}},
            "Note": {"properties": {"noteId": {"type": "string"}}},
        }},
    }  # fmt: skip
    source = tmp_path / "crm-openapi.json"
    source.write_text(json.dumps(contract))
    out = tmp_path / "systems" / "crm"
    code, printed = run_cli("systems", "scaffold", str(source), "--name", "crm", "--out", str(out))
    assert code == 0, printed
    mapping = (out / "mapping.yaml").read_text()
    assert "addContactNote:  # a change? move it under writes:" in mapping
    system = (out / "system.yaml").read_text()
    assert "base_url: http://127.0.0.1:9310" in system and "contract: crm-openapi.json" in system
    import yaml

    operations = yaml.safe_load(mapping)["operations"]
    assert operations["listContacts"]["list"] == "items"
    assert operations["listContacts"]["record"] == "Contact"
    assert operations["addContactNote"]["method"] == "POST"
    assert operations["addContactNote"]["request"] == {"text": "<text>"}
    assert operations["addContactNote"]["record"] == "Note"
    assert yaml.safe_load(mapping)["errors"] == {"not_found": ["404"], "rejected": []}


def test_the_contract_check_knows_an_operations_query_parameters(tmp_path):
    """A misspelt filter is ignored by many systems, which then answer everything: the
    check names a query parameter the contract does not declare for that path."""
    from adapters.declared.contract_check import check_contract

    folder = copy_billing_view(tmp_path)
    edit(
        folder / "billing_view" / "mapping.yaml",
        "query: {certificateNumber: $keys",
        "query: {certificateNo: $keys",
    )
    spec = load_registry(folder).systems["billing_view"]
    (problem,) = check_contract(spec, "http://127.0.0.1:1")
    assert "operation 'accountsByCertificate': query parameter 'certificateNo' is not one" in str(
        problem
    )


def test_systems_check_warns_of_system_urls_for_no_instance(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "systems", "check", "--offline"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            "SWITCHBOARD_CONFIG": "/nonexistent.toml",
            "PATH": "/usr/bin:/bin",
            "SWITCHBOARD_SYSTEM_URLS": '{"loyalty-nrth": "http://127.0.0.1:1"}',
        },
        timeout=120,
    )
    assert done.returncode == 0, done.stdout
    assert "warning: system_urls names 'loyalty-nrth', which no declared system" in done.stdout
