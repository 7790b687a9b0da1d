"""An operator's and a newcomer's first steps: the commands behave as the README says.

Each test runs the real `switchboard` command in a subprocess: several workers each take an
executor slot however the worker count is given, `compare` finds the gateway where it is
configured, Ctrl-C stops a seed cleanly, SIGTERM stops the demo and its simulators.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.harness import REPO, SWITCHBOARD, free_ports, migrate_database, stop


def _base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_CONFIG="/nonexistent/switchboard.toml", **extra)
    return env


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _held(lock_file: Path) -> bool:
    """Whether another process holds the exclusive lock on ``lock_file`` (a worker's slot)."""
    if not lock_file.exists():
        return False
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize("given_by", ["flag", "environment", "toml"])
def test_two_workers_take_two_executor_slots_however_the_count_is_given(
    tmp_path: Path, given_by: str
) -> None:
    """`serve --workers 2`, SWITCHBOARD_WORKERS=2 and `workers = 2` in the TOML file all give
    two workers with their own executor id (a held slot lock each), never two under one id."""
    (port, *nobody) = free_ports(4)  # the backends need not run for the workers to start
    env = _base_env(
        SWITCHBOARD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/hub.db",
        SWITCHBOARD_AUDIT__STATE_DIR=str(tmp_path / "keys"),
        SWITCHBOARD_BOSS__BASE_URL=f"http://127.0.0.1:{nobody[0]}",
        SWITCHBOARD_BILLING__BASE_URL=f"http://127.0.0.1:{nobody[1]}",
        SWITCHBOARD_CARE__BASE_URL=f"http://127.0.0.1:{nobody[2]}",
    )
    argv = [*SWITCHBOARD, "serve", "--port", str(port)]
    if given_by == "flag":
        argv += ["--workers", "2"]
    elif given_by == "environment":
        env["SWITCHBOARD_WORKERS"] = "2"
    else:
        config = tmp_path / "switchboard.toml"
        config.write_text("workers = 2\n")
        env["SWITCHBOARD_CONFIG"] = str(config)
    log_path = tmp_path / "serve.log"
    migrate_database(env["SWITCHBOARD_DATABASE_URL"])  # as `switchboard migrate` would
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    slots = [tmp_path / f"executor-local-{slot}.lock" for slot in (0, 1)]

    def serving() -> bool:  # a worker listens once its start-up is complete
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        try:  # two workers importing the whole hub at once: slow on a loaded machine
            _wait_for(
                lambda: process.poll() is not None or (all(map(_held, slots)) and serving()),
                90,
                "two workers holding an executor slot each",
            )
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}: {log_path.read_text()[-3000:]}") from None
        assert process.poll() is None, log_path.read_text()[-3000:]
    finally:
        stop(process)
    # The slots go with the workers: a restarted worker takes its predecessor's back.
    assert not any(_held(slot) for slot in slots)


def _children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("when", ["while the workers start", "mid-way"])
def test_ctrl_c_stops_a_seed_its_workers_and_removes_the_partial_stores(
    tmp_path: Path, when: str
) -> None:
    data_dir = tmp_path / "data"
    progress = tmp_path / "stderr"
    with progress.open("w") as stderr:
        # Large enough to use the two generator processes and to be caught mid-way.
        process = subprocess.Popen(
            [*SWITCHBOARD, "seed", "--customers", "200000", "--data-dir", str(data_dir)],
            cwd=REPO,
            env=_base_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    try:
        _wait_for(lambda: any(data_dir.glob("*.seeding")), 60, "the seed to start writing")
        _wait_for(lambda: len(_children(process.pid)) >= 3, 30, "the generator processes")
        if when == "mid-way":  # the bar shows chunks written: the workers are generating
            _wait_for(
                lambda: re.search(r" [1-9][0-9.]*k/200k", progress.read_text()) is not None,
                60,
                "a chunk written",
            )
        workers = _children(process.pid)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole group
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = progress.read_text()
    assert process.returncode == 130, output
    assert "Traceback" not in output and "leaked" not in output, output
    last = output.replace("\r", "\n").strip().splitlines()[-1]
    assert last == f"seed interrupted: nothing written to {data_dir}"
    assert sorted(p.name for p in data_dir.iterdir()) == []
    _wait_for(lambda: not any(_alive(pid) for pid in workers), 10, "the workers to end")


def _demo_env(tmp_path: Path) -> tuple[dict[str, str], list[int]]:
    """A demo entirely on free ports: the gateway, BOSS, billing, care, the two loyalties."""
    ports = free_ports(6)
    env = _base_env(
        SWITCHBOARD_PORT=str(ports[0]),
        SWITCHBOARD_BOSS__BASE_URL=f"http://127.0.0.1:{ports[1]}",
        SWITCHBOARD_BILLING__BASE_URL=f"http://127.0.0.1:{ports[2]}",
        SWITCHBOARD_CARE__BASE_URL=f"http://127.0.0.1:{ports[3]}",
        SWITCHBOARD_SYSTEM_URLS=json.dumps(
            {
                "loyalty-north": f"http://127.0.0.1:{ports[4]}",
                "loyalty-south": f"http://127.0.0.1:{ports[5]}",
            }
        ),
    )
    return env, ports


def _start_demo(tmp_path: Path, env: dict[str, str], port: int) -> subprocess.Popen:
    """`switchboard demo` in ``tmp_path`` (its state goes there) on a small dataset."""
    log = (tmp_path / "demo.log").open("w")
    process = subprocess.Popen(
        [*SWITCHBOARD, "demo", "--customers", "50", "--data-dir", str(tmp_path / "sim-data")],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError((tmp_path / "demo.log").read_text()[-3000:])
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_for(up, 90, "the demo's gateway")
    except BaseException:
        _stop_tree(process)
        raise
    return process


def _stop_tree(process: subprocess.Popen, children: list[int] | None = None) -> None:
    """Test clean-up: the demo and, should it have left them, its children."""
    children = [*(children or ()), *_children(process.pid)]
    stop(process)
    for pid in children:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_the_demo_and_its_simulators(tmp_path: Path) -> None:
    env, ports = _demo_env(tmp_path)
    process = _start_demo(tmp_path, env, ports[0])
    simulators = _children(process.pid)
    try:
        assert simulators, "the demo runs its simulators in a child process"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert process.returncode == 128 + signal.SIGTERM
        _wait_for(lambda: not any(_alive(pid) for pid in simulators), 10, "the simulators")
        _wait_for(lambda: all(_port_free(port) for port in ports), 10, "the ports to be free")
    finally:
        _stop_tree(process, simulators)


def _compare(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SWITCHBOARD, "compare", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compare_finds_the_gateway_on_its_configured_port(tmp_path: Path) -> None:
    env, ports = _demo_env(tmp_path)
    process = _start_demo(tmp_path, env, ports[0])
    try:
        done = _compare(tmp_path, env)  # the port comes from SWITCHBOARD_PORT
        assert done.returncode == 0, done.stderr
        header, *rows, summary = done.stdout.strip().splitlines()
        assert header.split()[0] == "field" and "app (no purpose)" in header
        assert any(row.startswith("profile.certificateNumber") for row in rows)
        assert summary.endswith("other fields are the same in every channel)")
        (nobody,) = free_ports(1)
        given = _compare(tmp_path, env, "--url", f"http://127.0.0.1:{nobody}")
    finally:
        _stop_tree(process)
    assert given.returncode == 1
    assert given.stderr.startswith(
        f"switchboard compare: nothing answers at http://127.0.0.1:{nobody}"
    )
    assert len(given.stderr.strip().splitlines()) == 1


def test_compare_says_in_one_line_when_no_gateway_answers(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    keys = tmp_path / ".switchboard" / "demo-keys.json"
    keys.parent.mkdir()
    keys.write_text('{"agent": "sb_x", "app": "sb_x", "store": "sb_x", "partner": "sb_x"}')
    done = _compare(tmp_path, _base_env(SWITCHBOARD_PORT=str(port)))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"switchboard compare: nothing answers at http://127.0.0.1:{port} (ConnectError): is the "
        "demo running? Give the gateway with --url or SWITCHBOARD_PORT/SWITCHBOARD_HOST"
    )
    keys.unlink()
    missing = _compare(tmp_path, _base_env(SWITCHBOARD_PORT=str(port)))
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "switchboard compare: no keys file at .switchboard/demo-keys.json: "
        "`switchboard demo` writes it"
    )


def test_migrations_started_at_once_on_a_fresh_sqlite_database_all_succeed(
    tmp_path: Path,
) -> None:
    """Three migrations of one new SQLite file at once (three `switchboard migrate`, or a
    demo beside one): none may die of 'already exists' or 'database is locked', the DDL lock
    serialises them, and the file ends at head with every hub table."""
    import asyncio

    from sqlalchemy import inspect

    from gateway.database import create_engine
    from gateway.migrate import current_revision, head_revision, hub_metadata, upgrade

    tables = {name for metadata in hub_metadata() for name in metadata.tables}

    async def start_at_once(database: Path) -> tuple[set[str], str | None, list[str | None]]:
        engines = [create_engine(f"sqlite+aiosqlite:///{database}") for _ in range(3)]
        try:
            done = await asyncio.gather(*(upgrade(engine) for engine in engines))
            async with engines[0].connect() as conn:
                found = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
            return (
                found,
                await current_revision(engines[0]),
                sorted((d.before for d in done), key=str),
            )
        finally:
            for engine in engines:
                await engine.dispose()

    for attempt in range(3):
        found, revision, befores = asyncio.run(start_at_once(tmp_path / f"hub-{attempt}.db"))
        assert tables <= found and revision == head_revision()
        # Exactly one of them migrated; the others waited and found the database at head.
        assert befores.count(None) == 1 and befores.count(head_revision()) == 2
