"""Throughput vs ceiling: `bulktag tag` (CLI subprocess) against the simulator in its own process.

For N shards (N regions of one account; 1, 4, 16, 64 — `--quick`: 1 and 4) with the documented
quota (5 TagResources/s per account-region, i.e. 100 ARNs/s per shard), 200–500 ms latency,
1 % whole-call 500s and 1 % per-resource 500s, it prints: the tagging phase's wall time (the job's
started_at → finished_at in the store), ARNs/s against the ceiling N × 100, the throttled share
of TagResources requests (the simulator's own counters), items lost (submitted − succeeded −
failed), succeeded ARNs that do not carry the tag in the simulator, and the CPU seconds of the
bulktag process (wait4 rusage of exactly that child).

    python benchmarks/throughput.py [--quick] [--shards 1,4]
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    Row,
    SimProcess,
    arns_for,
    arns_in_state,
    bulktag_cmd,
    bulktag_env,
    error_codes,
    job_facts,
    print_machine,
    print_rows,
    regions,
    run_measured,
    stats_delta,
    write_arns,
)

SIM_ARGS = ["--latency-ms", "200-500", "--fault-resource-500", "0.01", "--fault-500", "0.01"]
TAG_KEY = "bench"
VERIFY_ALL_UP_TO = 12_000  # succeeded ARNs checked one by one in the simulator; above: a sample
SAMPLE = 4_000


def per_shard_for(n: int) -> int:
    # 64 shards: 1,500 per shard (15 s at the ceiling). With 600 (6 s) the first second's burst
    # allowance and the retry tail dominate, and the "steady state" read above 100 %.
    return 2000 if n <= 16 else 1500


def run_bulktag(sim: SimProcess, tmp: Path, region_list: list[str], per_region: int,
                label: str, *, extra: list[str] | None = None, timeout: float = 600.0
                ) -> dict[str, Any]:
    """Submit and run one tag job through the CLI; return its figures."""
    value = f"{label}-{int(time.time() * 1000)}"
    arns_file = tmp / f"{label}.txt"
    n = write_arns(arns_file, arns_for(region_list, per_region, prefix=value))
    db = str(tmp / f"{label}.db")
    before = sim.stats()
    m = run_measured(
        bulktag_cmd("tag", "--arns", str(arns_file), "--tag", f"{TAG_KEY}={value}", "--db", db,
                    "--endpoint-url", sim.url, "--json", "--log-format", "json",
                    *(extra or [])),
        env=bulktag_env(tmp), timeout=timeout,
    )
    after = sim.stats()
    d = stats_delta(before, after)
    out: dict[str, Any] = {"label": label, "shards": len(region_list), "submitted": n,
                           "rc": m.rc, "timed_out": m.timed_out, "wall_process": m.wall,
                           "cpu": m.cpu, "utime": m.utime, "stime": m.stime,
                           "maxrss_mb": m.maxrss_mb, "requests": d["requests"],
                           "throttled": d["throttled"], "arn_sends": d["arn_sends"]}
    try:
        status = json.loads(m.stdout.strip().splitlines()[-1])["jobs"][0]
        job_id = int(status["job"])
    except (ValueError, IndexError, KeyError) as exc:
        out["error"] = f"no status JSON on stdout ({exc}); rc {m.rc}; stderr tail: " \
                       f"{m.stderr[-1500:]}"
        return out
    facts = job_facts(db, job_id)
    c = facts["counts"]
    ok, failed = c.get("succeeded", 0), c.get("failed", 0)
    out.update(job=job_id, state=facts["state"], counts=c, succeeded=ok, failed=failed,
               lost=n - ok - failed, failed_codes=error_codes(db, job_id))
    if facts["started_at"] and facts["finished_at"]:
        wall = facts["finished_at"] - facts["started_at"]
        out["wall_tagging"] = wall
        out["arns_per_s"] = (ok + failed) / wall if wall > 0 else None
    out["enqueue_s"] = (facts["started_at"] or 0) - (facts["created_at"] or 0)
    out.update(_progress_shape(db, job_id, facts["started_at"]))
    succeeded = arns_in_state(db, job_id, "succeeded")
    if len(succeeded) > VERIFY_ALL_UP_TO:
        sample = random.Random(1).sample(succeeded, SAMPLE)
        out["verify"] = f"sample {SAMPLE} of {len(succeeded)}"
    else:
        sample = succeeded
        out["verify"] = f"all {len(succeeded)}"
    out["untagged_of_checked"] = sim.count_without(sample, TAG_KEY, value)
    out["checked"] = len(sample)
    out["tag_value"] = value
    out["arns"] = None  # callers that need the list regenerate it
    return out


def _progress_shape(db: str, job_id: int, started: float | None) -> dict[str, Any]:
    """When items finished, relative to the job's start: where the time goes (steady state vs
    the tail of retried items waiting out their backoff)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ts = [r[0] for r in con.execute(
            "SELECT finished_at FROM items WHERE job_id = ? AND finished_at IS NOT NULL "
            "ORDER BY finished_at", (job_id,))]
    finally:
        con.close()
    if not ts or not started:
        return {}

    def at(q: float) -> float:
        return float(ts[min(len(ts) - 1, int(q * len(ts)))] - started)

    t05, t95 = at(0.05), at(0.95)
    steady = (0.90 * len(ts)) / (t95 - t05) if t95 > t05 else None
    return {"t50": at(0.50), "t95": t95, "t99": at(0.99), "t_last": ts[-1] - started,
            "steady_rate": steady}


def describe(r: dict[str, Any], ceiling: float | None = None) -> str:
    if "error" in r:
        return f"  {r['label']}: ERROR {r['error']}"
    lines = []
    wall = r.get("wall_tagging")
    rate = r.get("arns_per_s")
    req, thr = r["requests"], r["throttled"]
    lines.append(f"  {r['label']}: {r['shards']} shard(s), {r['submitted']:,} ARNs submitted; "
                 f"job {r['job']} ended {r['state']} (exit code {r['rc']}"
                 f"{', TIMED OUT' if r['timed_out'] else ''})")
    if wall is not None:
        lines.append(f"    tagging phase {wall:.2f} s (started_at → finished_at); process wall "
                     f"{r['wall_process']:.2f} s (enqueue + start-up + tagging + exit)")
        s = f"    rate {rate:,.1f} ARNs/s"
        if ceiling and rate is not None:
            s += f" vs ceiling {ceiling:,.0f} ARNs/s = {100 * rate / ceiling:.1f} % of ceiling"
        lines.append(s)
    if r.get("steady_rate"):
        s = (f"    items done at +{r['t50']:.1f} s (50 %), +{r['t95']:.1f} s (95 %), "
             f"+{r['t99']:.1f} s (99 %), +{r['t_last']:.1f} s (last); steady state 5→95 %: "
             f"{r['steady_rate']:,.1f} ARNs/s")
        if ceiling:
            s += f" = {100 * r['steady_rate'] / ceiling:.1f} % of ceiling"
        lines.append(s)
    lines.append(f"    TagResources requests {req:,}, throttled {thr:,} = "
                 f"{100 * thr / req if req else 0:.2f} % of requests; ARNs sent {r['arn_sends']:,} "
                 f"(not counting throttled calls) = {r['arn_sends'] / max(1, r['submitted']):.3f}"
                 f" sends per ARN")
    lines.append(f"    outcome {r['counts']}; failed by code {r['failed_codes'] or {}}")
    lines.append(f"    items lost (submitted − succeeded − failed): {r['lost']:,}; succeeded but "
                 f"untagged in the simulator: {r['untagged_of_checked']:,} ({r['verify']} checked)")
    lines.append(f"    bulktag process CPU {r['cpu']:.2f} s (user {r['utime']:.2f} s + sys "
                 f"{r['stime']:.2f} s) = {1e6 * r['cpu'] / max(1, r['submitted']):,.0f} µs/ARN "
                 f"incl. enqueue and start-up; peak RSS {r['maxrss_mb']:.1f} MB")
    return "\n".join(lines)


def run(quick: bool = False, shards: list[int] | None = None, per_shard: int | None = None,
        latency_ms: str | None = None) -> list[Row]:
    print_machine("throughput: bulktag vs the quota ceiling (simulator in its own process)")
    shards = shards or ([1, 4] if quick else [1, 4, 16, 64])
    sim_args = list(SIM_ARGS)
    if latency_ms:
        sim_args[1] = latency_ms
    print(f"   simulator: bulktag sim {' '.join(sim_args)} (quota 5 TagResources/s per "
          f"account-region = 100 ARNs/s per shard)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-tp-") as tmpdir, \
            SimProcess(sim_args) as sim:
        tmp = Path(tmpdir)
        print(f"   simulator at {sim.url}")
        for n in shards:
            per = per_shard or per_shard_for(n)
            ceiling = n * 100.0
            r = run_bulktag(sim, tmp, regions(n), per, f"tp{n}",
                            timeout=max(180.0, 10 * n * per / ceiling + 120))
            print(describe(r, ceiling), flush=True)
            b = f"throughput N={n}"
            if "error" in r:
                rows.append(Row(b, "error", r["error"][:60]))
                continue
            rate = r.get("arns_per_s")
            req = r["requests"]
            rows += [
                Row(b, "ARNs/s", rate, "ARN/s", f"ceiling {ceiling:,.0f}"),
                Row(b, "% of ceiling", None if rate is None else 100 * rate / ceiling, "%",
                    "≥ 95 %"),
                Row(b, "% of ceiling, steady state 5→95 %",
                    None if not r.get("steady_rate") else 100 * r["steady_rate"] / ceiling, "%"),
                Row(b, "throttled requests", 100 * r["throttled"] / req if req else None, "%",
                    "≤ 2 %"),
                Row(b, "items lost", r["lost"], "items", "0"),
                Row(b, "succeeded but untagged", r["untagged_of_checked"], "items", "0"),
                Row(b, "CPU per ARN (whole process)", 1e6 * r["cpu"] / max(1, r["submitted"]),
                    "µs/ARN", "≤ 100 µs"),
            ]
        sim.stop()
        if sim.cpu_seconds is not None:
            print(f"   simulator process CPU over the whole benchmark: {sim.cpu_seconds:.2f} s")
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 and 4 shards only")
    p.add_argument("--shards", help="comma-separated shard counts, e.g. 1,4,16")
    p.add_argument("--per-shard", type=int, help="ARNs per shard (default 2,000; 1,500 at 64)")
    p.add_argument("--latency-ms", help="simulator latency range (default 200-500)")
    a = p.parse_args(argv)
    shards = [int(x) for x in a.shards.split(",")] if a.shards else None
    print_rows(run(a.quick, shards, a.per_shard, a.latency_ms), "throughput summary")


if __name__ == "__main__":
    main()
