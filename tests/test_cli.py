"""The console entry point: every subcommand documents itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import REPO


@pytest.mark.parametrize("command", ["demo", "serve", "simulators", "seed", "keys"])
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
