"""The console entry point: every subcommand documents itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import REPO


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
