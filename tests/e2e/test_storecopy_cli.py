"""`bulktag store copy` and `bulktag workers` through the CLI in subprocesses, against real SQLite
files and real PostgreSQL databases: the copy end to end (JSON summary, `status` on the
destination, refusals with exit 2, the text summary, a missing source), a copied store worked to
the end by `bulktag run` against the simulator, and `workers` on a store and on none. The copy
compared in-process, field by field: tests/integration/test_storecopy.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bulktag.app.jobs import job_status
from bulktag.config import Settings
from bulktag.sim import RunningSimulator
from bulktag.store import ItemState, Outcome, Store, new_owner_token
from tests.support.cli import CliRunner
from tests.support.storecopy import WEST, arn, build_source, shard_ids, timeless

# -- bulktag store copy --------------------------------------------------------------------------


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
