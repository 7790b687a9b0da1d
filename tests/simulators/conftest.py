"""Fixtures: a small seeded data dir and the simulators running as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import zeep

from simulators.dataset import CustomerBundle, generate
from simulators.seed import seed_dataset
from tests.harness import free_ports as _free_ports

SEED = 20261123
CUSTOMERS = 300
REPO = Path(__file__).resolve().parents[2]
TNS = "http://boss.simulator.switchboard/crm/v1"


@dataclass(frozen=True)
class Simulators:
    boss: str
    billing: str
    care: str
    data_dir: Path
    loyalty_north: str = ""
    loyalty_south: str = ""

    def all(self) -> list[str]:
        return [self.boss, self.billing, self.care]

    def loyalty(self) -> list[str]:
        return [self.loyalty_north, self.loyalty_south]


@pytest.fixture
def free_ports() -> list[int]:
    """Five loopback ports free right now: boss, billing, care, loyalty-north, loyalty-south."""
    return _free_ports(5)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("simdata")
    seed_dataset(path, CUSTOMERS, SEED)
    return path


@pytest.fixture(scope="session")
def bundles() -> list[CustomerBundle]:
    """The dataset as the generator defines it, to check the servers against."""
    return [generate(SEED, i) for i in range(CUSTOMERS)]


@pytest.fixture(scope="session")
def sims(data_dir: Path) -> Iterator[Simulators]:
    boss_port, billing_port, care_port, north_port, south_port = _free_ports(5)
    # stderr to a file, not a pipe: nobody reads it while tests run, and a full pipe would
    # block the server.
    log_path = data_dir / "serve.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators",
            "serve",
            "--data-dir",
            str(data_dir),
            "--boss-port",
            str(boss_port),
            "--billing-port",
            str(billing_port),
            "--care-port",
            str(care_port),
            "--loyalty-north-port",
            str(north_port),
            "--loyalty-south-port",
            str(south_port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("simulators ready:") or not line:
                break
        if not line.startswith("simulators ready:"):
            process.kill()
            raise RuntimeError(f"simulators did not start: {line!r} {log_path.read_text()}")
        urls = dict(part.split("=", 1) for part in line.split(":", 1)[1].split())
        yield Simulators(
            urls["boss"],
            urls["billing"],
            urls["care"],
            data_dir,
            urls["loyalty-north"],
            urls["loyalty-south"],
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()
    assert process.returncode == 0, log_path.read_text()


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def zeep_client(sims: Simulators) -> zeep.Client:
    # The published WSDL, consumed unchanged.
    return zeep.Client(f"{sims.boss}/boss/services/BossService?wsdl")


@pytest.fixture(scope="session")
def boss(zeep_client: zeep.Client, sims: Simulators):
    return zeep_client.create_service(
        f"{{{TNS}}}BossServiceSoapBinding", f"{sims.boss}/boss/services/BossService"
    )


@pytest.fixture
def control(sims: Simulators, http: httpx.Client) -> Iterator[Simulators]:
    """For tests that change the control state: every system is reset afterwards."""
    yield sims
    for base in [*sims.all(), *sims.loyalty()]:
        http.post(f"{base}/_sim/reset").raise_for_status()


@pytest.fixture(scope="session")
def dataset_seed() -> int:
    return SEED
