"""`bulktag rename` / `bulktag transform` as a user runs them: the CLI in subprocesses against
the simulator (documented quotas enforced), then `bulktag undo`.

2,000 resources in 4 regions (the issue's 8,000 are in benchmarks/transform.py): `cost-center`
with 25 values on most, a different `CostCenter` already on some (a conflict: left alone and
reported), no key at all on others (no call), 1 % of ARNs failed with a 500 in each call.
Every resource that had `cost-center` ends with `CostCenter` of the same value and no
`cost-center`; calls stay within 1.25 × the fewest possible; undo restores every resource
exactly. A kill -9 in the middle, then `bulktag run`: every resource right, no call made for a
step already done."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from bulktag.sim import RunningSimulator, synthetic_arns
from tests.support.cli import CliRunner, start_cli
from tests.support.counts import sqlite_job_counts
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]
VALUES = [f"cc-{n:02d}" for n in range(25)]


def seed(sim: RunningSimulator, per_region: int) -> dict[str, dict[str, str]]:
    """Tagging API resources only (the EC2 route's are in the EC2 test): every 20th has a
    different CostCenter already, every 10th no cost-center at all."""
    prior: dict[str, dict[str, str]] = {}
    arns = [a for a in synthetic_arns([ACCOUNT], REGIONS, per_region * 2) if ":ec2:" not in a]
    by_region: Counter[str] = Counter()
    for n, arn in enumerate(arns):
        region = arn.split(":")[3]
        if by_region[region] >= per_region:
            continue
        by_region[region] += 1
        tags = {"Owner": "team-a"}
        if n % 10 != 3:
            tags["cost-center"] = VALUES[n % len(VALUES)]
        if n % 20 == 7:
            tags["CostCenter"] = "other"
        sim.state.put(arn, tags, account=ACCOUNT)
        prior[arn] = tags
    return prior


def expected(tags: dict[str, str]) -> dict[str, str]:
    out = dict(tags)
    if "cost-center" in out and out.get("CostCenter", out["cost-center"]) == out["cost-center"]:
        out["CostCenter"] = out.pop("cost-center")
    return out


def fewest_calls(prior: dict[str, dict[str, str]]) -> int:
    """Σ over shards and distinct tag maps of ⌈n/20⌉, plus the untag batches."""
    tag: Counter[tuple[str, str]] = Counter()
    untag: Counter[str] = Counter()
    for arn, tags in prior.items():
        if expected(tags) != tags:
            region = arn.split(":")[3]
            tag[(region, tags["cost-center"])] += 1
            untag[region] += 1
    return sum(math.ceil(n / 20) for n in tag.values()) + \
        sum(math.ceil(n / 20) for n in untag.values())


async def test_rename_then_undo_with_conflicts_missing_keys_and_500s(
        sim: RunningSimulator, run_cli: CliRunner, tmp_path: Path) -> None:
    prior = seed(sim, 500)
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(prior) + "\n")
    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim.url]

    plan = await asyncio.to_thread(run_cli, "rename", "cost-center", "CostCenter", "--arns",
                                   str(source), "--dry-run", "--json", *common)
    assert plan.returncode == 0, plan.stderr[-2000:]
    planned = json.loads(plan.stdout)
    changing = sum(1 for t in prior.values() if expected(t) != t)
    assert planned["operation"] == "transform" and planned["change"] == changing
    assert planned["refused"] == {"Conflict": sum(
        1 for t in prior.values() if "cost-center" in t and "CostCenter" in t)}
    assert planned["calls"]["TagResources"] + planned["calls"]["UntagResources"] == \
        fewest_calls(prior)

    sim.reconfigure(resource_error_rate=0.01)
    before = dict(sim.state.stats["requests"])
    done = await asyncio.to_thread(run_cli, "rename", "cost-center", "CostCenter", "--arns",
                                   str(source), "--json", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    job = json.loads(done.stdout)["jobs"][0]
    assert job["operation"] == "transform"
    calls = {op: n - before.get(op, 0) for op, n in sim.state.stats["requests"].items()}
    sent = calls.get("TagResources", 0) + calls.get("UntagResources", 0)
    retries = sim.state.stats["faults"]  # each ARN failed with a 500 costs a resend at most
    assert sent <= 1.25 * fewest_calls(prior) + sum(retries.values()), (calls, retries)
    for arn, tags in prior.items():
        assert sim.state.tags(arn) == expected(tags), arn
    assert job["counts"]["succeeded"] == changing
    conflicts = [a for a, t in prior.items() if "cost-center" in t and "CostCenter" in t]
    report = await asyncio.to_thread(run_cli, "report", str(job["job"]), "--format", "jsonl",
                                     "--db", str(tmp_path / "s.db"))
    assert report.returncode == 0, report.stderr[-2000:]
    rows = {r["arn"]: r for r in map(json.loads, report.stdout.splitlines()) if r}
    assert rows[conflicts[0]]["status"] == "skipped"
    assert "CostCenter is 'other'" in rows[conflicts[0]]["message"]
    renamed = next(a for a, t in prior.items() if expected(t) != t)
    assert rows[renamed]["operation"] == "transform"
    assert rows[renamed]["before"] == {"CostCenter": None,
                                       "cost-center": prior[renamed]["cost-center"]}
    assert rows[renamed]["after"] == {"CostCenter": prior[renamed]["cost-center"],
                                      "cost-center": None}

    sim.reconfigure(resource_error_rate=0.0)
    undone = await asyncio.to_thread(run_cli, "undo", str(job["job"]), "--json", *common)
    assert undone.returncode == 0, undone.stderr[-2000:]
    for arn, tags in prior.items():
        assert sim.state.tags(arn) == tags, arn


async def test_kill_9_between_the_steps_then_run_ends_every_resource_right(
        sim: RunningSimulator, cli_env: dict[str, str], run_cli: CliRunner,
        tmp_path: Path) -> None:
    sim.reconfigure(latency_ms=(150.0, 250.0))
    prior = seed(sim, 250)
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(prior) + "\n")
    db = tmp_path / "s.db"
    common = ["--db", str(db), "--endpoint-url", sim.url]
    proc = start_cli("rename", "cost-center", "CostCenter", "--arns", str(source), *common,
                     env=cli_env)
    try:
        def half_set() -> bool:
            assert proc.poll() is None, "the job ended before the kill"
            both = sum(1 for a in prior if {"cost-center", "CostCenter"} <= set(
                sim.state.tags(a) or {}) and sim.state.tags(a) != prior[a])
            return both >= 40  # first steps landed, their second steps not yet

        await asyncio.to_thread(wait_until, half_set, "first steps ahead of second", 60)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    sends_before = Counter(sim.state.sends)
    resumed = await asyncio.to_thread(run_cli, "run", "--json", *common)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for arn, tags in prior.items():
        assert sim.state.tags(arn) == expected(tags), arn
    assert sqlite_job_counts(db, 1).get("failed", 0) == 0
    # A resource whose first step had landed got only its second step after the kill: at
    # most one more send each (one call per step), beyond what was in flight at the kill.
    resent = Counter(sim.state.sends) - sends_before
    assert max(resent.values(), default=0) <= 2


async def test_without_a_source_discovery_finds_the_resources_with_the_source_keys(
        sim: RunningSimulator, run_cli: CliRunner, tmp_path: Path) -> None:
    regions = ["us-east-1", "eu-west-1"]
    arns = [a for a in synthetic_arns([ACCOUNT], regions, 60) if ":ec2:" not in a]
    variants = ["costcenter", "COSTCENTER", "CostCenter", None]
    prior = {}
    for n, arn in enumerate(arns):
        key = variants[n % 4]
        tags = {"env": "Prod"} if key is None else {key: f"v{n % 3}", "env": "Prod"}
        sim.state.put(arn, tags, account=ACCOUNT)
        prior[arn] = tags
    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim.url,
              "--regions", ",".join(regions)]

    plan = await asyncio.to_thread(run_cli, "transform", "--key-case", "costcenter=CostCenter",
                                   "--dry-run", "--json", *common)
    assert plan.returncode == 0, plan.stderr[-2000:]
    lower_or_upper = [a for n, a in enumerate(arns) if n % 4 in (0, 1)]
    assert json.loads(plan.stdout)["change"] == len(lower_or_upper)

    done = await asyncio.to_thread(run_cli, "transform", "--key-case", "costcenter=CostCenter",
                                   "--json", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    job = json.loads(done.stdout)["jobs"][0]
    # only the resources the operation changes became items (no call, no item for the rest)
    assert job["total"] == len(lower_or_upper) and job["counts"]["succeeded"] == job["total"]
    for arn, tags in prior.items():
        value = next((v for k, v in tags.items() if k.lower() == "costcenter"), None)
        want = {"env": "Prod"} if value is None else {"CostCenter": value, "env": "Prod"}
        assert sim.state.tags(arn) == want, arn

    # one source key: discovery by TagFilters on it
    renamed = await asyncio.to_thread(run_cli, "rename", "env", "Environment", "--json",
                                      *common)
    assert renamed.returncode == 0, renamed.stderr[-2000:]
    assert json.loads(renamed.stdout)["jobs"][0]["total"] == len(arns)
    assert all("env" not in (sim.state.tags(a) or {}) and
               (sim.state.tags(a) or {})["Environment"] == "Prod" for a in arns)
