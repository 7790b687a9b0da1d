"""`switchboard demo`: the simulators, a seeded dataset, demo keys and the gateway, in one go."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway.auth import ApiKeyStore
from gateway.database import create_engine
from gateway.migrate import upgrade
from gateway.settings import STATE_DIR, Settings

KEYS_FILE = STATE_DIR / "demo-keys.json"
DEMO_LABEL = "demo"

# One principal per demo channel: what a real deployment would issue to each integration.
DEMO_PRINCIPALS: dict[str, dict[str, object]] = {
    "app": {"role": "customer", "scopes": ["customer:read"]},
    "web": {"role": "customer", "scopes": ["customer:read"]},
    "store": {"role": "clerk", "scopes": ["customer:read", "order:write"]},
    "agent": {"role": "agent", "scopes": ["customer:read", "ticket:write", "order:write"]},
    "ivr": {"role": "ivr", "scopes": ["customer:read"]},
    "sms": {"role": "sms", "scopes": ["customer:read"]},
    "partner": {
        "role": "partner",
        # Workflow mutations a partner may call need their scope (schema/workflows.py).
        "scopes": ["customer:read", "order:write", "orders:write", "complaints:write"],
        "partner": "demo-reseller",
    },
    "auditor": {"role": "auditor", "scopes": ["audit:read"], "channel": "audit"},
}


@dataclass(frozen=True)
class DemoOptions:
    customers: int
    seed: int
    data_dir: Path


async def issue_demo_keys(settings: Settings) -> dict[str, str]:
    """Migrate the hub database, revoke the previous demo keys and issue one per channel;
    write them to KEYS_FILE."""
    engine = create_engine(settings.database_url)
    try:
        # The demo is the one start that migrates by itself: it owns its database.
        await upgrade(engine, lock_timeout_s=settings.database.migrate_lock_timeout_s)
        store = ApiKeyStore(engine)
        await store.revoke_where_label(DEMO_LABEL)
        keys: dict[str, str] = {}
        for name, spec in DEMO_PRINCIPALS.items():
            issued = await store.issue(
                subject=f"demo-{name}",
                role=str(spec["role"]),
                channel=str(spec.get("channel", name)),
                scopes=list(spec["scopes"]),  # type: ignore[call-overload]
                partner=spec.get("partner"),  # type: ignore[arg-type]
                label=DEMO_LABEL,
            )
            keys[name] = issued.key
    finally:
        await engine.dispose()
    KEYS_FILE.parent.mkdir(parents=True, exist_ok=True)
    KEYS_FILE.write_text(json.dumps(keys, indent=2) + "\n")
    os.chmod(KEYS_FILE, 0o600)
    return keys


def start_simulators(data_dir: Path, settings: Settings) -> subprocess.Popen[str]:
    """Start the three simulators in a child process and wait until they listen."""
    from urllib.parse import urlparse

    ports = {
        name: str(urlparse(getattr(settings, name).base_url).port)
        for name in ("boss", "billing", "care")
    }
    argv = [sys.executable, "-m", "simulators", "serve", "--data-dir", str(data_dir)]
    for name, port in ports.items():
        argv += [f"--{name}-port", port]
    # The loyalty instances where system_urls moves them (else both sides' defaults agree).
    moved = settings.instance_urls
    for instance in ("loyalty-north", "loyalty-south"):
        if instance in moved and urlparse(moved[instance]).port:
            argv += [f"--{instance}-port", str(urlparse(moved[instance]).port)]
    process = subprocess.Popen(  # noqa: S603 -- our own interpreter and arguments
        argv,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("simulators ready"):
                return process
    except BaseException:  # stopped while they start: they must not outlive the demo
        stop_simulators(process)
        raise
    raise SystemExit(f"the simulators did not start (exit code {process.wait()})")


def stop_simulators(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # SIGTERM's default action ends the process on the spot, leaving the simulators running.
    # As an exception it unwinds through run_demo's cleanup, like Ctrl-C's KeyboardInterrupt.
    raise SystemExit(128 + signum)


def print_banner(settings: Settings, keys: dict[str, str]) -> None:
    base = f"http://{settings.host}:{settings.port}"
    print()
    print(f"  GraphiQL:   {base}/graphql   (add the header X-Api-Key: <key> in its Headers tab)")
    print(f"  Readiness:  {base}/readyz")
    print(f"  Keys file:  {KEYS_FILE}")
    for name, key in keys.items():
        print(f"    {name:<8} {key}")
    print()
    compare = ".venv/bin/switchboard compare"
    if (settings.host, settings.port) != ("127.0.0.1", 8000):
        compare += f" --url {base}"
    print("  Try the 360 query from README.md. To see one customer through the app, the store")
    print(f"  and a partner side by side:  {compare}")
    print("  Stop with Ctrl-C.")
    print(flush=True)


def share_demo_event_secret(settings: Settings) -> None:
    """One generated secret for the demo's event sources, in both processes' environments.

    The simulators sign their notifications with SIMULATORS_EVENTS_SECRET; the hub reads each
    source's secret from the variable its events.yaml names. A variable already set wins.
    """
    import secrets

    from gateway.events import load_event_sources

    secret = os.environ.setdefault("SIMULATORS_EVENTS_SECRET", secrets.token_urlsafe(32))
    for source in load_event_sources(settings):
        if source.webhook is not None:
            os.environ.setdefault(source.webhook.secret_env, secret)


def run_demo(settings: Settings, options: DemoOptions) -> int:
    """Seed, start the simulators and serve until Ctrl-C or SIGTERM; stop the simulators."""
    # uvicorn takes SIGTERM over while it serves and raises it again once it has stopped:
    # that lands here too, so the simulators are stopped in every phase.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    import uvicorn

    from simulators.cli import main as simulators_main

    code = simulators_main(
        [
            "seed",
            "--data-dir",
            str(options.data_dir),
            "--customers",
            str(options.customers),
            "--seed",
            str(options.seed),
        ]
    )
    if code != 0:
        return code
    share_demo_event_secret(settings)
    simulators = start_simulators(options.data_dir, settings)
    try:
        keys = asyncio.run(issue_demo_keys(settings))
        print_banner(settings, keys)
        from gateway.app import create_app

        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=False,
            log_level="info",
            log_config=None,  # uvicorn's lines go to the hub's handler (logs.configure)
        )
    finally:
        stop_simulators(simulators)
    return 0
