"""Item counts read the way a test trusts most: straight from the store's file or through a
fresh Store, never through the process under test.

Reading a SQLite store another process is writing: read-only, with a 30 s busy timeout, so a
test never takes the writer's lock."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

from bulktag.store import Store
from tests.support.waits import wait_until


def _read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def sqlite_counts(db: Path) -> dict[str, int]:
    """Items by state over every job, from the `counts` table (what `status` reads)."""
    con = _read_only(db)
    try:
        rows = con.execute("SELECT state, sum(n) FROM counts GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows if n}
    finally:
        con.close()


def sqlite_job_counts(db: Path, job: int) -> dict[str, int]:
    """One job's items by state, from the `counts` table."""
    con = _read_only(db)
    try:
        rows = con.execute("SELECT state, sum(n) FROM counts WHERE job_id = ? GROUP BY state",
                           (job,)).fetchall()
        return {state: int(n) for state, n in rows if n}
    finally:
        con.close()


def sqlite_item_counts(db: Path, job: int) -> dict[str, int]:
    """One job's items by state, counted row by row in the `items` table (not the counters)."""
    with sqlite3.connect(db) as conn:
        return dict(conn.execute(
            "SELECT state, count(*) FROM items WHERE job_id = ? GROUP BY state", (job,)))


def store_counts(url: str, job_id: int) -> dict[str, int]:
    """One job's items by state through a fresh Store on `url` (either backend), from sync code."""

    async def read() -> dict[str, int]:
        async with await Store.open(url, create=False) as store:
            return dict((await store.counts(job_id)).by_state)

    return asyncio.run(read())


def wait_for_progress(db: Path, proc: subprocess.Popen[bytes], done: int,
                      timeout: float = 60) -> None:
    """Poll the SQLite store `db` that `proc` is working until `done` items succeeded; fails if
    `proc` ends first (it could no longer be interrupted mid-run)."""

    def progressed() -> bool:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if not db.exists():
            return False
        try:
            return sqlite_counts(db).get("succeeded", 0) >= done
        except sqlite3.OperationalError:
            return False  # not migrated yet

    wait_until(progressed, f"{done} items succeeded", timeout=timeout)
