"""The peer's processes: npm's locked install, Mesh compose over the run's simulators, Hive
Gateway (one process, or a node cluster with `--fork N`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from bench import cpu
from bench.peer.figures import missing_tools_reason, node_version_reason, npm_failure_reason
from tests.harness import SimulatorUrls

HERE = Path(__file__).resolve().parent
GATEWAY_BIN = HERE / "node_modules" / "@graphql-hive" / "gateway" / "dist" / "bin.js"


def _installed() -> bool:
    """node_modules holds what package-lock.json locks (npm writes its own copy on install)."""
    mark = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    return GATEWAY_BIN.exists() and mark.exists() and mark.stat().st_mtime >= lock.stat().st_mtime


def prepare() -> str | None:
    """Make the peer runnable; the reason it cannot be (then the scenario is skipped)."""
    reason = missing_tools_reason(shutil.which)
    if reason:
        return reason
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    reason = node_version_reason(version.stdout or version.stderr)
    if reason or _installed():
        return reason
    print("bench/peer: npm ci (the locked Mesh + Hive Gateway packages), once", flush=True)
    try:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        return "npm ci did not finish in 900 s"
    return npm_failure_reason(done.returncode, done.stdout + done.stderr)


def _env(sims: SimulatorUrls, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_")}
    env.update(PEER_BOSS_URL=sims.boss, PEER_BILLING_URL=sims.billing, PEER_CARE_URL=sims.care)
    env.update(extra)
    return env


def compose(sims: SimulatorUrls, supergraph: Path, log: Path) -> None:
    """Compose the supergraph from the simulator's live WSDL and the OpenAPI subsets."""
    partial = supergraph.with_suffix(".tmp.graphql")
    with log.open("w") as out:
        done = subprocess.run(
            ["npx", "--no-install", "mesh-compose", "-o", str(partial)],
            cwd=HERE,
            env=_env(sims),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=300,
        )
    if done.returncode != 0 or not partial.exists():
        raise RuntimeError(f"mesh-compose failed: {log.read_text()[-1500:]}")
    partial.replace(supergraph)


def start(
    sims: SimulatorUrls,
    *,
    processes: int,
    cache: bool,
    port: int,
    supergraph: Path,
    cache_max: int | None,
    cache_ttl_ms: int,
    log: Path,
) -> subprocess.Popen:
    """Hive Gateway on `port`, once it answers and (with `--fork`) its workers are up."""
    env = _env(
        sims,
        PEER_PORT=str(port),
        PEER_SUPERGRAPH=str(supergraph),
        PEER_CACHE="1" if cache else "0",
        PEER_CACHE_TTL_MS=str(cache_ttl_ms),
    )
    if cache_max:
        env["PEER_CACHE_MAX"] = str(cache_max)
    argv = ["node", str(GATEWAY_BIN), "supergraph", "-c", str(HERE / "gateway.config.ts")]
    if processes > 1:
        argv += ["--fork", str(processes)]
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"peer exited: {log.read_text()[-1500:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"peer did not start: {log.read_text()[-1500:]}")
            time.sleep(0.5)
        if processes > 1:  # the workers listen after the primary answers
            while len(cpu.tree_pids(process.pid)) < processes + 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("peer's workers did not start")
                time.sleep(0.5)
            time.sleep(3)
    except BaseException:
        stop_tree(process)
        raise
    return process


def _started(pid: int) -> str | None:
    """When `pid` started (clock ticks after boot): tells a PID from a later reuse of it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def stop_tree(process: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM the gateway (uvicorn and node cluster pass it to their workers); then any
    worker left behind, by PID, only among this process's own descendants."""
    descendants = []
    if process.poll() is None:
        descendants = [(pid, _started(pid)) for pid in cpu.tree_pids(process.pid)[1:]]
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid, started in descendants:
        if started is not None and _started(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
