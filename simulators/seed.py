"""Materialise the dataset into boss.db, billing.db, care.db and loyalty.db of a data dir.

Customers are generated in chunks (in worker processes for large counts: generation is pure
Python and the bulk of the cost), and the chunks are written in index order with executemany
inside one transaction per store, journal and fsync off. Indexes are built once at the end,
then the stores switch to WAL for serving. Each store is written under a temporary name and
renamed when complete, and carries a ``sim_meta`` marker (seed, count, dataset version), so a
half-seeded dir never looks seeded.

loyalty.db came later than the other three: a data dir seeded before it is still a seeded dir
(``seeded_meta`` reads the three core stores only), and ``ensure_loyalty_store`` derives its
loyalty.db from boss.db, giving the same rows the seeder writes.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import islice
from multiprocessing import resource_tracker
from pathlib import Path

from simulators.billing import store as billing_store
from simulators.boss import store as boss_store
from simulators.care import store as care_store
from simulators.dataset import CUSTOMER_NO_BASE, DATASET_VERSION, MAX_CUSTOMERS, generate
from simulators.loyalty import store as loyalty_store
from simulators.loyalty.members import LOYALTY_VERSION, MemberSource
from simulators.storage import (
    SYSTEMS,
    StoreMeta,
    open_for_loading,
    read_meta,
    store_path,
    write_meta,
)

Progress = Callable[[int], None]
"""Called with the number of customers written since the previous call."""

CHUNK = 2_000
PARALLEL_FROM = 20_000  # below this, worker start-up costs more than it saves

LOYALTY = "loyalty"
_STORES = (*SYSTEMS, LOYALTY)
LOYALTY_DATASET_VERSION = f"{DATASET_VERSION}+loyalty.{LOYALTY_VERSION}"

_TABLES = {
    "boss": boss_store.TABLES,
    "billing": billing_store.TABLES,
    "care": care_store.TABLES,
    LOYALTY: loyalty_store.TABLES,
}
_INDEXES = {
    "boss": boss_store.INDEXES,
    "billing": billing_store.INDEXES,
    "care": care_store.INDEXES,
    LOYALTY: loyalty_store.INDEXES,
}
# (store, insert statement) for each row list a chunk produces, in chunk order.
_INSERTS = (
    ("boss", boss_store.INSERT_CUSTOMER),
    ("boss", boss_store.INSERT_SUBSCRIBER),
    ("billing", billing_store.INSERT_ACCOUNT),
    ("billing", billing_store.INSERT_SERVICE_NUMBER),
    ("care", care_store.INSERT_PARTY),
    ("care", care_store.INSERT_TICKET),
    ("care", care_store.INSERT_INTERACTION),
    (LOYALTY, loyalty_store.INSERT_MEMBER),
)


@dataclass(frozen=True)
class SeedResult:
    data_dir: Path
    customers: int
    seed: int
    seconds: float
    skipped: bool
    #: Whether loyalty.db was (re)built for a dir whose other stores already matched.
    loyalty_built: bool = False


def seeded_meta(data_dir: Path) -> StoreMeta | None:
    """The common marker of the three stores of ``data_dir``, or None unless all agree."""
    metas = [read_meta(store_path(data_dir, system)) for system in SYSTEMS]
    if any(m is None for m in metas):
        return None
    first = metas[0]
    assert first is not None
    for system, meta in zip(SYSTEMS, metas, strict=True):
        assert meta is not None
        same = (meta.seed, meta.customers, meta.dataset_version) == (
            first.seed,
            first.customers,
            first.dataset_version,
        )
        if meta.system != system or not same:
            return None
    return first


def is_seeded(data_dir: Path, customers: int, seed: int) -> bool:
    meta = seeded_meta(data_dir)
    return (
        meta is not None
        and meta.seed == seed
        and meta.customers == customers
        and meta.dataset_version == DATASET_VERSION
    )


def chunk_rows(seed: int, start: int, stop: int) -> list[list[tuple]]:
    """The rows of customers [start, stop) for each entry of ``_INSERTS``."""
    bundles = [generate(seed, i) for i in range(start, stop)]
    sources = (
        MemberSource(
            b.customer.index,
            b.customer.name,
            b.customer.status,
            b.customer.cust_level,
            b.customer.create_date,
            b.subscribers[0].msisdn,
        )
        for b in bundles
    )
    return [
        *boss_store.rows(bundles),
        *billing_store.rows(bundles),
        *care_store.rows(bundles),
        loyalty_store.rows(seed, sources),
    ]


def _chunk_rows_args(args: tuple[int, int, int]) -> tuple[int, list[list[tuple]]]:
    seed, start, stop = args
    return stop - start, chunk_rows(seed, start, stop)


def _chunks(seed: int, customers: int, workers: int) -> Iterator[tuple[int, list[list[tuple]]]]:
    ranges = [(seed, start, min(start + CHUNK, customers)) for start in range(0, customers, CHUNK)]
    if workers <= 1:
        for args in ranges:
            yield _chunk_rows_args(args)
        return
    # spawn, not fork: the caller may have threads (a test runner, an event loop).
    context = multiprocessing.get_context("spawn")
    # (The resource tracker first: starting it unblocks SIGINT in the caller, bpo-33613.)
    resource_tracker.ensure_running()
    pool = None
    try:
        with _interrupts_held():
            pool = context.Pool(workers, initializer=_leave_interrupts_to_the_parent)
        # imap keeps index order, so the stores are byte-identical whatever the worker count.
        yield from pool.imap(_chunk_rows_args, ranges, chunksize=1)
    finally:
        # Also on Ctrl-C or when the consumer stops early: no worker outlives the seed, and
        # joining them lets the pool release its semaphores (else "leaked semaphore" warnings).
        if pool is not None:
            pool.terminate()
            pool.join()


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C waits for the end of the block, then raises KeyboardInterrupt as usual.

    Ctrl-C reaches the whole process group, workers included, even while they import: the
    processes started inside begin with SIGINT blocked (a signal mask survives fork and exec)
    until their initializer ignores it. And the parent must not be interrupted half-way
    through starting one (the worker would die of a truncated hand-over, with a traceback).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives Python's signal handlers
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending SIGINT lands in `held`
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def _leave_interrupts_to_the_parent() -> None:
    # A worker that died of Ctrl-C would print a traceback and leave the pool waiting for its
    # chunk (the pool replaces the worker, not the task); the parent stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _temporary(data_dir: Path, system: str) -> Path:
    return data_dir / f"{system}.db.seeding"


def _remove(path: Path) -> None:
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        candidate.unlink(missing_ok=True)


def _finish(conn: sqlite3.Connection, meta: StoreMeta) -> None:
    """Index, mark, commit and switch a freshly loaded store to WAL for serving."""
    for ddl in _INDEXES[meta.system]:
        conn.execute(ddl)
    write_meta(conn, meta)
    conn.execute("COMMIT")
    conn.execute("PRAGMA locking_mode=NORMAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def seed_dataset(
    data_dir: Path,
    customers: int,
    seed: int,
    progress: Progress | None = None,
    force: bool = False,
    workers: int | None = None,
) -> SeedResult:
    """Write the three stores of ``customers`` customers of dataset ``seed`` into ``data_dir``.

    Skips (``skipped=True``) when the dir already holds that seed and count, unless ``force``.
    """
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise ValueError(f"customers must be between 1 and {MAX_CUSTOMERS}")
    data_dir = Path(data_dir)
    started = time.perf_counter()
    if not force and is_seeded(data_dir, customers, seed):
        built = ensure_loyalty_store(data_dir)
        return SeedResult(
            data_dir, customers, seed, time.perf_counter() - started, True, loyalty_built=built
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if customers >= PARALLEL_FROM else 1

    conns: dict[str, sqlite3.Connection] = {}
    complete = False
    try:
        for system in _STORES:
            path = _temporary(data_dir, system)
            _remove(path)
            conn = open_for_loading(path)
            conn.execute("BEGIN")
            for ddl in _TABLES[system]:
                conn.execute(ddl)
            conns[system] = conn
        with closing(_chunks(seed, customers, workers)) as chunks:
            for count, row_lists in chunks:
                for (system, insert), rows in zip(_INSERTS, row_lists, strict=True):
                    conns[system].executemany(insert, rows)
                if progress is not None:
                    progress(count)
        # One thread per store: SQLite releases the GIL while it sorts, so the index builds
        # of the three files overlap.
        with ThreadPoolExecutor(len(conns)) as pool:
            finishing = [
                pool.submit(_finish, conn, _meta(system, seed, customers))
                for system, conn in conns.items()
            ]
            for future in finishing:
                future.result()
        conns.clear()
        for system in _STORES:
            final = store_path(data_dir, system)
            _remove(final)
            os.replace(_temporary(data_dir, system), final)
        complete = True
    finally:
        for conn in conns.values():
            conn.close()
        if not complete:  # interrupted or failed: leave no half-written store behind
            for system in _STORES:
                _remove(_temporary(data_dir, system))
    return SeedResult(data_dir, customers, seed, time.perf_counter() - started, skipped=False)


def _meta(system: str, seed: int, customers: int) -> StoreMeta:
    version = LOYALTY_DATASET_VERSION if system == LOYALTY else DATASET_VERSION
    return StoreMeta(system, seed, customers, version)


_BOSS_SOURCES = """
    SELECT c.customer_no, c.name, c.status, c.cust_level, c.create_date,
           (SELECT s.msisdn FROM subscriber s WHERE s.customer_no = c.customer_no
            ORDER BY s.rowid LIMIT 1)
    FROM customer c ORDER BY c.customer_no"""


def _boss_sources(conn: sqlite3.Connection) -> Iterable[MemberSource]:
    """The members' source facts as boss.db holds them (names and first lines never change)."""
    for customer_no, name, status, level, created, msisdn in conn.execute(_BOSS_SOURCES):
        yield MemberSource(customer_no - CUSTOMER_NO_BASE, name, status, level, created, msisdn)


def ensure_loyalty_store(data_dir: Path) -> bool:
    """Build loyalty.db from boss.db unless it already matches the dir; True if it was built.

    For data dirs seeded before the loyalty system existed. Nothing happens (False) when the
    three core stores do not agree: there is no dataset to derive members from. A lock file
    keeps two processes from building at once.
    """
    data_dir = Path(data_dir)
    core = seeded_meta(data_dir)
    if core is None:
        return False
    wanted = _meta(LOYALTY, core.seed, core.customers)
    if read_meta(store_path(data_dir, LOYALTY)) == wanted:
        return False
    with (data_dir / "loyalty.db.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if read_meta(store_path(data_dir, LOYALTY)) == wanted:  # built while we waited
            return False
        path = _temporary(data_dir, LOYALTY)
        _remove(path)
        boss = sqlite3.connect(f"file:{store_path(data_dir, 'boss')}?mode=ro", uri=True)
        conn = open_for_loading(path)
        try:
            conn.execute("BEGIN")
            for ddl in loyalty_store.TABLES:
                conn.execute(ddl)
            sources = _boss_sources(boss)
            while batch := list(islice(sources, CHUNK)):
                conn.executemany(loyalty_store.INSERT_MEMBER, loyalty_store.rows(core.seed, batch))
            _finish(conn, wanted)
        except BaseException:
            conn.close()
            _remove(path)
            raise
        finally:
            boss.close()
        final = store_path(data_dir, LOYALTY)
        _remove(final)
        os.replace(path, final)
    return True
