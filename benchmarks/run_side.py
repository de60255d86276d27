"""The run side at scale (issue 26, part 3): CPU per ARN and peak RSS of `bulktag run JOB` over
many shards, and how memory grows per shard.

N random-order ARNs (`arn:aws:lambda:REGION:ACCOUNT:function:fn-<10 hex>`) over A accounts × R
regions, every account other than the caller's reached through a role (`--role-name`, the
simulator's STS answers AssumeRole with keys of the role's account). Submitted with
`bulktag tag --detach`, then `bulktag run JOB` alone is measured in a subprocess (wall, CPU from
wait4() rusage, peak RSS = ru_maxrss), against the simulator in its own process with
`--no-quotas --latency-ms 0`, and `--max-rate 1000` so bulktag's own limiter does not bind.
Lost = ARNs submitted that did not end `succeeded` (must be 0); a random sample is also
checked in the simulator for the tag.

Then the shard sweep: the same number of ARNs over 8, 400 and 2,000 shards (accounts × 8
regions) → peak RSS per shard count and a least-squares line: MB per 1,000 shards.

    python benchmarks/run_side.py [--quick] [--arns 1000000] [--accounts 50] [--regions 8]
                                  [--sweep-arns 100000] [--sweep 8,400,2000] [--no-sweep]
                                  [--no-main] [--repeat 1] [--order random|shard] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    ACCOUNT,
    PY,
    Measured,
    Row,
    SimProcess,
    bulktag_cmd,
    bulktag_env,
    job_facts,
    print_machine,
    print_rows,
    regions,
    run_measured,
    write_arns,
)

SIM_ARGS = ["--no-quotas", "--latency-ms", "0"]
ROLE = "BenchTagger"
RESULTS = Path(__file__).resolve().parent / "results-run-side-2026-12-04.txt"


def accounts(n: int) -> list[str]:
    """The caller's account first, then synthetic 12-digit ones (reached through the role)."""
    return [ACCOUNT] + [f"{300000000000 + i:012d}" for i in range(1, n)]


def random_arns(n: int, account_list: list[str], region_list: list[str],
                rng: random.Random) -> list[str]:
    """n distinct ARNs in random order, spread evenly over every (account, region)."""
    shards = [(a, r) for a in account_list for r in region_list]
    seen: set[str] = set()
    out: list[str] = []
    i = 0
    while len(out) < n:
        account, region = shards[i % len(shards)]
        i += 1
        arn = f"arn:aws:lambda:{region}:{account}:function:fn-{rng.getrandbits(40):010x}"
        if arn not in seen:
            seen.add(arn)
            out.append(arn)
    rng.shuffle(out)
    return out


def measure(tmp: Path, sim: SimProcess, label: str, n: int, n_accounts: int, n_regions: int,
            *, seed: int = 26, order: str = "random") -> dict[str, Any]:
    rng = random.Random(seed)
    acc, reg = accounts(n_accounts), regions(n_regions)
    arns = random_arns(n, acc, reg, rng)
    if order == "shard":
        arns.sort()  # region, then account: each shard's items next to each other in the store
    f = tmp / f"{label}.txt"
    write_arns(f, arns)
    db = str(tmp / f"{label}.db")
    common = ["--db", db, "--endpoint-url", sim.url, "--json", "--log-format", "json"]
    ms = run_measured(bulktag_cmd("tag", "--detach", "--arns", str(f), "--tag",
                                  f"bench={label}", "--role-name", ROLE, *common),
                      env=bulktag_env(tmp), timeout=1800)
    if ms.rc != 0:
        raise RuntimeError(f"submit failed rc {ms.rc}: {ms.stderr[-1500:]}")
    out = ms.stdout.strip().splitlines()[-1]
    job = int(json.loads(out)["job"]) if out.startswith("{") else int(out)
    mr: Measured = run_measured(
        [PY, "-m", "bulktag", "run", str(job), "--max-rate", "1000", "--log-level", "warning",
         *common], env=bulktag_env(tmp), timeout=3600)
    facts = job_facts(db, job)
    counts = facts["counts"]
    succeeded = counts.get("succeeded", 0)
    sample = rng.sample(arns, min(200, n))
    untagged = sim.count_without(sample, "bench", label)
    wall_tag = (facts["finished_at"] or 0) - (facts["started_at"] or 0)
    r = {
        "label": label, "arns": n, "accounts": n_accounts, "regions": n_regions, "order": order,
        "shards": n_accounts * n_regions, "rc": mr.rc, "wall": round(mr.wall, 2),
        "tagging_s": round(wall_tag, 2), "cpu": round(mr.cpu, 2),
        "user": round(mr.utime, 2), "sys": round(mr.stime, 2),
        "cpu_us_per_arn": round(1e6 * mr.cpu / n, 1), "peak_rss_mb": round(mr.maxrss_mb, 1),
        "lost": n - succeeded, "sample_untagged": untagged, "counts": counts,
        "submit_cpu": round(ms.cpu, 2), "submit_wall": round(ms.wall, 2),
    }
    print(f"  {label}: {n:,} {order}-order ARNs over {n_accounts} accounts × {n_regions} regions = "
          f"{r['shards']} shards; run rc {mr.rc}: wall {mr.wall:.1f} s (tagging {wall_tag:.1f} s)"
          f", CPU {mr.cpu:.1f} s (user {mr.utime:.1f} + sys {mr.stime:.1f}) = "
          f"{r['cpu_us_per_arn']} µs/ARN, peak RSS {mr.maxrss_mb:.1f} MB, lost {r['lost']}, "
          f"sample of {len(sample)} untagged in the simulator {untagged}; counts {counts}",
          flush=True)
    if mr.rc != 0:
        print("    stderr: " + mr.stderr[-1500:])
    return r


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="200k ARNs over 400 shards, sweep of 40k ARNs")
    p.add_argument("--arns", type=int)
    p.add_argument("--accounts", type=int, default=50)
    p.add_argument("--regions", type=int, default=8)
    p.add_argument("--sweep-arns", type=int)
    p.add_argument("--sweep", default="8,400,2000", help="shard counts (multiples of --regions)")
    p.add_argument("--order", choices=("random", "shard"), default="random",
                   help="shard: the file sorted, so each shard's items are stored together "
                        "(what the random order costs the store)")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--no-main", action="store_true")
    p.add_argument("--repeat", type=int, default=1, help="measure each point this many times")
    p.add_argument("--out", type=Path, default=RESULTS, help="raw results appended here")
    a = p.parse_args(argv)
    n = a.arns or (200_000 if a.quick else 1_000_000)
    sweep_n = a.sweep_arns or (40_000 if a.quick else 100_000)
    m = print_machine("run side at scale: `bulktag run JOB`, CPU per ARN and peak RSS per shard")
    print(f"   simulator: bulktag sim {' '.join(SIM_ARGS)}; bulktag run --max-rate 1000; "
          f"accounts other than {ACCOUNT} through --role-name {ROLE}")
    results: list[dict[str, Any]] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-runside-") as tmpdir, \
            SimProcess(SIM_ARGS) as sim:
        tmp = Path(tmpdir)
        if not a.no_main:
            for i in range(a.repeat):
                r = measure(tmp, sim, f"main{i}", n, a.accounts, a.regions, order=a.order)
                results.append(r)
                b = f"run_side {n // 1000}k/{r['shards']}sh {a.order}"
                rows += [Row(b, "CPU per ARN, run", r["cpu_us_per_arn"], "µs/ARN", "≤ 55 µs"),
                         Row(b, "peak RSS, run", r["peak_rss_mb"], "MB", "≤ 200 MB"),
                         Row(b, "wall, run", r["wall"], "s"),
                         Row(b, "lost", r["lost"], "items", "0")]
        if not a.no_sweep:
            print(f"\n  shard sweep: {sweep_n:,} ARNs at {a.sweep} shards ({a.regions} regions)")
            points: list[tuple[float, float]] = []
            for shards in (int(s) for s in a.sweep.split(",")):
                for i in range(a.repeat):
                    r = measure(tmp, sim, f"sweep{shards}-{i}", sweep_n,
                                max(1, shards // a.regions), a.regions, order=a.order)
                    results.append(r)
                    points.append((r["shards"], r["peak_rss_mb"]))
                    rows.append(Row(f"run_side sweep {sweep_n // 1000}k/{r['shards']}sh",
                                    "peak RSS / CPU µs per ARN",
                                    f"{r['peak_rss_mb']} MB / {r['cpu_us_per_arn']} µs"))
            if len({x for x, _ in points}) > 1:
                base, slope = fit(points)
                per_1000 = 1000 * slope
                print(f"  peak RSS ≈ {base:.1f} MB + {per_1000:.1f} MB per 1,000 shards "
                      f"(least squares over {len(points)} runs)")
                rows.append(Row("run_side sweep", "peak RSS per 1,000 shards", per_1000, "MB"))
                results.append({"fit": {"base_mb": round(base, 1),
                                        "mb_per_1000_shards": round(per_1000, 1)}})
    print_rows(rows, "run side summary")
    with open(a.out, "a") as f:
        f.write(json.dumps({"machine": m, "argv": sys.argv[1:], "results": results}) + "\n")
    print(f"\n  raw results appended to {a.out}")


if __name__ == "__main__":
    main()
