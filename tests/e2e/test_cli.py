"""The `bulktag` command line, run in subprocesses against the in-test simulator over HTTP.

The simulator fixture serves on this test's event loop, so each CLI run happens in a worker
thread (`asyncio.to_thread`) while the loop keeps answering requests.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from bulktag import __version__
from bulktag.app.report import COLUMNS
from bulktag.sim import RunningSimulator
from tests.support.cli import CliRunner

ACCOUNT = "123456789012"


def arn(n: int, region: str = "us-east-1", name: str = "i") -> str:
    return f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{name}-{n:05d}"


def arns_file(tmp_path: Path, arns: list[str], name: str = "arns.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(arns) + "\n")
    return path


class Cli:
    """run_cli with the store and the simulator filled in, off the event loop."""

    def __init__(self, run_cli: CliRunner, db: Path, sim: RunningSimulator | None) -> None:
        self.run_cli, self.db, self.sim = run_cli, db, sim

    async def __call__(self, *args: str, input: str | None = None,
                       ) -> subprocess.CompletedProcess[str]:
        extra = ["--db", str(self.db)]
        if self.sim is not None and args[0] in ("tag", "untag", "run"):
            extra += ["--endpoint-url", self.sim.url, "--log-format", "json"]
        return await asyncio.to_thread(self.run_cli, *args, *extra, input=input)

    async def ok(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = await self(*args)
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    async def json(self, *args: str, code: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((await self.ok(*args, "--json", code=code)).stdout)
        return data

    async def usage_error(self, *args: str) -> str:
        proc = await self(*args)
        assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        return proc.stderr


async def test_tag_detach_prints_the_job_id_and_leaves_it_ready(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    src = arns_file(tmp_path, [arn(n) for n in range(7)] + [arn(0)])
    proc = await cli.ok("tag", "--arns", str(src), "--tag", "Owner=me", "--detach")
    job = int(proc.stdout.strip())
    st = await cli.json("status", str(job))
    assert (st["job"], st["state"], st["operation"], st["total"]) == (job, "ready", "tag", 7)
    assert st["counts"]["pending"] == 7
    assert all(sim.state.tags(a) is None for a in [arn(n) for n in range(7)])  # nothing sent
    proc = await cli.ok("status", str(job))
    assert f"job {job}: tag ready" in proc.stdout
    assert "items 7: pending 7" in proc.stdout


async def test_tag_runs_to_the_end_and_the_simulator_holds_the_tags(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    arns = [arn(n, region) for region in ("us-east-1", "eu-west-1") for n in range(30)]
    src = arns_file(tmp_path, arns)
    proc = await cli.ok("tag", "--arns", str(src), "--tag", "Owner=me", "--tag", "Env=prod",
                        "--name", "first")
    assert "job 1 (first): tag completed" in proc.stdout
    assert "succeeded 60" in proc.stdout
    for a in arns:
        assert sim.state.tags(a) == {"Owner": "me", "Env": "prod"}
    st = await cli.json("status", "1")
    assert st["state"] == "completed"
    assert st["counts"]["succeeded"] == 60 and st["total"] == 60
    assert st["top_errors"] == []


async def test_denied_arns_exit_3_and_are_listed_by_report_failed_only(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    good = [arn(n) for n in range(5)]
    denied = [arn(n, name="denied") for n in range(3)]
    src = arns_file(tmp_path, good + denied)
    proc = await cli.ok("tag", "--arns", str(src), "--tag", "Owner=me", code=3)
    assert "AccessDeniedException" in proc.stdout  # the summary's top errors

    report = await cli.ok("report", "1", "--failed-only")
    rows = list(csv.DictReader(report.stdout.splitlines()))
    assert sorted(r["arn"] for r in rows) == sorted(denied)
    for r in rows:
        assert (r["status"], r["error_code"], r["http_status"], r["operation"]) == (
            "failed", "AccessDeniedException", "403", "tag")
        assert r["account"] == ACCOUNT and r["region"] == "us-east-1"
        assert r["attempts"] == "1"  # permanent: not retried
        assert r["message"] and r["finished_at"]
    for a in good:
        assert sim.state.tags(a) == {"Owner": "me"}
    st = await cli.json("status", "1")
    assert st["top_errors"][0]["code"] == "AccessDeniedException"
    assert st["top_errors"][0]["count"] == 3


async def test_report_jsonl_to_a_file_has_exactly_the_documented_columns(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    src = arns_file(tmp_path, [arn(1, "us-west-2"), arn(2, name="denied")])
    await cli.ok("tag", "--arns", str(src), "--tag", "K=v", code=3)
    out = tmp_path / "report.jsonl"
    proc = await cli.ok("report", "1", "--format", "jsonl", "-o", str(out))
    assert proc.stdout == ""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert list(r) == ["arn", "account", "region", "operation", "status", "attempts",
                           "error_code", "http_status", "message", "finished_at", "route",
                           "before", "after"]
    assert list(COLUMNS) == list(records[0])
    ok, bad = sorted(records, key=lambda r: r["status"] != "succeeded")
    assert ok | {"finished_at": None} == {
        "arn": arn(1, "us-west-2"), "account": ACCOUNT, "region": "us-west-2",
        "operation": "tag", "status": "succeeded", "attempts": 1, "error_code": None,
        "http_status": None, "message": None, "finished_at": None, "route": "tagging-api",
        "before": {"K": None}, "after": {"K": "v"}}
    assert ok["finished_at"].endswith("+00:00")
    assert (bad["status"], bad["error_code"], bad["http_status"]) == (
        "failed", "AccessDeniedException", 403)
    # CSV: same columns as a header.
    proc = await cli.ok("report", "1")
    assert proc.stdout.splitlines()[0] == ",".join(COLUMNS)


async def test_untag_removes_only_the_given_keys(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    arns = [arn(n) for n in range(4)]
    src = arns_file(tmp_path, arns)
    await cli.ok("tag", "--arns", str(src), "--tag", "A=1", "--tag", "B=2", "--tag", "C=3")
    proc = await cli.ok("untag", "--arns", str(src), "--key", "A", "--key", "C")
    assert "job 2: untag completed" in proc.stdout
    for a in arns:
        assert sim.state.tags(a) == {"B": "2"}
    rows = list(csv.DictReader((await cli.ok("report", "2")).stdout.splitlines()))
    assert {(r["operation"], r["status"]) for r in rows} == {("untag", "succeeded")}


async def test_pause_and_resume_change_the_job_state(
    run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, None)
    src = arns_file(tmp_path, [arn(n) for n in range(3)])
    await cli.ok("tag", "--arns", str(src), "--tag", "A=b", "--detach")
    assert await cli.json("pause", "1") == {"job": 1, "state": "paused"}
    assert (await cli.json("status", "1"))["state"] == "paused"
    assert "bulktag: error: job 1 is paused; only ready or active jobs pause" in \
        await cli.usage_error("pause", "1")
    proc = await cli.ok("resume", "1")
    assert "job 1 resumed" in proc.stdout
    st = await cli.json("status", "1")
    assert (st["state"], st["counts"]["pending"]) == ("ready", 3)
    assert "bulktag: error: job 1 is ready, not paused" in await cli.usage_error("resume", "1")


async def test_cancel_ends_open_items_as_cancelled(
    run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, None)
    src = arns_file(tmp_path, [arn(n) for n in range(4)])
    await cli.ok("tag", "--arns", str(src), "--tag", "A=b", "--detach")
    assert await cli.json("cancel", "1") == {"job": 1, "cancelled": 4, "state": "cancelled"}
    st = await cli.json("status", "1")
    assert st["state"] == "cancelled" and st["reason"] == "cancelled by the operator"
    assert st["counts"]["cancelled"] == 4 and st["counts"]["pending"] == 0
    assert "bulktag: error: job 1 is already cancelled" in await cli.usage_error("cancel", "1")
    rows = list(csv.DictReader((await cli.ok("report", "1")).stdout.splitlines()))
    assert {(r["status"], r["message"]) for r in rows} == {
        ("cancelled", "cancelled by the operator")}


async def test_retry_by_code_requeues_only_that_code_and_run_works_them(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    denied = [arn(n, name="denied") for n in range(3)]
    src = arns_file(tmp_path, [arn(1), *denied])
    await cli.ok("tag", "--arns", str(src), "--tag", "A=b", code=3)

    assert await cli.json("retry", "1", "--code", "NoSuchCode") == {
        "job": 1, "requeued": 0, "state": "completed"}
    out = await cli.json("retry", "1", "--code", "AccessDeniedException")
    assert out == {"job": 1, "requeued": 3, "state": "ready"}
    st = await cli.json("status", "1")
    assert (st["counts"]["pending"], st["counts"]["failed"], st["counts"]["succeeded"]) == (
        3, 0, 1)

    # Let them through this time: the simulator no longer denies.
    sim.reconfigure(denied_marker="no-such-marker-anywhere")
    proc = await cli.ok("run", "1")
    assert "job 1: tag completed" in proc.stdout
    for a in denied:
        assert sim.state.tags(a) == {"A": "b"}
    st = await cli.json("status", "1")
    assert st["counts"]["succeeded"] == 4 and st["total"] == 4


async def test_status_without_job_lists_jobs_and_jobs_json(
    run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, None)
    # Read-only: no store is created at a path nothing was submitted to (a mistyped --db).
    proc = await asyncio.to_thread(run_cli, "status", "--db", str(db_path))
    assert proc.returncode == 2 and "no store at" in proc.stderr and not db_path.exists()
    src = arns_file(tmp_path, [arn(n) for n in range(2)])
    await cli.ok("tag", "--arns", str(src), "--tag", "A=b", "--detach", "--name", "alpha")
    await cli.ok("untag", "--arns", str(src), "--key", "A", "--detach", "--priority", "5")
    listing = (await cli.ok("status")).stdout.splitlines()
    assert len(listing) == 3  # a header row, then one row per job
    assert listing[0].split()[:4] == ["job", "operation", "state", "priority"]
    assert listing[1].split()[:4] == ["1", "tag", "ready", "0"] and "alpha" in listing[1]
    assert listing[2].split()[:4] == ["2", "untag", "ready", "5"]
    assert await cli.json("jobs") == {"jobs": [
        {"job": 1, "name": "alpha", "operation": "tag", "state": "ready", "priority": 0,
         "total": 2, "done": 0, "failed": 0, "cancelled": 0, "role_name": None,
         "rate": None},
        {"job": 2, "name": None, "operation": "untag", "state": "ready", "priority": 5,
         "total": 2, "done": 0, "failed": 0, "cancelled": 0, "role_name": None,
         "rate": None}]}


async def test_usage_errors_exit_2_naming_the_problem(
    run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, None)
    src = arns_file(tmp_path, [arn(1)])
    # On a store that does not exist: read-only commands say so and create nothing.
    commands = ("status", "report", "cancel", "pause", "resume", "retry", "run", "verify")
    errors = await asyncio.gather(*(cli.usage_error(c, "99") for c in commands))
    for command, err in zip(commands, errors, strict=True):
        assert err.startswith(f"bulktag: error: no store at {db_path}"), command
    assert not db_path.exists() and not db_path.parent.exists()
    await cli.ok("tag", "--arns", str(src), "--tag", "A=b", "--detach")
    # At once, on a store without job 99.
    errors = await asyncio.gather(*(cli.usage_error(c, "99") for c in commands))
    for command, err in zip(commands, errors, strict=True):
        assert err == f"bulktag: error: no job 99 in {db_path}\n", command
    err = await cli.usage_error("tag", "--arns", str(src), "--tag", "Owner")
    assert err == "bulktag: error: --tag: expected KEY=VALUE, got 'Owner': no '=' in it\n"
    err = await cli.usage_error("tag", "--tag", "A=b")
    assert err == ("bulktag: error: nothing to work on: give --arns SRC, or a query "
                   "(--query, --match-tag, --resource-type)\n")
    err = await cli.usage_error("tag", "--arns", str(src), "--tag", "A=b", "--max-rate", "0")
    assert "bulktag: error: option --max-rate: setting 'max_rate' = 0.0: must be positive" in err
    err = await cli.usage_error("tag", "--arns", str(src), "--tag", "A=b", "--tag", "A=c")
    assert err == "bulktag: error: --tag: key 'A' given twice, as 'b' and 'c'\n"
    err = await cli.usage_error("tag", "--arns", str(src), "--tag", "A=b", "--failure-ratio", "5")
    assert err == "bulktag: error: --failure-ratio must be in (0, 1], not 5\n"
    err = await cli.usage_error("frobnicate")
    assert "invalid choice: 'frobnicate'" in err
    garbage = tmp_path / "not-a-store.db"
    garbage.write_text("not sqlite\n" * 100)
    proc = await asyncio.to_thread(cli.run_cli, "jobs", "--db", str(garbage))
    assert (proc.returncode, proc.stderr) == (
        2, f"bulktag: error: cannot open the store {garbage}: file is not a database\n")
    # None of these left a job behind.
    with sqlite3.connect(db_path) as con:
        assert con.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1


async def test_dry_run_prints_batches_per_shard_and_enqueues_nothing(
    run_cli: CliRunner, db_path: Path, tmp_path: Path, sim: RunningSimulator
) -> None:
    cli = Cli(run_cli, db_path, sim)
    arns = [arn(n) for n in range(45)] + [arn(n, "eu-west-1") for n in range(5)] + [arn(0)]
    src = arns_file(tmp_path, arns)
    proc = await cli.ok("tag", "--arns", str(src), "--tag", "A=b", "--dry-run")
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("plan (tag, nothing sent): 50 to change (keys: 50 added, 0 "
                               "changed, 0 removed), 0 skipped, 0 failed, 0 invalid; 5 calls/s")
    # account, region, change, add, modify, remove, skip, fail, batches, est. s, via ec2
    assert any(line.split() == [ACCOUNT, "eu-west-1", "5", "5", "0", "0", "0", "0", "1", "0.2",
                                "0"] for line in lines)
    assert any(line.split() == [ACCOUNT, "us-east-1", "45", "45", "0", "0", "0", "0", "3", "0.6",
                                "0"] for line in lines)
    assert "    by route: tagging-api 45 to change, 0 skipped, 3 batches, ~0.6 s" in lines
    data = await cli.json("tag", "--arns", str(src), "--tag", "A=b", "--dry-run")
    assert {s["region"]: s["batches"] for s in data["shards"]} == {"eu-west-1": 1, "us-east-1": 3}
    assert data["duplicates"] == 1
    assert sim.state.stats["requests"].get("TagResources", 0) == 0
    assert not db_path.exists() or sqlite3.connect(db_path).execute(
        "SELECT count(*) FROM jobs").fetchone()[0] == 0


async def test_version(run_cli: CliRunner) -> None:
    proc = await asyncio.to_thread(run_cli, "--version")
    assert proc.returncode == 0
    assert proc.stdout == f"bulktag {__version__}\n"
