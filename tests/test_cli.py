"""The console entry point: every subcommand documents itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import REPO, free_ports


@pytest.mark.parametrize("command", ["demo", "serve", "simulators", "seed", "keys", "policy"])
def test_each_subcommand_has_help(command):
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("usage: switchboard")


def test_invalid_settings_are_refused_with_the_key_named(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SWITCHBOARD_PORT": "not-a-port"},
    )
    assert done.returncode == 2
    assert "port" in done.stderr


def switchboard(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *argv], cwd=REPO, capture_output=True, text=True
    )


def test_policy_check_accepts_the_bundled_rules_and_refuses_a_broken_file(tmp_path):
    ok = switchboard("policy", "check")
    assert ok.returncode == 0 and ": ok, version" in ok.stdout
    broken = tmp_path / "rules.yaml"
    broken.write_text(
        'version: "1"\ndisclosure:\n  rules:\n    - {class: telepathy, decision: clear}\n'
    )
    refused = switchboard("policy", "check", str(broken))
    assert refused.returncode == 1
    assert f"{broken}:4: error: unknown data class 'telepathy'" in refused.stdout


def test_policy_explain_names_the_deciding_rule_per_field(tmp_path):
    query = tmp_path / "q.graphql"
    query.write_text(
        '{ customer(id: "cus_00000000000000000000") {'
        " profile { name certificateNumber starLevel } } }"
    )
    done = switchboard(
        "policy", "explain", "--channel", "partner", "--role", "partner", "--query", str(query)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "denied" in lines["customer.profile.certificateNumber"]
    assert "partner-never-sees-identity-documents" in lines["customer.profile.certificateNumber"]
    assert "masked" in lines["customer.profile.name"]
    assert "not personal data" in lines["customer.profile.starLevel"]
    query.write_text("{ customers { totalCount } }")
    refused = switchboard(
        "policy", "explain", "--channel", "partner", "--role", "partner", "--query", str(query)
    )
    assert refused.returncode == 1 and "REFUSED  operation 'customers'" in refused.stdout


def test_policy_explain_shows_what_a_verification_level_changes(tmp_path):
    query = tmp_path / "q.graphql"
    query.write_text(
        '{ customer(id: "cus_00000000000000000000") { profile { certificateNumber } } }'
    )
    common = ("policy", "explain", "--channel", "store", "--role", "clerk", "--query", str(query))
    unverified = switchboard(*common)
    verified = switchboard(*common, "--verified", "id_card")
    assert "masked" in unverified.stdout.splitlines()[1]
    line = verified.stdout.splitlines()[1]
    assert "clear" in line and "store-clerk-id-card-after-id-check" in line
    unknown = switchboard(*common, "--verified", "retina")
    assert unknown.returncode == 2 and "unknown verification level" in unknown.stdout
    stranger = switchboard(*common[:2], "--channel", "telepathy", *common[4:])
    assert stranger.returncode == 2 and "unknown channel 'telepathy'" in stranger.stdout


def _settings_env(**extra: str) -> dict[str, str]:
    # On a free port, so that a gateway that wrongly accepted its settings would harm nothing.
    (port,) = free_ports(1)
    return {
        "PATH": "/usr/bin:/bin",
        "SWITCHBOARD_CONFIG": "/nonexistent.toml",
        "SWITCHBOARD_PORT": str(port),
        **extra,
    }


def _serve_refused(env: dict[str, str]) -> str:
    """`switchboard serve` refusing its settings: exit code 2 and one line, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_an_unknown_key_inside_a_toml_table_is_refused_by_its_dotted_path(tmp_path):
    config = tmp_path / "switchboard.toml"
    config.write_text("port = 8000\n\n[billing]\ntimout_s = 1\n\n[cache.ttl_s]\nprofil = 3\n")
    line = _serve_refused(_settings_env(SWITCHBOARD_CONFIG=str(config)))
    assert f"billing.timout_s (in {config}): unknown key" in line
    assert "cache.ttl_s.profil" in line


def test_a_toml_syntax_error_is_one_line_with_file_and_line(tmp_path):
    config = tmp_path / "switchboard.toml"
    config.write_text("port = 8000\n[billing]\ntimeout_s = \n")
    line = _serve_refused(_settings_env(SWITCHBOARD_CONFIG=str(config)))
    assert line.startswith(f"switchboard: {config}:3: not valid TOML")


def test_bad_environment_values_are_one_line_naming_the_variable():
    line = _serve_refused(_settings_env(SWITCHBOARD_PORT="not-a-port"))
    assert "port (from SWITCHBOARD_PORT)" in line
    line = _serve_refused(_settings_env(SWITCHBOARD_CARE__TIMOUT_S="1"))
    assert "care.timout_s (from SWITCHBOARD_CARE__TIMOUT_S): unknown key" in line
    line = _serve_refused(_settings_env(SWITCHBOARD_BILLING="{not json"))
    assert 'field "billing"' in line


def test_every_settings_table_refuses_unknown_keys():
    """A new table added to the settings inherits the refusal (gateway.settings.SettingsModel)."""
    from pydantic import BaseModel

    from gateway.settings import Settings

    def tables(model: type[BaseModel], path: str):
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield f"{path}{name}", kind
                yield from tables(kind, f"{path}{name}.")

    found = dict(tables(Settings, ""))
    assert {"billing", "cache.ttl_s", "workflows", "audit"} <= set(found)
    for path, model in found.items():
        assert model.model_config.get("extra") == "forbid", path


@pytest.mark.parametrize("broken", ["system", "policy"])
def test_serve_refuses_a_broken_file_with_its_problems_not_a_traceback(broken, tmp_path):
    """A typo in a declared system or the policy stops `serve` before it listens: exit 2,
    the problem with its file:line, no Python traceback."""
    import shutil

    from tests.harness import migrate_database

    database_url = f"sqlite+aiosqlite:///{tmp_path}/hub.db"
    migrate_database(database_url)
    env = {"PATH": "/usr/bin:/bin", "SWITCHBOARD_DATABASE_URL": database_url,
           "SWITCHBOARD_CONFIG": str(tmp_path / "none.toml"),
           "SWITCHBOARD_AUDIT__STATE_DIR": str(tmp_path / "keys"),
           "SWITCHBOARD_PORT": str(free_ports(1)[0])}  # fmt: skip
    if broken == "system":
        systems = tmp_path / "systems"
        shutil.copytree(REPO / "systems", systems)
        mapping = systems / "loyalty" / "mapping.yaml"
        mapping.write_text(mapping.read_text().replace("graph:", "graf:", 1))
        env["SWITCHBOARD_SYSTEMS_DIR"] = str(systems)
        where = f"{mapping}:"
    else:
        policy = tmp_path / "policy.yaml"
        policy.write_text((REPO / "policies/rules/default.yaml").read_text() + "colour: red\n")
        env["SWITCHBOARD_POLICY_FILE"] = str(policy)
        where = f"{policy}:"
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot start" in done.stderr and where in done.stderr, done.stderr
