"""One real account-region, one shard (newcomer finding, issue 21.2). ARNs that carry no account
(S3 buckets `arn:aws:s3:::name`) belong to the caller's account and the region their calls are
signed for; sharded apart from the caller's other ARNs there, the two shards drove one quota
at full rate each (18 of 118 TagResources calls throttled). Through the CLI against the
simulator in another process, which enforces the documented quotas per (account, region) of
the signed call: 1,000 buckets and 1,000 Lambda functions of the caller's account in us-east-1
are tagged in one shard with throttled calls within 2 %, detached (the worker finds the
caller's account) or not (the pre-flight's answer), and the plan says which region buckets
go through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliRunner
from tests.support.sim import sim_get, sim_tags, simulator_process

pytestmark = pytest.mark.slow

CALLER = "123456789012"  # the simulator's default account: what STS answers
N = 500


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--latency-ms", "20-40") as url:
        yield url


def arns() -> list[str]:
    buckets = [f"arn:aws:s3:::bucket-{n:05d}" for n in range(N)]
    functions = [f"arn:aws:lambda:us-east-1:{CALLER}:function:fn-{n:05d}" for n in range(N)]
    # interleaved, as an export lists them
    return [a for pair in zip(buckets, functions, strict=True) for a in pair]


@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
def test_buckets_and_the_callers_functions_share_one_shard(
        tmp_path: Path, sim_url: str, run_cli: CliRunner, detach: bool) -> None:
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns()) + "\n")
    common = ["--db", str(tmp_path / "bulktag.db"), "--endpoint-url", sim_url,
              "--log-format", "json"]

    plan = run_cli("tag", "--arns", str(source), "--tag", "team=x", "--dry-run", "--json",
                   *common)
    assert plan.returncode == 0, plan.stderr[-2000:]
    shards = json.loads(plan.stdout)["shards"]
    assert [(s["account"], s["region"], s["s3_buckets"]) for s in shards] == [
        (CALLER, "us-east-1", N)]
    human = run_cli("tag", "--arns", str(source), "--tag", "team=x", "--dry-run", *common)
    assert f"{N} S3 bucket(s): their ARN names no region" in human.stdout
    assert "sent through us-east-1" in human.stdout

    if detach:
        submitted = run_cli("tag", "--detach", "--arns", str(source), "--tag", "team=x",
                            *common)
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        done = run_cli("run", "--json", *common)
    else:
        done = run_cli("tag", "--arns", str(source), "--tag", "team=x", "--json", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(sim_tags(sim_url, a) == {"team": "x"} for a in arns())

    stats: dict[str, Any] = sim_get(sim_url, "/_sim/stats")
    shard = stats["by_account_region"][f"{CALLER}/us-east-1"]
    calls = shard["requests"].get("TagResources", 0)
    throttled = shard["throttled"].get("TagResources", 0)
    assert calls >= 2 * N // 20
    assert throttled <= 0.02 * calls, f"{throttled} of {calls} TagResources calls throttled"
