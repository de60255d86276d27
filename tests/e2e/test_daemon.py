"""The daemon as operators run it: a subprocess against the simulator in another, jobs submitted
by other processes while it runs, /metrics and /healthz scraped over HTTP, SIGTERM mid-job,
SIGHUP, a restart, and a second daemon sharing the store."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulktag.sim import synthetic_arns
from tests.support.cli import bulktag_argv
from tests.support.counts import sqlite_counts
from tests.support.daemon import Daemon, http
from tests.support.metrics import labels, total
from tests.support.sim import simulator_process
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
GRACE = 5.0


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--latency-ms", "50-100") as url:
        yield url


def daemon(tmp_path: Path, name: str, db: Path, sim: str, env: dict[str, str],
           config: Path, wait: bool = True) -> Daemon:
    return Daemon(tmp_path, name, db, sim, env, "--config", str(config), wait=wait)


def jobs(db: Path) -> dict[int, dict[str, Any]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in con.execute("SELECT * FROM jobs")}
    finally:
        con.close()


def rule(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        return dict(con.execute("SELECT * FROM sync_rules").fetchone())
    finally:
        con.close()


def test_daemon_runs_jobs_submitted_by_others_stops_cleanly_and_shares_the_store(
    tmp_path: Path, sim_url: str, cli_env: dict[str, str]
) -> None:
    db = tmp_path / "bulktag.db"
    config = tmp_path / "config.toml"
    config.write_text("max_rate = 5.0\n")
    env = {**cli_env, "BULKTAG_IN_FLIGHT_PER_SHARD": "2", "BULKTAG_GRACE_SECONDS": str(GRACE)}
    low = list(synthetic_arns(["123456789012"], REGIONS, 300))
    high = [a + "-hi"
            for a in synthetic_arns(["123456789012"], REGIONS, 60)]
    (tmp_path / "low.txt").write_text("\n".join(low) + "\n")
    (tmp_path / "high.txt").write_text("\n".join(high) + "\n")
    everything = low + high

    first = daemon(tmp_path, "first", db, sim_url, env, config)
    try:
        status, body = http(first.url + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        before = first.metrics()
        assert total(before, "bulktag_requests_total") == 0

        def submit(source: str, priority: int) -> int:
            result = subprocess.run(
                bulktag_argv("tag", "--arns", str(tmp_path / source), "--tag", "migrated=yes",
                             "--detach", "--priority", str(priority), "--db", str(db),
                             "--endpoint-url", sim_url),
                check=False, env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            return int(result.stdout.strip())

        job_low = submit("low.txt", 0)
        job_high = submit("high.txt", 5)
        wait_until(lambda: sqlite_counts(db).get("succeeded", 0) >= 300, "some items succeed")

        m = first.metrics()
        assert total(m, "bulktag_requests_total", operation="TagResources") > 0
        assert total(m, "bulktag_items", state="succeeded") >= 300
        assert total(m, "bulktag_items") == len(everything)
        assert {lbl["region"] for lbl in labels(m, "bulktag_shard_rate")} == set(REGIONS)
        assert total(m, "bulktag_batch_seconds_count") > 0
        buckets = [s.value for s in m if s.name == "bulktag_batch_seconds_bucket"]
        assert buckets == sorted(buckets) and buckets[-1] == total(m, "bulktag_batch_seconds_count")

        # SIGHUP: the new max_rate reaches the shards' limiters.
        config.write_text("max_rate = 4.0\n")
        first.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: total(first.metrics(), "bulktag_config_reloads_total") == 1,
                   "the reload")

        # SIGTERM mid-job: drain, release, exit 0 within the grace period.
        assert sqlite_counts(db).get("pending", 0) > 0
        started = time.monotonic()
        assert first.stop(GRACE + 5) == 0
        assert time.monotonic() - started < GRACE + 3
        stopped = sqlite_counts(db)
        assert stopped.get("leased", 0) == 0
        assert stopped.get("pending", 0) > 0
        assert sum(stopped.values()) == len(everything)
        assert "max_rate" in first.log.read_text()  # config_reloaded names what changed
    finally:
        if first.proc.poll() is None:
            first.proc.kill()

    # A tag-sync rule for the daemons to evaluate: what is already migrated gets synced=1.
    result = subprocess.run(
        bulktag_argv("sync", "add", "migrated", "--tag-key", "migrated", "--tag-value", "yes",
                     "--apply", "synced=1", "--regions", "us-east-1", "--interval", "3600",
                     "--db", str(db)), check=False, env=env, capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    # Restart, with a second daemon on the same store: they share the work through leases,
    # and the rule's evaluation is claimed by one of them.
    # Both start at once: the one up first would otherwise take every shard and, on a loaded
    # machine, finish the little work left before the other had started.
    again = daemon(tmp_path, "again", db, sim_url, env, config, wait=False)
    second = daemon(tmp_path, "second", db, sim_url, env, config, wait=False)
    try:
        again.ready()
        second.ready()
        wait_until(lambda: rule(db)["last_run_at"] is not None, "the rule evaluated")
        wait_until(lambda: all(j["state"] == "completed" for j in jobs(db).values()),
                   "every job completed")
        sync_jobs = [j for j in jobs(db).values() if j["name"] == "sync:migrated"]
        assert len(sync_jobs) == 1
        synced = int(rule(db)["members"])
        assert 0 < synced <= len([a for a in everything if ":us-east-1:" in a])
        assert sqlite_counts(db) == {"succeeded": len(everything) + synced}
        a, b = again.metrics(), second.metrics()
        assert total(a, "bulktag_sync_evaluations_total") + \
            total(b, "bulktag_sync_evaluations_total") == 1
        assert total(a, "bulktag_requests_total", operation="TagResources") > 0
        assert total(b, "bulktag_requests_total", operation="TagResources") > 0
        ceilings = {s.value for s in a if s.name == "bulktag_shard_rate_ceiling"
                    and s.labels["operation"] == "TagResources"}
        assert ceilings == {4.0}
        assert http(second.url + "/healthz")[0] == 200
        assert again.stop(GRACE + 5) == 0
        assert second.stop(GRACE + 5) == 0
    finally:
        for d in (again, second):
            if d.proc.poll() is None:
                d.proc.kill()

    for arn in everything:
        status, body = http(sim_url + "/_sim/tags?arn=" + urllib.parse.quote(arn, safe=""))
        assert status == 200 and json.loads(body).get("migrated") == "yes", arn
    # A clean stop re-sends nothing, and two daemons never send an item twice.
    sends = json.loads(http(sim_url + "/_sim/stats")[1])["arn_sends"]["TagResources"]
    assert sends == len(everything) + synced
    con = sqlite3.connect(db)
    members = [r[0] for r in con.execute("SELECT arn FROM sync_members")]
    con.close()
    assert len(members) == synced
    for arn in members:
        tags = json.loads(http(sim_url + "/_sim/tags?arn=" + urllib.parse.quote(arn, safe=""))[1])
        assert tags == {"migrated": "yes", "synced": "1"}, arn
    # The higher priority job, submitted second, was served first.
    done = jobs(db)
    assert done[job_high]["finished_at"] <= done[job_low]["finished_at"]
    assert done[job_high]["priority"] == 5
