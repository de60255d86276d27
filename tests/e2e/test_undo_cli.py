"""`bulktag undo` as a user runs it: the CLI in subprocesses against the simulator in another
process. Killed with SIGKILL mid-undo, `bulktag run` finishes the undo and every resource ends as
it was before the undone job; usage errors are clear (exit 2); reports carry before and after."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CliRunner, simulator_process
from test_crash import sim_get

from bulktag.sim import synthetic_arns

pytestmark = pytest.mark.slow

REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
PER_REGION = 300


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--latency-ms", "100-200") as url:
        yield url


def job_counts(db: Path, job: int) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT state, sum(n) FROM counts WHERE job_id = ? GROUP BY state",
                           (job,)).fetchall()
        return {state: int(n) for state, n in rows if n}
    finally:
        con.close()


def tags_of(url: str, arn: str) -> dict[str, str]:
    return sim_get(url, "/_sim/tags?arn=" + urllib.parse.quote(arn, safe=""))  # type: ignore[return-value]


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
    proc = subprocess.Popen([sys.executable, "-m", "bulktag", "undo", str(job), *common],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    undo_job = job + 1
    deadline = time.monotonic() + 60
    while job_counts(db, undo_job).get("succeeded", 0) < len(arns) // 4:
        assert proc.poll() is None, "the undo ended before it could be killed"
        assert time.monotonic() < deadline, "no progress within 60 s"
        time.sleep(0.05)
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
