"""Completion reports (rows + manifest.json under job-<id>/), the per account and region summary,
and the advice shown beside the top errors. The mixed job runs through the real CLI against the
in-test simulator; the expected counts are read from the SQLite file with plain sqlite3. The
advice and the table themselves, as pure functions: tests/unit/test_report_tables.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from bulktag.policy import advice
from bulktag.sim import RunningSimulator
from tests.support.cli import CliRunner
from tests.support.reports import (
    ACCOUNT,
    BAD_ROW,
    DENIED,
    GOOD,
    IAM_ROLE,
    MISSING,
    SKIPPED,
    Cli,
    check_manifest,
    ec2,
    mixed_job,
    store_codes,
)

# -- local reports -----------------------------------------------------------------------------


async def test_report_to_a_directory_writes_rows_and_a_manifest_matching_the_store(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    job = await mixed_job(cli, tmp_path)
    out = tmp_path / "reports"
    proc = await cli.ok("report", str(job), "-o", f"{out}/")
    folder = out / f"job-{job}"
    assert proc.stdout.strip() == str(folder / "manifest.json")
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "report.csv"]
    manifest = json.loads((folder / "manifest.json").read_text())
    check_manifest(manifest, db_path, job, {"report.csv": (folder / "report.csv").read_bytes()})
    assert (manifest["job"], manifest["name"], manifest["operation"], manifest["state"]) == (
        job, "mixed", "tag", "completed")
    assert manifest["tags"] == {"Owner": "me"} and manifest["keys"] is None
    assert manifest["format"] == "csv" and manifest["failed_only"] is False
    for key in ("created_at", "started_at", "finished_at"):
        assert manifest[key].endswith("+00:00")
    counts = manifest["counts"]
    assert (counts["succeeded"], counts["skipped"], counts["failed"], counts["invalid"]) == (
        len(GOOD), len(SKIPPED), len(DENIED) + len(MISSING) + 1, 1)
    assert {e["code"] for e in manifest["errors"]} == {
        "AccessDeniedException", "ResourceNotFoundException", "InvalidParameterException",
        "InvalidInput"}
    shards = {(s["account"], s["region"]): s["counts"] for s in manifest["shards"]}
    assert shards[(ACCOUNT, "eu-west-1")]["skipped"] == len(SKIPPED)
    assert shards[(ACCOUNT, "us-west-2")]["failed"] == len(MISSING)
    assert shards[(None, None)]["invalid"] == 1
    rows = list(csv.DictReader((folder / "report.csv").read_text().splitlines()))
    assert {r["arn"]: r["status"] for r in rows}[IAM_ROLE] == "failed"
    assert not list(folder.glob("*.partial"))


async def test_failed_only_jsonl_into_an_existing_directory(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    job = await mixed_job(cli, tmp_path)
    out = tmp_path / "existing"
    out.mkdir()
    await cli.ok("report", str(job), "--format", "jsonl", "--failed-only", "-o", str(out))
    folder = out / f"job-{job}"
    body = (folder / "failed.jsonl").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    check_manifest(manifest, db_path, job, {"failed.jsonl": body})
    records = [json.loads(line) for line in body.decode().splitlines()]
    assert sorted(r["arn"] for r in records) == sorted(
        [*DENIED, *MISSING, IAM_ROLE, BAD_ROW])
    assert manifest["files"][0]["rows"] == len(records) == sum(store_codes(db_path, job).values())


async def test_report_option_errors(run_cli: CliRunner, db_path: Path, tmp_path: Path) -> None:
    cli = Cli(run_cli, db_path, None)
    src = tmp_path / "a.txt"
    src.write_text(ec2(1) + "\n")
    await cli.ok("tag", "--arns", str(src), "--tag", "A=b", "--detach")
    proc = await cli("report", "1", "-o", str(tmp_path / "d/"), "--kms-key-arn", "arn:k")
    assert proc.returncode == 2
    assert proc.stderr == ("bulktag: error: --kms-key-arn and --region apply only to "
                           "-o s3://BUCKET/PREFIX\n")
    proc = await cli("report", "1", "-o", "s3://")
    assert (proc.returncode, proc.stderr) == (
        2, "bulktag: error: -o: 's3://': no bucket name after s3://\n")
    (tmp_path / "file").write_text("")
    proc = await cli("report", "1", "-o", str(tmp_path / "file" / "x.csv"))
    assert proc.returncode == 4 and proc.stderr.startswith("bulktag: error: cannot write ")


# -- the summary a person reads ------------------------------------------------------------------


async def test_status_and_end_of_run_show_the_region_table_and_advice(
    sim: RunningSimulator, run_cli: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    cli = Cli(run_cli, db_path, sim)
    job = await mixed_job(cli, tmp_path)
    out = (await cli.ok("status", str(job))).stdout
    assert "per account and region:" in out
    lines = out.splitlines()
    east = next(line for line in lines if f"{ACCOUNT}  us-east-1" in line).split()
    # account region route done skipped failed open ARN/s quota (share)
    assert east[2:7] == ["tagging-api", str(len(GOOD) - 4), "0", str(len(DENIED) + 1), "0"]
    assert east[8] == "100"  # 5 calls/s x 20 ARNs
    eu = next(line for line in lines if f"{ACCOUNT}  eu-west-1" in line).split()
    assert eu[2:7] == ["tagging-api", "0", str(len(SKIPPED)), "0", "0"]
    assert any(line.strip().startswith("(invalid input)") for line in lines)
    assert f"-> {advice.ROLE_PERMISSION}" in out
    assert f"-> {advice.GONE}" in out
    assert f"-> {advice.UNSUPPORTED}" in out
    assert f"see `bulktag report {job} --failed-only`" in out

    st = json.loads((await cli.ok("status", str(job), "--json")).stdout)
    shards = {(s["account"], s["region"]): s for s in st["shards"]}
    assert shards[(ACCOUNT, "us-west-2")]["failed"] == len(MISSING)
    assert shards[(ACCOUNT, "us-west-2")]["quota"] == 100
    assert shards[(ACCOUNT, "us-west-2")]["rate"] > 0
    assert {e["code"]: e["advice"] for e in st["top_errors"]}["AccessDeniedException"] == \
        advice.ROLE_PERMISSION

    # The end of a run prints the same summary.
    src = tmp_path / "more.txt"
    src.write_text(f"{ec2(99, name='denied')}\n{ec2(98)}\n")
    proc = await cli.ok("tag", "--arns", str(src), "--tag", "A=b", "--max-rate", "2", code=3)
    assert "per account and region:" in proc.stdout
    assert "40 (" in proc.stdout  # quota follows --max-rate: 2 calls/s x 20
    assert f"-> {advice.ROLE_PERMISSION}" in proc.stdout
