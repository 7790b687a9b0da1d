"""Starts the real simulators and the real gateway as subprocesses on free loopback ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SWITCHBOARD = [sys.executable, "-m", "gateway.cli"]


def starlette_of(app: Any) -> Any:
    """The Starlette application inside the hub's ASGI wrappers (RequestIds, DirectRoute,
    EventsFastPath: each keeps what it wraps as ``.app``), for its lifespan and state."""
    from starlette.applications import Starlette

    while not isinstance(app, Starlette):
        app = app.app
    return app


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class SimulatorUrls:
    boss: str
    billing: str
    care: str
    loyalty_north: str = ""
    loyalty_south: str = ""

    def of(self, system: str) -> str:
        return getattr(self, system.replace("-", "_"))


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_simulators(data_dir: Path) -> Iterator[SimulatorUrls]:
    boss, billing, care, loyalty_north, loyalty_south = free_ports(5)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators",
            "serve",
            "--data-dir",
            str(data_dir),
            "--boss-port",
            str(boss),
            "--billing-port",
            str(billing),
            "--care-port",
            str(care),
            "--loyalty-north-port",
            str(loyalty_north),
            "--loyalty-south-port",
            str(loyalty_south),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("simulators ready"), f"simulators did not start: {line!r}"
        yield SimulatorUrls(
            boss=f"http://127.0.0.1:{boss}",
            billing=f"http://127.0.0.1:{billing}",
            care=f"http://127.0.0.1:{care}",
            loyalty_north=f"http://127.0.0.1:{loyalty_north}",
            loyalty_south=f"http://127.0.0.1:{loyalty_south}",
        )
    finally:
        stop(process)


def gateway_env(sims: SimulatorUrls, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_CONFIG="/nonexistent/switchboard.toml",
        SWITCHBOARD_DATABASE_URL=database_url,
        SWITCHBOARD_BOSS__BASE_URL=sims.boss,
        SWITCHBOARD_BILLING__BASE_URL=sims.billing,
        SWITCHBOARD_CARE__BASE_URL=sims.care,
        # The declared systems' instances (systems/), on this run's ports.
        SWITCHBOARD_SYSTEM_URLS=json.dumps(
            {"loyalty-north": sims.loyalty_north, "loyalty-south": sims.loyalty_south}
        ),
    )
    env.update(extra)
    return env


def migrate_database(database_url: str) -> None:
    """Upgrade a hub database to head, as `switchboard migrate` does (the same function, in
    this process: a subprocess per gateway start would cost a second each). Gateways and
    `keys create` refuse a database that is not at head; the harness migrates before both."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from gateway.database import create_engine
    from gateway.migrate import upgrade

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(max_workers=1) as pool:  # callers may be inside an event loop
        pool.submit(asyncio.run, run()).result()


def issue_key(env: dict[str, str], *, channel: str, role: str, scopes: tuple[str, ...] = ()) -> str:
    migrate_database(env["SWITCHBOARD_DATABASE_URL"])
    argv = [
        *SWITCHBOARD,
        "keys",
        "create",
        "--subject",
        f"test-{channel}",
        "--role",
        role,
        "--channel",
        channel,
    ]
    for scope in scopes:
        argv += ["--scope", scope]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def post_graphql(
    url: str,
    key: str,
    document: str,
    variables: dict | None = None,
    *,
    purpose: str | None = "service",
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> httpx.Response:
    """One GraphQL POST to a gateway's base ``url`` with an API key (and a purpose)."""
    sent = {"X-Api-Key": key, **(headers or {})}
    if purpose:
        sent["X-Purpose"] = purpose
    return httpx.post(
        f"{url}/graphql",
        json={"query": document, "variables": variables or {}},
        headers=sent,
        timeout=timeout,
    )


def start_gateway(
    env: dict[str, str],
    log_path: Path,
    *,
    append: bool = False,
    timeout_s: float = 180.0,
    migrate: bool = True,
    port: int | None = None,
) -> tuple[str, subprocess.Popen]:
    """`switchboard serve` on a free port (or on ``port``: a callback URL registered with the
    simulators names it), once /healthz answers: its URL and its process.

    The database is migrated first unless ``migrate`` is false. Tests that kill and restart a
    gateway hold the process themselves; the others use ``running_gateway``.
    """
    if migrate:
        migrate_database(env["SWITCHBOARD_DATABASE_URL"])
    if port is None:
        (port,) = free_ports(1)
    with log_path.open("a" if append else "w") as log:
        process = subprocess.Popen(
            [*SWITCHBOARD, "serve", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return base, process
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.1)
    except BaseException:
        stop(process)
        raise


@contextmanager
def running_gateway(env: dict[str, str], log_path: Path) -> Iterator[str]:
    base, process = start_gateway(env, log_path)
    try:
        yield base
    finally:
        stop(process)
