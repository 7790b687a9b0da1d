"""SQLite plumbing shared by the three stores: file names, connections, the metadata marker."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

SYSTEMS = ("boss", "billing", "care")

META_DDL = "CREATE TABLE sim_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def store_path(data_dir: Path, system: str) -> Path:
    return Path(data_dir) / f"{system}.db"


@dataclass(frozen=True)
class StoreMeta:
    """What a seeded store was made from; a data dir matches a request when all three agree."""

    system: str
    seed: int
    customers: int
    dataset_version: str


def write_meta(conn: sqlite3.Connection, meta: StoreMeta) -> None:
    conn.execute(META_DDL)
    conn.executemany(
        "INSERT INTO sim_meta (key, value) VALUES (?, ?)",
        [
            ("system", meta.system),
            ("seed", str(meta.seed)),
            ("customers", str(meta.customers)),
            ("dataset_version", meta.dataset_version),
        ],
    )


def read_meta(path: Path) -> StoreMeta | None:
    """The marker of a store file, or None when there is no complete store at ``path``."""
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = dict(conn.execute("SELECT key, value FROM sim_meta").fetchall())
        finally:
            conn.close()
        return StoreMeta(
            rows["system"], int(rows["seed"]), int(rows["customers"]), rows["dataset_version"]
        )
    except (sqlite3.Error, KeyError, ValueError):
        return None


def open_for_serving(path: Path) -> sqlite3.Connection:
    """One connection per server, used from the event loop thread only.

    Reads are indexed point lookups that take microseconds, so they run synchronously in the
    handlers; writes commit at once (WAL, synchronous=NORMAL keeps that cheap).
    """
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB
    conn.execute("PRAGMA mmap_size=1073741824")
    conn.execute("PRAGMA busy_timeout=2000")
    return conn


def open_for_loading(path: Path) -> sqlite3.Connection:
    """A connection tuned for one bulk load into a fresh file: no journal, no fsync.

    It is finished (indexed, committed) in a worker thread, hence check_same_thread=False;
    only one thread uses it at a time.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB, so index builds sort in memory
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn
