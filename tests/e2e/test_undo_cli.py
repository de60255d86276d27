"""`bulktag undo` as a user runs it: the CLI in subprocesses against the simulator in another
process. Killed with SIGKILL mid-undo, `bulktag run` finishes the undo and every resource ends as
it was before the undone job; usage errors are clear (exit 2); reports carry before and after."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulktag.sim import synthetic_arns
from tests.support.cli import CliRunner, start_cli
from tests.support.counts import sqlite_job_counts as job_counts
from tests.support.sim import sim_tags as tags_of
from tests.support.sim import simulator_process
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
PER_REGION = 300


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--latency-ms", "100-200") as url:
        yield url


def test_sigkill_mid_undo_then_run_finishes_it(tmp_path: Path, sim_url: str,
                                               run_cli: CliRunner,
                                               cli_env: dict[str, str]) -> None:
    db = tmp_path / "bulktag.db"
    arns = list(synthetic_arns(["123456789012"], REGIONS, PER_REGION))
    half = tmp_path / "half.txt"
    half.write_text("\n".join(arns[::2]) + "\n")
    every = tmp_path / "all.txt"
    every.write_text("\n".join(arns) + "\n")
    common = ["--db", str(db), "--endpoint-url", sim_url, "--log-format", "json"]
    prior = run_cli("tag", "--arns", str(half), "--tag", "stage=old", *common)
    assert prior.returncode == 0, prior.stderr[-2000:]
    tagged = run_cli("tag", "--arns", str(every), "--tag", "stage=new", "--tag", "owner=me",
                     "--json", *common)
    assert tagged.returncode == 0, tagged.stderr[-2000:]
    job = json.loads(tagged.stdout)["jobs"][0]["job"]

    env = {**cli_env, "BULKTAG_IN_FLIGHT_PER_SHARD": "2"}
    proc = start_cli("undo", str(job), *common, env=env)
    undo_job = job + 1

    def progressed() -> bool:
        assert proc.poll() is None, "the undo ended before it could be killed"
        return job_counts(db, undo_job).get("succeeded", 0) >= len(arns) // 4

    wait_until(progressed, "a quarter of the undo done", timeout=60)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    assert job_counts(db, undo_job).get("succeeded", 0) < len(arns)

    resumed = run_cli("run", "--json", *common)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert job_counts(db, undo_job) == {"succeeded": len(arns)}  # none "changed since"
    for n, arn in enumerate(arns):
        assert tags_of(sim_url, arn) == ({"stage": "old"} if n % 2 == 0 else {}), arn

    # The undo is undone in turn: back to the tag job's result.
    again = run_cli("undo", str(undo_job), "--json", *common)
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(tags_of(sim_url, a) == {"stage": "new", "owner": "me"} for a in arns)


def test_undo_usage_dry_run_and_report(tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    db = tmp_path / "bulktag.db"
    arns = list(synthetic_arns(["123456789012"], ["us-east-1"], 5))
    source = tmp_path / "a.txt"
    source.write_text("\n".join(arns) + "\n")
    common = ["--db", str(db), "--endpoint-url", sim_url]

    missing = run_cli("undo", "7", *common)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    queued = run_cli("tag", "--arns", str(source), "--tag", "Owner=a", "--detach", *common)
    job = int(queued.stdout.strip())
    refused = run_cli("undo", str(job), *common)
    assert refused.returncode == 2, refused.stderr
    assert f"job {job} is ready" in refused.stderr and f"bulktag pause {job}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert run_cli("run", *common).returncode == 0

    plan = run_cli("undo", str(job), "--dry-run", "--json", *common)
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    assert (data["operation"], data["change"], data["keys"]["remove"]) == ("undo", 5, 5)
    assert data["sample"][0]["diff"] == "Owner: 'a' → absent"
    assert all(tags_of(sim_url, a) == {"Owner": "a"} for a in arns)  # nothing sent
    assert len(json.loads(run_cli("jobs", "--json", "--db", str(db)).stdout)["jobs"]) == 1

    report = run_cli("report", str(job), "--db", str(db))
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    assert {r["before"] for r in rows} == {'{"Owner": null}'}
    assert {r["after"] for r in rows} == {'{"Owner": "a"}'}
    jsonl = run_cli("report", str(job), "--format", "jsonl", "--db", str(db))
    first = json.loads(jsonl.stdout.splitlines()[0])
    assert (first["before"], first["after"]) == ({"Owner": None}, {"Owner": "a"})

    done = run_cli("undo", str(job), "--json", *common)
    assert done.returncode == 0, done.stderr
    assert all(tags_of(sim_url, a) == {} for a in arns)
    nothing = run_cli("tag", "--arns", str(source), "--tag", "X=1", "--no-before-images",
                      *common)
    assert nothing.returncode == 0
    plain = run_cli("undo", str(job + 2), *common)
    assert plain.returncode == 2 and "kept no before-images" in plain.stderr
