"""The hub's roles played by declared systems: the bundled billing and BOSS files, their
checks, the registry's fallback to bundled roles and the setting that keeps the hand-written
adapters."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.billing import BillingAdapter
from adapters.boss import BossAdapter
from adapters.declared.canonical import to_canonical
from adapters.declared.registry import BUNDLED_SYSTEMS_DIR, load_registry, with_bundled_roles
from adapters.declared.role_slots import ROLES
from adapters.declared.roles import DeclaredBilling, DeclaredCustomerSystem, play
from adapters.declared.values import from_json
from adapters.declared.yaml_lines import DeclarationInvalid
from adapters.records import BillingAccount, Money, StarLevel
from adapters.resilience import Endpoint
from gateway.backends import build_backends, load_systems
from gateway.database import create_engine
from gateway.settings import load_settings
from tests.harness import REPO

BILLING = REPO / "systems" / "billing"
BOSS = REPO / "systems" / "boss"


def copy_billing(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "systems"
    shutil.copytree(BILLING, folder / "billing")
    return folder, folder / "billing" / "mapping.yaml"


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(DeclarationInvalid) as raised:
        load_registry(folder)
    return [str(p) for p in raised.value.problems]


def test_the_bundled_billing_files_play_every_slot_of_the_role():
    spec = load_registry(BUNDLED_SYSTEMS_DIR).playing("billing")
    assert spec is not None and spec.role is not None
    assert set(spec.role.slots) == set(ROLES["billing"])
    assert spec.graph is None and spec.identity is None  # the core graph reads it by role


def test_a_role_record_becomes_the_canonical_record_with_empty_values_for_gaps():
    spec = load_registry(BUNDLED_SYSTEMS_DIR).systems["billing"]
    item = {
        "id": "BA0000000042",
        "state": "active",
        "serviceNumbers": ["13800000042"],
        "creditLimit": {"value": 100.5, "unit": "CNY"},
    }
    account = to_canonical("BillingAccount", from_json(item, spec.records["BillingAccount"], "b"))
    assert account == BillingAccount(
        id="BA0000000042",
        holder_name="",
        state="active",
        account_type="",
        certificate_no="",
        service_numbers=("13800000042",),
        credit_limit=Money(Decimal("100.5"), "CNY"),
        payment_method="",
        bank_card_no=None,
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    balances: balances\n",
            "    balance: balances\n",
            "role billing has no slot 'balance'",
        ),
        ("    bills: bills\n", "", "role billing needs an operation for slot 'bills'"),
        ("    payments: payments\n", "    payments: bills\n", "role slot 'payments' (bills)"),
        ("      holderName: {path: name", "      holder: {path: name", "holder is not a field"),
        ("adjustType: $direction", "adjustType: $sign", "unknown variable '$sign'"),
        ("    key: accountId\n", "    key: amount\n", "key must be accountId"),
    ],
)
def test_role_mistakes_are_refused_with_file_and_line(tmp_path, old, new, expected):
    folder, mapping = copy_billing(tmp_path)
    text = mapping.read_text()
    assert old in text
    mapping.write_text(text.replace(old, new, 1))
    found = [p for p in problems_of(folder) if expected in p]
    assert found, problems_of(folder)
    assert all(p.startswith(f"{mapping}:") and p.split(":")[1].isdigit() for p in found)


def _two_billing_instances(folder: Path, first: str, second: str) -> Path:
    system = folder / "billing" / "system.yaml"
    system.write_text(
        system.read_text().replace(
            "    base_url: http://127.0.0.1:8102\n",
            f"    base_url: http://127.0.0.1:8102\n{first}  - name: billing-two\n"
            f"    base_url: http://127.0.0.1:8103\n{second}",
        )
    )
    return system


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("", "", "each must say what it owns"),
        ("    owns: {key_prefix: ['1-4']}\n", "", "each must say what it owns"),
        (
            "    owns: {key_prefix: ['10-19']}\n",
            "    owns: {key_prefix: ['1']}\n",
            "both own some key_prefix values",
        ),
        (
            "    owns: {msisdn_prefix: ['130-159']}\n",
            "    owns: {msisdn_prefix: ['1595-1999']}\n",
            "both own some msisdn_prefix values",
        ),
        ("    owns: {key_prefix: ['9-1']}\n", "", "key_prefix '9-1' must be like"),
    ],
)
def test_several_instances_of_a_role_each_own_their_own_share(tmp_path, first, second, expected):
    folder, _ = copy_billing(tmp_path)
    system = _two_billing_instances(folder, first, second)
    found = [p for p in problems_of(folder) if expected in p]
    assert found, problems_of(folder)
    assert all(p.startswith(f"{system}:") for p in found)


def test_two_instances_of_a_role_that_share_nothing_are_accepted(tmp_path):
    folder, _ = copy_billing(tmp_path)
    _two_billing_instances(
        folder, "    owns: {key_prefix: ['0-4']}\n", "    owns: {key_prefix: ['5-9']}\n"
    )
    spec = load_registry(folder).playing("billing")
    assert spec is not None
    assert [i.owns_key("42") for i in spec.instances] == [True, False]
    assert [i.owns_key("517") for i in spec.instances] == [False, True]
    assert [i.owns_key("A17") for i in spec.instances] == [False, False]


def test_a_folder_without_a_billing_system_keeps_the_bundled_one(tmp_path):
    empty = tmp_path / "mine"
    empty.mkdir()
    registry = with_bundled_roles(load_registry(empty))
    assert registry.playing("billing") is not None and registry.playing("care") is not None
    assert registry.graph_systems() == []
    # A folder whose own system plays billing keeps its own.
    folder, _ = copy_billing(tmp_path)
    (folder / "billing").rename(folder / "their_billing")
    renamed = folder / "their_billing"
    for name in ("system.yaml", "mapping.yaml"):
        path = renamed / name
        path.write_text(
            path.read_text()
            .replace("name: billing\n", "name: their_billing\n", 1)
            .replace("system: billing\n", "system: their_billing\n", 1)
        )
    own = with_bundled_roles(load_registry(folder))
    # Their billing; the roles no system of theirs plays stay the bundled BOSS and care.
    assert set(own.systems) == {"their_billing", "boss", "care"}
    assert own.playing("billing").name == "their_billing"
    assert own.playing("customer").name == "boss"
    assert own.playing("care").name == "care"


async def test_role_engine_reaches_the_wiring_from_the_environment_and_the_file(
    tmp_path, monkeypatch
):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    off = {"cache": {"enabled": False}}
    try:
        default = build_backends(load_settings(**off), engine)
        assert isinstance(default.backends.billing, DeclaredBilling)
        assert isinstance(default.backends.customer_system, DeclaredCustomerSystem)
        assert default.backends.customer_system.name == "boss"  # errors, guards, /readyz, /metrics
        monkeypatch.setenv("SWITCHBOARD_ROLE_ENGINE", "handwritten")
        from_env = build_backends(load_settings(**off), engine)
        assert isinstance(from_env.backends.billing, BillingAdapter)
        assert isinstance(from_env.backends.customer_system, BossAdapter)
        monkeypatch.delenv("SWITCHBOARD_ROLE_ENGINE")
        config = tmp_path / "switchboard.toml"
        config.write_text('role_engine = "handwritten"\n')
        monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
        from_file = build_backends(load_settings(**off), engine)
        assert isinstance(from_file.backends.billing, BillingAdapter)
        assert set(default.guards) == set(from_file.guards) == {"boss", "billing", "care"}
        # The role's system is not a graph system: not probed twice, no graph fields.
        assert "billing" not in default.backends.systems
        assert "boss" not in default.backends.systems
        assert all(p.name not in ("billing", "boss") for p in default.probes)
        assert load_systems(load_settings()).playing("billing") is not None
        for wiring in (default, from_env, from_file):
            await wiring.close()
    finally:
        await engine.dispose()


# --- the customer role (BOSS) -----------------------------------------------------------------


def test_the_bundled_boss_files_play_every_slot_of_the_customer_role():
    spec = load_registry(BUNDLED_SYSTEMS_DIR).playing("customer")
    assert spec is not None and spec.role is not None and spec.name == "boss"
    assert set(spec.role.slots) == set(ROLES["customer"])
    assert spec.graph is None and spec.identity is None
    assert set(spec.settings) == {"service_path", "login_system_code"}


@pytest.mark.parametrize("name", ["BossService.wsdl", "BossService.xsd"])
def test_the_declared_contract_is_the_one_the_boss_publishes(name):
    """The declaration's WSDL (and the schema it imports) is BOSS's own, byte for byte."""
    published = REPO / "simulators" / "boss" / name
    assert (BOSS / name).read_bytes() == published.read_bytes()


def test_a_star_level_code_becomes_the_enum_and_usage_its_record():
    spec = load_registry(BUNDLED_SYSTEMS_DIR).systems["boss"]
    record = spec.records["CustomerProfile"]
    star = record.field("starLevel")
    assert star is not None and star.value_map is not None
    built = to_canonical("CustomerProfile", {"customerNo": "1000000007", "starLevel": "diamond"})
    assert built.star_level is StarLevel.DIAMOND and built.name == "" and built.birth_date is None
    line = to_canonical("Subscription", {"subscriberNo": "S000000000001"})
    assert line.usage.sms_used == 0  # an absent nested record: the record of empty values


def test_play_takes_only_the_settings_the_declaration_declares():
    spec = load_registry(BUNDLED_SYSTEMS_DIR).playing("customer")
    assert spec is not None
    table = {"wsdl_path": "/x?wsdl", "service_path": "/crm/Boss", "login_system_code": "SB2"}
    played = play(spec, Endpoint("boss", "http://127.0.0.1:1"), table)
    assert played.system.spec.settings == {"service_path": "/crm/Boss", "login_system_code": "SB2"}
    default = play(spec, Endpoint("boss", "http://127.0.0.1:1"))
    assert default.system.spec.settings == spec.settings


def copy_boss(tmp_path: Path) -> Path:
    folder = tmp_path / "systems"
    shutil.copytree(BOSS, folder / "boss")
    return folder


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "mapping.yaml",
            '"5": premium}',
            '"5": platinum}',
            "starLevel takes one of diamond, gold, normal, premium, silver",
        ),
        (
            "mapping.yaml",
            "usage: {path: Usage, record: Usage, required: true}",
            "usage: {path: Usage, required: true}",
            "usage holds Usage records",
        ),
        (
            "mapping.yaml",
            "{OrderId: $key, IdempotencyKey: $idempotencyKey}}",
            "{OrderId: $key, IdempotencyKey: $idempotencyKey, Reason: $offeringId}}",
            "role slot 'cancel_order' (cancelOrder): the role fills no variable '$offeringId'",
        ),
        ("mapping.yaml", "    key: customerNo\n", "    key: name\n", "key must be customerNo"),
        ("mapping.yaml", "      $starLevel: {", "      $level: {", "maps.$level must map"),
        (
            "mapping.yaml",
            "    eligibility: eligibility\n",
            "    eligible: eligibility\n",
            "role customer has no slot 'eligible'",
        ),
        (
            "mapping.yaml",
            "    batch: 1\n    list: QueryOrderResult/Order",
            "    list: QueryOrderResult/Order",
            "role slot 'orders' (orders): it reads many keys at once",
        ),
        (
            "system.yaml",
            "LoginSystemCode: $settings.login_system_code",
            "LoginSystemCode: $settings.login_code",
            "unknown setting '$settings.login_code'",
        ),
        (
            "system.yaml",
            "MessageSeq: $messageSeq",
            "MessageSeq: $sequence",
            "unknown variable '$sequence'",
        ),
    ],
)
def test_customer_role_mistakes_are_refused_with_file_and_line(tmp_path, file, old, new, expected):
    folder = copy_boss(tmp_path)
    path = folder / "boss" / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    found = [p for p in problems_of(folder) if expected in p]
    assert found, problems_of(folder)
    assert all(p.startswith(f"{path}:") and p.split(":")[1].isdigit() for p in found)


# --- a role's answer for another record than the one asked for --------------------------------


def _role(name: str) -> object:
    spec = load_registry(BUNDLED_SYSTEMS_DIR).playing(name)
    assert spec is not None
    return play(spec, Endpoint("boss" if name == "customer" else name, "http://127.0.0.1:1"))


@pytest.mark.parametrize(
    "answered",
    [
        [("BA2", "B1")],  # another account's bill: its filter ignored
        [("BA1", f"B{n}") for n in range(5)],  # more than the page asked for
    ],
)
async def test_a_page_of_another_account_or_past_the_limit_is_refused(answered, monkeypatch):
    from adapters.errors import BadResponse
    from adapters.records import Page

    billing = _role("billing")
    bills = tuple(to_canonical("Bill", {"id": b, "accountId": a}) for a, b in answered)
    assert all(b.account_id == a for b, (a, _) in zip(bills, answered, strict=True))

    async def page(*args, **kwargs):
        return Page(len(bills), bills)

    monkeypatch.setattr(billing, "_page", page)
    with pytest.raises(BadResponse, match="not asked for"):
        await billing.list_bills("BA1", 0, 3)
    monkeypatch.setattr(billing, "_page", page)
    with pytest.raises(BadResponse, match="not asked for"):
        await billing.list_payments("BA1", 0, 3)


async def test_the_line_or_customer_of_another_number_is_refused(monkeypatch):
    from adapters.errors import BadResponse

    boss = _role("customer")
    line = to_canonical("Subscription", {"subscriberNo": "S1", "msisdn": "13996702908"})

    async def lookup(*args, **kwargs):
        return [line]

    monkeypatch.setattr(boss, "_by_number", lookup)
    with pytest.raises(BadResponse, match="another line"):
        await boss.find_subscription_by_msisdn("18899407311")
    assert (await boss.find_subscription_by_msisdn("+86 139 9670 2908")) is line  # same number
    profile = to_canonical(
        "CustomerProfile", {"customerNo": "1", "certificateNo": "11010119900307888X"}
    )

    async def by_certificate(*args, **kwargs):
        return [profile]

    monkeypatch.setattr(boss, "_lookup", by_certificate)
    with pytest.raises(BadResponse, match="another customer"):
        await boss.find_customer_by_certificate("110101199003078888")
    assert await boss.find_customer_by_certificate("11010119900307888x") is profile


async def test_list_read_and_parse_settings_reach_the_role_systems_from_file_and_environment(
    tmp_path, monkeypatch
):
    """``list_read_timeout_s`` (all pages of one list read together) reaches the declared
    role system's instances from the role's table in the file and from the environment."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    off = {"cache": {"enabled": False}}

    def list_timeouts(wiring) -> tuple[float, float]:
        billing = wiring.backends.billing.system.instances.values()
        care = wiring.backends.care.system.instances.values()
        return next(iter(billing)).list_read_timeout_s, next(iter(care)).list_read_timeout_s

    def parse_threshold(wiring) -> int:  # a SOAP engine's: REST replies stay on the loop
        boss = next(iter(wiring.backends.customer_system.system.instances.values()))
        return boss.engine._thread_above

    wirings = []
    try:
        monkeypatch.setenv("SWITCHBOARD_CONFIG", str(tmp_path / "none.toml"))
        wirings.append(build_backends(load_settings(**off), engine))
        assert list_timeouts(wirings[-1]) == (8.0, 8.0)
        assert parse_threshold(wirings[-1]) == 262144
        config = tmp_path / "switchboard.toml"
        config.write_text(
            '[billing]\nbase_url = "http://127.0.0.1:8102"\nlist_read_timeout_s = 3.5\n'
            '[boss]\nbase_url = "http://127.0.0.1:8101"\nparse_in_thread_above_bytes = 0\n'
        )
        monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
        monkeypatch.setenv("SWITCHBOARD_CARE__LIST_READ_TIMEOUT_S", "4.5")
        wirings.append(build_backends(load_settings(**off), engine))
        assert list_timeouts(wirings[-1]) == (3.5, 4.5)
        assert parse_threshold(wirings[-1]) == 0
        monkeypatch.setenv("SWITCHBOARD_BOSS__PARSE_IN_THREAD_ABOVE_BYTES", "1000")
        wirings.append(build_backends(load_settings(**off), engine))
        assert parse_threshold(wirings[-1]) == 1000
    finally:
        for wiring in wirings:
            await wiring.close()
        await engine.dispose()
