"""Two provincial BOSS instances for the role-routing tests.

An operator split by province runs its BOSS twice, each copy holding its own customers. Here
that is the real BOSS simulator app twice, each over its own data dir holding a share of one
seeded dataset (``split``), served on its own port by ``python -m tests.province_boss``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import uvloop

from simulators.boss.app import create_app
from simulators.server import serve_all
from simulators.storage import store_path


def split(data_dir: Path, east: Path, west: Path, first_west_customer: int) -> None:
    """``east`` gets the customers numbered below ``first_west_customer`` (and their lines),
    ``west`` the others; both keep the whole catalogue."""
    source = sqlite3.connect(store_path(data_dir, "boss"))
    try:
        for target, keep in ((east, "customer_no < ?"), (west, "customer_no >= ?")):
            target.mkdir(parents=True, exist_ok=True)
            copy = sqlite3.connect(store_path(target, "boss"))
            try:
                source.backup(copy)
                for table in ("customer", "subscriber"):
                    copy.execute(f"DELETE FROM {table} WHERE NOT ({keep})", (first_west_customer,))
                copy.commit()
            finally:
                copy.close()
    finally:
        source.close()


def main(argv: list[str]) -> int:
    """``EAST_DIR EAST_PORT WEST_DIR WEST_PORT``: serve both until SIGTERM."""
    east_dir, east_port, west_dir, west_port = argv
    apps = {"boss-east": create_app(Path(east_dir)), "boss-west": create_app(Path(west_dir))}
    ports = {"boss-east": int(east_port), "boss-west": int(west_port)}

    def ready(urls: dict[str, str]) -> None:
        print(f"provinces ready: {urls['boss-east']} {urls['boss-west']}", flush=True)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return 0 if runner.run(serve_all(apps, "127.0.0.1", ports, ready)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
