"""The simulators' command line: help, seeding, refusing an unseeded dir, clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from simulators.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["--help"], ["seed", "--help"], ["serve", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    if argv[0] == "seed":
        assert "--customers" in out and "--seed" in out and "--force" in out
    if argv[0] == "serve":
        assert "--boss-port" in out and "--billing-port" in out and "--care-port" in out


def test_seed_then_skip_then_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["seed", "--data-dir", str(tmp_path), "--customers", "40", "--seed", "5", "--quiet"]
    assert main(argv) == 0
    assert "seeded 40 customers" in capsys.readouterr().out
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main([*argv, "--force"]) == 0
    assert "seeded 40 customers" in capsys.readouterr().out


def test_serve_refuses_an_unseeded_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--data-dir", str(tmp_path)]) == 2
    assert "seed" in capsys.readouterr().err


SERVE_COMMANDS = {
    "python -m simulators serve": [sys.executable, "-m", "simulators", "serve"],
    "switchboard simulators": [sys.executable, "-m", "gateway.cli", "simulators"],
}


@pytest.mark.parametrize("command", sorted(SERVE_COMMANDS))
def test_serve_stops_cleanly_on_sigint(data_dir: Path, free_ports: list[int], command) -> None:
    """Every port moves by flag, the loyalty instances' too, from both commands."""
    ports = free_ports
    process = subprocess.Popen(
        [
            *SERVE_COMMANDS[command],
            "--data-dir",
            str(data_dir),
            "--boss-port",
            str(ports[0]),
            "--billing-port",
            str(ports[1]),
            "--care-port",
            str(ports[2]),
            "--loyalty-north-port",
            str(ports[3]),
            "--loyalty-south-port",
            str(ports[4]),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("simulators ready: boss=http://127.0.0.1:")
        for port in ports:
            assert f"http://127.0.0.1:{port}" in line
            assert httpx.get(f"http://127.0.0.1:{port}/_sim/health").status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
