"""Running a job through the Engine in-process against a simulator, with settings fast enough
for tests (short backoffs, the Tagging API route), and reading its outcome as report rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bulktag.app.report import report_records
from bulktag.app.submit import Request, submit
from bulktag.config import Settings
from bulktag.engine import Engine
from bulktag.store import JobOptions, Store, new_owner_token

TAGS = {"team": "platform", "env": "prod"}
ACCOUNT = "123456789012"


def fast_settings(db: Path, url: str, **changes: object) -> Settings:
    """Settings on store `db` and endpoint `url` with short backoffs, then `changes`."""
    # route: these tests use EC2 ARNs as stand-ins for any resource (the simulator's Tagging
    # API creates what it tags); the ec2 route has its own tests (test_ec2_route.py).
    base = Settings(db=str(db), endpoint_url=url, backoff_base=0.02, backoff_cap=0.2,
                    throttle_retry_delay=0.01, grace_seconds=5, route="tagging-api")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def run_job(
    tmp_path: Path, settings: Settings, arns: list[str], request: Request | None = None,
    options: JobOptions | None = None,
) -> tuple[Store, int, Engine]:
    """Submit `arns` (a tag of TAGS unless `request` says otherwise) and run the job to its end;
    the open store (the caller closes it), the job's id and the engine."""
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    store = await Store.open(settings.db)
    job = await submit(store, [str(source)], request or Request("tag", tags=TAGS),
                       options=options)
    engine = Engine(store, settings, owner=new_owner_token(), job_ids={job.job_id})
    finished = await engine.run()
    assert finished
    return store, job.job_id, engine


async def items(store: Store, job_id: int) -> dict[str, dict[str, Any]]:
    """The job's report rows (the columns `bulktag report` writes) by ARN."""
    return {r["arn"]: r async for r in report_records(store, job_id, "tag")}
