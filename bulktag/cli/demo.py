"""`bulktag demo`: the whole path on the built-in simulator, no AWS account needed.

Starts the simulator in-process with its quotas, realistic latency and a few faults, submits a
few thousand synthetic ARNs over several regions (plus some the simulator denies and an ARN
type that fails whole calls), runs the job to the end, then checks every outcome against the
simulator's own tags: the demo exits 0 only when bulktag recorded exactly what happened.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from bulktag.app.runs import finish_run
from bulktag.app.submit import Request, submit
from bulktag.aws.accounts import static_session
from bulktag.aws.clients import ClientPool
from bulktag.cli.output import render_status
from bulktag.config import Settings
from bulktag.sim import SimConfig, start_simulator, synthetic_resources
from bulktag.sim.config import parse_latency
from bulktag.store import Store, new_owner_token

DEMO_ACCOUNT = "123456789012"
DEMO_TAGS = {"Owner": "platform", "CostCenter": "cc-1234"}


DEMO_EC2_SHARE = 0.3  # of each region: EC2 snapshots, volumes and instances (the ec2 route)


def demo_arns(regions: list[str], per_region: int) -> list[str]:
    """The demo's resources (the simulator is seeded with exactly these, since EC2 tags only
    resources that exist) and a few that fail on purpose."""
    arns = [arn for _, arn in synthetic_resources([DEMO_ACCOUNT], regions, per_region,
                                                  ec2_share=DEMO_EC2_SHARE)]
    # Resources the simulator refuses, so the report has something to explain.
    arns += [f"arn:aws:ec2:{regions[0]}:{DEMO_ACCOUNT}:instance/i-denied{i:04d}" for i in range(3)]
    arns += [f"arn:aws:iam::{DEMO_ACCOUNT}:role/unsupported-demo-role"]
    return arns


async def run_demo(settings: Settings, *, regions: list[str], per_region: int,
                   latency_ms: str, db: str | None, as_json: bool = False) -> int:
    """Tag synthetic resources on a simulator started here and check every outcome against it.
    The job goes to a store of its own in a temporary directory unless `db` names one, so a
    demo never writes into the user's real store."""
    with tempfile.TemporaryDirectory(prefix="bulktag-demo-") as state:
        store_at = db or str(Path(state) / "demo.db")
        where = (f"store {db}" if db else
                 "a temporary store, removed at the end; --db PATH keeps it")
        return await _demo(dataclasses.replace(settings, db=store_at), regions, per_region,
                           latency_ms, as_json, where)


async def _demo(settings: Settings, regions: list[str], per_region: int, latency_ms: str,
                as_json: bool, where: str) -> int:
    sim_config = SimConfig(
        latency_ms=parse_latency(latency_ms),
        resource_error_rate=0.01,
        whole_call_error_rate=0.005,
        seed=7,
    )
    async with await start_simulator(sim_config) as sim:
        sim.state.seed([DEMO_ACCOUNT], regions, per_region, ec2_share=DEMO_EC2_SHARE)
        settings = dataclasses.replace(settings, endpoint_url=sim.url, backoff_base=0.5,
                                       backoff_cap=5.0)
        session = static_session("sim-demo", "sim-demo")
        arns = demo_arns(regions, per_region)
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "demo-arns.txt"
            source.write_text("# bulktag demo ARNs\n" + "\n".join(arns) + "\n")
            async with await Store.open(settings.db) as store:
                # the simulator's keys belong to DEMO_ACCOUNT: snapshots, whose ARNs name no
                # account, go in its shards (one account-region, one quota)
                request = Request("tag", tags=DEMO_TAGS, caller_account=DEMO_ACCOUNT)
                submitted = await submit(store, [str(source)], request,
                                         name="demo", owner=new_owner_token())
                print(f"demo: job {submitted.job_id}: {submitted.added} ARNs over "
                      f"{len(regions)} regions on the simulator at {sim.url} ({where})")
                run = await finish_run(store, settings, {submitted.job_id},
                                       clients=ClientPool(settings, session))
                code = run.exit_code
                if not as_json:
                    for st in run.statuses:
                        print(render_status(st))
                problems = await verify(store, submitted.job_id, sim)
        stats = sim.state.stats
    summary: dict[str, Any] = {"job": submitted.job_id, "simulator": stats,
                               "mismatches": problems[:10], "exit_code": code}
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        print(f"demo: simulator saw {json.dumps(stats.get('requests', {}))} requests, "
              f"{json.dumps(stats.get('throttled', {}))} throttled")
        if problems:
            print("demo: MISMATCH between bulktag's records and the simulator:")
            for p in problems[:10]:
                print(f"  {p}")
        else:
            print("demo: every recorded outcome matches the simulator's tags "
                  "(the 3 denied ARNs and the unsupported IAM role are the expected failures)")
    if problems:
        return 1
    return 0 if code in (0, 3) else code


async def verify(store: Store, job_id: int, sim: Any) -> list[str]:
    """Every succeeded item carries the tags in the simulator; every failure is an expected one."""
    problems = []
    async for row in store.report_rows(job_id):
        arn, state = row.arn, row.state
        tags = sim.state.tags(arn) or {}
        has = all(tags.get(k) == v for k, v in DEMO_TAGS.items())
        expected_fail = "denied" in arn or "unsupported" in arn
        if state == "succeeded" and not has:
            problems.append(f"{arn}: recorded succeeded but the simulator has {tags}")
        elif state != "succeeded" and not expected_fail:
            problems.append(f"{arn}: recorded {state} ({row.error_code}: {row.message})")
        elif expected_fail and state != "failed":
            problems.append(f"{arn}: expected a failure, recorded {state}")
    return problems
