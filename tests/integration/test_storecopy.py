"""`bulktag store copy` and `bulktag workers` in-process against real SQLite files and real
PostgreSQL databases: a source with jobs in every kind of state (tests/support/storecopy.py) is
copied in each direction (SQLite → PostgreSQL, PostgreSQL → SQLite, and each to its own kind)
and everything a user can see of it is compared, read back through independent paths (the store
API, `status` data, plain SQL); refusals; a failed copy undone; the workers list. Both commands
through the CLI, and a copied store worked to the end by `bulktag run`:
tests/e2e/test_storecopy_cli.py."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, astuple
from typing import Any

import pytest

from bulktag.app.jobs import job_status
from bulktag.app.store_copy import CopyProgress, CopyRefused, copy_between, copy_store
from bulktag.app.workers import list_workers, render_workers
from bulktag.config import Settings
from bulktag.store import (
    ItemRecord,
    JobOptions,
    JobState,
    NewSyncRule,
    Store,
)
from tests.support.sql import plain_sql
from tests.support.storecopy import (
    ACCOUNT,
    EAST,
    FAR,
    OTHER,
    WEST,
    arn,
    build_source,
    items,
    shard_ids,
    timeless,
)

# -- stores of either kind (the `new_store_url` fixture, tests/conftest.py) -------------------


DIRECTIONS = [("sqlite", "postgres"), ("postgres", "sqlite"), ("sqlite", "sqlite"),
              ("postgres", "postgres")]


async def all_items(store: Store, job_id: int | None = None) -> list[ItemRecord]:
    out: list[ItemRecord] = []
    after = 0
    while True:
        page = await store.export_items(after, 7, job_id)  # small pages: paging is tested too
        out += page
        if len(page) < 7:
            return out
        after = page[-1].id


async def raw_items(url: str, skip_job: int) -> list[tuple[Any, ...]]:
    """Every column of every item, by plain SQL on a separate connection."""
    return await plain_sql(url, """
        SELECT i.id, i.job_id, i.arn, s.partition, s.account, s.region, t.body, i.state,
               i.attempts, i.next_attempt_at, i.lease_owner, i.lease_expires_at, i.error_code,
               i.http_status, i.message, i.finished_at, i.line, i.verified_at, i.drift
        FROM items i LEFT JOIN shards s ON s.id = i.shard_id
             LEFT JOIN tagsets t ON t.id = i.tagset_id
        WHERE i.job_id <> ? ORDER BY i.id""", skip_job)


async def snapshot(store: Store, url: str, skip_job: int) -> dict[str, Any]:
    """Everything a user can see of a store, with store-private ids (shards, tagsets) out."""
    settings = Settings()
    jobs = [j for j in await store.list_jobs() if j.id != skip_job]
    snap: dict[str, Any] = {
        "jobs": [asdict(j) for j in jobs],
        "items": await all_items(store),
        "raw_items": await raw_items(url, skip_job),
        "runnable": sorted([(r.job_id, astuple(await store.shard(r.shard_id)), r.priority,
                             r.operation, r.state, await store.next_due(r.job_id, r.shard_id))
                            for r in await store.runnable()]),
        "finished": sorted(await store.finished_jobs()),
        "rules": [asdict(r) for r in await store.list_sync_rules()],
    }
    totals = await store.totals()
    snap["totals"] = ({k: n for k, n in totals.items_by_state.items() if n},
                      sorted(totals.job_items), totals.jobs_by_state,
                      totals.sync_rules_by_status)
    snap["members"] = {r.name: (await store.export_sync_members(r.id, "", 3)
                                + await store.export_sync_members(r.id, arn(2), 1000),
                                await store.sync_member_arns(r.id))
                       for r in await store.list_sync_rules()}
    for job in jobs:
        snap[f"job {job.id}"] = {
            "counts": (await store.counts(job.id)).by_state,
            "shard_counts": {s: c.by_state
                             for s, c in (await store.shard_counts(job.id)).items()},
            "errors": await store.error_counts(job.id, 100),
            "status": timeless(await job_status(store, job.id, settings)),
            "report": [r async for r in store.report_rows(job.id, page=4)],
            "failed_report": [r async for r in store.report_rows(
                job.id, unsuccessful_only=True)],
            "succeeded": [[(s.id, s.arn) for s in page]
                          async for page in store.succeeded_items(job.id)],
            "walks": await store.job_discoveries(job.id),
            "paused": await store.export_paused_accounts(job.id),
            "paused_pairs": await store.paused_accounts(job.id),
        }
    return snap


# -- the copy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("src_kind", "dst_kind"), DIRECTIONS,
                         ids=[f"{a}-to-{b}" for a, b in DIRECTIONS])
async def test_copy_moves_everything_a_user_can_see(
    src_kind: str, dst_kind: str, new_store_url: Callable[[str], str],
) -> None:
    src_url, dst_url = new_store_url(src_kind), new_store_url(dst_kind)
    async with await Store.open(src_url) as src:
        built = await build_source(src)
        # the dead worker's five leases and its running walk are still out
        assert (await src.lease_holders()) == {built["dead"]: 5}

    seen: list[CopyProgress] = []
    result = await copy_store(src_url, dst_url, progress=seen.append, page=10)

    assert result.job_ids == built["jobs"]
    assert result.skipped_preparing == [built["preparing"]]
    assert result.released_leases == 5
    assert (result.jobs, result.items, result.discoveries, result.paused_accounts,
            result.sync_rules, result.sync_members) == (5, 13 + 26 + 10 + 4 + 4, 4, 1, 2, 10)
    assert seen[0].phase == "jobs" and seen[-1].phase == "done"
    assert seen[-1].items_done == seen[-1].items_total == result.items
    assert [p.items_done for p in seen if p.phase == "items"] == sorted(
        p.items_done for p in seen if p.phase == "items")

    async with await Store.open(src_url) as src, await Store.open(dst_url) as dst:
        assert await src.lease_holders() == {}  # released on the source before copying
        assert await dst.get_job(built["preparing"]) is None
        await src.delete_job(built["preparing"])  # not copied: out of the comparison
        before = await snapshot(src, src_url, built["preparing"])
        after = await snapshot(dst, dst_url, built["preparing"])
        assert after.keys() == before.keys()
        for key in before:
            assert after[key] == before[key], key
        assert await dst.workers() == [] and await dst.shard_holders() == {}
        # spot checks that the comparison compares something
        j2 = after[f"job {built['jobs'][1]}"]
        assert j2["counts"] == {"pending": 26}
        assert j2["paused_pairs"] == [(OTHER, "AccessDenied on the role")]
        assert [w.state for w in after[f"job {built['jobs'][3]}"]["walks"]] == [
            "pending", "pending", "done", "failed"]
        assert after["members"]["web"][1] == sorted(arn(n) for n in range(10))
        assert {e["code"] for e in after[f"job {built['jobs'][0]}"]["status"]["top_errors"]} \
            == {"AccessDeniedException", "InternalError", "InvalidInput"}

        # ids generated after the copy follow the copied ones on either backend
        new_job = await dst.create_job("tag", options=JobOptions(tags={"A": "b"}))
        assert new_job == max(built["jobs"]) + 1
        await dst.add_items(new_job, items(range(900, 902)))
        assert min(r.id for r in await dst.export_items(0, 10, new_job)) > max(
            r.id for r in before["items"])
        assert (await dst.add_sync_rule(NewSyncRule(
            "new", "K", "V", None, {"A": "b"}, [], [""], 60))).id > max(
            r["id"] for r in before["rules"])


async def test_copy_refuses_a_destination_that_holds_jobs_or_rules(
    new_store_url: Callable[[str], str],
) -> None:
    src_url, dst_url, rules_url = (new_store_url("sqlite"), new_store_url("postgres"),
                                   new_store_url("sqlite"))
    async with await Store.open(src_url) as src:
        await build_source(src)
    async with await Store.open(dst_url) as dst:
        there = await dst.create_job("tag", options=JobOptions(tags={"A": "b"}))
        await dst.set_job_state(there, JobState.READY)
    with pytest.raises(CopyRefused, match=r"already holds 1 jobs \(1\)"):
        await copy_store(src_url, dst_url)
    async with await Store.open(dst_url) as dst:
        assert [j.id for j in await dst.list_jobs()] == [there]
        assert await dst.list_sync_rules() == []
    async with await Store.open(rules_url) as other:
        await other.add_sync_rule(NewSyncRule("x", "K", "V", None, {"A": "b"}, [], [""], 60))
    with pytest.raises(CopyRefused, match="already holds 1 sync rules"):
        await copy_store(src_url, rules_url)
    with pytest.raises(CopyRefused, match="both the source and the destination"):
        await copy_store(src_url, src_url)


async def test_copy_refuses_a_source_a_live_worker_holds_and_writes_nothing(
    new_store_url: Callable[[str], str],
) -> None:
    src_url, dst_url = new_store_url("postgres"), new_store_url("sqlite")
    async with await Store.open(src_url) as src, await Store.open(dst_url) as dst:
        job = await src.create_job("tag", options=JobOptions(tags={"A": "b"}))
        await src.add_items(job, items(range(10)))
        await src.set_job_state(job, JobState.READY)
        live = f"otherhost:{os.getpid()}:cafe0001"  # another host: only its heartbeat counts
        await src.register_owner(live)
        await src.claim(live, job, (await shard_ids(src, job))[EAST], 4, lease_seconds=600)
        with pytest.raises(CopyRefused, match=rf"live worker\(s\): {live} \(4 items leased\)"):
            await copy_between(src, dst)
        assert await dst.list_jobs() == []
        assert await src.lease_holders() == {live: 4}  # a live worker's leases are not touched

        # once it is gone (stale heartbeat), its leases come back and the copy goes through
        result = await copy_between(src, dst, stale_seconds=0.0)
        assert result.released_leases == 4
        assert (await dst.counts(job)).by_state == {"pending": 10}


async def test_a_failed_copy_is_undone_and_can_be_repeated(
    new_store_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    src_url, dst_url = new_store_url("sqlite"), new_store_url("postgres")
    async with await Store.open(src_url) as src:
        built = await build_source(src)
    from bulktag.store.postgres import PostgresStore

    real = PostgresStore.import_sync_rule

    async def broken(self: PostgresStore, rule: Any) -> None:
        if rule.name == "web":
            raise RuntimeError("disk on fire")
        await real(self, rule)

    monkeypatch.setattr(PostgresStore, "import_sync_rule", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await copy_store(src_url, dst_url)
    async with await Store.open(dst_url) as dst:
        assert await dst.list_jobs() == [] and await dst.list_sync_rules() == []
        assert await all_items(dst) == []
        assert (await dst.totals()).jobs_by_state == {}
    monkeypatch.setattr(PostgresStore, "import_sync_rule", real)
    result = await copy_store(src_url, dst_url)
    assert result.job_ids == built["jobs"] and result.sync_rules == 2


# -- bulktag workers -------------------------------------------------------------------------


async def test_workers_lists_owners_their_shards_and_stale_heartbeats(store_url: str) -> None:
    settings = Settings(owner_stale_seconds=0.5)
    async with await Store.open(store_url) as store:
        assert await list_workers(store, settings) == []
        assert render_workers([]) == "no workers"
        job = await store.create_job("tag", options=JobOptions(tags={"A": "b"}))
        await store.add_items(job, items(range(3)) + items(range(3), WEST)
                              + items(range(3), FAR))
        await store.set_job_state(job, JobState.READY)
        sids = await shard_ids(store, job)
        old = f"hostA:{os.getpid()}:00000001"
        await store.register_owner(old)
        await asyncio.sleep(0.8)  # the scenario: its heartbeat ages past owner_stale_seconds
        fresh = "hostB:4242:00000002"
        await store.register_owner(fresh)
        assert await store.acquire_shards(old, [sids[EAST]], lease_seconds=60) == {sids[EAST]}
        assert await store.acquire_shards(fresh, [sids[WEST], sids[FAR], sids[EAST]],
                                          lease_seconds=60) == {sids[WEST], sids[FAR]}
        ghost = "ghosthost:7:00000003"  # holds a lease without being registered
        await store.release_shards(fresh, [sids[FAR]])
        assert await store.acquire_shards(ghost, [sids[FAR]], lease_seconds=60) == {sids[FAR]}

        listed = await list_workers(store, settings)
        assert [w["owner"] for w in listed] == [old, fresh, ghost]
        a, b, g = listed
        assert (a["host"], a["pid"], a["stale"], a["registered"]) == (
            "hostA", os.getpid(), True, True)
        assert a["heartbeat_age"] >= 0.8
        assert (b["host"], b["pid"], b["stale"]) == ("hostB", 4242, False)
        assert b["heartbeat_age"] < 0.5 and b["started_at"] <= b["heartbeat_at"]
        assert [(s["account"], s["region"]) for s in a["shards"]] == [(ACCOUNT, "us-east-1")]
        assert [(s["account"], s["region"]) for s in b["shards"]] == [(ACCOUNT, "us-west-2")]
        assert [(s["shard_id"], s["account"], s["region"]) for s in g["shards"]] == [
            (sids[FAR], OTHER, "eu-west-1")]
        assert (g["registered"], g["host"], g["pid"], g["heartbeat_age"]) == (
            False, "ghosthost", 7, None)
        assert all(s["expires_at"] > time.time() for w in listed for s in w["shards"])
        text = render_workers(listed)
        assert "STALE" in text.splitlines()[0] and f"{ACCOUNT}/us-east-1" in text
        assert "not registered" in text and f"{OTHER}/eu-west-1" in text
        json.dumps(listed)  # plain data, ready for --json

        await store.release_owner(old)
        assert [w["owner"] for w in await list_workers(store, settings)] == [fresh, ghost]
