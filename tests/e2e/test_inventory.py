"""`bulktag inventory`: snapshots of what discovery sees, to a local file and to moto's S3."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import boto3

from bulktag.sim import RunningSimulator, synthetic_arns
from tests.support.cli import CliRunner

ACCOUNT = "123456789012"


def seed(sim: RunningSimulator) -> list[str]:
    arns = list(synthetic_arns([ACCOUNT], ["us-east-1", "eu-west-1"], 40))
    for n, arn in enumerate(arns):
        sim.state.put(arn, {"env": "prod" if n % 2 else "dev", "n": str(n)}, account=ACCOUNT)
    return arns


async def test_inventory_to_a_local_directory_lists_every_resource_with_its_tags(
    sim: RunningSimulator, run_cli: CliRunner, tmp_path: Path
) -> None:
    arns = seed(sim)
    out = tmp_path / "snapshots"
    out.mkdir()
    proc = await asyncio.to_thread(
        run_cli, "inventory", "-o", str(out), "--regions", "us-east-1,eu-west-1",
        "--endpoint-url", sim.url, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    (snapshot,) = out.glob("inventory-*.jsonl")
    assert summary["location"] == str(snapshot)
    lines = [json.loads(line) for line in snapshot.read_text().splitlines()]
    assert sorted(r["arn"] for r in lines) == sorted(arns)
    by_arn = {r["arn"]: r for r in lines}
    assert by_arn[arns[3]]["tags"] == {"env": "prod", "n": "3"}
    assert by_arn[arns[3]]["account"] == ACCOUNT
    assert {r["region"] for r in lines} == {"us-east-1", "eu-west-1"}
    assert summary["per_shard"] == {"(caller)/us-east-1": 40, "(caller)/eu-west-1": 40}


async def test_inventory_with_a_filter_to_s3_with_kms(
    sim: RunningSimulator, run_cli: CliRunner, moto_url: str, s3: Any, bucket: str
) -> None:
    arns = seed(sim)
    key_arn = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1").create_key(
        Description="inventory")["KeyMetadata"]["Arn"]
    proc = await asyncio.to_thread(
        run_cli, "inventory", "-o", f"s3://{bucket}/before", "--match-tag", "env=prod",
        "--regions", "us-east-1,eu-west-1", "--kms-key-arn", key_arn,
        "--endpoint-url", sim.url, "--json", env={"BULKTAG_S3_ENDPOINT_URL": moto_url})
    assert proc.returncode == 0, proc.stderr
    location = json.loads(proc.stdout)["location"]
    key = location.removeprefix(f"s3://{bucket}/")
    assert key.startswith("before/inventory-") and key.endswith(".jsonl")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_arn
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    found = sorted(json.loads(line)["arn"] for line in body.splitlines())
    assert found == sorted(a for n, a in enumerate(arns) if n % 2)


async def test_inventory_to_a_missing_bucket_is_a_clear_error(
    sim: RunningSimulator, run_cli: CliRunner, moto_url: str
) -> None:
    seed(sim)
    proc = await asyncio.to_thread(
        run_cli, "inventory", "-o", "s3://no-such-bucket-here/x", "--regions", "us-east-1",
        "--endpoint-url", sim.url, env={"BULKTAG_S3_ENDPOINT_URL": moto_url})
    assert proc.returncode == 4
    assert "no-such-bucket-here" in proc.stderr
