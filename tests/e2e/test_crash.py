"""Crash and interrupt tests: the CLI in a subprocess against the simulator in another, killed
with SIGKILL or interrupted with SIGINT mid-run, then resumed with `bulktag run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulktag.engine.recorder import RECORDER_INTERVAL
from bulktag.sim import synthetic_arns
from tests.support.cli import bulktag_argv, start_cli
from tests.support.counts import sqlite_counts as counts
from tests.support.counts import wait_for_progress
from tests.support.sim import sim_get, sim_tags, simulator_process
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]
PER_REGION = 300
IN_FLIGHT = 2


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--latency-ms", "100-200") as url:
        yield url


def start_tag(tmp_path: Path, db: Path, url: str, cli_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], list[str]]:
    """`bulktag tag` of every ARN in the background; its JSON log in tmp_path/tag.log."""
    arns = list(synthetic_arns(["123456789012"], REGIONS, PER_REGION))
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    env = {**cli_env, "BULKTAG_IN_FLIGHT_PER_SHARD": str(IN_FLIGHT)}
    with (tmp_path / "tag.log").open("w") as log:
        proc = start_cli("tag", "--arns", str(source), "--tag", "migrated=yes", "--db", str(db),
                         "--endpoint-url", url, "--log-format", "json", env=env, stderr=log)
    return proc, arns


def assert_all_tagged(url: str, arns: list[str]) -> None:
    for arn in arns:
        tags = sim_tags(url, arn)
        assert tags.get("migrated") == "yes", arn


def resume(db: Path, url: str, cli_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bulktag_argv("run", "--db", str(db), "--endpoint-url", url, "--log-format", "json",
                     "--json"),
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
    # The second SIGINT only once the first was handled (the run logged `stopping`).
    wait_until(lambda: '"stopping"' in (tmp_path / "tag.log").read_text(),
               "the first SIGINT handled", timeout=30, interval=0.01)
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
