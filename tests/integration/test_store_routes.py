"""Routes stored with items (issue 15), against both backends: each item keeps the route it was
submitted with, work is runnable and claimed per (shard, route), counters are kept per route,
reports and store copies carry it; and a store made before routes existed (SQLite at
migration 0006, PostgreSQL at 0002, with items) migrates: each existing item gets the route
its ARN implies (tagging-api when its job was pinned to it), its counters are split by route,
and claims per route work on it."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from bulktag.arn import ROUTE_EC2, ROUTE_TAGGING, Shard, ec2_route, route_of
from bulktag.store import (
    Counts,
    ItemState,
    JobOptions,
    JobState,
    NewItem,
    Outcome,
    Store,
    is_postgres_url,
    tagset_body,
)
from tests.support import ROOT
from tests.support.sql import dialect, plain_sql

ACCOUNT = "123456789012"
EAST = Shard("aws", ACCOUNT, "us-east-1")
CALLER = Shard("aws", "", "us-east-1")
TAGS = tagset_body({"Owner": "a"}, None)
DIGEST = hashlib.sha256(TAGS.encode()).hexdigest()
OWNER = "test:1:routes"


def instance(n: int) -> str:
    return f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-{n:017x}"


def table(n: int) -> str:
    return f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/t{n}"


def snapshot(n: int) -> str:
    return f"arn:aws:ec2:us-east-1::snapshot/snap-{n:017x}"


def new(arn: str, shard: Shard = EAST) -> NewItem:
    return NewItem(arn, shard, TAGS, route=route_of(arn, None))


async def test_items_keep_their_route_and_are_claimed_per_shard_and_route(
        store_url: str) -> None:
    async with await Store.open(store_url) as store:
        job = await store.create_job("tag", options=JobOptions(tags={"Owner": "a"},
                                                               route="auto"))
        # interleaved, as a source lists them
        await store.add_items(job, [new(a) for n in range(6) for a in (instance(n), table(n))]
                              + [NewItem("not-an-arn", None, None, problem="bad")])
        await store.set_job_state(job, JobState.READY)
        runnable = [(r.job_id, r.route) for r in await store.runnable()]
        assert sorted(runnable) == [(job, ROUTE_EC2), (job, ROUTE_TAGGING)]
        sid = (await store.runnable())[0].shard_id
        by_route = await store.route_counts(job)
        assert by_route[(EAST, ROUTE_EC2)][ItemState.PENDING] == 6
        assert by_route[(EAST, ROUTE_TAGGING)][ItemState.PENDING] == 6
        assert (await store.shard_counts(job))[EAST][ItemState.PENDING] == 12  # routes summed

        ec2 = await store.claim(OWNER, job, sid, 100, lease_seconds=60, route=ROUTE_EC2)
        assert sorted(c.arn for c in ec2) == sorted(instance(n) for n in range(6))
        assert await store.claim(OWNER, job, sid, 100, lease_seconds=60, route=ROUTE_EC2) == []
        assert await store.next_due(job, sid, ROUTE_EC2) is None
        assert await store.next_due(job, sid, ROUTE_TAGGING) == 0.0
        later = time.time() + 60
        await store.record(OWNER, [Outcome(ec2[0].id, ItemState.PENDING, 1, later)]
                           + [Outcome(c.id, ItemState.SUCCEEDED, 1) for c in ec2[1:]])
        assert await store.next_due(job, sid, ROUTE_EC2) == later
        by_route = await store.route_counts(job)
        assert by_route[(EAST, ROUTE_EC2)].by_state == {"pending": 1, "succeeded": 5}
        assert by_route[(EAST, ROUTE_TAGGING)].by_state == {"pending": 6}

        rows = {r.arn: r.route async for r in store.report_rows(job)}
        assert rows[instance(0)] == ROUTE_EC2 and rows[table(0)] == ROUTE_TAGGING
        exported = {r.arn: r.route for r in await store.export_items(0, 100, job)}
        assert exported == rows

        # A job taking the setting's route at its first run: pending items move, counters too.
        assert await store.set_route(job, ROUTE_TAGGING) == 1  # the one pending EC2 item
        by_route = await store.route_counts(job)
        assert by_route[(EAST, ROUTE_EC2)].by_state == {"succeeded": 5}
        assert by_route[(EAST, ROUTE_TAGGING)].by_state == {"pending": 7}


# -- a store made before routes: SQLite at 0006, PostgreSQL at 0002 -----------------------------

OLD_ITEMS = [  # (job, arn, state, error code)
    (1, instance(1), "pending", None),
    (1, instance(2), "succeeded", None),
    (1, table(1), "pending", None),
    (1, table(2), "failed", "AccessDeniedException"),
    (1, snapshot(1), "pending", None),
    (1, f"arn:aws:ec2:us-east-1:{ACCOUNT}:transit-gateway/tgw-1", "pending", None),  # no
    (2, instance(3), "pending", None),  # job 2 was pinned to tagging-api
    (2, table(3), "pending", None),
]


async def _old_store(url: str) -> None:
    """A store at the last migration before routes, with jobs and items written as that
    version's code wrote them (SQLite: counters by add_items; PostgreSQL: by its triggers)."""
    shipped = sorted((ROOT / "migrations" / dialect(url)).glob("*.sql"))
    # 0007 / 0003 (before-images) came after; they and the route migration apply on open.
    before = [p for p in shipped if int(p.name[:4]) < (7 if dialect(url) == "sqlite" else 3)]
    assert [p.name[:4] for p in before][-1] == ("0006" if dialect(url) == "sqlite" else "0002")
    now = time.time()
    jobs = [(1, '{"route": "auto", "tags": {"Owner": "a"}}'),
            (2, '{"route": "tagging-api", "tags": {"Owner": "a"}}')]
    shards = [(1, "aws", ACCOUNT, "us-east-1"), (2, "aws", "", "us-east-1")]
    items = [(n, job, arn, 2 if ":snapshot/" in arn else 1, 1, state, code)
             for n, (job, arn, state, code) in enumerate(OLD_ITEMS, 1)]
    if is_postgres_url(url):
        con = await asyncpg.connect(url)
        try:
            await con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                              "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
            for p in before:
                await con.execute(p.read_text())
                await con.execute("INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                                  int(p.name[:4]), p.name, now)
            for job_id, options in jobs:
                await con.execute("INSERT INTO jobs (id, operation, state, options, created_at, "
                                  "updated_at) VALUES ($1, 'tag', 'active', $2::jsonb, $3, $3)",
                                  job_id, options, now)
            await con.executemany("INSERT INTO shards (id, partition, account, region) "
                                  "VALUES ($1, $2, $3, $4)", shards)
            await con.execute("INSERT INTO tagsets (id, digest, body) VALUES (1, $1, $2)",
                              DIGEST, TAGS)
            await con.executemany("INSERT INTO items (job_id, arn, shard_id, tagset_id, "
                                  "state, error_code) VALUES ($1, $2, $3, $4, $5, $6)",
                                  [i[1:] for i in items])
        finally:
            await con.close()
        return
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(url) as con:
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at REAL NOT NULL)")
        for p in before:
            con.executescript(p.read_text())
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        (int(p.name[:4]), p.name, now))
        con.executemany("INSERT INTO jobs (id, operation, state, options, created_at, "
                        "updated_at) VALUES (?, 'tag', 'active', ?, ?, ?)",
                        [(j, o, now, now) for j, o in jobs])
        con.executemany("INSERT INTO shards VALUES (?, ?, ?, ?)", shards)
        con.execute("INSERT INTO tagsets VALUES (1, ?, ?)", (DIGEST, TAGS))
        con.executemany("INSERT INTO items (id, job_id, arn, shard_id, tagset_id, state, "
                        "error_code) VALUES (?, ?, ?, ?, ?, ?, ?)", items)
        # 0006's code counted inserts itself, per (job, shard, state)
        con.execute("INSERT INTO counts SELECT job_id, shard_id, state, count(*) FROM items "
                    "GROUP BY job_id, shard_id, state")
        con.execute("INSERT INTO error_counts SELECT job_id, error_code, count(*) FROM items "
                    "WHERE state = 'failed' GROUP BY job_id, error_code")


async def test_a_store_made_before_routes_migrates_with_routes_by_arn(store_url: str) -> None:
    await _old_store(store_url)
    async with await Store.open(store_url) as store:
        routes = {arn: route for (arn, route) in await plain_sql(
            store_url, "SELECT arn, route FROM items ORDER BY id")}
        for job, arn, _state, _code in OLD_ITEMS:
            expected = ROUTE_TAGGING if job == 2 else route_of(arn, None)
            assert routes[arn] == expected, arn
        # The migration's rule is arn.py's: every ARN agrees with ec2_route.
        assert {a for a, r in routes.items() if r == ROUTE_EC2} == {
            a for j, a, _, _ in OLD_ITEMS if j == 1 and ec2_route(a) is not None}

        by_route = await store.route_counts(1)
        assert by_route[(EAST, ROUTE_EC2)].by_state == {"pending": 1, "succeeded": 1}
        assert by_route[(EAST, ROUTE_TAGGING)].by_state == {"pending": 2, "failed": 1}
        assert by_route[(CALLER, ROUTE_EC2)].by_state == {"pending": 1}
        assert (await store.route_counts(2)) == {(EAST, ROUTE_TAGGING): Counts({"pending": 2})}
        assert await store.error_counts(1) == [("AccessDeniedException", 1)]

        # Claimed per route, and the new triggers keep the counters per route.
        got = await store.claim(OWNER, 1, 1, 10, lease_seconds=60, route=ROUTE_EC2)
        assert [c.arn for c in got] == [instance(1)]
        await store.record(OWNER, [Outcome(got[0].id, ItemState.FAILED, 1, 0.0, "X", 400, "m")])
        by_route = await store.route_counts(1)
        assert by_route[(EAST, ROUTE_EC2)].by_state == {"failed": 1, "succeeded": 1}
        assert dict(await store.error_counts(1)) == {"AccessDeniedException": 1, "X": 1}
        # New items of the migrated store are counted per route too.
        await store.add_items(1, [new(instance(9)), new(table(9))])
        by_route = await store.route_counts(1)
        assert by_route[(EAST, ROUTE_EC2)][ItemState.PENDING] == 1
        assert by_route[(EAST, ROUTE_TAGGING)][ItemState.PENDING] == 3
        truth = await plain_sql(store_url, "SELECT shard_id, route, state, count(*) FROM items "
                                           "WHERE job_id = 1 GROUP BY shard_id, route, state")
        assert sum(c.total for c in by_route.values()) == sum(int(r[3]) for r in truth)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_an_older_sqlite_store_with_an_insert_trigger_counts_new_items_once(
        store_url: str) -> None:
    # Stores made before add_items counted inserts kept a per-row insert trigger; 0008 drops
    # it (it knew no route), and the code then counts inserts itself: every item once.
    await _old_store(store_url)
    with sqlite3.connect(store_url) as con:
        con.executescript("""
            CREATE TRIGGER items_count_insert AFTER INSERT ON items BEGIN
                INSERT INTO counts (job_id, shard_id, state, n)
                VALUES (NEW.job_id, NEW.shard_id, NEW.state, 1)
                ON CONFLICT (job_id, shard_id, state) DO UPDATE SET n = n + 1;
            END;""")
    async with await Store.open(store_url) as store:
        await store.add_items(1, [new(instance(9)), new(table(9))])
        counts = await store.counts(1)
        assert counts.total == 8
