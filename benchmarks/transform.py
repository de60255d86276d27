"""Transforms (issue 22): how near the fewest calls a rename gets, and how near the quota's time.

`bulktag rename cost-center CostCenter --arns FILE` over `--per-region` resources in each of 4
regions of one account, on the simulator in its own process (documented quotas enforced:
TagResources and UntagResources 5 requests/s each per account-region, `--latency-ms` per call,
`--fault-resource-500` of ARNs failed with a 500 in each answer), whose `cost-center` values go
round `--values` distinct values. Every resource needs its own tag map (`CostCenter=<value>`)
and the same removal (`cost-center`), so:

- fewest calls = Σ over regions and values of ⌈n/20⌉ TagResources + Σ over regions of ⌈n/20⌉
  UntagResources (and the resends the injected 500s force, counted apart);
- time those calls need at quota = per region, max(TagResources, UntagResources) / 5 (the two
  APIs have quotas of their own and are driven at once); the job takes the slowest region's.

Printed: calls made (by API), the fewest, their ratio; the job's wall time, the quota time and
their ratio; throttled calls; resources left wrong (must be 0). Then `bulktag undo` of the job,
with the same figures.

    python benchmarks/transform.py [--per-region 2000] [--values 25,1000] [--latency-ms 50-150]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    ACCOUNT,
    SimProcess,
    bulktag_cmd,
    bulktag_env,
    print_machine,
    run_measured,
    write_arns,
)

from bulktag.sim import synthetic_arns

REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]
QUOTA = 5.0
OPS = ("TagResources", "UntagResources")


def seed(sim: SimProcess, per_region: int, values: list[str]) -> None:
    import urllib.request

    body = json.dumps({"accounts": [ACCOUNT], "regions": REGIONS, "per_region": per_region,
                       "tags": {"Owner": "team-a"}, "cycle": {"cost-center": values}}).encode()
    req = urllib.request.Request(sim.url + "/_sim/seed", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        added = json.loads(resp.read())["added"]
    assert added == per_region * len(REGIONS), added


def fewest(per_region: int, values: list[str]) -> dict[str, int]:
    per_value: Counter[tuple[str, str]] = Counter()
    for n, arn in enumerate(synthetic_arns([ACCOUNT], REGIONS, per_region)):
        per_value[(arn.split(":")[3], values[n % len(values)])] += 1
    tag = sum(math.ceil(n / 20) for n in per_value.values())
    untag = len(REGIONS) * math.ceil(per_region / 20)
    return {"TagResources": tag, "UntagResources": untag}


def requests(sim: SimProcess) -> dict[str, Any]:
    stats = sim.stats()
    return {"requests": dict(stats["requests"]), "throttled": dict(stats["throttled"]),
            "arn_sends": dict(stats["arn_sends"]),
            "by_region": {k.split("/")[1]: v["requests"]
                          for k, v in stats["by_account_region"].items()}}


def delta(after: dict[str, Any], before: dict[str, Any], part: str) -> dict[str, int]:
    """What `part` (requests, throttled, arn_sends) grew by, per API."""
    return {op: int(after[part].get(op, 0)) - int(before[part].get(op, 0)) for op in OPS}


def quota_seconds(after: dict[str, Any], before: dict[str, Any]) -> float:
    worst = 0.0
    for region in REGIONS:
        now, was = after["by_region"].get(region, {}), before["by_region"].get(region, {})
        worst = max(worst, *((now.get(op, 0) - was.get(op, 0)) / QUOTA for op in OPS))
    return worst


def run_job(label: str, cmd: list[str], sim: SimProcess, env: dict[str, str],
            best: dict[str, int] | None) -> dict[str, Any]:
    before = requests(sim)
    measured = run_measured(cmd, env=env, timeout=1800)
    after = requests(sim)
    if measured.rc != 0:
        print(f"   {label}: exit {measured.rc}: {measured.stderr[-1500:]}")
    calls = delta(after, before, "requests")
    throttled = delta(after, before, "throttled")
    sends = delta(after, before, "arn_sends")
    need = quota_seconds(after, before)
    job = json.loads(measured.stdout)["jobs"][0] if measured.stdout.strip() else {}
    elapsed = float(job.get("elapsed_seconds") or measured.wall)
    line = (f"   {label}: {calls['TagResources']} TagResources + {calls['UntagResources']} "
            f"UntagResources ({throttled['TagResources'] + throttled['UntagResources']} "
            f"throttled; ARNs sent {sends['TagResources']} + {sends['UntagResources']}, "
            f"the resends are the injected 500s)")
    if best is not None:
        least = best["TagResources"] + best["UntagResources"]
        line += (f"; fewest {best['TagResources']} + {best['UntagResources']} = {least}, "
                 f"ratio {(calls['TagResources'] + calls['UntagResources']) / least:.3f}")
    print(line)
    print(f"      job {elapsed:.1f} s; the calls made need {need:.1f} s at quota: "
          f"{need / elapsed:.0%} of the quota's pace; CPU {measured.utime + measured.stime:.1f} s, "
          f"peak RSS {measured.maxrss_kb / 1024:.0f} MB; counts {job.get('counts')}")
    return job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-region", type=int, default=2000)
    ap.add_argument("--values", default="25,1000")
    ap.add_argument("--latency-ms", default="50-150")
    ap.add_argument("--fault-resource-500", default="0.01")
    args = ap.parse_args()
    print_machine("transform: a rename of cost-center to CostCenter, then its undo")
    for n_values in (int(v) for v in args.values.split(",")):
        values = [f"cc-{i:04d}" for i in range(n_values)]
        print(f"-- {args.per_region * len(REGIONS):,} resources in {len(REGIONS)} regions, "
              f"{n_values} values, latency {args.latency_ms} ms, "
              f"{float(args.fault_resource_500):.0%} of ARNs answered 500 per call")
        with tempfile.TemporaryDirectory() as tmp, SimProcess(
                ["--latency-ms", args.latency_ms,
                 "--fault-resource-500", args.fault_resource_500, "--fault-seed", "7"]) as sim:
            seed(sim, args.per_region, values)
            source = Path(tmp) / "arns.txt"
            write_arns(source, synthetic_arns([ACCOUNT], REGIONS, args.per_region))
            env = bulktag_env(tmp)
            common = ["--db", str(Path(tmp) / "s.db"), "--endpoint-url", sim.url,
                      "--route", "tagging-api", "--json", "--log-level", "warning"]
            best = fewest(args.per_region, values)
            job = run_job("rename", bulktag_cmd("rename", "cost-center", "CostCenter",
                                                "--arns", str(source), *common), sim, env, best)
            started = time.monotonic()
            wrong = sum(1 for n, a in enumerate(synthetic_arns([ACCOUNT], REGIONS,
                                                               args.per_region))
                        if sim.tags(a) != {"Owner": "team-a",
                                           "CostCenter": values[n % n_values]})
            print(f"      resources not renamed: {wrong} (checked in "
                  f"{time.monotonic() - started:.1f} s)")
            run_job("undo", bulktag_cmd("undo", str(job.get("job", 1)),
                                        *[c for c in common if c != "--route" and
                                          c != "tagging-api"]), sim, env, best)
            wrong = sum(1 for n, a in enumerate(synthetic_arns([ACCOUNT], REGIONS,
                                                               args.per_region))
                        if sim.tags(a) != {"Owner": "team-a",
                                           "cost-center": values[n % n_values]})
            print(f"      resources not back after undo: {wrong}")


if __name__ == "__main__":
    main()
