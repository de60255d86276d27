"""Export to S3 against moto's server (an independent S3) on 127.0.0.1: objects under
prefix/job-<id>/, SSE-KMS or SSE-S3 on every object, multipart for reports over 8 MiB, clear
errors for a missing bucket, and --export-on-finish (kept with the job across runs), all through
the CLI. The AccessDenied message alone: tests/unit/test_export_s3.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import boto3

from bulktag.sim import RunningSimulator
from bulktag.store import JobOptions, JobState, NewItem, Store
from tests.support.cli import CliRunner
from tests.support.counts import sqlite_item_counts
from tests.support.reports import ACCOUNT, DENIED, GOOD, Cli, check_manifest, ec2, mixed_job


def objects(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"].removeprefix(prefix): s3.get_object(Bucket=bucket, Key=o["Key"])[
        "Body"].read() for o in listing}


async def test_export_with_kms_writes_rows_and_manifest_under_prefix_job_id(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path, moto_url: str,
    s3: Any, bucket: str,
) -> None:
    cli = Cli(run_cli, db_path, sim, env={"BULKTAG_S3_ENDPOINT_URL": moto_url})
    job = await mixed_job(cli, tmp_path)
    key_arn = boto3.client("kms", endpoint_url=moto_url, region_name="eu-west-1").create_key(
        Description="reports")["KeyMetadata"]["Arn"]
    proc = await cli.ok("report", str(job), "-o", f"s3://{bucket}/migrations/2024/",
                        "--region", "eu-west-1", "--kms-key-arn", key_arn)
    prefix = f"migrations/2024/job-{job}/"
    assert proc.stdout.strip() == f"s3://{bucket}/{prefix}manifest.json"
    found = objects(s3, bucket, prefix)
    assert sorted(found) == ["manifest.json", "report.csv"]
    manifest = json.loads(found.pop("manifest.json"))
    check_manifest(manifest, db_path, job, found)
    assert manifest["files"][0]["location"] == f"s3://{bucket}/{prefix}report.csv"
    assert manifest["destination"] == f"s3://{bucket}/{prefix}"
    for name in ("manifest.json", "report.csv"):
        head = s3.head_object(Bucket=bucket, Key=prefix + name)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == key_arn

    # Without a key: SSE-S3.
    await cli.ok("report", str(job), "--failed-only", "-o", f"s3://{bucket}")
    head = s3.head_object(Bucket=bucket, Key=f"job-{job}/failed.csv")
    assert head["ServerSideEncryption"] == "AES256" and "SSEKMSKeyId" not in head
    manifest = json.loads(objects(s3, bucket, f"job-{job}/")["manifest.json"])
    assert manifest["failed_only"] is True
    assert manifest["files"][0]["rows"] == sqlite_item_counts(db_path, job)["failed"] + 1  # + invalid


async def test_missing_bucket_is_a_clear_error(
    run_cli: CliRunner, db_path: Path, tmp_path: Path, moto_url: str, s3: Any
) -> None:
    cli = Cli(run_cli, db_path, None, env={"BULKTAG_S3_ENDPOINT_URL": moto_url})
    src = tmp_path / "a.txt"
    src.write_text(ec2(1) + "\n")
    await cli.ok("tag", "--arns", str(src), "--tag", "A=b", "--detach")
    proc = await cli("report", "1", "-o", "s3://no-such-reports-bucket/x")
    assert proc.returncode == 4
    assert proc.stderr == ("bulktag: error: export to s3://no-such-reports-bucket/x: bucket "
                           "'no-such-reports-bucket' does not exist\n")


async def test_a_report_over_8_mib_goes_up_in_parts(
    run_cli: CliRunner, db_path: Path, moto_url: str, s3: Any, bucket: str
) -> None:
    async with await Store.open(db_path) as store:
        job = await store.create_job("tag", options=JobOptions(tags={"A": "b"}))
        message = "x" * 1000
        for start in range(0, 18_000, 3000):
            await store.add_items(job, [NewItem(f"bad-{n}", None, None, n, message)
                                        for n in range(start, start + 3000)])
        await store.set_job_state(job, JobState.COMPLETED)
    cli = Cli(run_cli, db_path, None, env={"BULKTAG_S3_ENDPOINT_URL": moto_url})
    await cli.ok("report", str(job), "-o", f"s3://{bucket}/big")
    head = s3.head_object(Bucket=bucket, Key=f"big/job-{job}/report.csv")
    assert head["ContentLength"] > 16 * 1024 * 1024
    assert head["ETag"].strip('"').endswith("-3")  # 8 MiB + 8 MiB + the rest
    assert head["ServerSideEncryption"] == "AES256"
    body = s3.get_object(Bucket=bucket, Key=f"big/job-{job}/report.csv")["Body"].read()
    manifest = json.loads(objects(s3, bucket, f"big/job-{job}/")["manifest.json"])
    assert manifest["files"][0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert manifest["files"][0]["rows"] == manifest["counts"]["invalid"] == 18_000
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


async def test_export_on_finish_is_kept_with_the_job_and_done_by_a_later_run(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path, moto_url: str,
    s3: Any, bucket: str,
) -> None:
    cli = Cli(run_cli, db_path, sim, env={"BULKTAG_S3_ENDPOINT_URL": moto_url})
    src = tmp_path / "arns.txt"
    src.write_text("\n".join([*GOOD, *DENIED]) + "\n")
    # A run that ends with its bucket missing: items recorded, export failed (exit 4) ...
    proc = await cli("tag", "--arns", str(src), "--tag", "A=b",
                     "--export-on-finish", f"s3://{bucket}-later/done")
    assert proc.returncode == 4, proc.stderr
    assert f"bucket '{bucket}-later' does not exist" in proc.stderr
    assert "report export FAILED" in proc.stdout
    # ... and once the bucket exists, `bulktag run` exports the finished job from its options.
    s3.create_bucket(Bucket=f"{bucket}-later")
    proc = await cli("run", "--json")
    assert proc.returncode == 3, proc.stderr  # items failed; the export worked
    status = json.loads(proc.stdout)["jobs"][0]
    assert status["export"]["manifest"] == f"s3://{bucket}-later/done/job-1/manifest.json"
    found = objects(s3, f"{bucket}-later", "done/job-1/")
    manifest = json.loads(found.pop("manifest.json"))
    check_manifest(manifest, db_path, 1, found)
    # Exported once: the next run leaves it alone.
    proc = await cli("run", "--json")
    assert json.loads(proc.stdout)["jobs"] == []  # nothing worked, nothing due

    # To a local directory, given to `run` for a detached job.
    src.write_text(ec2(1, "ap-southeast-2") + "\n")
    job = int((await cli.ok("untag", "--arns", str(src), "--key", "A", "--detach")).stdout)
    out = tmp_path / "local"
    proc = await cli.ok("run", str(job), "--export-on-finish", str(out))
    assert f"report exported: {out}/job-{job}/manifest.json" in proc.stdout
    manifest = json.loads((out / f"job-{job}" / "manifest.json").read_text())
    assert (manifest["operation"], manifest["keys"], manifest["counts"]["succeeded"]) == (
        "untag", ["A"], 1)
    assert manifest["shards"] == [{"partition": "aws", "account": ACCOUNT,
                                   "region": "ap-southeast-2", "route": "tagging-api",
                                   "counts": manifest["counts"]}]
