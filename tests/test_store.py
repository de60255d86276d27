"""The durable queue against real SQLite files: migrations, the claim/lease/record cycle, exact
counters, reaping dead owners, several processes claiming at once, and the state machine under
random operations (hypothesis)."""

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
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bulktag.arn import Shard
from bulktag.store import (
    ITEM_STATES,
    NewItem,
    Outcome,
    Store,
    StoreError,
    new_owner_token,
    tagset_body,
)

ROOT = Path(__file__).resolve().parent.parent

EAST = Shard("aws", "123456789012", "us-east-1")
WEST = Shard("aws", "123456789012", "us-west-2")
TAGS_A = tagset_body({"Owner": "a"}, None)
TAGS_B = tagset_body({"Owner": "b"}, None)


def arn(n: int, region: str = "us-east-1") -> str:
    return f"arn:aws:ec2:{region}:123456789012:instance/i-{n:08d}"


def item(n: int, shard: Shard = EAST, tagset: str = TAGS_A) -> NewItem:
    return NewItem(arn(n, shard.region), shard, tagset, line=n)


def db_truth(path: Path, job_id: int) -> dict[str, int]:
    """State counts straight from the items table, read by a separate plain connection."""
    with sqlite3.connect(path) as con:
        rows = con.execute(
            "SELECT state, count(*) FROM items WHERE job_id = ? GROUP BY state", (job_id,)
        ).fetchall()
    return {state: n for state, n in rows}


async def job_with(store: Store, items: list[NewItem]) -> int:
    job = await store.create_job("tag", options={})
    await store.add_items(job, items)
    await store.set_job_state(job, "ready")
    return job


# -- migrations --------------------------------------------------------------------------------


async def test_migrations_are_applied_once_and_recorded(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(1)])
    with sqlite3.connect(db_path) as con:
        first = con.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
    shipped = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert [(v, n) for v, n, _ in first] == [(int(n[:4]), n) for n in shipped]
    assert shipped[:2] == ["0001_initial.sql", "0002_discovery.sql"]

    # A second open must not re-run 0001 (it would fail on CREATE TABLE, or wipe data).
    async with await Store.open(db_path) as store:
        assert (await store.counts(job))["pending"] == 1
    with sqlite3.connect(db_path) as con:
        again = con.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    assert again == first
    assert mode == "wal"


async def test_opening_something_that_is_not_a_store_fails_cleanly(tmp_path: Path) -> None:
    garbage = tmp_path / "x.db"
    garbage.write_bytes(b"\x00not sqlite" * 200)
    with pytest.raises(StoreError, match=f"cannot open the store {garbage}: file is not a"):
        await Store.open(garbage)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open the store"):
        await Store.open(blocker / "sub" / "x.db")


def test_wheel_ships_migrations_and_queries(tmp_path: Path) -> None:
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = out.glob("bulktag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "bulktag/migrations/0001_initial.sql" in names
    assert "bulktag/sql/queries.sql" in names
    shipped = zipfile.ZipFile(wheel).read("bulktag/migrations/0001_initial.sql").decode()
    assert shipped == (ROOT / "migrations" / "0001_initial.sql").read_text()


# -- jobs and items ----------------------------------------------------------------------------


async def test_add_items_ignores_a_duplicate_arn_and_counts_it_once(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await store.create_job("tag", options={"tags": {"Owner": "a"}})
        assert (await store.get_job(job)).state == "preparing"  # type: ignore[union-attr]
        added = await store.add_items(job, [item(1), item(2), item(1)])
        assert added == 2
        # The same ARN in a later batch (another chunk of the source) is ignored too.
        assert await store.add_items(job, [item(2, tagset=TAGS_B), item(3)]) == 1
        counts = await store.counts(job)
        assert counts.by_state == {"pending": 3}
        assert counts.total == 3
        # The same ARN in another job is a separate item.
        other = await store.create_job("tag", options={})
        assert await store.add_items(other, [item(1)]) == 1
    assert db_truth(db_path, job) == {"pending": 3}


async def test_invalid_items_are_counted_with_their_reason(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await store.create_job("tag", options={})
        bad = NewItem("not-an-arn", None, None, line=7, problem="malformed ARN: nope")
        assert await store.add_items(job, [item(1), bad]) == 2
        assert (await store.counts(job)).by_state == {"pending": 1, "invalid": 1}
        assert await store.error_counts(job) == [("InvalidInput", 1)]
        assert await store.error_example(job, "InvalidInput") == (
            "not-an-arn", None, "malformed ARN: nope")
        shards = await store.shard_counts(job)
        assert shards[EAST]["pending"] == 1
        assert shards[None]["invalid"] == 1


async def test_counts_stay_exact_through_the_whole_item_lifecycle(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(n) for n in range(10)] + [item(100, WEST)])
        shard = (await store.runnable())[0].shard_id
        me = new_owner_token()

        claimed = await store.claim(me, job, shard, 6, lease_seconds=60)
        assert len(claimed) == 6
        assert (await store.counts(job)).by_state == {"pending": 5, "leased": 6}

        ids = [c.id for c in claimed]
        written = await store.record(me, [
            Outcome(ids[0], "succeeded", 1),
            Outcome(ids[1], "succeeded", 1),
            Outcome(ids[2], "failed", 1, error_code="AccessDeniedException", http_status=403,
                    message="denied"),
            Outcome(ids[3], "failed", 1, error_code="InvalidParameterException",
                    http_status=400, message="bad"),
            Outcome(ids[4], "pending", 1, next_attempt_at=0, error_code="InternalServiceException",
                    http_status=500),
        ])
        assert written == 5
        assert (await store.counts(job)).by_state == {
            "pending": 6, "leased": 1, "succeeded": 2, "failed": 2}
        assert sorted(await store.error_counts(job)) == [
            ("AccessDeniedException", 1), ("InvalidParameterException", 1)]

        assert await store.release_owner(me) == 1
        assert (await store.counts(job)).by_state == {"pending": 7, "succeeded": 2, "failed": 2}

        assert await store.retry_failed(job, "AccessDeniedException") == 1
        assert (await store.counts(job)).by_state == {"pending": 8, "succeeded": 2, "failed": 1}
        assert await store.error_counts(job) == [("InvalidParameterException", 1)]

        claimed = await store.claim(me, job, shard, 3, lease_seconds=60)
        assert len(claimed) == 3
        assert await store.cancel_items(job, "cancelled by the operator") == 8
        counts = await store.counts(job)
        assert counts.by_state == {"succeeded": 2, "failed": 1, "cancelled": 8}
        assert counts.open == 0 and counts.done == 11
        by_shard = await store.shard_counts(job)
        assert by_shard[WEST].by_state == {"cancelled": 1}
        assert by_shard[EAST].by_state == {"succeeded": 2, "failed": 1, "cancelled": 7}
        # A cancelled item's lease is gone: recording it now changes nothing.
        assert await store.record(me, [Outcome(claimed[0].id, "succeeded", 1)]) == 0
        assert await store.finished_jobs() == [job]
    assert db_truth(db_path, job) == {"succeeded": 2, "failed": 1, "cancelled": 8}


async def test_retry_failed_without_code_requeues_every_failure(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(n) for n in range(3)])
        shard = (await store.runnable())[0].shard_id
        me = new_owner_token()
        c = await store.claim(me, job, shard, 3, lease_seconds=60)
        await store.record(me, [Outcome(c[0].id, "failed", 8, error_code="X"),
                                Outcome(c[1].id, "failed", 1, error_code="Y"),
                                Outcome(c[2].id, "succeeded", 1)])
        assert await store.retry_failed(job) == 2
        again = await store.claim(me, job, shard, 10, lease_seconds=60)
        assert sorted(x.id for x in again) == sorted([c[0].id, c[1].id])
        assert all(x.attempts == 0 for x in again)  # a retried item gets its budget back
        assert await store.error_counts(job) == []


# -- claims ------------------------------------------------------------------------------------


async def test_claim_leases_only_due_items_of_its_job_and_shard(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(n) for n in range(4)] + [item(9, WEST)])
        other = await job_with(store, [item(n) for n in range(4)])
        east = [r.shard_id for r in await store.runnable() if r.job_id == job][0]
        me = new_owner_token()
        now = 1_000_000.0

        first = await store.claim(me, job, east, 4, lease_seconds=60, now=now)
        await store.record(me, [Outcome(first[0].id, "pending", 1, next_attempt_at=now + 30),
                                Outcome(first[1].id, "pending", 1, next_attempt_at=now - 1)])
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
        assert (await store.counts(other))["pending"] == 4
        assert (await store.shard_counts(job))[WEST]["pending"] == 1


async def test_claim_groups_by_tagset_and_respects_limit(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
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


async def test_record_ignores_an_item_whose_lease_was_lost(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(1), item(2)])
        shard = (await store.runnable())[0].shard_id
        old, new = new_owner_token(), new_owner_token()
        mine = await store.claim(old, job, shard, 2, lease_seconds=60)
        await store.release_owner(old)  # presumed dead; its leases return to the queue
        theirs = await store.claim(new, job, shard, 2, lease_seconds=60)
        assert {c.id for c in theirs} == {c.id for c in mine}

        # The old owner comes back and reports: it must not overwrite the new holder's lease.
        assert await store.record(old, [Outcome(c.id, "failed", 1, error_code="Late")
                                        for c in mine]) == 0
        assert (await store.counts(job)).by_state == {"leased": 2}
        assert await store.record(new, [Outcome(c.id, "succeeded", 1) for c in theirs]) == 2
        # Recording twice is a no-op: the item is no longer leased.
        assert await store.record(new, [Outcome(c.id, "failed", 2) for c in theirs]) == 0
        assert (await store.counts(job)).by_state == {"succeeded": 2}
        assert await store.error_counts(job) == []


# -- dead processes ----------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_reap_dead_owners_releases_a_dead_pids_leases(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(n) for n in range(5)])
        shard = (await store.runnable())[0].shard_id
        dead = f"{socket.gethostname()}:{dead_pid()}:deadbeef"
        alive = new_owner_token()
        await store.register_owner(dead)
        await store.register_owner(alive)
        await store.claim(dead, job, shard, 3, lease_seconds=3600)
        await store.claim(alive, job, shard, 2, lease_seconds=3600)

        assert await store.reap_dead_owners(stale_seconds=90) == 3
        assert (await store.counts(job)).by_state == {"pending": 3, "leased": 2}
        owners = {r["owner"] for r in await store._all("SELECT owner FROM owners")}
        assert owners == {alive}
        assert await store.reap_dead_owners(stale_seconds=90) == 0


async def test_reap_dead_owners_releases_stale_heartbeats_and_expired_leases(
    db_path: Path,
) -> None:
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(n) for n in range(6)])
        shard = (await store.runnable())[0].shard_id
        # A live pid on another host (or a hung process here) that stopped heartbeating.
        silent = f"otherhost:{os.getpid()}:cafe0001"
        fresh = f"otherhost:{os.getpid()}:cafe0002"
        me = new_owner_token()
        for owner in (silent, fresh, me):
            await store.register_owner(owner)
        await store._write("UPDATE owners SET heartbeat_at = ? WHERE owner = ?",
                           (time.time() - 1000, silent))
        await store.claim(silent, job, shard, 2, lease_seconds=3600)
        await store.claim(fresh, job, shard, 2, lease_seconds=-1)  # lease already expired
        await store.claim(me, job, shard, 2, lease_seconds=3600)

        released = await store.reap_dead_owners(stale_seconds=90, me=me)
        assert released == 4
        assert (await store.counts(job)).by_state == {"pending": 4, "leased": 2}
        leased = await store._all("SELECT DISTINCT lease_owner FROM items WHERE state='leased'")
        assert [r[0] for r in leased] == [me]


async def test_reap_abandoned_submissions_deletes_a_dead_submitters_job(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        dead = f"{socket.gethostname()}:{dead_pid()}:0badf00d"
        abandoned = await store.create_job("tag", options={}, owner=dead)
        await store.add_items(abandoned, [item(1), item(2)])
        live = await store.create_job("tag", options={}, owner=new_owner_token())
        await store.add_items(live, [item(1)])
        done = await job_with(store, [item(3)])

        assert await store.reap_abandoned_submissions() == [abandoned]
        assert await store.get_job(abandoned) is None
        assert (await store.get_job(live)).state == "preparing"  # type: ignore[union-attr]
        assert (await store.get_job(done)).state == "ready"  # type: ignore[union-attr]
        assert (await store.counts(abandoned)).total == 0
    assert db_truth(db_path, abandoned) == {}
    with sqlite3.connect(db_path) as con:
        assert con.execute("SELECT count(*) FROM counts WHERE job_id = ?",
                           (abandoned,)).fetchone()[0] == 0


# -- several processes -------------------------------------------------------------------------

CLAIMER = """
import asyncio, json, os, sys, time
from bulktag.store import Outcome, Store, new_owner_token

async def main(path, job, shard, go):
    store = await Store.open(path)
    me = new_owner_token()
    await store.register_owner(me)
    while not os.path.exists(go):
        time.sleep(0.005)
    got = []
    while True:
        batch = await store.claim(me, job, shard, 7, lease_seconds=600)
        if not batch:
            break
        got += [c.id for c in batch]
        await store.record(me, [Outcome(c.id, "succeeded", c.attempts + 1) for c in batch])
    await store.close()
    print(json.dumps(got))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


async def test_processes_claiming_at_once_never_share_an_item(
    db_path: Path, tmp_path: Path
) -> None:
    n_items, n_procs = 1500, 4
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(n) for n in range(n_items)])
        shard = (await store.runnable())[0].shard_id
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, str(db_path), str(job), str(shard),
                          str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
        for _ in range(n_procs)
    ]
    await asyncio.sleep(1.0)  # let every process start and open the store, then release them
    go.touch()
    results = []
    for proc in procs:
        out, err = await asyncio.to_thread(proc.communicate, timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))

    every = [i for ids in results for i in ids]
    assert len(every) == len(set(every)), "an item was claimed twice"
    with sqlite3.connect(db_path) as con:
        all_ids = {r[0] for r in con.execute("SELECT id FROM items WHERE job_id = ?", (job,))}
    assert set(every) == all_ids
    assert sum(1 for ids in results if ids) >= 2, "the processes did not actually compete"
    assert db_truth(db_path, job) == {"succeeded": n_items}
    async with await Store.open(db_path) as store:
        assert (await store.counts(job)).by_state == {"succeeded": n_items}


OPENER = """
import asyncio, sys
from bulktag.store import Store

async def main():
    store = await Store.open(sys.argv[1])
    await store.close()

asyncio.run(main())
"""


async def test_processes_opening_a_new_store_at_once_migrate_it_once(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "bulktag.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(db)], stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(4)]
    for proc in procs:
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err
    with sqlite3.connect(db) as con:
        versions = [int(p.name[:4]) for p in sorted((ROOT / "migrations").glob("*.sql"))]
        assert con.execute("SELECT version FROM schema_migrations").fetchall() == [
            (v,) for v in versions]
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_report_rows_pages_through_every_item_once(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        job = await job_with(store, [item(n) for n in range(7)])
        await job_with(store, [item(n) for n in range(3)])  # another job's items interleave
        ids = [r["id"] async for r in store.report_rows(job, page=2)]
        assert len(ids) == 7 and ids == sorted(set(ids))
        assert [r async for r in store.report_rows(job, unsuccessful_only=True, page=2)] == []


# -- the state machine, at random --------------------------------------------------------------

OWNERS = ("host-a:1:aaaa", "host-b:2:bbbb")
NOW = 1_000_000.0
CODES = ("AccessDeniedException", "InvalidParameterException")


class StoreMachine(RuleBasedStateMachine):
    """Random claim/record/release/retry/cancel/add against a real store file, checked against a
    plain-Python model of every item's state and holder."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "store.db"
        self.store: Store = self.run(Store.open(self.path))
        self.state: dict[int, str] = {}  # item id -> state
        self.holder: dict[int, str] = {}  # leased item id -> owner
        self.due: dict[int, bool] = {}
        self.code: dict[int, str | None] = {}
        self.shard_of: dict[int, int] = {}
        self.next_arn = 0
        self.added: list[NewItem] = []

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        self.dir.cleanup()

    @initialize()
    def make_job(self) -> None:
        self.job = self.run(self.store.create_job("tag", options={}))
        self.add(8)
        self.run(self.store.set_job_state(self.job, "ready"))

    def add(self, n: int, dupes: int = 0) -> None:
        fresh = [item(self.next_arn + k, EAST if k % 2 else WEST, TAGS_A if k % 3 else TAGS_B)
                 for k in range(n)]
        old = self.added[:dupes]  # ARNs already in the job: ignored
        added = self.run(self.store.add_items(self.job, fresh + old))
        self.added += fresh
        self.next_arn += n
        assert added == n
        rows = self.run(self.store._all("SELECT id, shard_id FROM items WHERE job_id = ?",
                                        (self.job,)))
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
            state = "pending" if kind in ("retry", "later") else kind
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
        truth = self.run(self.store._all(
            "SELECT shard_id, state, count(*) FROM items WHERE job_id = ? GROUP BY 1, 2",
            (self.job,)))
        counters = self.run(self.store._all(
            "SELECT shard_id, state, n FROM counts WHERE job_id = ? AND n <> 0", (self.job,)))
        assert sorted(map(tuple, counters)) == sorted(map(tuple, truth))
        by_state: dict[str, int] = {}
        for i, s in self.state.items():
            by_state[s] = by_state.get(s, 0) + 1
        assert self.run(self.store.counts(self.job)).by_state == by_state

        errors = self.run(self.store._all(
            "SELECT coalesce(error_code, 'Unknown'), count(*) FROM items "
            "WHERE job_id = ? AND state IN ('failed', 'invalid') GROUP BY 1", (self.job,)))
        assert sorted(self.run(self.store.error_counts(self.job, 100))) == sorted(
            map(tuple, errors))

    @invariant()
    def every_item_is_where_the_model_says(self) -> None:
        rows = self.run(self.store._all(
            "SELECT id, state, lease_owner FROM items WHERE job_id = ?", (self.job,)))
        assert {r[0]: r[1] for r in rows} == self.state
        assert all(r[1] in ITEM_STATES for r in rows)
        assert {r[0]: r[2] for r in rows if r[2] is not None} == self.holder


TestStoreStateMachine = StoreMachine.TestCase
TestStoreStateMachine.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
