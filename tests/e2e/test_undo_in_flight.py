"""Pause, then undo at once, while the paused job still has batches in flight (newcomer finding,
issue 21.1): the undo must plan only once those have landed, so every resource ends with exactly
the tags it had before the job. Four shards of 1,000 resources behind a 1.5 s latency leave a
few hundred items leased at the pause; before the fix the undo planned at once and ~900 of
4,000 resources kept the job's tags. CLI subprocesses against the simulator in another process,
on both stores."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulktag.sim import synthetic_arns
from tests.support.cli import CliRunner, start_cli
from tests.support.counts import store_counts
from tests.support.sim import sim_tags, simulator_process
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-south-1"]
PER_REGION = 1_000
BEFORE = {"stage": "old"}


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--latency-ms", "1500-1500") as url:
        body = json.dumps({"accounts": [ACCOUNT], "regions": REGIONS,
                           "per_region": PER_REGION, "tags": BEFORE}).encode()
        request = urllib.request.Request(url + "/_sim/seed", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert json.loads(resp.read())["added"] == len(REGIONS) * PER_REGION
        yield url


def test_pause_then_undo_at_once_puts_every_resource_back(
        tmp_path: Path, sim_url: str, store_url: str, run_cli: CliRunner,
        cli_env: dict[str, str]) -> None:
    arns = list(synthetic_arns([ACCOUNT], REGIONS, PER_REGION))
    assert sim_tags(sim_url, arns[0]) == BEFORE
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    store = ["--db", store_url]
    common = [*store, "--endpoint-url", sim_url, "--log-format", "json"]
    submitted = run_cli("tag", "--detach", "--arns", str(source), "--tag", "stage=new",
                        "--tag", "owner=me", *common)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job = int(submitted.stdout.strip())

    worker = start_cli("run", *common, env=cli_env)
    try:
        def some_landed() -> bool:
            assert worker.poll() is None, "the run ended before the pause"
            counts = store_counts(store_url, job)
            return counts.get("succeeded", 0) >= 200 and counts.get("leased", 0) >= 100

        wait_until(some_landed, "items landed and more in flight", timeout=120)
        paused = run_cli("pause", str(job), *store)
        assert paused.returncode == 0, paused.stderr[-2000:]
        undo = run_cli("undo", str(job), "--json", *common, timeout=600)
        assert undo.returncode == 0, undo.stderr[-3000:]
        assert "waiting_for_in_flight" in undo.stderr  # it did have to wait, and said so
    finally:
        worker.terminate()
        worker.wait(60)

    wrong = {a: t for a in arns if (t := sim_tags(sim_url, a)) != BEFORE}
    assert not wrong, f"{len(wrong)} of {len(arns)} resources not back, e.g. " \
                      f"{next(iter(wrong.items()))}"
    # The paused job ended with the undo: its unsent items cancelled, nothing left to resume.
    counts = store_counts(store_url, job)
    assert set(counts) <= {"succeeded", "cancelled"} and counts.get("leased", 0) == 0, counts
    status = json.loads(run_cli("status", str(job), "--json", *store).stdout)
    assert status["state"] == "cancelled", status
    resumed = run_cli("resume", str(job), *store)
    assert resumed.returncode != 0
    retried = run_cli("retry", str(job), *store)
    assert retried.returncode == 2 and "undone by job" in retried.stderr, retried.stderr
