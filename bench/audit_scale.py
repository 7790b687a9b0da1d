"""The audit log at scale: generate N records (default 5,000,000) and time auditor queries.

    .venv/bin/python -m bench.audit_scale [--records N] [--backend sqlite|postgres|both]

Records are generated in a tight loop with real chain hashes and keyed customer hashes, bulk
loaded (executemany in large transactions on SQLite, COPY on PostgreSQL) with the indexes
built afterwards, then the auditor's three questions are timed through the same code the
gateway uses (gateway.audit.reader.AuditLogReader over the async engine): a customer's
records, a principal's newest page, and a one-hour time range. Data goes to bench/.data/
(ignored by git); figures are printed and written to bench/results/audit_scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.schema import CreateIndex

from gateway.audit.reader import AuditLogReader
from gateway.audit.record import GENESIS_HASH, AuditRecord, CustomerHasher, chain_hash
from gateway.audit.store import audit_record, metadata, record_row
from gateway.database import create_engine
from schema.audit_reader import AuditSearch

DATA = Path(__file__).resolve().parent / ".data"
RESULTS = Path(__file__).resolve().parent / "results" / "audit_scale.json"
KEY = b"bench-audit-customer-key-0123456789"
CUSTOMERS = 1_000_000
SUBJECTS = 2_000
CHANNELS = ("app", "web", "store", "agent", "ivr", "sms", "partner", "audit")
SPAN_US = 183 * 86_400 * 1_000_000
START_US = 1_760_000_000_000_000
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SAMPLES = 30


def hub_id(n: int) -> str:
    return f"cus_{n:020x}"


def generate(count: int) -> Iterator[tuple[dict[str, Any], list[tuple[str, int]]]]:
    """(record row, customer rows) in seq order, chained."""
    rng = random.Random(7)
    hasher = CustomerHasher(KEY)
    prev = GENESIS_HASH
    step = SPAN_US // count
    paths = {"Customer.profile.name": "clear", "Customer.subscriptions.msisdn": "masked"}
    for seq in range(1, count + 1):
        customers = tuple(
            sorted({hasher(hub_id(rng.randrange(CUSTOMERS))) for _ in range(rng.choice((1, 1, 2)))})
        )
        channel = rng.choice(CHANNELS)
        record = AuditRecord(
            time_us=START_US + seq * step,
            request_id=f"{seq:032x}",
            outcome=rng.choice(("ok", "ok", "ok", "partial", "refused")),
            subject=f"subject-{rng.randrange(SUBJECTS)}",
            role=channel,
            channel=channel,
            credential_id=f"{rng.randrange(1 << 32):08x}",
            purpose="service",
            operation_type="query",
            operation_name="Customer360",
            document_sha256="ab" * 32,
            customers=customers,
            disclosed=paths if seq % 3 else {"Customer.profile.name": "masked"},
            policy_version="2026-11-23.1",
            backends=("billing", "boss", "care"),
            latency_us=rng.randrange(2_000, 60_000),
        )
        digest = chain_hash(prev, record)
        yield record_row(seq, record, prev, digest), [(c, seq) for c in customers]
        prev = digest


COLUMNS = [c.name for c in audit_record.columns]


def _without_indexes(sync_url: str) -> None:
    engine = create_sync_engine(sync_url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        for table in metadata.sorted_tables:
            indexes = set(table.indexes)
            table.indexes.clear()
            table.create(conn)
            table.indexes.update(indexes)
    engine.dispose()


def _build_indexes(sync_url: str) -> float:
    started = time.perf_counter()
    engine = create_sync_engine(sync_url)
    with engine.begin() as conn:
        for index in audit_record.indexes:
            conn.execute(CreateIndex(index))
    engine.dispose()
    return time.perf_counter() - started


def load_sqlite(path: Path, count: int) -> dict[str, float]:
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    sync_url = f"sqlite:///{path}"
    _without_indexes(sync_url)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # bulk load only; the hub runs NORMAL
    insert = (
        f"INSERT INTO audit_record ({','.join(COLUMNS)}) VALUES ({','.join('?' for _ in COLUMNS)})"
    )
    started = time.perf_counter()
    rows: list[tuple] = []
    customers: list[tuple[str, int]] = []
    last: tuple[int, str] = (0, GENESIS_HASH)
    for row, touched in generate(count):
        rows.append(tuple(row[c] for c in COLUMNS))
        customers.extend(touched)
        last = (row["seq"], row["hash"])
        if len(rows) >= 100_000:
            with conn:
                conn.executemany(insert, rows)
                conn.executemany("INSERT INTO audit_customer VALUES (?, ?)", customers)
            rows.clear()
            customers.clear()
            print(f"  sqlite: {last[0]:,} records", flush=True)
    with conn:
        conn.executemany(insert, rows)
        conn.executemany("INSERT INTO audit_customer VALUES (?, ?)", customers)
        conn.execute("INSERT INTO audit_head VALUES (1, ?, ?)", last)
    conn.close()
    loaded = time.perf_counter() - started
    return {"load_s": loaded, "index_s": _build_indexes(sync_url)}


async def load_postgres(url: str, count: int) -> dict[str, float]:
    import asyncpg

    # Tables through SQLAlchemy (async engine, run_sync), indexes after the load.
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)

        def create(sync_conn: Any) -> None:
            for table in metadata.sorted_tables:
                indexes = set(table.indexes)
                table.indexes.clear()
                table.create(sync_conn)
                table.indexes.update(indexes)

        await conn.run_sync(create)
    raw = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    started = time.perf_counter()
    rows: list[tuple] = []
    customers: list[tuple[str, int]] = []
    last: tuple[int, str] = (0, GENESIS_HASH)

    async def flush() -> None:
        await raw.copy_records_to_table("audit_record", records=rows, columns=COLUMNS)
        await raw.copy_records_to_table(
            "audit_customer", records=customers, columns=["customer_hash", "seq"]
        )
        rows.clear()
        customers.clear()

    for row, touched in generate(count):
        rows.append(tuple(row[c] for c in COLUMNS))
        customers.extend(touched)
        last = (row["seq"], row["hash"])
        if len(rows) >= 100_000:
            await flush()
            print(f"  postgres: {last[0]:,} records", flush=True)
    await flush()
    await raw.execute("INSERT INTO audit_head VALUES (1, $1, $2)", *last)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    for index in audit_record.indexes:
        async with engine.begin() as conn:
            await conn.execute(CreateIndex(index))
    await raw.execute("ANALYZE")
    await raw.close()
    await engine.dispose()
    return {"load_s": loaded, "index_s": time.perf_counter() - started}


async def time_queries(url: str, count: int) -> dict[str, Any]:
    engine = create_engine(url)
    hasher = CustomerHasher(KEY)

    async def no_verify() -> Any:
        raise NotImplementedError

    reader = AuditLogReader(engine, hasher, no_verify)
    rng = random.Random(11)
    hour = 3_600 * 1_000_000
    shapes = {
        "customer": lambda: AuditSearch(customer_id=hub_id(rng.randrange(CUSTOMERS))),
        "principal": lambda: AuditSearch(principal=f"subject-{rng.randrange(SUBJECTS)}"),
        "time_1h": lambda: AuditSearch(
            time_from_us=(t := START_US + rng.randrange(SPAN_US - hour)), time_to_us=t + hour
        ),
        "principal_clear_only": lambda: AuditSearch(
            principal=f"subject-{rng.randrange(SUBJECTS)}", clear_only=True
        ),
    }
    figures: dict[str, Any] = {}
    try:
        await reader.search(AuditSearch(), 1, None)  # connect and warm the pool
        for name, make in shapes.items():
            timings, sizes = [], []
            for _ in range(SAMPLES):
                search = make()
                started = time.perf_counter()
                page = await reader.search(search, 50, None)
                timings.append((time.perf_counter() - started) * 1000)
                sizes.append(len(page.entries))
            timings.sort()
            figures[name] = {
                "page": 50,
                "median_ms": round(statistics.median(timings), 2),
                "p90_ms": round(timings[int(len(timings) * 0.9) - 1], 2),
                "mean_rows": round(statistics.mean(sizes), 1),
            }
            print(f"  {name}: {figures[name]}", flush=True)
    finally:
        await engine.dispose()
    return figures


async def time_verify(url: str) -> dict[str, float]:
    """The whole chain walked and re-hashed once, as `switchboard audit verify` does."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.audit.verify import verify_chain

    engine = create_engine(url)
    try:
        started = time.perf_counter()
        report = await verify_chain(engine, Ed25519PrivateKey.generate().public_key())
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    assert report.ok, report.findings[:5]
    print(f"  verify: {report.checked:,} records in {elapsed:.1f} s", flush=True)
    return {"verify_s": round(elapsed, 1), "verify_records_per_s": round(report.checked / elapsed)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"records": args.records, "machine": "2 cores, shared"}
    if args.backend in ("sqlite", "both"):
        path = DATA / f"audit_scale-{args.records}.db"
        print(f"sqlite: generating and loading {args.records:,} records", flush=True)
        loaded = await asyncio.to_thread(load_sqlite, path, args.records)
        url = f"sqlite+aiosqlite:///{path}"
        results["sqlite"] = {**loaded, "queries": await time_queries(url, args.records)}
        if args.verify:
            results["sqlite"].update(await time_verify(url))
        results["sqlite"]["size_mb"] = round(path.stat().st_size / 1e6, 1)
    if args.backend in ("postgres", "both"):
        import asyncpg

        name = "switchboard_audit_scale"
        admin = await asyncpg.connect(POSTGRES_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        print(f"postgres: generating and loading {args.records:,} records", flush=True)
        loaded = await load_postgres(url, args.records)
        results["postgres"] = {**loaded, "queries": await time_queries(url, args.records)}
        if args.verify:
            results["postgres"].update(await time_verify(url))
        if not args.keep:
            admin = await asyncpg.connect(POSTGRES_ADMIN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument("--verify", action="store_true", help="also time a full verification")
    parser.add_argument("--output", default=str(RESULTS), help="where the figures go (JSON)")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
