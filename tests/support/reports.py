"""The mixed job of the report tests: a tag job through the real CLI against the in-test
simulator that ends with successes, skips and each kind of failure, and a check that a report's
manifest agrees with the store (read with plain sqlite3) and with the files' bytes."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from bulktag.sim import RunningSimulator
from bulktag.store import ItemState, Outcome, Store
from tests.support.cli import CliRunner
from tests.support.counts import sqlite_item_counts

ACCOUNT = "123456789012"


def ec2(n: int, region: str = "us-east-1", name: str = "i") -> str:
    return f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{name}-{n:05d}"


class Cli:
    """run_cli with --db (and the simulator for tag/untag/run) filled in, off the event loop."""

    def __init__(self, run_cli: CliRunner, db: Path, sim: RunningSimulator | None,
                 env: dict[str, str] | None = None) -> None:
        self.run_cli, self.db, self.sim, self.env = run_cli, db, sim, env

    async def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        extra = ["--db", str(self.db)]
        if self.sim is not None and args[0] in ("tag", "untag", "run"):
            extra += ["--endpoint-url", self.sim.url, "--log-format", "json"]
        return await asyncio.to_thread(self.run_cli, *args, *extra, env=self.env)

    async def ok(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = await self(*args)
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
        return proc


GOOD = [ec2(n) for n in range(6)] + [ec2(n, "us-west-2") for n in range(4)]
SKIPPED = [ec2(n, "eu-west-1", "skip") for n in range(3)]
DENIED = [ec2(n, name="denied") for n in range(3)]
MISSING = [ec2(n, "us-west-2", "missing") for n in range(2)]
IAM_ROLE = f"arn:aws:iam::{ACCOUNT}:role/legacy-admin"
BAD_ROW = "not-an-arn"


async def mixed_job(cli: Cli, tmp_path: Path) -> int:
    """A tag job ending with successes, skips, and AccessDenied, ResourceNotFound,
    InvalidParameter and InvalidInput failures. Skips are recorded through the store."""
    src = tmp_path / "arns.txt"
    src.write_text("\n".join([*GOOD, *SKIPPED, *DENIED, *MISSING, IAM_ROLE, BAD_ROW]) + "\n")
    proc = await cli.ok("tag", "--arns", str(src), "--tag", "Owner=me", "--skip-invalid",
                        "--detach", "--name", "mixed")
    job = int(proc.stdout.strip())
    with sqlite3.connect(cli.db) as conn:
        (shard_id,), = conn.execute("SELECT id FROM shards WHERE region = 'eu-west-1'")
    async with await Store.open(cli.db) as store:
        claimed = await store.claim("test:1:x", job, shard_id, 20, lease_seconds=60)
        assert len(claimed) == len(SKIPPED)
        await store.record("test:1:x", [
            Outcome(c.id, ItemState.SKIPPED, 0, message="already tagged") for c in claimed])
    await cli.ok("run", str(job), code=3)
    return job


def store_codes(db: Path, job: int) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute(
            "SELECT error_code, count(*) FROM items WHERE job_id = ? "
            "AND state IN ('failed', 'invalid') GROUP BY error_code", (job,)))


def check_manifest(manifest: dict[str, Any], db: Path, job: int, files: dict[str, bytes]) -> None:
    """The manifest agrees with the store (counts, codes) and with the files' bytes."""
    expected = sqlite_item_counts(db, job)
    assert {k: v for k, v in manifest["counts"].items() if v and k != "total"} == expected
    assert manifest["counts"]["total"] == sum(expected.values())
    assert {e["code"]: e["count"] for e in manifest["errors"]} == store_codes(db, job)
    per_shard: dict[tuple[str | None, str | None], int] = {}
    for s in manifest["shards"]:
        per_shard[(s["account"], s["region"])] = s["counts"]["total"]
    assert sum(per_shard.values()) == sum(expected.values())
    assert len(manifest["files"]) == len(files)
    for f in manifest["files"]:
        body = files[f["name"]]
        assert f["bytes"] == len(body)
        assert f["sha256"] == hashlib.sha256(body).hexdigest()
        lines = body.decode().splitlines()
        assert f["rows"] == len(lines) - (1 if manifest["format"] == "csv" else 0)
