"""Issue 15: EBS snapshots in one account-region, tagged through each route, against the
simulator at EC2's documented quotas (CreateTags: a bucket of 100, refilled 10/s) and the
Tagging API's (5 TagResources/s x 20 ARNs) with realistic latency.

For each EC2 batch size: one `bulktag tag --route auto --no-skip-compliant` run of N snapshots
(whole-job wall time, CPU seconds of the bulktag process, CPU per resource, CreateTags calls and
throttles seen by the simulator). Runs without the read are `--no-skip-compliant
--no-before-images`. Then the chosen size with the read on (the CLI's default for tag:
skip-compliant and before-images; EC2 resources are read by DescribeTags, 500 ids a call
narrowed to the job's keys; `reads` counts the read calls). The Tagging API route is measured on a sample and
extrapolated (its ceiling is fixed: 100 ARNs/s per account-region, 1M takes 2 h 47 min). The
load average after each run is printed: the machine may be shared.

    python benchmarks/ec2_route.py [--quick] [--snapshots N] [--batch-sizes 100,250,500,1000]
                                   [--read-batch 500] [--no-read]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench_common import (
    SimProcess,
    bulktag_cmd,
    bulktag_env,
    print_machine,
    run_measured,
    write_arns,
)

from bulktag.sim import synthetic_resources

ACCOUNT = "123456789012"
REGION = "us-east-1"
LATENCY = "150-450"  # ms per call: EC2 CreateTags of a few hundred ids, as seen from a VM


def snapshots(n: int) -> list[str]:
    """The first n snapshot ARNs the simulator seeds with --seed-ec2-share 1 (it cycles
    snapshot, volume, instance)."""
    out = [arn for _, arn in synthetic_resources([ACCOUNT], [REGION], 3 * n, ec2_share=1.0)
           if ":snapshot/" in arn]
    return out[:n]


def run(n: int, arns_file: Path, route: str, batch: int, tmp: Path, *, read: bool,
        value: str) -> dict[str, float]:
    with SimProcess(["--latency-ms", LATENCY, "--seed-resources", str(3 * n),
                     "--seed-ec2-share", "1", "--regions", REGION]) as sim:
        env = bulktag_env(tmp)
        env["BULKTAG_EC2_BATCH_SIZE"] = str(batch)
        db = tmp / f"{route}-{batch}-{value}.db"
        m = run_measured(bulktag_cmd(
            "tag", "--arns", str(arns_file), "--tag", f"bench={value}", "--route", route,
            *(["--skip-compliant"] if read else ["--no-skip-compliant", "--no-before-images"]),
            "--db", str(db),
            "--endpoint-url", sim.url, "--json", "--log-format", "json"), env=env,
            timeout=3600)
        stats = sim.stats()
        if m.rc != 0:
            raise RuntimeError(f"bulktag exited {m.rc}: {m.stderr[-2000:]}")
        result = json.loads(m.stdout)["jobs"][0]
        assert result["counts"].get("succeeded", 0) == n, result["counts"]
        return {"wall": m.wall, "cpu": m.cpu, "rss_mb": m.maxrss_mb,
                "calls": stats["requests"].get("CreateTags" if route == "auto"
                                               else "TagResources", 0),
                "throttled": sum(stats["throttled"].values()),
                "reads": stats["requests"].get("GetResources", 0)
                + stats["requests"].get("DescribeTags", 0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--snapshots", type=int, default=None)
    p.add_argument("--batch-sizes", default=None)
    p.add_argument("--tagging-sample", type=int, default=None)
    p.add_argument("--read-batch", type=int, default=500,
                   help="EC2 batch size of the run with the compliance read on")
    p.add_argument("--no-read", action="store_true", help="skip the run with the read on")
    args = p.parse_args()
    n = args.snapshots or (20_000 if args.quick else 100_000)
    sizes = [int(s) for s in (args.batch_sizes or ("250,500" if args.quick
                                                   else "100,250,500,1000")).split(",")]
    sample = args.tagging_sample or (1000 if args.quick else 3000)
    print_machine(f"ec2_route: {n:,} EBS snapshots in one account-region, simulator latency "
                  f"{LATENCY} ms, EC2 buckets 100/10 per s, ec2_rate 8/s")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        arns_file = tmp / "snapshots.txt"
        write_arns(arns_file, snapshots(n))
        print(f"{'route':<12} {'batch':>5} {'read':>4} {'wall s':>8} {'ARN/s':>8} "
              f"{'CPU s':>7} {'CPU µs/res':>10} {'RSS MB':>7} {'calls':>6} {'reads':>6} "
              f"{'thr':>4} {'1M (measured or extrapolated)':>30}  load after")
        rows = [("auto", b, False) for b in sizes]
        rows += [] if args.no_read else [("auto", args.read_batch, True)]
        for route, batch, read in rows:
            r = run(n, arns_file, route, batch, tmp, read=read, value=f"{batch}{read}")
            rate = n / r["wall"]
            print(f"{'ec2':<12} {batch:>5} {'yes' if read else 'no':>4} {r['wall']:>8.1f} "
                  f"{rate:>8.0f} {r['cpu']:>7.1f} {1e6 * r['cpu'] / n:>10.0f} "
                  f"{r['rss_mb']:>7.0f} {r['calls']:>6.0f} {r['reads']:>6.0f} "
                  f"{r['throttled']:>4.0f} {1_000_000 / rate / 60:>26.1f} min  "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        small = tmp / "sample.txt"
        write_arns(small, snapshots(sample))
        r = run(sample, small, "tagging-api", 20, tmp, read=False, value="tagging")
        rate = sample / r["wall"]
        print(f"{'tagging-api':<12} {20:>5} {'no':>4} {r['wall']:>8.1f} {rate:>8.0f} "
              f"{r['cpu']:>7.1f} {1e6 * r['cpu'] / sample:>10.0f} {r['rss_mb']:>7.0f} "
              f"{r['calls']:>6.0f} {r['reads']:>6.0f} {r['throttled']:>4.0f} "
              f"{1_000_000 / rate / 60:>26.1f} min"
              f"  (sample of {sample:,})")


if __name__ == "__main__":
    main()
