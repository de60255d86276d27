"""Discovery and the plan through the CLI in subprocesses, against the simulator over HTTP with
real SQLite stores: the plan of a file source, a query job with an unreadable account, and a
run killed with SIGKILL mid-discovery then resumed (the in-process tests of discovery are in
tests/integration/test_discovery.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from bulktag.sim import RunningSimulator, SimConfig, start_simulator
from tests.support.cli import bulktag_argv, start_cli
from tests.support.sim import seed_env as seed
from tests.support.sim import simulator_process
from tests.support.waits import wait_until

CALLER, SECOND, REFUSED = "111111111111", "222222222222", "444444444444"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]


async def test_plan_counts_changes_and_skips_per_region_without_tagging(
    tmp_path: Path, sim: RunningSimulator, run_cli: Any
) -> None:
    arns = [f"arn:aws:sqs:{r}:123456789012:p-{n}" for r in ("us-east-1", "eu-west-1")
            for n in range(45)]
    for arn in arns[:30]:
        sim.state.put(arn, {"k": "v"}, account="123456789012")
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\nnot-an-arn\n")
    result = await asyncio.to_thread(
        run_cli, "tag", "--arns", str(source), "--tag", "k=v", "--dry-run", "--skip-invalid",
        "--json", "--endpoint-url", sim.url, "--db", str(tmp_path / "p.db"))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    by_region = {s["region"]: s for s in plan["shards"]}
    assert (by_region["us-east-1"]["change"], by_region["us-east-1"]["skip"]) == (15, 30)
    assert (by_region["eu-west-1"]["change"], by_region["eu-west-1"]["skip"]) == (45, 0)
    assert plan["invalid"] == 1
    assert by_region["eu-west-1"]["batches"] == 3
    assert sim.state.stats["requests"].get("TagResources", 0) == 0
    assert not (tmp_path / "p.db").exists()


# -- crash during discovery ----------------------------------------------------------------------


def test_sigkill_during_discovery_then_run_finds_and_tags_everything_once(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # 3,000 resources per region, a third matching: 10 pages per region at 2 pages/s.
    with simulator_process("--seed-resources", "3000", "--regions", "us-east-1,eu-west-1",
                           "--quota", "GetResources=2") as url:
        db = tmp_path / "bulktag.db"
        env = {**cli_env, "BULKTAG_QUOTA_GETRESOURCES": "2"}
        proc = start_cli("tag", "--resource-type", "lambda", "--regions", "us-east-1,eu-west-1",
                         "--tag", "found=yes", "--db", str(db), "--endpoint-url", url,
                         "--log-format", "json", env=env)

        def pages() -> int:
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                walked = con.execute("SELECT coalesce(sum(pages), 0) FROM discoveries").fetchone()[0]
                con.close()
            except sqlite3.OperationalError:
                walked = 0
            return int(walked)

        # Killed once three pages are walked, or after 60 s all the same: what follows checks
        # that discovery was cut short.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: pages() >= 3, "three pages walked", timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        con = sqlite3.connect(db)
        assert con.execute("SELECT count(*) FROM discoveries WHERE state = 'done'").fetchone()[0] < 2
        con.close()

        result = subprocess.run(
            bulktag_argv("run", "--db", str(db), "--endpoint-url", url, "--json",
                         "--log-format", "json"), env=env, capture_output=True, text=True,
            timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        con = sqlite3.connect(db)
        states = dict(con.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall())
        walks = con.execute("SELECT state FROM discoveries").fetchall()
        con.close()
        # 3,000 per region rotate over 8 kinds; lambda functions are 1 in 8.
        assert states == {"succeeded": 2 * 375}
        assert walks == [("done",), ("done",)]


async def test_a_query_job_with_an_unreadable_account_exits_3_and_says_which(
    tmp_path: Path, run_cli: Any
) -> None:
    config = SimConfig(default_account=CALLER, refused_roles=frozenset(
        {f"arn:aws:iam::{REFUSED}:role/bulktag-tagger"}))
    async with await start_simulator(config) as sim:
        seed(sim, [SECOND, REFUSED], REGIONS, 9)
        db = tmp_path / "q.db"
        proc = await asyncio.to_thread(
            run_cli, "tag", "--match-tag", "env=prod", "--regions", "us-east-1",
            "--accounts", f"{SECOND},{REFUSED}", "--role-name", "bulktag-tagger",
            "--tag", "k=v", "--db", str(db), "--endpoint-url", sim.url, "--log-format", "json")
        assert proc.returncode == 3, proc.stderr
        assert "discovery: 1 of 2 account-region walks done" in proc.stdout
        assert f"FAILED {REFUSED}/us-east-1:" in proc.stdout
        status = json.loads((await asyncio.to_thread(
            run_cli, "status", "1", "--json", "--db", str(db))).stdout)
        walks = {w["account"]: w for w in status["discovery"]}
        assert walks[SECOND]["state"] == "done" and walks[SECOND]["found"] == 3
        assert walks[REFUSED]["state"] == "failed"
        assert "bulktag-tagger" in walks[REFUSED]["error"]
