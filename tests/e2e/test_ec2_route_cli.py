"""The `ec2` route through the CLI in subprocesses, against the simulator in another process: a
run of EC2 resources and DynamoDB tables in one account-region killed with SIGKILL mid-run,
then `bulktag run` again, re-sends at most what was in flight on each route (the in-process
tests of the route: tests/integration/test_ec2_route.py)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from bulktag.engine.recorder import RECORDER_INTERVAL
from bulktag.sim import synthetic_resources
from tests.support.cli import bulktag_argv, start_cli
from tests.support.counts import sqlite_counts as counts
from tests.support.counts import wait_for_progress
from tests.support.engine import ACCOUNT
from tests.support.sim import sim_get, sim_tags, simulator_process

REGION = "us-east-1"


@pytest.mark.slow
def test_sigkill_mid_run_then_run_resends_at_most_what_was_in_flight(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    # EC2 resources and, in the same account-region, DynamoDB tables (the Tagging API route):
    # both routes of the shard are in flight at once when the process is killed.
    n_ec2, n_tables, batch, in_flight = 6000, 400, 100, 2
    ec2_arns = [arn for _, arn in synthetic_resources([ACCOUNT], [REGION], n_ec2,
                                                      ec2_share=1.0)]
    tables = [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t{k}" for k in range(n_tables)]
    arns = [a for pair in zip(ec2_arns, tables, strict=False) for a in pair]
    arns += ec2_arns[n_tables:]  # tables interleaved with the first EC2 resources
    total = len(arns)
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    db = tmp_path / "bulktag.db"
    env = {**cli_env, "BULKTAG_ROUTE": "auto", "BULKTAG_IN_FLIGHT_PER_SHARD": str(in_flight),
           "BULKTAG_EC2_BATCH_SIZE": str(batch)}
    with simulator_process("--latency-ms", "100-200", "--seed-resources", str(n_ec2),
                           "--seed-ec2-share", "1") as url:
        proc = start_cli("tag", "--arns", str(source), "--tag", "migrated=yes", "--db", str(db),
                         "--endpoint-url", url, "--log-format", "json", env=env)
        wait_for_progress(db, proc, done=total // 4)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        assert counts(db).get("succeeded", 0) < total
        result = subprocess.run(
            bulktag_argv("run", "--db", str(db), "--endpoint-url", url, "--log-format", "json",
                         "--json"),
            env=env, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        final = counts(db)
        assert set(final) <= {"succeeded", "skipped"} and sum(final.values()) == total, final
        stats = sim_get(url, "/_sim/stats")
        sends = stats["arn_sends"]["CreateTags"]  # type: ignore[index]
        tag_sends = stats["arn_sends"].get("TagResources", 0)  # type: ignore[attr-defined]
        # EC2 route: two shards (snapshots are the caller's own; volumes and instances the
        # account's), each with at most `in_flight` batches out, plus the recorder's last
        # window. Tagging API route (the tables, in the account's shard beside its EC2 items):
        # `in_flight` batches of 20 out, plus its window at 5 calls/s.
        shards = 2
        bound = shards * in_flight * batch + int(shards * 8 * batch * RECORDER_INTERVAL) + 20
        tag_bound = in_flight * 20 + int(5 * 20 * RECORDER_INTERVAL) + 20
        assert 0 <= sends - n_ec2 <= bound, (sends, bound)
        assert 0 <= tag_sends - n_tables <= tag_bound, (tag_sends, tag_bound)
        assert final.get("skipped", 0) <= bound + tag_bound
        for arn in arns[:: 97]:
            tags = sim_tags(url, arn)
            assert tags.get("migrated") == "yes", arn
