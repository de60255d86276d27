"""Crash and interrupt tests: the CLI in a subprocess against the simulator in another, killed
with SIGKILL or interrupted with SIGINT mid-run, then resumed with `bulktag run`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import simulator_process

from bulktag.engine.recorder import RECORDER_INTERVAL
from bulktag.sim import synthetic_arns

pytestmark = pytest.mark.slow

REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]
PER_REGION = 300
IN_FLIGHT = 2


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--latency-ms", "100-200") as url:
        yield url


def sim_get(url: str, path: str) -> dict[str, object]:
    with urllib.request.urlopen(url + path, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT state, sum(n) FROM counts GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows if n}
    finally:
        con.close()


def start_tag(tmp_path: Path, db: Path, url: str, cli_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], list[str]]:
    arns = list(synthetic_arns(["123456789012"], REGIONS, PER_REGION))
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    env = {**cli_env, "BULKTAG_IN_FLIGHT_PER_SHARD": str(IN_FLIGHT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulktag", "tag", "--arns", str(source), "--tag", "migrated=yes",
         "--db", str(db), "--endpoint-url", url, "--log-format", "json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc, arns


def wait_for_progress(db: Path, proc: subprocess.Popen[bytes], done: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if db.exists():
            try:
                if counts(db).get("succeeded", 0) >= done:
                    return
            except sqlite3.OperationalError:
                pass  # not migrated yet
        time.sleep(0.05)
    raise AssertionError("no progress within 60 s")


def assert_all_tagged(url: str, arns: list[str]) -> None:
    for arn in arns:
        tags = sim_get(url, "/_sim/tags?arn=" + urllib.parse.quote(arn, safe=""))
        assert tags.get("migrated") == "yes", arn


def resume(db: Path, url: str, cli_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulktag", "run", "--db", str(db), "--endpoint-url", url,
         "--log-format", "json", "--json"],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )


def test_sigkill_mid_run_then_run_again_loses_nothing(
    tmp_path: Path, sim_url: str, cli_env: dict[str, str]
) -> None:
    db = tmp_path / "bulktag.db"
    proc, arns = start_tag(tmp_path, db, sim_url, cli_env)
    wait_for_progress(db, proc, done=len(arns) // 4)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    before = counts(db)
    assert before.get("succeeded", 0) < len(arns)

    result = resume(db, sim_url, cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["jobs"][0]["state"] == "completed"
    bound = len(REGIONS) * IN_FLIGHT * 20 + int(len(REGIONS) * 100 * RECORDER_INTERVAL) + 20
    final = counts(db)
    # Every item recorded exactly once. Those tagged but not recorded before the kill are found
    # already right when the resumed run reads current tags first (skip-compliant): skipped.
    assert set(final) <= {"succeeded", "skipped"}, final
    assert sum(final.values()) == len(arns)
    assert final.get("skipped", 0) <= bound
    assert_all_tagged(sim_url, arns)
    # Re-sent work is bounded by what was in flight (calls and the recorder's last window).
    sends = sim_get(sim_url, "/_sim/stats")["arn_sends"]["TagResources"]  # type: ignore[index]
    assert 0 <= sends - len(arns) <= bound, (sends, bound)


def test_sigint_drains_in_flight_work_exits_130_and_resumes(
    tmp_path: Path, sim_url: str, cli_env: dict[str, str]
) -> None:
    db = tmp_path / "bulktag.db"
    proc, arns = start_tag(tmp_path, db, sim_url, cli_env)
    wait_for_progress(db, proc, done=len(arns) // 4)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    after = counts(db)
    assert after.get("leased", 0) == 0  # every lease released on the way out
    assert after.get("pending", 0) > 0  # it really stopped early
    assert sum(after.values()) == len(arns)
    # What was recorded as done is really done.
    sends_at_stop = sim_get(sim_url, "/_sim/stats")["arn_sends"]["TagResources"]  # type: ignore[index]
    assert sends_at_stop >= after.get("succeeded", 0)

    result = resume(db, sim_url, cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert counts(db) == {"succeeded": len(arns)}
    assert_all_tagged(sim_url, arns)
    sends = sim_get(sim_url, "/_sim/stats")["arn_sends"]["TagResources"]  # type: ignore[index]
    assert sends == len(arns)  # a clean stop re-sends nothing


def test_a_second_sigint_cancels_in_flight_calls_but_still_releases_every_lease(
    tmp_path: Path, sim_url: str, cli_env: dict[str, str]
) -> None:
    db = tmp_path / "bulktag.db"
    proc, arns = start_tag(tmp_path, db, sim_url, cli_env)
    wait_for_progress(db, proc, done=len(arns) // 4)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    after = counts(db)
    assert after.get("leased", 0) == 0
    assert sum(after.values()) == len(arns)
    result = resume(db, sim_url, cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    final = counts(db)
    assert set(final) <= {"succeeded", "skipped"} and sum(final.values()) == len(arns)
    assert_all_tagged(sim_url, arns)
