"""Fencing and session liveness on one PostgreSQL queue (issue 25): a worker frozen (SIGSTOP)
past `owner_stale_seconds` has its shards taken by the others; thawed, it must not send one more
call on them (its leases lapsed: it stops before any other worker may take them, and finds out
it lost them). A worker killed with SIGKILL is noticed through its database session within
seconds, not after its heartbeat goes stale.

Each daemon signs with its own access key (all of one account), so the simulator's call log
(`log_calls`) says which worker sent each call, when it started and when it ended. "No shard is
ever driven by two workers" is then checked directly: on every account-region, no two workers'
TagResources calls overlap in time. PostgreSQL tests fail, not skip, without a server."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulktag.sim import synthetic_arns
from bulktag.store import ItemState
from tests.support import waits
from tests.support.cli import bulktag_argv
from tests.support.counts import store_counts
from tests.support.daemon import Daemon, http
from tests.support.sim import sim_post, simulator_process

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"
REGIONS = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2",
           "eu-central-1", "ap-south-1"]  # 8 shards
STALE = 6.0  # owner_stale_seconds


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--latency-ms", "100-200") as url:
        sim_post(url, "/_sim/config", {"log_calls": True})
        yield url


def calls(sim: str) -> list[dict[str, Any]]:
    status, body = http(sim + "/_sim/calls")
    assert status == 200
    found: list[dict[str, Any]] = json.loads(body)["calls"]
    return found


def overlaps(log: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Pairs of TagResources calls on one account-region by two workers, at the same time."""
    by_shard: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in log:
        if c["operation"] == "TagResources" and not c["throttled"]:
            by_shard[f"{c['account']}/{c['region']}"].append(c)
    found = []
    for shard, shard_calls in by_shard.items():
        shard_calls.sort(key=lambda c: c["start"])
        open_calls: list[dict[str, Any]] = []
        for c in shard_calls:
            open_calls = [o for o in open_calls if o["end"] > c["start"]]
            found += [(shard, o, c) for o in open_calls if o["key"] != c["key"]]
            open_calls.append(c)
    return found


def submit(tmp_path: Path, env: dict[str, str], url: str, sim: str, arns: list[str]) -> int:
    (tmp_path / "arns.txt").write_text("\n".join(arns) + "\n")
    result = subprocess.run(
        bulktag_argv("tag", "--arns", str(tmp_path / "arns.txt"), "--tag", "fence=yes",
                     "--detach", "--no-skip-compliant", "--db", url, "--endpoint-url", sim),
        check=False, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def wait_until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    waits.wait_until(check, what, timeout=timeout, interval=0.2)


def keys_on(log: list[dict[str, Any]], since: float) -> dict[str, set[str]]:
    """Worker key -> the regions it sent TagResources to since `since` (the sim's clock)."""
    out: dict[str, set[str]] = defaultdict(set)
    for c in log:
        if c["operation"] == "TagResources" and c["start"] >= since:
            out[c["key"]].add(c["region"])
    return out


def test_a_thawed_worker_never_drives_a_shard_another_took(
        tmp_path: Path, pg_url: str, sim_url: str, cli_env: dict[str, str]) -> None:
    arns = list(synthetic_arns([ACCOUNT], REGIONS, 1100))
    env = {**cli_env, "BULKTAG_IN_FLIGHT_PER_SHARD": "2",
           "BULKTAG_OWNER_STALE_SECONDS": str(STALE), "BULKTAG_GRACE_SECONDS": "5"}
    keys = [f"sim-{ACCOUNT}-worker{n}" for n in range(2)]
    daemons = [Daemon(tmp_path, f"d{n}", pg_url, sim_url,
                      {**env, "AWS_ACCESS_KEY_ID": key}, ready_timeout=60)
               for n, key in enumerate(keys)]
    frozen = daemons[0]
    try:
        job_id = submit(tmp_path, env, pg_url, sim_url, arns)
        wait_until(lambda: len(keys_on(calls(sim_url), 0)) == 2, "both workers send")
        frozen.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.time()
        # The other worker takes every shard once the frozen one's heartbeat is stale.
        wait_until(lambda: keys_on(calls(sim_url), stopped_at + 1).get(keys[1], set())
                   == set(REGIONS), "the other worker drives every shard", timeout=60)
        time.sleep(2)  # well into the take-over
        frozen.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: store_counts(pg_url, job_id).get(ItemState.SUCCEEDED, 0)
                   == len(arns), "every item succeeded", timeout=180)
        log = calls(sim_url)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
                d.proc.kill()
                d.proc.wait(10)
    clashes = overlaps(log)
    assert not clashes, clashes[:5]
    tagged = [c for c in log if c["operation"] == "TagResources"]
    throttled = sum(c["throttled"] for c in tagged)
    assert throttled <= max(4, 0.02 * len(tagged)), (throttled, len(tagged))
    counts = store_counts(pg_url, job_id)
    assert counts == {ItemState.SUCCEEDED: len(arns)}, counts  # nothing lost, none twice
    fenced = frozen.log.read_text()
    assert "lease_lapsed" in fenced, fenced[-3000:]


def test_a_killed_worker_is_noticed_by_its_session_in_seconds(
        tmp_path: Path, pg_url: str, sim_url: str, cli_env: dict[str, str],
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    env = {**cli_env, "BULKTAG_OWNER_STALE_SECONDS": "300", "BULKTAG_GRACE_SECONDS": "5"}
    arns = list(synthetic_arns([ACCOUNT], REGIONS[:2], 800))
    daemons = [Daemon(tmp_path, f"k{n}", pg_url, sim_url,
                      {**env, "AWS_ACCESS_KEY_ID": f"sim-{ACCOUNT}-k{n}"}, ready_timeout=60)
               for n in range(2)]
    try:
        job_id = submit(tmp_path, env, pg_url, sim_url, arns)
        wait_until(lambda: len(keys_on(calls(sim_url), 0)) == 2, "both workers send")
        victim = daemons[0]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        killed_at = time.time()
        # Its heartbeat stays fresh-looking for 300 s; its session ended with it.
        wait_until(lambda: keys_on(calls(sim_url), killed_at).get(f"sim-{ACCOUNT}-k1", set())
                   == set(REGIONS[:2]), "the survivor drives both shards", timeout=30)
        took = time.time() - killed_at
        listed = json.loads(run_cli("workers", "--json", "--db", pg_url, env=env).stdout)
        wait_until(lambda: store_counts(pg_url, job_id).get(ItemState.SUCCEEDED, 0)
                   + store_counts(pg_url, job_id).get(ItemState.SKIPPED, 0) == len(arns),
                   "every item done", timeout=120)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait(10)
    assert took < 15, took
    assert all(w["owner"] != "" for w in listed["workers"])
    print(f"\nsession take-over {took:.1f} s after SIGKILL (owner_stale_seconds 300)")


def test_status_shows_the_fleets_rate_and_says_when_no_worker_runs_the_job(
        tmp_path: Path, pg_url: str, sim_url: str, cli_env: dict[str, str],
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    arns = list(synthetic_arns([ACCOUNT], REGIONS, 1500))
    env = {**cli_env, "BULKTAG_IN_FLIGHT_PER_SHARD": "2",
           "BULKTAG_OWNER_STALE_SECONDS": str(STALE)}
    daemons = [Daemon(tmp_path, f"r{n}", pg_url, sim_url,
                      {**env, "AWS_ACCESS_KEY_ID": f"sim-{ACCOUNT}-r{n}"}, ready_timeout=60)
               for n in range(2)]

    def status() -> dict[str, Any]:
        done = run_cli("status", str(job_id), "--json", "--db", pg_url, env=env)
        assert done.returncode == 0, done.stderr
        st: dict[str, Any] = json.loads(done.stdout)
        return st

    try:
        job_id = submit(tmp_path, env, pg_url, sim_url, arns)
        wait_until(lambda: len(keys_on(calls(sim_url), 0)) == 2, "both workers send")
        time.sleep(3)  # past the first rate window
        first, t1 = store_counts(pg_url, job_id).get(ItemState.SUCCEEDED, 0), time.monotonic()
        time.sleep(6)
        shown = status()
        second, t2 = store_counts(pg_url, job_id).get(ItemState.SUCCEEDED, 0), time.monotonic()
        measured = (second - first) / (t2 - t1)
        assert shown["workers"] == 2, shown
        assert abs(shown["rate"] - measured) <= 0.15 * measured, (shown["rate"], measured)
        jobs = json.loads(run_cli("jobs", "--json", "--db", pg_url, env=env).stdout)["jobs"]
        assert abs(jobs[0]["rate"] - measured) <= 0.2 * measured, (jobs[0], measured)
        assert 0 < store_counts(pg_url, job_id).get(ItemState.PENDING, 0)  # still running
        for d in daemons:  # both at once: one left alive a moment may reap the other's row
            d.proc.send_signal(signal.SIGKILL)
        for d in daemons:
            d.proc.wait(10)
        wait_until(lambda: status()["workers"] == 0, "status sees no worker", timeout=30)
        idle = status()
        assert idle["state"] == "active" and idle["eta_seconds"] is None
        assert idle["no_worker_since"] is not None
        human = run_cli("status", str(job_id), "--db", pg_url, env=env).stdout
        assert "no worker is running this job (since " in human
        listed = json.loads(run_cli("workers", "--json", "--db", pg_url, env=env).stdout)
        # Each worker still listed shows its session gone (a daemon that outlived the other by
        # a heartbeat may have reaped its row before its own kill landed).
        assert 1 <= len(listed["workers"]) <= 2, listed
        assert not any(w["session"] or w["live"] for w in listed["workers"])
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait(10)
