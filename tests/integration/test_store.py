"""The durable queue against both backends, real SQLite files and real PostgreSQL databases:
migrations, the claim/lease/record cycle, exact counters, reaping dead owners, shard leases,
several processes claiming at once, sync-rule claims, and the state machine under random
operations (hypothesis). Every test taking `store_url` or `store` runs once per backend; the
few about one backend's internals (SQLite file permissions, WAL; PostgreSQL connection errors
and reconnects) say so in their name."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from bulktag.arn import Shard
from bulktag.store import (
    ITEM_STATES,
    Conflict,
    ItemState,
    JobOptions,
    JobState,
    NewItem,
    NewSyncRule,
    Outcome,
    Store,
    StoreError,
    is_postgres_url,
    new_owner_token,
    tagset_body,
)
from bulktag.store import postgres as pg_backend
from bulktag.store.postgres import PostgresStore
from tests.support import ROOT
from tests.support.owners import dead_pid
from tests.support.postgres import pg_database_url
from tests.support.sql import dialect, plain_sql
from tests.support.waits import wait_until_async

T = TypeVar("T")

EAST = Shard("aws", "123456789012", "us-east-1")
WEST = Shard("aws", "123456789012", "us-west-2")
TAGS_A = tagset_body({"Owner": "a"}, None)
TAGS_B = tagset_body({"Owner": "b"}, None)

PENDING, LEASED = ItemState.PENDING, ItemState.LEASED
SUCCEEDED, FAILED = ItemState.SUCCEEDED, ItemState.FAILED


def arn(n: int, region: str = "us-east-1") -> str:
    return f"arn:aws:ec2:{region}:123456789012:instance/i-{n:08d}"


def item(n: int, shard: Shard = EAST, tagset: str = TAGS_A) -> NewItem:
    return NewItem(arn(n, shard.region), shard, tagset, line=n)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with await Store.open(store_url) as opened:
        yield opened


async def sql(store: Store, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run `query` (`?` placeholders) on the store's own connection: for checks only."""
    if isinstance(store, PostgresStore):
        parts = query.split("?")
        query = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
    rows = await store._all(query, args)  # type: ignore[attr-defined]
    return [tuple(r) for r in rows]


async def db_truth(url: str, job_id: int) -> dict[str, int]:
    """State counts straight from the items table, read by a separate plain connection."""
    rows = await plain_sql(url, "SELECT state, count(*) FROM items WHERE job_id = ? "
                                "GROUP BY state", job_id)
    return {state: int(n) for state, n in rows}


async def job_with(store: Store, items: list[NewItem]) -> int:
    job = await store.create_job("tag", options=JobOptions(tags={"Owner": "a"}))
    await store.add_items(job, items)
    await store.set_job_state(job, JobState.READY)
    return job


async def shard_id(store: Store, job: int, shard: Shard) -> int:
    """The id of a shard with runnable work in a job."""
    for r in await store.runnable():
        if r.job_id == job and await store.shard(r.shard_id) == shard:
            return r.shard_id
    raise AssertionError(f"no runnable {shard} in job {job}")


def shipped_migrations(url: str) -> list[str]:
    return sorted(p.name for p in (ROOT / "migrations" / dialect(url)).glob("*.sql"))


# -- migrations and opening --------------------------------------------------------------------


async def test_migrations_are_applied_once_and_recorded(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        job = await job_with(store, [item(1)])
    first = await plain_sql(store_url,
                            "SELECT version, name, applied_at FROM schema_migrations "
                            "ORDER BY version")
    shipped = shipped_migrations(store_url)
    assert [(v, n) for v, n, _ in first] == [(int(n[:4]), n) for n in shipped]
    assert shipped[0] == "0001_initial.sql"

    # A second open must not re-run 0001 (it would fail on CREATE TABLE, or wipe data).
    async with await Store.open(store_url) as store:
        assert (await store.counts(job))[PENDING] == 1
    again = await plain_sql(store_url,
                            "SELECT version, name, applied_at FROM schema_migrations "
                            "ORDER BY version")
    assert again == first


async def test_sqlite_store_is_a_private_wal_file(db_path: Path) -> None:
    async with await Store.open(db_path):
        pass
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db_path.stat().st_mode & 0o777 == 0o600
    assert db_path.parent.stat().st_mode & 0o777 == 0o700


async def test_sqlite_opening_something_that_is_not_a_store_fails_cleanly(
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "x.db"
    garbage.write_bytes(b"\x00not sqlite" * 200)
    with pytest.raises(StoreError, match=f"cannot open the store {garbage}: file is not a"):
        await Store.open(garbage)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open the store"):
        await Store.open(blocker / "sub" / "x.db")
    with pytest.raises(StoreError, match="no store at"):
        await Store.open(tmp_path / "missing.db", create=False)


async def test_postgres_open_failures_say_what_to_do_without_the_password(
    pg_admin_url: str,
) -> None:
    # Nothing listens on port 1.
    with pytest.raises(StoreError) as down:
        await Store.open("postgresql://bulktag:s3cret@127.0.0.1:1/queue")
    assert "cannot reach PostgreSQL at 127.0.0.1:1" in str(down.value)
    assert "is the server running" in str(down.value)
    assert "s3cret" not in str(down.value)

    missing = pg_database_url(pg_admin_url, "bulktag_no_such_db")
    with pytest.raises(StoreError, match="has no database 'bulktag_no_such_db': create it"):
        await Store.open(missing)

    server = pg_admin_url.split("://", 1)[1].split("@", 1)[-1]  # host:port/postgres
    with pytest.raises(StoreError, match="refused user 'no_such_role_x'") as role:
        await Store.open(f"postgresql://no_such_role_x:s3cret@{server}")
    assert "s3cret" not in str(role.value)


async def test_postgres_location_never_shows_the_password(pg_url: str) -> None:
    netloc = pg_url.split("://", 1)[1]
    user, rest = netloc.split("@", 1)
    with_password = f"postgresql://{user}:hunter2@{rest}?application_name=x&password=hunter2"
    # trust authentication ignores the password: the open succeeds and must not echo it
    async with await Store.open(with_password) as store:
        assert "hunter2" not in store.location
        assert store.location.startswith(f"postgresql://{user}@")
        assert "application_name=x" in store.location


async def test_postgres_ten_stores_opening_a_new_database_at_once_migrate_it_once(
    pg_url: str,
) -> None:
    stores = await asyncio.gather(*(Store.open(pg_url) for _ in range(10)))
    try:
        rows = await plain_sql(pg_url, "SELECT version, name FROM schema_migrations "
                                       "ORDER BY version")
        assert [n for _, n in rows] == shipped_migrations(pg_url)
        # Every store works on the one schema.
        job = await job_with(stores[0], [item(1)])
        for s in stores:
            assert (await s.counts(job))[PENDING] == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


OPENER = """
import asyncio, sys
from bulktag.store import Store

async def main():
    store = await Store.open(sys.argv[1])
    await store.close()

asyncio.run(main())
"""


async def test_processes_opening_a_new_store_at_once_migrate_it_once(store_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", OPENER, store_url,
                                                  stderr=asyncio.subprocess.PIPE, env=env)
             for _ in range(4)]
    for proc in procs:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    versions = [int(n[:4]) for n in shipped_migrations(store_url)]
    rows = await plain_sql(store_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == versions
    if not is_postgres_url(store_url):
        with sqlite3.connect(store_url) as con:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_wheel_ships_migrations_and_queries(tmp_path: Path) -> None:
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = out.glob("bulktag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for backend in ("sqlite", "postgres"):
        for migration in (ROOT / "migrations" / backend).glob("*.sql"):
            inside = f"bulktag/migrations/{backend}/{migration.name}"
            assert inside in names
            assert zipfile.ZipFile(wheel).read(inside).decode() == migration.read_text()
        assert f"bulktag/store/sql/{backend}.sql" in names


# -- jobs and items ----------------------------------------------------------------------------


async def test_add_items_ignores_a_duplicate_arn_and_counts_it_once(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        job = await store.create_job("tag", options=JobOptions(tags={"Owner": "a"}))
        assert (await store.get_job(job)).state == JobState.PREPARING  # type: ignore[union-attr]
        added = await store.add_items(job, [item(1), item(2), item(1)])
        assert added == 2
        # The same ARN in a later batch (another chunk of the source) is ignored too.
        assert await store.add_items(job, [item(2, tagset=TAGS_B), item(3)]) == 1
        counts = await store.counts(job)
        assert counts.by_state == {PENDING: 3}
        assert counts.total == 3
        # The same ARN in another job is a separate item.
        other = await store.create_job("tag", options=JobOptions())
        assert await store.add_items(other, [item(1)]) == 1
    assert await db_truth(store_url, job) == {PENDING: 3}


async def test_add_items_keeps_input_order_across_chunks_and_shards(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pg_backend, "ADD_CHUNK", 7)
    items = [item(n, EAST if n % 3 else WEST, TAGS_A if n % 2 else TAGS_B) for n in range(40)]
    job = await store.create_job("tag", options=JobOptions())
    assert await store.add_items(job, items) == 40
    rows = [r async for r in store.report_rows(job, page=9)]
    assert [r.arn for r in rows] == [it.arn for it in items]
    assert [r.line for r in rows] == list(range(40))
    assert [r.region for r in rows] == [it.shard.region for it in items if it.shard]
    by_shard = await store.shard_counts(job)
    assert by_shard[EAST][PENDING] == 26 and by_shard[WEST][PENDING] == 14


async def test_random_order_input_keeps_its_order_and_first_rows(store: Store) -> None:
    """Rows of many shards in random ARN order (what real exports look like) go in in ARN
    order for speed, yet item ids follow the input, and a repeated ARN keeps its first row."""
    import random

    rng = random.Random(3)
    numbers = rng.sample(range(100_000), 600)
    items = [item(n, EAST if i % 2 else WEST, TAGS_A if i % 3 else TAGS_B)
             for i, n in enumerate(numbers)]
    for it, line in zip(items, range(600), strict=True):
        it.line = line
    repeat = NewItem(items[10].arn, items[10].shard, TAGS_B if items[10].tagset == TAGS_A
                     else TAGS_A, line=600)
    job = await store.create_job("tag", options=JobOptions())
    assert await store.add_items(job, [*items, repeat]) == 600
    rows = [r async for r in store.report_rows(job, page=97)]
    assert [r.arn for r in rows] == [it.arn for it in items]
    assert [r.line for r in rows] == list(range(600))
    kept = await store.first_rows(job, [items[10].arn])
    assert kept[items[10].arn] == (10, items[10].tagset)


async def test_a_loader_moves_staged_rows_in_commits_and_names_conflicts(store: Store) -> None:
    """Store.loader, the way in for big files: rows staged in random order become items only
    at a commit (counted, each ARN once, the first row kept), invalid rows become invalid
    items, and a repeat with other tags is named with both lines, on both stores."""
    import random

    rng = random.Random(5)
    numbers = rng.sample(range(100_000), 3_000)
    items = [item(n, EAST if i % 2 else WEST, TAGS_A) for i, n in enumerate(numbers)]
    for line, it in enumerate(items, 1):
        it.line = line
    job = await store.create_job("tag", options=JobOptions())
    async with store.loader(job) as loader:
        await loader.stage(items[:1_000])
        assert (await store.counts(job)).total == 0  # staged is not yet the job's
        first = await loader.commit()
        assert (first.staged, first.added, first.n_conflicts) == (1_000, 1_000, 0)
        same = NewItem(items[5].arn, items[5].shard, TAGS_A, line=3_001)
        other = NewItem(items[7].arn, items[7].shard, TAGS_B, line=3_002)
        bad = NewItem("nope", None, None, line=3_003, problem="malformed ARN: nope")
        await loader.stage(items[1_000:])
        await loader.stage([same, other, bad])
        second = await loader.commit()
    assert (second.staged, second.added, second.n_conflicts) == (2_003, 2_001, 1)
    assert second.conflicts == [Conflict(items[7].arn, 3_002, 8, TAGS_A, TAGS_B)]
    counts = await store.counts(job)
    assert counts[PENDING] == 3_000 and counts[ItemState.INVALID] == 1
    rows = [r async for r in store.report_rows(job, page=500)]
    assert sorted(r.arn for r in rows) == sorted([*(it.arn for it in items), "nope"])
    by_arn = {r.arn: r.line for r in rows}
    assert all(by_arn[it.arn] == it.line for it in items)  # the first row of each ARN kept


async def test_a_loader_stages_the_next_rows_while_it_moves_the_last(store: Store) -> None:
    """flush moves one lane while the next rows are staged in the other; moves land in the
    order flushed, so a repeat in a later lane finds the earlier row in the job: the first
    row is kept, an identical repeat adds nothing and one with other tags is named."""
    items = [item(n, EAST if n % 3 else WEST, TAGS_A) for n in range(2_000)]
    for line, it in enumerate(items, 1):
        it.line = line
    job = await store.create_job("tag", options=JobOptions())
    async with store.loader(job) as loader:
        await loader.stage(items[:1_000])
        assert await loader.flush() is None  # nothing moved before this one
        assert loader.staged == 0  # the next rows go to the other lane
        again = NewItem(items[3].arn, items[3].shard, TAGS_A, line=2_001)
        other = NewItem(items[4].arn, items[4].shard, TAGS_B, line=2_002)
        await loader.stage([*items[1_000:], again, other])
        assert loader.staged == 1_002
        first = await loader.flush()
        assert first is not None and (first.staged, first.added) == (1_000, 1_000)
        second = await loader.settle()
        assert await loader.settle() is None
    assert second is not None and (second.staged, second.added) == (1_002, 1_000)
    assert (second.n_conflicts, second.conflicts) == (
        1, [Conflict(items[4].arn, 2_002, 5, TAGS_A, TAGS_B)])
    assert (await store.counts(job))[PENDING] == 2_000
    rows = {r.arn: r.line async for r in store.report_rows(job, page=700)}
    assert rows[items[3].arn] == 4 and rows[items[4].arn] == 5  # the first rows kept


async def test_a_postgres_load_takes_rows_another_session_inserts_meanwhile(
        pg_url: str) -> None:
    """The PostgreSQL move skips ARNs the job holds by an anti-join, which does not see a row
    another session has not committed yet (a loader reaped as gone while it still ran): the
    unique index refuses the insert, and the move goes again taking what is there."""
    import asyncpg

    items = [item(n) for n in range(500)]
    async with await Store.open(pg_url) as store:
        job = await store.create_job("tag", options=JobOptions())
        other = await asyncpg.connect(pg_url)
        try:
            async with store.loader(job) as loader:
                await loader.stage(items)
                shard, tagset = (await plain_sql(
                    pg_url, "SELECT s.id, t.id FROM shards s, tagsets t"))[0]
                lingering = other.transaction()
                await lingering.start()
                await other.execute(
                    "INSERT INTO items (job_id, arn, shard_id, tagset_id, state) "
                    "VALUES ($1, $2, $3, $4, 'pending')", job, items[7].arn, shard, tagset)
                moving = asyncio.ensure_future(loader.commit())
                await asyncio.sleep(0.5)  # the move waits on the uncommitted row
                assert not moving.done()
                await lingering.commit()
                moved = await asyncio.wait_for(moving, 30)
        finally:
            await other.close()
        assert (moved.staged, moved.added, moved.n_conflicts) == (500, 499, 0)
        assert (await store.counts(job))[PENDING] == 500
        held = await plain_sql(pg_url, "SELECT count(*) FROM items WHERE job_id = ?", job)
        assert held == [(500,)]


async def test_a_big_postgres_load_leaves_the_planner_fresh_statistics(pg_url: str) -> None:
    """Before autovacuum analyzed a freshly loaded 10M-item job, each report page read and
    sorted the whole job (3.8 s a page): a loader analyzes items once it moved 100,000 rows."""
    items = [item(n) for n in range(pg_backend.ANALYZE_AFTER)]
    async with await Store.open(pg_url) as store:
        job = await store.create_job("tag", options=JobOptions())
        async with store.loader(job) as loader:
            await loader.stage(items[:1_000])
            await loader.commit()
            assert await plain_sql(pg_url, "SELECT last_analyze FROM pg_stat_user_tables "
                                           "WHERE relname = 'items'") == [(None,)]
            await loader.stage(items[1_000:])
            await loader.commit()
    [(analyzed,)] = await plain_sql(
        pg_url, "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'items'")
    assert analyzed is not None


async def test_invalid_items_are_counted_with_their_reason(store: Store) -> None:
    job = await store.create_job("tag", options=JobOptions())
    bad = NewItem("not-an-arn", None, None, line=7, problem="malformed ARN: nope")
    assert await store.add_items(job, [item(1), bad]) == 2
    assert (await store.counts(job)).by_state == {PENDING: 1, ItemState.INVALID: 1}
    assert await store.error_counts(job) == [("InvalidInput", 1)]
    assert await store.error_example(job, "InvalidInput") == (
        "not-an-arn", None, "malformed ARN: nope")
    shards = await store.shard_counts(job)
    assert shards[EAST][PENDING] == 1
    assert shards[None][ItemState.INVALID] == 1


async def test_counts_stay_exact_through_the_whole_item_lifecycle(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        job = await job_with(store, [item(n) for n in range(10)] + [item(100, WEST)])
        east = await shard_id(store, job, EAST)
        me = new_owner_token()

        claimed = await store.claim(me, job, east, 6, lease_seconds=60)
        assert len(claimed) == 6
        assert (await store.counts(job)).by_state == {PENDING: 5, LEASED: 6}

        ids = [c.id for c in claimed]
        written = await store.record(me, [
            Outcome(ids[0], SUCCEEDED, 1),
            Outcome(ids[1], SUCCEEDED, 1),
            Outcome(ids[2], FAILED, 1, error_code="AccessDeniedException", http_status=403,
                    message="denied"),
            Outcome(ids[3], FAILED, 1, error_code="InvalidParameterException",
                    http_status=400, message="bad"),
            Outcome(ids[4], PENDING, 1, next_attempt_at=0,
                    error_code="InternalServiceException", http_status=500),
        ])
        assert written == 5
        assert (await store.counts(job)).by_state == {
            PENDING: 6, LEASED: 1, SUCCEEDED: 2, FAILED: 2}
        assert sorted(await store.error_counts(job)) == [
            ("AccessDeniedException", 1), ("InvalidParameterException", 1)]
        assert await store.error_example(job, "AccessDeniedException") == (
            claimed[2].arn, 403, "denied")

        assert await store.release_owner(me) == 1
        assert (await store.counts(job)).by_state == {PENDING: 7, SUCCEEDED: 2, FAILED: 2}

        assert await store.retry_failed(job, "AccessDeniedException") == 1
        assert (await store.counts(job)).by_state == {PENDING: 8, SUCCEEDED: 2, FAILED: 1}
        assert await store.error_counts(job) == [("InvalidParameterException", 1)]

        claimed = await store.claim(me, job, east, 3, lease_seconds=60)
        assert len(claimed) == 3
        assert await store.cancel_items(job, "cancelled by the operator") == 8
        counts = await store.counts(job)
        assert counts.by_state == {SUCCEEDED: 2, FAILED: 1, ItemState.CANCELLED: 8}
        assert counts.open == 0 and counts.done == 11
        by_shard = await store.shard_counts(job)
        assert by_shard[WEST].by_state == {ItemState.CANCELLED: 1}
        assert by_shard[EAST].by_state == {SUCCEEDED: 2, FAILED: 1, ItemState.CANCELLED: 7}
        # A cancelled item's lease is gone: recording it now changes nothing.
        assert await store.record(me, [Outcome(claimed[0].id, SUCCEEDED, 1)]) == 0
        assert await store.finished_jobs() == [job]
    assert await db_truth(store_url, job) == {SUCCEEDED: 2, FAILED: 1, ItemState.CANCELLED: 8}


async def test_status_reads_the_counters_not_the_items(store: Store) -> None:
    """`counts` (what `status` shows) on a 10-million-item job must not count items: skew the
    counters behind the store's back and they are what it reports."""
    job = await job_with(store, [item(n) for n in range(3)])
    await sql(store, "UPDATE counts SET n = n + 10000000 WHERE job_id = ? AND state = ?",
              job, "pending")
    assert (await store.counts(job))[PENDING] == 10_000_003
    assert (await store.totals()).items_by_state[PENDING] == 10_000_003


async def test_retry_failed_without_code_requeues_every_failure(store: Store) -> None:
    job = await job_with(store, [item(n) for n in range(3)])
    shard = (await store.runnable())[0].shard_id
    me = new_owner_token()
    c = await store.claim(me, job, shard, 3, lease_seconds=60)
    await store.record(me, [Outcome(c[0].id, FAILED, 8, error_code="X"),
                            Outcome(c[1].id, FAILED, 1, error_code="Y"),
                            Outcome(c[2].id, SUCCEEDED, 1)])
    assert await store.retry_failed(job) == 2
    again = await store.claim(me, job, shard, 10, lease_seconds=60)
    assert sorted(x.id for x in again) == sorted([c[0].id, c[1].id])
    assert all(x.attempts == 0 for x in again)  # a retried item gets its budget back
    assert await store.error_counts(job) == []


async def test_jobs_state_priority_rate_options_and_delete(store: Store) -> None:
    job = await store.create_job("untag", options=JobOptions(keys=["a"], failure_ratio=0.5),
                                 name="n", priority=3, owner=new_owner_token())
    got = await store.get_job(job)
    assert got is not None and got.name == "n" and got.operation == "untag"
    assert got.options.keys == ["a"] and got.options.failure_ratio == 0.5
    assert got.priority == 3 and got.state == JobState.PREPARING

    await store.set_job_state(job, JobState.ACTIVE)
    await store.set_job_state(job, JobState.FAILED, reason="too many failures")
    got = await store.get_job(job)
    assert got is not None and got.reason == "too many failures"
    assert got.started_at is not None and got.finished_at is not None
    await store.set_job_state(job, JobState.READY)
    got = await store.get_job(job)
    assert got is not None and got.reason is None and got.finished_at is None

    await store.set_job_priority(job, 9)
    await store.set_job_rate(job, 12.5)
    await store.merge_job_options(job, {"exported": {"to": "s3://b/k"}, "failure_ratio": None,
                                        "custom": 1})
    got = await store.get_job(job)
    assert got is not None and got.priority == 9 and got.rate == 12.5
    assert got.options.exported == {"to": "s3://b/k"}
    assert got.options.failure_ratio is None and got.options.keys == ["a"]
    assert got.options.extra == {"custom": 1}
    assert [j.id for j in await store.list_jobs()] == [job]

    await store.add_items(job, [item(1), NewItem("bad", None, None, problem="x")])
    await store.delete_job(job)
    assert await store.get_job(job) is None
    assert (await store.counts(job)).total == 0 and await store.error_counts(job) == []


async def test_merge_job_options_replaces_a_nested_object_whole(store_url: str) -> None:
    """The contract: top-level keys are replaced, like JobOptions.merged."""
    async with await Store.open(store_url) as store:
        job = await store.create_job("tag", options=JobOptions(exported={"a": 1}))
        await store.merge_job_options(job, {"exported": {"b": 2}})
        got = await store.get_job(job)
        assert got is not None
        expected = JobOptions(exported={"a": 1}).merged({"exported": {"b": 2}}).exported
        assert got.options.exported == expected == {"b": 2}


async def test_skip_items_and_drift(store: Store) -> None:
    job = await job_with(store, [item(n) for n in range(3)])
    assert await store.skip_items(job, [(arn(0), "compliant"), (arn(1), "guardrail"),
                                        (arn(99), "not in the job")]) == 2
    assert (await store.counts(job)).by_state == {ItemState.SKIPPED: 2, PENDING: 1}
    rows = {r.arn: r for r in [r async for r in store.report_rows(job)]}
    assert rows[arn(0)].message == "compliant" and rows[arn(0)].state == ItemState.SKIPPED
    me = new_owner_token()
    (c,) = await store.claim(me, job, (await store.runnable())[0].shard_id, 5, lease_seconds=60)
    await store.record(me, [Outcome(c.id, SUCCEEDED, 1)])
    page = [p async for p in store.succeeded_items(job)]
    assert [[s.id for s in p] for p in page] == [[c.id]]
    await store.set_drift([(c.id, "Owner: a -> b")])
    assert await sql(store, "SELECT drift FROM items WHERE id = ?", c.id) == [("Owner: a -> b",)]


async def test_report_rows_pages_through_every_item_once(store: Store) -> None:
    job = await job_with(store, [item(n) for n in range(7)])
    await job_with(store, [item(n) for n in range(3)])  # another job's items interleave
    ids = [r.id async for r in store.report_rows(job, page=2)]
    assert len(ids) == 7 and ids == sorted(set(ids))
    assert [r async for r in store.report_rows(job, unsuccessful_only=True, page=2)] == []


# -- claims ------------------------------------------------------------------------------------


async def test_claim_leases_only_due_items_of_its_job_and_shard(store: Store) -> None:
    job = await job_with(store, [item(n) for n in range(4)] + [item(9, WEST)])
    other = await job_with(store, [item(n) for n in range(4)])
    east = await shard_id(store, job, EAST)
    me = new_owner_token()
    now = 1_000_000.0

    first = await store.claim(me, job, east, 4, lease_seconds=60, now=now)
    await store.record(me, [Outcome(first[0].id, PENDING, 1, next_attempt_at=now + 30),
                            Outcome(first[1].id, PENDING, 1, next_attempt_at=now - 1)])
    await store.release_owner(me)
    # Not yet due: the backed-off item stays put; the other three come back.
    again = await store.claim(me, job, east, 10, lease_seconds=60, now=now)
    assert first[0].id not in {c.id for c in again}
    assert len(again) == 3
    assert await store.next_due(job, east) == now + 30
    assert await store.claim(me, job, east, 10, lease_seconds=60, now=now) == []
    # Once due, it is claimed, with the attempts it already spent.
    late = await store.claim(me, job, east, 10, lease_seconds=60, now=now + 31)
    assert [(c.id, c.attempts) for c in late] == [(first[0].id, 1)]
    # The other job's items and the other shard's were never touched.
    assert (await store.counts(other))[PENDING] == 4
    assert (await store.shard_counts(job))[WEST][PENDING] == 1


async def test_claim_leases_nothing_of_a_paused_or_ended_job(store: Store) -> None:
    """What undo relies on: once a job is paused (or ended) no worker leases its items, even one
    whose list of runnable work predates the pause (route claims alike)."""
    job = await job_with(store, [item(n) for n in range(4)])
    east = await shard_id(store, job, EAST)
    me = new_owner_token()
    for state in (JobState.PAUSED, JobState.CANCELLED, JobState.COMPLETED):
        await store.set_job_state(job, state)
        assert await store.claim(me, job, east, 10, lease_seconds=60) == []
        assert await store.claim(me, job, east, 10, lease_seconds=60, route="tagging") == []
    await store.set_job_state(job, JobState.ACTIVE)
    assert len(await store.claim(me, job, east, 10, lease_seconds=60)) == 4


async def test_claim_groups_by_tagset_and_respects_limit(store: Store) -> None:
    items = [item(n, tagset=TAGS_A if n % 2 else TAGS_B) for n in range(30)]
    job = await job_with(store, items)
    shard = (await store.runnable())[0].shard_id
    me = new_owner_token()
    batch = await store.claim(me, job, shard, 10, lease_seconds=60)
    assert len(batch) == 10
    assert len({c.tagset_id for c in batch}) == 1  # 15 of each: the first fills the batch
    tagsets = {await store.tagset(c.tagset_id) for c in batch}
    assert tagsets <= {TAGS_A, TAGS_B}
    rest = await store.claim(me, job, shard, 100, lease_seconds=60)
    assert len(rest) == 20
    # The first tagset is drained before the next is touched: 5 of one, 15 of the other.
    per_tagset = Counter(c.tagset_id for c in rest)
    assert per_tagset[batch[0].tagset_id] == 5
    assert sorted(per_tagset.values()) == [5, 15]
    assert {c.id for c in batch}.isdisjoint({c.id for c in rest})


async def test_record_ignores_an_item_whose_lease_was_lost(store: Store) -> None:
    job = await job_with(store, [item(1), item(2)])
    shard = (await store.runnable())[0].shard_id
    old, new = new_owner_token(), new_owner_token()
    mine = await store.claim(old, job, shard, 2, lease_seconds=60)
    await store.release_owner(old)  # presumed dead; its leases return to the queue
    theirs = await store.claim(new, job, shard, 2, lease_seconds=60)
    assert {c.id for c in theirs} == {c.id for c in mine}

    # The old owner comes back and reports: it must not overwrite the new holder's lease.
    assert await store.record(old, [Outcome(c.id, FAILED, 1, error_code="Late")
                                    for c in mine]) == 0
    assert (await store.counts(job)).by_state == {LEASED: 2}
    assert await store.record(new, [Outcome(c.id, SUCCEEDED, 1) for c in theirs]) == 2
    # Recording twice is a no-op: the item is no longer leased.
    assert await store.record(new, [Outcome(c.id, FAILED, 2) for c in theirs]) == 0
    assert (await store.counts(job)).by_state == {SUCCEEDED: 2}
    assert await store.error_counts(job) == []


async def test_record_by_a_non_holder_writes_nothing(store: Store) -> None:
    job = await job_with(store, [item(n) for n in range(4)])
    shard = (await store.runnable())[0].shard_id
    holder, stranger = new_owner_token(), new_owner_token()
    held = await store.claim(holder, job, shard, 2, lease_seconds=60)
    before = await sql(store, "SELECT id, state, attempts, lease_owner, error_code, message "
                              "FROM items WHERE job_id = ? ORDER BY id", job)
    pending = [r[0] for r in before if r[1] == "pending"]
    # Neither another owner's leased items nor items nobody leased.
    assert await store.record(stranger, [
        *(Outcome(c.id, SUCCEEDED, 5, message="not mine") for c in held),
        *(Outcome(i, FAILED, 5, error_code="Nope") for i in pending),
    ]) == 0
    assert await sql(store, "SELECT id, state, attempts, lease_owner, error_code, message "
                            "FROM items WHERE job_id = ? ORDER BY id", job) == before
    assert (await store.counts(job)).by_state == {PENDING: 2, LEASED: 2}
    assert await store.error_counts(job) == []


async def test_keep_before_writes_only_the_holders_first_image(store: Store) -> None:
    job = await job_with(store, [item(n) for n in range(3)])
    shard = (await store.runnable())[0].shard_id
    holder, stranger = new_owner_token(), new_owner_token()
    held = await store.claim(holder, job, shard, 2, lease_seconds=60)
    pending = [r[0] for r in await sql(store, "SELECT id FROM items WHERE job_id = ? AND "
                                              "state = 'pending'", job)]
    assert await store.keep_before(stranger, [(c.id, '{"k":"x"}') for c in held]) == 0
    # Only the holder's leased items, not one nobody leased.
    assert await store.keep_before(holder, [*((c.id, '{"k":"1"}') for c in held),
                                            (pending[0], '{"k":"p"}')]) == 2
    # A later attempt's image does not replace the first.
    assert await store.keep_before(holder, [(c.id, '{"k":"2"}') for c in held]) == 0
    await store.release_owner(holder)
    again = await store.claim(stranger, job, shard, 3, lease_seconds=60)
    assert {c.id: c.before for c in again} == {
        **{c.id: '{"k":"1"}' for c in held}, pending[0]: None}
    # Once recorded, an item is no longer leased: nothing lands.
    await store.record(stranger, [Outcome(c.id, SUCCEEDED, 1) for c in again])
    assert await store.keep_before(stranger, [(c.id, '{"k":"3"}') for c in again]) == 0


async def test_two_owners_claiming_one_shard_at_once_never_share_an_item(
    store_url: str,
) -> None:
    n_items = 600
    a, b = await Store.open(store_url), await Store.open(store_url)
    try:
        job = await job_with(a, [item(n) for n in range(n_items)])
        shard = (await a.runnable())[0].shard_id

        async def drain(store: Store, owner: str) -> list[int]:
            got: list[int] = []
            while batch := await store.claim(owner, job, shard, 13, lease_seconds=600):
                got += [c.id for c in batch]
                await store.record(owner, [Outcome(c.id, SUCCEEDED, 1) for c in batch])
                await asyncio.sleep(0.01)  # the API calls a real worker makes meanwhile
            return got

        first, second = await asyncio.gather(drain(a, new_owner_token()),
                                             drain(b, new_owner_token()))
        assert not set(first) & set(second), "an item was claimed twice"
        assert len(first) + len(second) == n_items
        assert first and second, "the owners did not actually compete"
        assert (await a.counts(job)).by_state == {SUCCEEDED: n_items}
    finally:
        await a.close()
        await b.close()
    assert await db_truth(store_url, job) == {SUCCEEDED: n_items}


# -- dead processes, stale owners, shard leases ------------------------------------------------


async def test_reap_dead_owners_releases_a_dead_pids_leases(store: Store) -> None:
    job = await job_with(store, [item(n) for n in range(5)])
    shard = (await store.runnable())[0].shard_id
    dead = f"{socket.gethostname()}:{dead_pid()}:deadbeef"
    alive = new_owner_token()
    await store.register_owner(dead)
    await store.register_owner(alive)
    await store.claim(dead, job, shard, 3, lease_seconds=3600)
    await store.claim(alive, job, shard, 2, lease_seconds=3600)

    assert await store.reap_dead_owners(stale_seconds=90) == 3
    assert (await store.counts(job)).by_state == {PENDING: 3, LEASED: 2}
    assert {w.owner for w in await store.workers()} == {alive}
    assert await store.reap_dead_owners(stale_seconds=90) == 0


async def test_reap_dead_owners_releases_stale_heartbeats_and_expired_leases(
    store: Store,
) -> None:
    job = await job_with(store, [item(n) for n in range(6)])
    shard = (await store.runnable())[0].shard_id
    # A live pid on another host (or a hung process here) that stopped heartbeating.
    silent = f"otherhost:{os.getpid()}:cafe0001"
    fresh = f"otherhost:{os.getpid()}:cafe0002"
    me = new_owner_token()
    for owner in (silent, fresh, me):
        await store.register_owner(owner)
    await sql(store, "UPDATE owners SET heartbeat_at = ? WHERE owner = ?",
              time.time() - 1000, silent)
    await store.claim(silent, job, shard, 2, lease_seconds=3600)
    await store.claim(fresh, job, shard, 2, lease_seconds=-1)  # lease already expired
    await store.claim(me, job, shard, 2, lease_seconds=3600)

    released = await store.reap_dead_owners(stale_seconds=90, me=me)
    assert released == 4
    assert (await store.counts(job)).by_state == {PENDING: 4, LEASED: 2}
    leased = await sql(store, "SELECT DISTINCT lease_owner FROM items WHERE state = 'leased'")
    assert [r[0] for r in leased] == [me]
    assert {w.owner for w in await store.workers()} == {fresh, me}


async def test_a_stale_owners_items_and_shards_are_taken_over_by_another(
    store_url: str,
) -> None:
    """Two workers (two stores, as on two hosts): the first stops heartbeating; the second reaps
    it and takes its shard and its leased items."""
    a, b = await Store.open(store_url), await Store.open(store_url)
    try:
        job = await job_with(a, [item(n) for n in range(4)])
        shard = (await a.runnable())[0].shard_id
        gone, live = f"host-a:{os.getpid()}:0000aaaa", f"host-b:{os.getpid()}:0000bbbb"
        await a.register_owner(gone)
        await b.register_owner(live)
        assert await a.acquire_shards(gone, [shard], lease_seconds=600) == {shard}
        held = await a.claim(gone, job, shard, 3, lease_seconds=600)
        assert await b.acquire_shards(live, [shard], lease_seconds=600) == set()
        assert await b.claim(live, job, shard, 10, lease_seconds=600) != []  # the 4th item

        await sql(b, "UPDATE owners SET heartbeat_at = ? WHERE owner = ?",
                  time.time() - 1000, gone)
        assert await b.reap_dead_owners(stale_seconds=90, me=live) == 3
        assert (await b.shard_holders()) == {}
        assert await b.acquire_shards(live, [shard], lease_seconds=600) == {shard}
        taken = await b.claim(live, job, shard, 10, lease_seconds=600)
        assert {c.id for c in taken} == {c.id for c in held}
        # The stale owner wakes up: its late outcomes land nowhere, and it cannot take the
        # shard back while the new holder's lease runs.
        assert await a.record(gone, [Outcome(c.id, FAILED, 1) for c in held]) == 0
        assert await a.acquire_shards(gone, [shard], lease_seconds=600) == set()
        assert await b.record(live, [Outcome(c.id, SUCCEEDED, 1) for c in taken]) == 3
        assert (await a.shard_holders())[shard][0] == live
    finally:
        await a.close()
        await b.close()


async def test_shard_leases_are_held_by_one_owner_until_expiry_or_release(
    store: Store,
) -> None:
    a, b = "host-a:1:aaaa", "host-b:2:bbbb"
    assert await store.acquire_shards(a, [1, 2], lease_seconds=600) == {1, 2}
    assert await store.acquire_shards(b, [1, 2, 3], lease_seconds=600) == {3}
    assert await store.acquire_shards(a, [1, 1, 2], lease_seconds=600) == {1, 2}  # renewal
    holders = await store.shard_holders()
    assert {s: o for s, (o, _) in holders.items()} == {1: a, 2: a, 3: b}
    assert holders[1][1] > time.time() + 500

    await store.release_shards(a, [2])
    assert await store.acquire_shards(b, [1, 2], lease_seconds=600) == {2}
    # A's lease on shard 1 runs out (renewed with a lease already over): B may take it.
    assert await store.acquire_shards(a, [1], lease_seconds=-1) == {1}
    assert 1 not in await store.shard_holders()
    assert await store.acquire_shards(b, [1], lease_seconds=600) == {1}
    assert await store.acquire_shards(a, [1], lease_seconds=600) == set()
    await store.release_shards(b)
    assert await store.shard_holders() == {}
    assert await store.acquire_shards(a, [], lease_seconds=600) == set()


async def test_release_owner_returns_items_discoveries_and_shards(store: Store) -> None:
    job = await job_with(store, [item(n) for n in range(3)])
    shard = (await store.runnable())[0].shard_id
    me = new_owner_token()
    await store.register_owner(me)
    await store.create_discoveries(job, [("aws", "123456789012", "us-east-1")])
    d = await store.claim_discovery(me, None)
    assert d is not None and d.state == "running"
    await store.acquire_shards(me, [shard], lease_seconds=600)
    await store.claim(me, job, shard, 2, lease_seconds=600)
    assert await store.release_owner(me, forget=False) == 2
    assert [x.state for x in await store.job_discoveries(job)] == ["pending"]
    assert await store.shard_holders() == {}
    assert {w.owner for w in await store.workers()} == {me}
    await store.heartbeat(me)
    await store.release_owner(me)
    assert await store.workers() == []


async def test_reap_abandoned_submissions_deletes_a_dead_submitters_job(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        dead = f"{socket.gethostname()}:{dead_pid()}:0badf00d"
        abandoned = await store.create_job("tag", options=JobOptions(), owner=dead)
        await store.add_items(abandoned, [item(1), item(2)])
        live = await store.create_job("tag", options=JobOptions(), owner=new_owner_token())
        await store.add_items(live, [item(1)])
        done = await job_with(store, [item(3)])

        assert await store.reap_abandoned_submissions() == [abandoned]
        assert await store.get_job(abandoned) is None
        assert (await store.get_job(live)).state == JobState.PREPARING  # type: ignore[union-attr]
        assert (await store.get_job(done)).state == JobState.READY  # type: ignore[union-attr]
        assert (await store.counts(abandoned)).total == 0
    assert await db_truth(store_url, abandoned) == {}
    assert await plain_sql(store_url, "SELECT count(*) FROM counts WHERE job_id = ?",
                           abandoned) == [(0,)]


# -- discovery and paused accounts -------------------------------------------------------------


async def test_discoveries_are_claimed_once_each(store_url: str) -> None:
    a, b = await Store.open(store_url), await Store.open(store_url)
    try:
        job = await job_with(a, [])
        await a.create_discoveries(job, [("aws", "", r) for r in ("r1", "r2", "r3")])
        await a.create_discoveries(job, [("aws", "", "r1")])  # already there: ignored
        got = await asyncio.gather(*(s.claim_discovery(f"o{i}", {job})
                                     for i, s in enumerate((a, b, a, b))))
        claimed = [d for d in got if d is not None]
        assert sorted(d.region for d in claimed) == ["r1", "r2", "r3"]
        assert await a.claim_discovery("o9", {job + 1}) is None

        d = claimed[0]
        owner = ["o0", "o1", "o2", "o3"][got.index(d)]
        await a.save_discovery_page(d, owner, "tok", 40)
        await a.save_discovery_page(d, "someone-else", "x", 99)  # not its walk: ignored
        await a.restart_discovery(d)
        await a.finish_discovery(d, "done")
        (row,) = [x for x in await a.job_discoveries(job) if x.id == d.id]
        assert (row.state, row.pages, row.found, row.restarts, row.token) == (
            "done", 1, 40, 1, None)
        assert await a.finished_jobs() == []  # two walks still running
        for x in claimed[1:]:
            await b.finish_discovery(x, "failed", "AccessDenied")
        assert await a.finished_jobs() == [job]
    finally:
        await a.close()
        await b.close()


async def test_paused_accounts_stop_their_shards_from_running(store: Store) -> None:
    other = Shard("aws", "210987654321", "us-east-1")
    job = await job_with(store, [item(1), NewItem("arn:aws:ec2:us-east-1:210987654321:x/y",
                                                  other, TAGS_A)])
    assert len(await store.runnable()) == 2
    assert await store.pause_account(job, "210987654321", "AccessDenied") is True
    assert await store.pause_account(job, "210987654321", "again") is False
    assert [await store.shard(r.shard_id) for r in await store.runnable()] == [EAST]
    assert await store.paused_accounts(job) == [("210987654321", "AccessDenied")]
    assert await store.clear_paused_accounts(job) == 1
    assert len(await store.runnable()) == 2


# -- tag-sync rules ----------------------------------------------------------------------------

RULE = NewSyncRule(name="web", tag_key="app", tag_value="web", resource_query=None,
                   apply={"Team": "web", "Cost": "42"}, regions=["us-east-1"], accounts=[],
                   interval=300)


async def test_sync_rules_add_claim_members_and_finish(store: Store) -> None:
    added = await store.add_sync_rule(RULE)
    assert (added.name, added.apply, added.regions, added.accounts) == (
        "web", {"Team": "web", "Cost": "42"}, ["us-east-1"], [""])
    with pytest.raises(KeyError):
        await store.add_sync_rule(RULE)
    assert await store.due_sync_rules(time.time()) == ["web"]
    claimed = await store.claim_sync_rule("web")
    assert claimed is not None and claimed.next_run_at >= time.time() + 290
    assert await store.claim_sync_rule("web") is None  # not due any more
    assert await store.claim_sync_rule("web", force=True) is not None

    await store.update_sync_members(added, [arn(1), arn(2), arn(2)], [])
    await store.update_sync_members(added, [arn(3)], [arn(1), arn(9)])
    assert await store.sync_member_arns(added.id) == [arn(2), arn(3)]
    await store.finish_sync_rule(added, "ERROR", "boom", 2, 1, [7, 8])
    got = await store.get_sync_rule("web")
    assert got is not None
    assert (got.status, got.error, got.members, got.last_added, got.last_removed,
            got.last_jobs) == ("ERROR", "boom", 2, 2, 1, [7, 8])
    assert (await store.totals()).sync_rules_by_status == {"ERROR": 1}
    assert [r.name for r in await store.list_sync_rules()] == ["web"]
    await store.remove_sync_rule(got)
    assert await store.get_sync_rule("web") is None
    assert await store.sync_member_arns(added.id) == []


async def test_a_due_sync_rule_is_claimed_by_one_of_two_concurrent_claimers(
    store_url: str,
) -> None:
    a, b = await Store.open(store_url), await Store.open(store_url)
    try:
        await a.add_sync_rule(RULE)
        for _ in range(5):
            await sql(a, "UPDATE sync_rules SET next_run_at = 0 WHERE name = ?", "web")
            won = await asyncio.gather(a.claim_sync_rule("web"), b.claim_sync_rule("web"))
            assert sum(r is not None for r in won) == 1
    finally:
        await a.close()
        await b.close()


# -- several processes -------------------------------------------------------------------------

CLAIMER = """
import asyncio, json, os, sys, time
from bulktag.store import ItemState, Outcome, Store, new_owner_token

async def main(url, job, shard, go):
    store = await Store.open(url)
    me = new_owner_token()
    await store.register_owner(me)
    open(f"{go}.ready.{os.getpid()}", "w").close()  # the barrier: this one is ready
    while not os.path.exists(go):
        time.sleep(0.005)
    got = []
    while True:
        batch = await store.claim(me, job, shard, 7, lease_seconds=600)
        if not batch:
            break
        got += [c.id for c in batch]
        await store.record(me, [Outcome(c.id, ItemState.SUCCEEDED, c.attempts + 1)
                                for c in batch])
    await store.close()
    print(json.dumps(got))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


async def test_processes_claiming_at_once_never_share_an_item(
    store_url: str, tmp_path: Path
) -> None:
    n_items, n_procs = 1500, 4
    async with await Store.open(store_url) as store:
        job = await job_with(store, [item(n) for n in range(n_items)])
        shard = (await store.runnable())[0].shard_id
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLAIMER, store_url, str(job), str(shard), str(go),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        for _ in range(n_procs)
    ]

    def all_ready() -> bool:  # every process started and opened the store; none gave up
        for proc in procs:
            assert proc.returncode is None, "a claimer ended before the start"
        return len(list(tmp_path.glob("go.ready.*"))) == n_procs

    await wait_until_async(all_ready, "every claimer ready", timeout=60)
    go.touch()  # release them at once
    results = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))

    every = [i for ids in results for i in ids]
    assert len(every) == len(set(every)), "an item was claimed twice"
    all_ids = {r[0] for r in await plain_sql(store_url, "SELECT id FROM items WHERE job_id = ?",
                                             job)}
    assert set(every) == all_ids
    assert sum(1 for ids in results if ids) >= 2, "the processes did not actually compete"
    assert await db_truth(store_url, job) == {SUCCEEDED: n_items}
    async with await Store.open(store_url) as store:
        assert (await store.counts(job)).by_state == {SUCCEEDED: n_items}


# -- PostgreSQL: lost connections --------------------------------------------------------------


async def test_postgres_store_survives_its_connections_being_killed(
    pg_url: str, pg_admin_url: str,
) -> None:
    async with await Store.open(pg_url) as store:
        job = await job_with(store, [item(n) for n in range(5)])
        database = pg_url.rsplit("/", 1)[1]
        for _ in range(2):
            # What a server restart does to a pool: every connection it holds dies.
            killed = await plain_sql(
                pg_admin_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = ? AND pid <> pg_backend_pid()", database)
            assert killed and all(k for (k,) in killed)
            shard = (await store.runnable())[0].shard_id
            me = new_owner_token()
            got = await store.claim(me, job, shard, 1, lease_seconds=60)
            assert await store.record(me, [Outcome(c.id, SUCCEEDED, 1) for c in got]) == 1
        assert (await store.counts(job)).by_state == {PENDING: 3, SUCCEEDED: 2}
        await store.ping()


class _DownPool:
    """A pool whose server is gone: every acquire is refused."""

    def __init__(self) -> None:
        self.tries = 0

    def acquire(self) -> Any:
        self.tries += 1
        raise ConnectionRefusedError(111, "Connection refused")


async def test_postgres_store_gives_up_with_a_clear_error(
    pg_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = await Store.open(pg_url)
    assert isinstance(store, PostgresStore)
    real, down = store._pool, _DownPool()
    monkeypatch.setattr(pg_backend, "RETRY_SECONDS", 0.5)
    store._pool = down
    try:
        with pytest.raises(StoreError, match=r"has not answered for \d+ s .*Connection refused"):
            await store.counts(1)
        assert down.tries >= 2  # retried before giving up
        # A write that is not safe to repeat is still retried when it never left.
        down.tries = 0
        with pytest.raises(StoreError, match="has not answered"):
            await store.create_job("tag", options=JobOptions())
        assert down.tries >= 2
    finally:
        store._pool = real
        await store.close()


# -- the state machine, at random --------------------------------------------------------------

OWNERS = ("host-a:1:aaaa", "host-b:2:bbbb")
NOW = 1_000_000.0
CODES = ("AccessDeniedException", "InvalidParameterException")


class StoreMachine(RuleBasedStateMachine):
    """Random claim/record/release/retry/cancel/add against a real store, checked against a
    plain-Python model of every item's state and holder. Each run gets a new store: a new
    SQLite file, or a new PostgreSQL database on the server of `pg_admin_url`."""

    pg_admin_url: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.database: str | None = None
        if self.pg_admin_url:
            self.database = f"bulktag_test_{os.urandom(6).hex()}"
            self.run(plain_sql(self.pg_admin_url, f'CREATE DATABASE "{self.database}"'))
            target = pg_database_url(self.pg_admin_url, self.database)
        else:
            target = str(Path(self.dir.name) / "store.db")
        self.store: Store = self.run(Store.open(target))
        self.state: dict[int, str] = {}  # item id -> state
        self.holder: dict[int, str] = {}  # leased item id -> owner
        self.due: dict[int, bool] = {}
        self.code: dict[int, str | None] = {}
        self.shard_of: dict[int, int] = {}
        self.next_arn = 0
        self.added: list[NewItem] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        if self.pg_admin_url and self.database:
            self.run(plain_sql(self.pg_admin_url,
                               f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        self.loop.close()
        self.dir.cleanup()

    @initialize()
    def make_job(self) -> None:
        self.job = self.run(self.store.create_job("tag", options=JobOptions()))
        self.add(8)
        self.run(self.store.set_job_state(self.job, JobState.READY))

    def add(self, n: int, dupes: int = 0) -> None:
        fresh = [item(self.next_arn + k, EAST if k % 2 else WEST, TAGS_A if k % 3 else TAGS_B)
                 for k in range(n)]
        old = self.added[:dupes]  # ARNs already in the job: ignored
        added = self.run(self.store.add_items(self.job, fresh + old))
        self.added += fresh
        self.next_arn += n
        assert added == n
        rows = self.run(sql(self.store, "SELECT id, shard_id FROM items WHERE job_id = ?",
                            self.job))
        for r in rows:
            if r[0] not in self.state:
                self.state[r[0]], self.due[r[0]], self.code[r[0]] = "pending", True, None
                self.shard_of[r[0]] = r[1]

    @rule(n=st.integers(1, 4), dupes=st.integers(0, 3))
    def add_more(self, n: int, dupes: int) -> None:
        self.add(n, dupes)

    @rule(owner=st.sampled_from(OWNERS), limit=st.integers(1, 6), west=st.booleans())
    def claim(self, owner: str, limit: int, west: bool) -> None:
        shard = sorted(set(self.shard_of.values()))[1 if west else 0]
        got = self.run(self.store.claim(owner, self.job, shard, limit, lease_seconds=600,
                                        now=NOW))
        available = [i for i, s in self.state.items()
                     if s == "pending" and self.due[i] and self.shard_of[i] == shard]
        assert len(got) == min(limit, len(available))
        for c in got:
            assert c.id in available
            self.state[c.id], self.holder[c.id] = "leased", owner

    @rule(owner=st.sampled_from(OWNERS), data=st.data())
    def record(self, owner: str, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.state)), max_size=5, unique=True))
        outcomes = []
        expected = 0
        for i in ids:
            kind = data.draw(st.sampled_from(("succeeded", "failed", "retry", "later")))
            code = data.draw(st.sampled_from(CODES)) if kind == "failed" else None
            state = ItemState.PENDING if kind in ("retry", "later") else ItemState(kind)
            outcomes.append(Outcome(i, state, 1, next_attempt_at=NOW + 60 if kind == "later"
                                    else 0.0, error_code=code))
            if self.state[i] == "leased" and self.holder[i] == owner:
                expected += 1
                self.state[i], self.code[i] = state, code
                self.due[i] = kind != "later"
                del self.holder[i]
        assert self.run(self.store.record(owner, outcomes)) == expected

    @rule(owner=st.sampled_from(OWNERS))
    def release(self, owner: str) -> None:
        mine = [i for i, o in self.holder.items() if o == owner]
        assert self.run(self.store.release_owner(owner)) == len(mine)
        for i in mine:
            self.state[i] = "pending"
            del self.holder[i]

    @rule(code=st.none() | st.sampled_from(CODES))
    def retry(self, code: str | None) -> None:
        hit = [i for i, s in self.state.items()
               if s == "failed" and (code is None or self.code[i] == code)]
        assert self.run(self.store.retry_failed(self.job, code)) == len(hit)
        for i in hit:
            self.state[i], self.due[i] = "pending", True

    @rule()
    def cancel(self) -> None:
        hit = [i for i, s in self.state.items() if s in ("pending", "leased")]
        assert self.run(self.store.cancel_items(self.job, "test")) == len(hit)
        for i in hit:
            self.state[i] = "cancelled"
            self.holder.pop(i, None)

    @invariant()
    def counters_match_the_items(self) -> None:
        truth = self.run(sql(
            self.store,
            "SELECT shard_id, state, count(*) FROM items WHERE job_id = ? GROUP BY 1, 2",
            self.job))
        counters = self.run(sql(
            self.store, "SELECT shard_id, state, n FROM counts WHERE job_id = ? AND n <> 0",
            self.job))
        assert sorted(counters) == sorted(truth)
        by_state: dict[str, int] = {}
        for s in self.state.values():
            by_state[s] = by_state.get(s, 0) + 1
        assert self.run(self.store.counts(self.job)).by_state == by_state

        errors = self.run(sql(
            self.store, "SELECT coalesce(error_code, 'Unknown'), count(*) FROM items "
            "WHERE job_id = ? AND state IN ('failed', 'invalid') GROUP BY 1", self.job))
        assert sorted(self.run(self.store.error_counts(self.job, 100))) == sorted(errors)

    @invariant()
    def every_item_is_where_the_model_says(self) -> None:
        rows = self.run(sql(self.store, "SELECT id, state, lease_owner FROM items "
                                        "WHERE job_id = ?", self.job))
        assert {r[0]: r[1] for r in rows} == self.state
        assert all(r[1] in ITEM_STATES for r in rows)
        assert {r[0]: r[2] for r in rows if r[2] is not None} == self.holder


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_store_state_machine(backend: str, request: pytest.FixtureRequest) -> None:
    admin = request.getfixturevalue("pg_admin_url") if backend == "postgres" else None
    machine = type("Machine", (StoreMachine,), {"pg_admin_url": admin})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=25, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    ))
