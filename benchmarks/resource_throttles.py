"""A throttle inside a 200 (issue 12 item 5): 5 % of resources throttled by their own service.

`FailedResourcesMap[arn] = {ErrorCode: ThrottlingException}` is the owning service's quota, not
the Tagging API's: those items back off on their own attempt budget and the shard's rate is left
alone. DESIGN.md's budget: the shard stays ≥ 80 % of its quota. One `bulktag tag` job per shard
count against the simulator in its own process (documented quotas, 200–500 ms latency, 5 % of
resources answered ThrottlingException inside a 200, drawn afresh on every call), printing:

- ARNs/s: items tagged per second over the whole job (started → finished), against the
  ceiling (100 ARNs/s per shard);
- calls/s: TagResources calls per second per shard over the job, against the quota (5/s);
- throttled: whole calls the simulator throttled (the Tagging API's quota), of all calls.

    python benchmarks/resource_throttles.py [--shards 1,4] [--per-shard 2000] [--rate 0.05]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import Row, SimProcess, print_machine, print_rows, regions
from throughput import run_bulktag

CEILING_PER_SHARD = 100.0  # ARNs/s: 5 TagResources/s of 20 ARNs
QUOTA = 5.0  # TagResources/s per account-region


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", default="1,4")
    p.add_argument("--per-shard", type=int, default=2000)
    p.add_argument("--rate", type=float, default=0.05, help="share of resources throttled")
    args = p.parse_args(argv)
    sim_args = ["--latency-ms", "200-500", "--fault-resource-throttle", str(args.rate)]
    print_machine(f"per-resource throttles: {args.rate:.0%} of resources throttled inside a 200")
    print(f"   simulator: bulktag sim {' '.join(sim_args)} (quota {QUOTA:g} TagResources/s per "
          f"account-region); {args.per_shard} ARNs per shard")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-rthr-") as tmpdir, \
            SimProcess(sim_args) as sim:
        tmp = Path(tmpdir)
        for n in (int(x) for x in args.shards.split(",") if x.strip()):
            r = run_bulktag(sim, tmp, regions(n), args.per_shard, f"rthr{n}",
                            timeout=max(180.0, 5 * args.per_shard / CEILING_PER_SHARD + 60))
            b = f"resource throttles {args.rate:.0%} N={n}"
            if "error" in r:
                print(f"  N={n}: ERROR {r['error']}", flush=True)
                rows.append(Row(b, "error", r["error"][:60]))
                continue
            wall = r["wall_tagging"]
            calls = r["requests"]
            arn_pct = 100 * r["succeeded"] / wall / (n * CEILING_PER_SHARD)
            call_pct = 100 * calls / wall / (n * QUOTA)
            sends = r["arn_sends"]
            print(f"  N={n}: {r['submitted']:,} ARNs in {wall:.2f} s: {r['succeeded'] / wall:.1f} "
                  f"ARNs/s = {arn_pct:.1f} % of the ceiling; {calls} TagResources calls = "
                  f"{calls / wall / n:.2f}/s per shard = {call_pct:.1f} % of the quota; ARNs "
                  f"sent {sends:,} ({sends / max(1, r['submitted']):.3f} per ARN); throttled "
                  f"{r['throttled']}/{calls} TagResources calls; {r['state']}, counts "
                  f"{r['counts']}, failed codes {r['failed_codes'] or {}}; lost {r['lost']}, "
                  f"untagged {r['untagged_of_checked']} of {r['checked']} checked", flush=True)
            rows += [Row(b, "tagged ARNs/s, % of the ceiling (whole job)", arn_pct, "%",
                         "≥ 80 %"),
                     Row(b, "TagResources calls/s, % of the quota (whole job)", call_pct, "%",
                         "≥ 80 %")]
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
