"""The campaigns file: each way the setting reaches the code (flag, environment, TOML), and
`switchboard campaigns check` / `explain` on good and bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import cli
from gateway.campaigns import pump_config
from gateway.settings import SettingsInvalid, load_settings
from marketing.campaigns import DEFAULT_CAMPAIGNS, load_campaigns
from tests.harness import REPO


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(tmp_path / "none.toml"))
    return tmp_path


def test_rules_file_from_the_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_CAMPAIGNS__RULES_FILE", "/etc/switchboard/campaigns.yaml")
    assert load_settings().campaigns.rules_file == Path("/etc/switchboard/campaigns.yaml")


def test_rules_file_from_the_toml_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = clean_env / "switchboard.toml"
    config.write_text('[campaigns]\nrules_file = "ops/campaigns.yaml"\ndefault_timezone = "UTC"\n')
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    settings = load_settings()
    assert settings.campaigns.rules_file == Path("ops/campaigns.yaml")
    assert settings.campaigns.default_timezone == "UTC"


def test_delivery_pump_settings_from_the_environment_and_the_toml_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = load_settings().campaigns
    assert (defaults.delivery_pump, defaults.delivery_batch_size) == (True, 100)
    assert (defaults.delivery_poll_s, defaults.delivery_restart_after_s) == (1.0, 60)
    assert defaults.delivery_max_in_flight == 16
    assert (defaults.delivery_busy_max_in_flight, defaults.delivery_busy_window_s) == (1, 0.5)
    config = clean_env / "switchboard.toml"
    config.write_text(
        "[campaigns]\ndelivery_batch_size = 25\ndelivery_poll_s = 0.5\ndelivery_max_in_flight = 4\n"
        "delivery_busy_max_in_flight = 2\n"
    )
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    monkeypatch.setenv("SWITCHBOARD_CAMPAIGNS__DELIVERY_RESTART_AFTER_S", "5")
    monkeypatch.setenv("SWITCHBOARD_CAMPAIGNS__DELIVERY_PUMP", "false")
    monkeypatch.setenv("SWITCHBOARD_CAMPAIGNS__DELIVERY_BUSY_WINDOW_S", "0")
    settings = load_settings().campaigns
    assert (settings.delivery_batch_size, settings.delivery_poll_s) == (25, 0.5)
    assert (settings.delivery_restart_after_s, settings.delivery_pump) == (5, False)
    pump = pump_config(settings)
    assert (pump.batch_size, pump.poll_s, pump.restart_after_s) == (25, 0.5, 5)
    assert pump.max_in_flight == settings.delivery_max_in_flight == 4
    assert pump.busy_max_in_flight == settings.delivery_busy_max_in_flight == 2
    assert settings.delivery_busy_window_s == 0
    monkeypatch.setenv("SWITCHBOARD_CAMPAIGNS__DELIVERY_BUSY_MAX_IN_FLIGHT", "0")
    with pytest.raises(SettingsInvalid, match="campaigns"):
        load_settings()
    monkeypatch.delenv("SWITCHBOARD_CAMPAIGNS__DELIVERY_BUSY_MAX_IN_FLIGHT")
    monkeypatch.setenv("SWITCHBOARD_CAMPAIGNS__DELIVERY_BATCH_SIZE", "0")
    with pytest.raises(SettingsInvalid, match="campaigns"):
        load_settings()


def test_the_example_file_documents_the_campaign_defaults(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(REPO / "switchboard.example.toml"))
    documented = load_settings().campaigns
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(clean_env / "none.toml"))
    assert documented == load_settings().campaigns
    text = (REPO / "switchboard.example.toml").read_text()
    for name in (
        "delivery_pump",
        "delivery_batch_size",
        "delivery_max_in_flight",
        "delivery_busy_max_in_flight",
        "delivery_busy_window_s",
    ):
        assert f"# {name} = " in text, name


def test_rules_file_from_the_serve_flag(clean_env: Path) -> None:
    args = cli.build_parser().parse_args(["serve", "--campaigns-file", "x/campaigns.yaml"])
    assert cli._settings(args).campaigns.rules_file == Path("x/campaigns.yaml")


def test_a_bad_time_zone_is_refused_with_its_key(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_CAMPAIGNS__DEFAULT_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsInvalid, match="campaigns"):
        load_settings()


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    base["SWITCHBOARD_CONFIG"] = "/nonexistent.toml"
    base["SWITCHBOARD_BOSS__BASE_URL"] = "http://127.0.0.1:9"  # nothing listens: offline
    base["SWITCHBOARD_BOSS__TIMEOUT_S"] = "0.5"
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *argv],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_names_each_problem_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "campaigns.yaml"
    text = DEFAULT_CAMPAIGNS.read_text()
    text = text.replace("event: usage.threshold_crossed", "event: usage.crossed", 1)
    text = text.replace("channels: [sms, app]", "channels: [sms, fax]", 1)
    text = text.replace("sms: 1", "sms: -1", 1)
    bad.write_text(text)
    lines = bad.read_text().splitlines()
    done = _cli("campaigns", "check", "--offline", str(bad))
    assert done.returncode == 1
    out = done.stdout
    event_line = next(i for i, t in enumerate(lines, 1) if "usage.crossed" in t)
    assert f"{bad}:{event_line}: error: campaign data-topup-80: trigger.event" in out
    assert "channel 'fax' is not one of sms, app, nbo" in out
    assert "guards.caps.day.sms must be a whole number >= 0" in out


def test_check_accepts_the_bundled_file_and_warns_without_boss() -> None:
    done = _cli("campaigns", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: offerings not checked (BOSS not reachable)" in done.stdout
    assert f"ok, version {load_campaigns().version}: 8 campaigns" in done.stdout


def test_explain_says_what_stops_a_campaign(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"}
    customer = "cus_" + "0" * 19 + "1"
    # It reads the hub's consents and offers: an unmigrated database is refused in one line.
    unmigrated = _cli("campaigns", "explain", "--customer", customer, env=env)
    assert unmigrated.returncode == 1 and "run `switchboard migrate`" in unmigrated.stderr
    assert _cli("migrate", env=env).returncode == 0
    done = _cli(
        "campaigns",
        "explain",
        "--customer",
        customer,
        "--event",
        "line.resumed",
        "--payload",
        '{"days_off": 10}',
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "welcome-back: no: payload condition days_off gte 90 does not hold"
    )
    refused = _cli("campaigns", "explain", "--customer", "nobody", env=env)
    assert refused.returncode == 2 and "hub customer id" in refused.stderr
