"""Run the simulators in one process: one uvicorn server per app on one uvloop loop.

The loyalty system runs as two apps (loyalty-north, loyalty-south), one per MSISDN range.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
import uvloop
from starlette.applications import Starlette

from simulators.billing.app import create_app as create_billing_app
from simulators.boss.app import create_app as create_boss_app
from simulators.care.app import create_app as create_care_app
from simulators.loyalty.app import create_app as create_loyalty_app
from simulators.loyalty.instances import NORTH, SOUTH


@dataclass(frozen=True)
class Ports:
    boss: int = 8101
    billing: int = 8102
    care: int = 8103
    loyalty_north: int = NORTH.default_port
    loyalty_south: int = SOUTH.default_port

    def by_app(self) -> dict[str, int]:
        """Port of each app, by the app names of ``build_apps``."""
        return {
            "boss": self.boss,
            "billing": self.billing,
            "care": self.care,
            NORTH.name: self.loyalty_north,
            SOUTH.name: self.loyalty_south,
        }


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to ``serve_all``.

    uvicorn's own handling assumes one server per process: each server would replace the
    others' handlers and re-raise the signal after shutdown, killing the process uncleanly.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_one(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits the process when it cannot bind; here that only ends this task, and
        # serve_all stops the other servers and reports the failure.
        return


def build_apps(data_dir: Path) -> dict[str, Starlette]:
    return {
        "boss": create_boss_app(data_dir),
        "billing": create_billing_app(data_dir),
        "care": create_care_app(data_dir),
        NORTH.name: create_loyalty_app(data_dir, NORTH),
        SOUTH.name: create_loyalty_app(data_dir, SOUTH),
    }


async def serve_all(
    apps: dict[str, Starlette],
    host: str,
    ports: dict[str, int],
    on_ready: Callable[[dict[str, str]], None],
) -> bool:
    """Serve every app until SIGINT/SIGTERM; True unless a server failed to start."""
    servers = {
        name: _Server(
            uvicorn.Config(
                app,
                host=host,
                port=ports[name],
                access_log=False,
                log_level="warning",
                lifespan="on",
                server_header=False,
                timeout_keep_alive=30,  # clients keep pooled connections open between bursts
            )
        )
        for name, app in apps.items()
    }

    def stop() -> None:
        for server in servers.values():
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(_serve_one(server)) for server in servers.values()]
    while not all(server.started for server in servers.values()):
        if any(task.done() for task in tasks):  # one failed to bind or to start up
            stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            return False
        await asyncio.sleep(0.01)
    on_ready({name: f"http://{host}:{ports[name]}" for name in servers})
    await asyncio.gather(*tasks)
    return True


def run(
    data_dir: Path, host: str, ports: Ports, on_ready: Callable[[dict[str, str]], None]
) -> bool:
    """Build the apps over ``data_dir`` and serve them on a uvloop event loop."""
    apps = build_apps(data_dir)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve_all(apps, host, ports.by_app(), on_ready))
