"""The hub's roles played by declared systems: the bundled billing files, their checks, the
registry's fallback to bundled roles and the setting that keeps the hand-written adapter."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.billing import BillingAdapter
from adapters.declared.canonical import to_canonical
from adapters.declared.registry import BUNDLED_SYSTEMS_DIR, load_registry, with_bundled_roles
from adapters.declared.role_slots import ROLES
from adapters.declared.roles import DeclaredBilling
from adapters.declared.values import from_json
from adapters.declared.yaml_lines import DeclarationInvalid
from adapters.records import BillingAccount, Money
from gateway.backends import build_backends, load_systems
from gateway.database import create_engine
from gateway.settings import load_settings
from tests.harness import REPO

BILLING = REPO / "systems" / "billing"


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


def test_a_role_system_has_one_instance(tmp_path):
    folder, _ = copy_billing(tmp_path)
    system = folder / "billing" / "system.yaml"
    system.write_text(
        system.read_text().replace(
            "    base_url: http://127.0.0.1:8102\n",
            "    base_url: http://127.0.0.1:8102\n  - name: billing-two\n"
            "    base_url: http://127.0.0.1:8103\n",
        )
    )
    assert any("plays a role has one instance" in p for p in problems_of(folder))


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
    # Its own billing; the role it does not play (care) keeps the bundled declaration.
    assert set(own.systems) == {"their_billing", "care"}
    assert own.playing("billing").name == "their_billing"
    assert own.playing("care").name == "care"


async def test_role_engine_reaches_the_wiring_from_the_environment_and_the_file(
    tmp_path, monkeypatch
):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    off = {"cache": {"enabled": False}}
    try:
        default = build_backends(load_settings(**off), engine)
        assert isinstance(default.backends.billing, DeclaredBilling)
        monkeypatch.setenv("SWITCHBOARD_ROLE_ENGINE", "handwritten")
        from_env = build_backends(load_settings(**off), engine)
        assert isinstance(from_env.backends.billing, BillingAdapter)
        monkeypatch.delenv("SWITCHBOARD_ROLE_ENGINE")
        config = tmp_path / "switchboard.toml"
        config.write_text('role_engine = "handwritten"\n')
        monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
        from_file = build_backends(load_settings(**off), engine)
        assert isinstance(from_file.backends.billing, BillingAdapter)
        assert set(default.guards) == set(from_file.guards) == {"boss", "billing", "care"}
        # The role's system is not a graph system: not probed twice, no graph fields.
        assert "billing" not in default.backends.systems
        assert all(p.name != "billing" for p in default.probes)
        assert load_systems(load_settings()).playing("billing") is not None
        for wiring in (default, from_env, from_file):
            await wiring.close()
    finally:
        await engine.dispose()
