"""Command line of the simulators: ``seed`` a data dir, ``serve`` the systems from it.

The hub's ``switchboard seed`` and ``switchboard simulators`` delegate to ``main``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from simulators.dataset import MAX_CUSTOMERS

DESCRIPTION = (
    "Legacy-system simulators of Switchboard: a SOAP BOSS, a TMF REST billing system, a "
    "TMF REST care system and a SOAP 1.2 loyalty system (two instances) over one "
    "deterministic seeded dataset."
)


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_CUSTOMERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CUSTOMERS}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port (1-65535)")
    return value


def build_parser(prog: str = "python -m simulators") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seed = commands.add_parser(
        "seed",
        help="generate the dataset into boss.db, billing.db, care.db and loyalty.db",
        description=(
            "Generate the deterministic dataset (same --seed and --customers give byte-identical "
            "stores) into one SQLite store per system in --data-dir. Does nothing if the dir "
            "already holds that seed and count, unless --force (a dir seeded before the loyalty "
            "system existed only gets its loyalty.db)."
        ),
    )
    seed.add_argument("--data-dir", type=Path, required=True, help="directory for the stores")
    seed.add_argument(
        "--customers",
        type=_positive,
        default=10_000,
        help="number of customers (default: 10000; 1000000 takes a few minutes)",
    )
    seed.add_argument("--seed", type=int, default=42, help="dataset seed (default: 42)")
    seed.add_argument(
        "--force", action="store_true", help="re-seed even if the dir already matches"
    )
    seed.add_argument(
        "--workers",
        type=int,
        default=None,
        help="generator processes (default: 2 for large counts, else 1)",
    )
    seed.add_argument("--quiet", action="store_true", help="no progress bar")

    serve = commands.add_parser(
        "serve",
        help="serve the BOSS, billing, care and loyalty simulators from a seeded data dir",
        description=(
            "Serve the simulators in one process until SIGINT/SIGTERM. Prints 'simulators "
            "ready: boss=URL billing=URL care=URL loyalty-north=URL loyalty-south=URL' once "
            "all listen. Each also answers /_sim/health, /_sim/stats, /_sim/control and "
            "/_sim/reset. A dir seeded before the loyalty system existed gets its loyalty.db "
            "built first."
        ),
    )
    serve.add_argument(
        "--data-dir", type=Path, required=True, help="a directory filled by the seed command"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--boss-port", type=_port, default=8101, help="SOAP BOSS port (default: 8101)"
    )
    serve.add_argument(
        "--billing-port", type=_port, default=8102, help="billing REST port (default: 8102)"
    )
    serve.add_argument(
        "--care-port", type=_port, default=8103, help="care REST port (default: 8103)"
    )
    serve.add_argument(
        "--loyalty-north-port",
        type=_port,
        default=8104,
        help="loyalty SOAP 1.2 port of MSISDNs 130-159 (default: 8104)",
    )
    serve.add_argument(
        "--loyalty-south-port",
        type=_port,
        default=8105,
        help="loyalty SOAP 1.2 port of MSISDNs 160-199 (default: 8105)",
    )
    serve.add_argument(
        "--events-secret",
        default=None,
        help="shared secret the systems sign their event notifications with (default: "
        "$SIMULATORS_EVENTS_SECRET, else the demo's secret)",
    )
    return parser


def _seed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from simulators.seed import seed_dataset

    try:
        with tqdm(
            total=args.customers, unit="customer", unit_scale=True, disable=args.quiet
        ) as bar:
            result = seed_dataset(
                args.data_dir,
                args.customers,
                args.seed,
                progress=bar.update,
                force=args.force,
                workers=args.workers,
            )
    except KeyboardInterrupt:
        # seed_dataset has stopped its workers and removed its partial files on the way out.
        print(f"seed interrupted: nothing written to {args.data_dir}", file=sys.stderr)
        return 130
    if result.skipped and result.loyalty_built:
        print(
            f"{args.data_dir} already holds seed {args.seed} with {args.customers} customers; "
            f"built its loyalty.db in {result.seconds:.1f} s"
        )
    elif result.skipped:
        print(
            f"{args.data_dir} already holds seed {args.seed} with {args.customers} customers; "
            "nothing to do (use --force to re-seed)"
        )
    else:
        rate = result.customers / result.seconds if result.seconds else 0
        print(
            f"seeded {result.customers} customers (seed {result.seed}) into {args.data_dir} "
            f"in {result.seconds:.1f} s ({rate:,.0f} customers/s)"
        )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from simulators.seed import ensure_loyalty_store, seeded_meta
    from simulators.server import Ports, run

    if args.events_secret:
        import os

        from simulators.events import SECRET_ENV

        os.environ[SECRET_ENV] = args.events_secret  # read by each system's EventHub
    meta = seeded_meta(args.data_dir)
    if meta is None:
        print(
            f"error: {args.data_dir} holds no complete seeded dataset; run "
            f"'seed --data-dir {args.data_dir}' first",
            file=sys.stderr,
        )
        return 2
    try:
        built = ensure_loyalty_store(args.data_dir)
    except (OSError, sqlite3.Error) as error:
        print(f"error: cannot build loyalty.db in {args.data_dir}: {error}", file=sys.stderr)
        return 2
    if built:
        print(f"built {args.data_dir / 'loyalty.db'} from boss.db", file=sys.stderr, flush=True)

    def ready(urls: dict[str, str]) -> None:
        print(
            f"simulators ready: boss={urls['boss']} billing={urls['billing']} care={urls['care']} "
            f"loyalty-north={urls['loyalty-north']} loyalty-south={urls['loyalty-south']}",
            flush=True,
        )

    ports = Ports(
        args.boss_port,
        args.billing_port,
        args.care_port,
        args.loyalty_north_port,
        args.loyalty_south_port,
    )
    return 0 if run(args.data_dir, args.host, ports, ready) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "seed":
        return _seed(args)
    return _serve(args)
