"""`bulktag store copy` and `bulktag workers` against real SQLite files and real PostgreSQL
databases: a source with jobs in every kind of state is copied in each direction (SQLite →
PostgreSQL, PostgreSQL → SQLite, and each to its own kind) and everything a user can see of it
is compared, read back through independent paths (the store API, `status` data, plain SQL);
refusals; the CLI end to end; and a copied store worked to the end by `bulktag run`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, astuple
from pathlib import Path
from typing import Any

import pytest

from bulktag.app.jobs import job_status
from bulktag.app.store_copy import CopyProgress, CopyRefused, copy_between, copy_store
from bulktag.app.workers import list_workers, render_workers
from bulktag.arn import Shard
from bulktag.config import Settings
from bulktag.sim import RunningSimulator
from bulktag.store import (
    ItemRecord,
    ItemState,
    JobOptions,
    JobState,
    NewItem,
    NewSyncRule,
    Outcome,
    Store,
    new_owner_token,
    tagset_body,
)
from tests.support.cli import CliRunner
from tests.support.owners import dead_pid
from tests.support.postgres import pg_admin, pg_database_url
from tests.support.sql import plain_sql

ACCOUNT = "123456789012"
OTHER = "210987654321"
EAST = Shard("aws", ACCOUNT, "us-east-1")
WEST = Shard("aws", ACCOUNT, "us-west-2")
FAR = Shard("aws", OTHER, "eu-west-1")
TAGS_A = tagset_body({"Owner": "a"}, None)
TAGS_B = tagset_body({"Owner": "b", "Env": "prod"}, None)
KEYS = tagset_body(None, ["Old", "Stale"])


def arn(n: int, shard: Shard = EAST) -> str:
    return f"arn:aws:ec2:{shard.region}:{shard.account}:instance/i-{n:08d}"


def items(ns: range, shard: Shard = EAST, tagset: str = TAGS_A) -> list[NewItem]:
    return [NewItem(arn(n, shard), shard, tagset, line=n) for n in ns]


# -- stores of either kind ----------------------------------------------------------------------


@pytest.fixture
def new_store_url(tmp_path: Path, pg_admin_url: str) -> Iterator[Callable[[str], str]]:
    """kind ("sqlite" | "postgres") → the location of a new, empty store of that kind."""
    made: list[str] = []
    count = iter(range(100))

    def make(kind: str) -> str:
        if kind == "sqlite":
            return str(tmp_path / f"store-{next(count)}" / "bulktag.db")
        name = f"bulktag_test_{uuid.uuid4().hex[:12]}"
        # in a thread: the tests call this on their running event loop
        with ThreadPoolExecutor(1) as pool:
            pool.submit(pg_admin, pg_admin_url, f'CREATE DATABASE "{name}"').result()
        made.append(name)
        return pg_database_url(pg_admin_url, name)

    yield make
    for name in made:
        pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


DIRECTIONS = [("sqlite", "postgres"), ("postgres", "sqlite"), ("sqlite", "sqlite"),
              ("postgres", "postgres")]


async def shard_ids(store: Store, job: int) -> dict[Shard, int]:
    return {await store.shard(r.shard_id): r.shard_id
            for r in await store.runnable() if r.job_id == job}


async def build_source(store: Store) -> dict[str, Any]:
    """Jobs in every kind of state, a discovery job with walks, a paused account, sync rules
    with members, a job still being submitted, and leases of a worker that died."""
    me = new_owner_token()
    dead = f"{socket.gethostname()}:{dead_pid()}:deadbeef"
    await store.register_owner(me)
    await store.register_owner(dead)
    now = time.time()

    # 1: completed with successes, failures of two codes, a skip, an invalid row and drift
    j1 = await store.create_job(
        "tag", name="first", priority=3,
        options=JobOptions(tags={"Owner": "a"}, sources=["a.txt"], failure_ratio=0.5,
                           skip_compliant=True, extra={"future": {"x": [1, 2]}}))
    await store.add_items(j1, items(range(8)) + items(range(8, 12), WEST, TAGS_B)
                          + [NewItem("not-an-arn", None, None, line=99, problem="not an ARN")])
    await store.set_job_state(j1, JobState.READY)
    await store.set_job_state(j1, JobState.ACTIVE)
    for shard, sid in (await shard_ids(store, j1)).items():
        claimed = await store.claim(me, j1, sid, 100, lease_seconds=600)
        outcomes = []
        for k, c in enumerate(claimed):
            if k % 4 == 1:
                outcomes.append(Outcome(c.id, ItemState.FAILED, 1, 0.0, "AccessDeniedException",
                                        403, f"denied {c.arn}"))
            elif k % 4 == 2 and shard == WEST:
                outcomes.append(Outcome(c.id, ItemState.FAILED, 8, now + 1, "InternalError",
                                        500, "gave up after 8 attempts"))
            elif k == 3:
                outcomes.append(Outcome(c.id, ItemState.SKIPPED, 0, message="already tagged"))
            else:
                outcomes.append(Outcome(c.id, ItemState.SUCCEEDED, 1))
        assert await store.record(me, outcomes) == len(claimed)
    succeeded = [r for r in await store.export_items(0, 100, j1)
                 if r.state == ItemState.SUCCEEDED]
    await store.set_drift([(succeeded[0].id, "Owner: a -> b"), (succeeded[1].id, None)])
    await store.set_job_rate(j1, 12.5)
    await store.set_job_state(j1, JobState.COMPLETED)

    # 2: an active untag job: pending, due later after a throttle, leased by a dead worker
    j2 = await store.create_job("untag", options=JobOptions(keys=["Old", "Stale"]))
    await store.add_items(j2, items(range(100, 120), EAST, KEYS) + items(range(120, 126), FAR,
                                                                         KEYS))
    await store.set_job_state(j2, JobState.READY)
    await store.set_job_state(j2, JobState.ACTIVE)
    sids = await shard_ids(store, j2)
    await store.claim(dead, j2, sids[EAST], 5, lease_seconds=3600)
    retry = await store.claim(me, j2, sids[EAST], 3, lease_seconds=600)
    await store.record(me, [Outcome(c.id, ItemState.PENDING, 1, now + 300, "ThrottlingException",
                                    400, "Rate exceeded") for c in retry])
    assert await store.pause_account(j2, OTHER, "AccessDenied on the role")
    await store.set_job_rate(j2, 3.25)

    # 3: paused, with a reason
    j3 = await store.create_job("tag", name="paused one",
                                options=JobOptions(tags={"Owner": "b", "Env": "prod"}))
    await store.add_items(j3, items(range(200, 210), WEST, TAGS_B))
    await store.set_job_state(j3, JobState.READY)
    await store.set_job_state(j3, JobState.PAUSED, "paused by the operator")

    # 4: discovery: one walk done, one failed, one pending mid-pagination, one a dead worker ran
    j4 = await store.create_job("tag", options=JobOptions(
        tags={"Owner": "a"}, query={"Type": "TAG_FILTERS_1_0", "Query": "{}"}, accounts=[""],
        regions=["us-east-1", "us-west-2", "eu-west-1", "ap-south-1"]))
    await store.create_discoveries(j4, [("aws", "", r) for r in
                                        ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")])
    await store.set_job_state(j4, JobState.READY)
    walk = await store.claim_discovery(me, {j4})
    assert walk is not None
    await store.save_discovery_page(walk, me, "token-2", 3)
    await store.save_discovery_page(walk, me, None, 1)
    await store.finish_discovery(walk, "done")
    walk = await store.claim_discovery(me, {j4})
    assert walk is not None
    await store.restart_discovery(walk)
    await store.finish_discovery(walk, "failed", "AccessDenied: no GetResources")
    walk = await store.claim_discovery(me, {j4})
    assert walk is not None
    await store.save_discovery_page(walk, me, "token-7", 5)
    await store.release_owner(me, forget=False)  # back to pending, its token kept
    walk = await store.claim_discovery(dead, {j4})
    assert walk is not None
    await store.add_items(j4, items(range(300, 304)))
    await store.set_job_state(j4, JobState.ACTIVE)

    # 5: failed past its threshold: the rest cancelled with JobFailed
    j5 = await store.create_job("tag", options=JobOptions(tags={"Owner": "a"},
                                                          failure_min_items=1))
    await store.add_items(j5, items(range(400, 404), FAR))
    await store.set_job_state(j5, JobState.READY)
    c = (await store.claim(me, j5, (await shard_ids(store, j5))[FAR], 1, lease_seconds=60))[0]
    await store.record(me, [Outcome(c.id, ItemState.FAILED, 1, 0, "AccessDeniedException", 403,
                                    "denied")])
    await store.cancel_items(j5, "more than 50% failed", code="JobFailed")
    await store.set_job_state(j5, JobState.FAILED, "failure ratio passed")

    # 6: still being submitted (a live submitter): not copied
    j6 = await store.create_job("tag", options=JobOptions(tags={"Owner": "a"}), owner=me)
    await store.add_items(j6, items(range(500, 503)))

    # sync rules: one evaluated with members, one in ERROR without any
    rule = await store.add_sync_rule(NewSyncRule(
        "web", "Role", "web", None, {"Team": "web", "Cost": "42"}, ["us-east-1"], [""], 120))
    claimed_rule = await store.claim_sync_rule("web", force=True)
    assert claimed_rule is not None
    await store.update_sync_members(rule, [arn(n) for n in range(10)], [])
    await store.finish_sync_rule(claimed_rule, "ACTIVE", None, 10, 0, [j1])
    await store.add_sync_rule(NewSyncRule(
        "db", None, None, '{"Type": "TAG_FILTERS_1_0", "Query": "{}"}', {"Backup": "daily"},
        [], [ACCOUNT, ""], 3600))
    bad = await store.claim_sync_rule("db", force=True)
    assert bad is not None
    await store.finish_sync_rule(bad, "ERROR", "boom", 0, 0, [])

    await store.release_owner(me)  # this "worker" stops; the dead one never said goodbye
    return {"jobs": [j1, j2, j3, j4, j5], "preparing": j6, "dead": dead}


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


def timeless(status: dict[str, Any]) -> dict[str, Any]:
    """job_status without what depends on the moment it is read (elapsed of a running job)."""
    out = dict(status)
    for key in ("elapsed_seconds", "eta_seconds", "rate"):
        out.pop(key)
    out["shards"] = [{k: v for k, v in s.items() if k not in ("rate", "of_quota")}
                     for s in status["shards"]]
    return out


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


# -- the CLI -------------------------------------------------------------------------------------


async def test_store_copy_cli_end_to_end(
    run_cli: CliRunner, new_store_url: Callable[[str], str],
) -> None:
    src_url, dst_url = new_store_url("sqlite"), new_store_url("postgres")
    async with await Store.open(src_url) as src:
        built = await build_source(src)
        src_status = timeless(await job_status(src, built["jobs"][0], Settings()))

    proc = await asyncio.to_thread(run_cli, "store", "copy", src_url, dst_url, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["jobs"], out["job_ids"], out["skipped_preparing"], out["released_leases"],
            out["sync_rules"], out["sync_members"]) == (
        5, built["jobs"], [built["preparing"]], 5, 2, 10)
    assert "copy:" not in proc.stderr  # no progress line when stderr is not a terminal

    proc = await asyncio.to_thread(run_cli, "status", str(built["jobs"][0]), "--json",
                                   "--db", dst_url)
    assert proc.returncode == 0, proc.stderr
    assert timeless(json.loads(proc.stdout)) == src_status

    proc = await asyncio.to_thread(run_cli, "store", "copy", src_url, dst_url)
    assert proc.returncode == 2
    assert "store copy refused" in proc.stderr and "already holds 5 jobs" in proc.stderr
    assert "Traceback" not in proc.stderr

    back = new_store_url("sqlite")
    proc = await asyncio.to_thread(run_cli, "store", "copy", dst_url, back)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("copied 5 jobs (57 items, 4 discovery walks, 1 paused "
                                  "accounts) and 2 sync rules (10 members)")

    proc = await asyncio.to_thread(run_cli, "store", "copy", str(Path(back).parent / "nope.db"),
                                   new_store_url("sqlite"))
    assert proc.returncode == 2 and "no store at" in proc.stderr


@pytest.mark.parametrize(("src_kind", "dst_kind"), [("sqlite", "postgres"),
                                                    ("postgres", "sqlite")],
                         ids=["sqlite-to-postgres", "postgres-to-sqlite"])
async def test_a_copied_store_is_worked_to_the_end_by_run(
    src_kind: str, dst_kind: str, sim: RunningSimulator, run_cli: CliRunner,
    new_store_url: Callable[[str], str], tmp_path: Path,
) -> None:
    src_url, dst_url = new_store_url(src_kind), new_store_url(dst_kind)
    arns = [arn(n) for n in range(15)] + [arn(n, WEST) for n in range(15)]
    (tmp_path / "arns.txt").write_text("\n".join(arns) + "\n")

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, *args, "--endpoint-url", sim.url)

    proc = await cli("tag", "--arns", str(tmp_path / "arns.txt"), "--tag", "Owner=me",
                     "--detach", "--no-skip-compliant", "--db", src_url)
    assert proc.returncode == 0, proc.stderr
    job = int(proc.stdout.strip())
    # Part of it was worked on the source already: those stay as they are.
    async with await Store.open(src_url) as src:
        me = new_owner_token()
        await src.register_owner(me)
        done = await src.claim(me, job, (await shard_ids(src, job))[WEST], 5, lease_seconds=60)
        await src.record(me, [Outcome(c.id, ItemState.SUCCEEDED, 1) for c in done])
        await src.release_owner(me)

    proc = await asyncio.to_thread(run_cli, "store", "copy", src_url, dst_url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["items"] == 30

    proc = await cli("run", "--db", dst_url, "--json")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    # status reads the store only: it takes no --endpoint-url
    proc = await asyncio.to_thread(run_cli, "status", str(job), "--json", "--db", dst_url)
    st = json.loads(proc.stdout)
    assert (st["state"], st["counts"]["succeeded"], st["total"]) == ("completed", 30, 30)
    sent = {c.arn for c in done}
    for a in arns:
        assert sim.state.tags(a) == (None if a in sent else {"Owner": "me"}), a
    # the source is untouched by the run on the destination
    async with await Store.open(src_url) as src:
        assert (await src.counts(job)).by_state == {"pending": 25, "succeeded": 5}
    # a new job on the destination gets the next id, not one the copy brought
    proc = await cli("tag", "--arns", str(tmp_path / "arns.txt"), "--tag", "Owner=you",
                     "--detach", "--db", dst_url)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) == job + 1


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


async def test_workers_cli(run_cli: CliRunner, db_path: Path) -> None:
    proc = await asyncio.to_thread(run_cli, "workers", "--db", str(db_path))
    assert proc.returncode == 2 and "no store at" in proc.stderr
    async with await Store.open(str(db_path)) as store:
        await store.register_owner(f"somehost:{os.getpid()}:abcd0001")
    proc = await asyncio.to_thread(run_cli, "workers", "--json", "--db", str(db_path))
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)["workers"]
    assert [(w["owner"], w["host"], w["stale"], w["shards"]) for w in listed] == [
        (f"somehost:{os.getpid()}:abcd0001", "somehost", False, [])]
    proc = await asyncio.to_thread(run_cli, "workers", "--db", str(db_path))
    assert proc.returncode == 0 and proc.stdout.startswith("somehost:")
