"""The served schema as a committed artifact, through the real `switchboard schema` command.

The first test is the guard CI runs: the committed schema/schema.graphql is the SDL the code
builds with the bundled systems folder, and it breaks schema/released.graphql only where
schema/breaking-changes.yaml accepts it with a reason. The others walk the workflow of
docs/schema.md on temporary copies: a graph change makes the committed SDL stale, a breaking
one is refused until it is accepted, and a release makes it the new baseline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness import REPO, SWITCHBOARD

ARTIFACTS = ("schema.graphql", "released.graphql", "breaking-changes.yaml")
POINTS_HISTORY = re.compile(r"\n  connections:\n    pointsHistory: .*\n.*\n")


def switchboard(*argv: str, systems_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_CONFIG"] = "/nonexistent/switchboard.toml"
    if systems_dir is not None:
        env["SWITCHBOARD_SYSTEMS_DIR"] = str(systems_dir)
    return subprocess.run(
        [*SWITCHBOARD, *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_the_committed_sdl_is_the_built_one_and_breaks_nothing_unaccepted():
    done = switchboard("schema", "check")
    assert done.returncode == 0, (
        "schema/schema.graphql is stale or breaks the released schema:\n" + done.stdout
    )
    printed = switchboard("schema", "print")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == (REPO / "schema" / "schema.graphql").read_text(encoding="utf-8")
    assert "type Query {" in printed.stdout and "loyaltyMembers" in printed.stdout


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the schema artifacts and of the bundled systems folder, free to change."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for name in ARTIFACTS:
        shutil.copy(REPO / "schema" / name, artifacts / name)
    systems = tmp_path / "systems"
    shutil.copytree(REPO / "systems", systems)
    return artifacts, systems


def _drop_points_history(systems: Path) -> None:
    mapping = systems / "loyalty" / "mapping.yaml"
    text = mapping.read_text(encoding="utf-8")
    changed = POINTS_HISTORY.sub("\n", text, count=1)
    assert changed != text, "the bundled loyalty mapping no longer declares pointsHistory"
    mapping.write_text(changed, encoding="utf-8")


def _accept(artifacts: Path, entries: list[dict[str, str]]) -> None:
    (artifacts / "breaking-changes.yaml").write_text(
        yaml.safe_dump({"accepted": entries}, allow_unicode=True), encoding="utf-8"
    )


def test_a_breaking_change_is_refused_until_accepted_with_a_reason_then_released(workspace):
    artifacts, systems = workspace
    _drop_points_history(systems)

    stale = switchboard("schema", "check", "--dir", str(artifacts), systems_dir=systems)
    assert stale.returncode == 1
    assert "differs from the schema the code builds" in stale.stdout
    assert f"switchboard schema print --out {artifacts / 'schema.graphql'}" in stale.stdout

    regenerated = switchboard(
        "schema", "print", "--out", str(artifacts / "schema.graphql"), systems_dir=systems
    )
    assert regenerated.returncode == 0, regenerated.stderr
    assert "pointsHistory" not in (artifacts / "schema.graphql").read_text(encoding="utf-8")

    refused = switchboard("schema", "check", "--dir", str(artifacts), systems_dir=systems)
    assert refused.returncode == 1
    assert (
        "breaking, NOT ACCEPTED: Field LoyaltyMember.pointsHistory was removed." in refused.stdout
    )
    assert "refused:" in refused.stdout
    changes = re.findall(r"^breaking, NOT ACCEPTED: (.*)$", refused.stdout, re.MULTILINE)

    # A release is no way around the check.
    not_released = switchboard("schema", "release", "--dir", str(artifacts), systems_dir=systems)
    assert not_released.returncode == 1
    assert "pointsHistory" in (artifacts / "released.graphql").read_text(encoding="utf-8")

    _accept(artifacts, [{"change": c, "reason": ""} for c in changes])
    no_reason = switchboard("schema", "check", "--dir", str(artifacts), systems_dir=systems)
    assert no_reason.returncode == 1
    assert "a 'reason' is required" in no_reason.stdout

    reasons = [{"change": c, "reason": "points history moves to the loyalty app"} for c in changes]
    _accept(artifacts, reasons)
    accepted = switchboard("schema", "check", "--dir", str(artifacts), systems_dir=systems)
    assert accepted.returncode == 0, accepted.stdout
    assert "breaking, accepted: Field LoyaltyMember.pointsHistory was removed." in accepted.stdout

    released = switchboard("schema", "release", "--dir", str(artifacts), systems_dir=systems)
    assert released.returncode == 0, released.stdout
    assert (artifacts / "released.graphql").read_text(encoding="utf-8") == (
        artifacts / "schema.graphql"
    ).read_text(encoding="utf-8")
    spent = yaml.safe_load((artifacts / "breaking-changes.yaml").read_text(encoding="utf-8"))
    assert spent == {"accepted": []}
    after = switchboard("schema", "check", "--dir", str(artifacts), systems_dir=systems)
    assert after.returncode == 0, after.stdout
    assert "0 accepted breaking change(s)" in after.stdout


def test_an_acceptance_of_a_change_that_does_not_happen_is_refused(workspace):
    artifacts, _ = workspace
    _accept(artifacts, [{"change": "Query.customer was removed.", "reason": "never happened"}])
    done = switchboard("schema", "check", "--dir", str(artifacts))
    assert done.returncode == 1
    assert "'Query.customer was removed.' is accepted but does not happen" in done.stdout
