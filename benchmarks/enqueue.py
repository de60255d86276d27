"""Enqueue rate, peak RSS and `status` latency on big jobs.

Generates 1,000,000 ARNs (and, unless --quick, 10,000,000) over 16 shards into a text file,
times `bulktag tag --detach --arns FILE --tag k=v --db TMP` as a subprocess and reports ARNs/s,
the peak RSS of exactly that child (wait4() rusage: equivalent to RUSAGE_CHILDREN in a fresh
helper process, without other children mixing in), CPU seconds, and the sizes of the source
file and the store. Then `status JOB --json` latency on that job: median of 5 subprocess runs
(includes interpreter start-up), and in-process timings of the store calls behind it.

    python benchmarks/enqueue.py [--quick] [--sizes 1000000,10000000]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    Row,
    arns_for,
    bulktag_cmd,
    bulktag_env,
    print_machine,
    print_rows,
    regions,
    run_measured,
    write_arns,
)

SHARDS = 16


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


async def in_process_status(db: str, job: int, runs: int = 5) -> dict[str, float]:
    from bulktag.app.jobs import job_status
    from bulktag.store import Store

    out: dict[str, list[float]] = {}

    def t(name: str, dt: float) -> None:
        out.setdefault(name, []).append(dt)

    t0 = time.perf_counter()
    store = await Store.open(db)
    t("Store.open (incl. migrations check)", time.perf_counter() - t0)
    try:
        for _ in range(runs):
            for name, call in (("store.get_job", lambda: store.get_job(job)),
                               ("store.counts", lambda: store.counts(job)),
                               ("store.error_counts", lambda: store.error_counts(job, 5)),
                               ("cli.job_status (all of status)", lambda: job_status(store, job))):
                t0 = time.perf_counter()
                await call()
                t(name, time.perf_counter() - t0)
    finally:
        await store.close()
    return {k: statistics.median(v) for k, v in out.items()}


def measure(tmp: Path, n: int) -> list[Row]:
    label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
    per = n // SHARDS
    src = tmp / f"enq-{label}.txt"
    t0 = time.perf_counter()
    n = write_arns(src, arns_for(regions(SHARDS), per))
    gen = time.perf_counter() - t0
    fsize = src.stat().st_size
    print(f"  {label}: generated {n:,} ARNs over {SHARDS} shards in {gen:.1f} s; source file "
          f"{fsize / 1e6:,.1f} MB", flush=True)
    db = str(tmp / f"enq-{label}.db")
    m = run_measured(bulktag_cmd("tag", "--detach", "--arns", str(src), "--tag", "k=v", "--db",
                                 db, "--json", "--log-format", "json"),
                     env=bulktag_env(tmp), timeout=1500)
    b = f"enqueue {label}"
    if m.rc != 0 or m.timed_out:
        print(f"    tag --detach FAILED rc {m.rc}{' (timed out)' if m.timed_out else ''} after "
              f"{m.wall:.1f} s; peak RSS {m.maxrss_mb:.1f} MB; stderr: {m.stderr[-1500:]}")
        return [Row(b, "error", f"rc {m.rc} timed_out={m.timed_out}")]
    res = json.loads(m.stdout.strip().splitlines()[-1])
    job = int(res["job"])
    dbsize = _size(Path(db))
    rate = n / m.wall
    print(f"    `tag --detach`: {m.wall:.2f} s wall = {rate:,.0f} ARNs/s (budget ≥ 100,000); "
          f"CPU {m.cpu:.2f} s (user {m.utime:.2f} + sys {m.stime:.2f}) = "
          f"{1e6 * m.cpu / n:.1f} µs/ARN; peak RSS {m.maxrss_mb:,.1f} MB (budget ≤ 200 MB at 10M); "
          f"added {res.get('added'):,}; store {dbsize / 1e6:,.1f} MB "
          f"({dbsize / n:.0f} bytes/item) vs source {fsize / 1e6:,.1f} MB", flush=True)
    rows = [Row(b, "enqueue rate", rate, "ARN/s", "≥ 100,000"),
            Row(b, "enqueue peak RSS", m.maxrss_mb, "MB", "≤ 200 MB (10M)"),
            Row(b, "enqueue CPU per ARN", 1e6 * m.cpu / n, "µs/ARN"),
            Row(b, "store size", dbsize / 1e6, "MB"),
            Row(b, "source file size", fsize / 1e6, "MB")]

    walls, rss = [], []
    for _ in range(5):
        s = run_measured(bulktag_cmd("status", str(job), "--db", db, "--json"),
                         env=bulktag_env(tmp), timeout=300)
        walls.append(s.wall)
        rss.append(s.maxrss_mb)
    base = [run_measured(bulktag_cmd("--version"), env=bulktag_env(tmp)).wall for _ in range(3)]
    med = statistics.median(walls)
    print(f"    `status {job} --json` subprocess: median {1000 * med:.0f} ms over 5 runs (min "
          f"{1000 * min(walls):.0f}, max {1000 * max(walls):.0f} ms; peak RSS "
          f"{max(rss):.1f} MB); interpreter+import baseline (`--version`) median "
          f"{1000 * statistics.median(base):.0f} ms (budget < 200 ms)")
    inproc = asyncio.run(in_process_status(db, job))
    for name, dt in inproc.items():
        print(f"    in-process {name}: {1000 * dt:.2f} ms (median of 5)")
    rows += [Row(b, "status --json, subprocess (median of 5)", 1000 * med, "ms", "< 200 ms"),
             Row(b, "status, in-process job_status", 1000 * inproc[
                 "cli.job_status (all of status)"], "ms", "< 200 ms")]
    return rows


def run(quick: bool = False, sizes: list[int] | None = None) -> list[Row]:
    print_machine("enqueue: rate, peak RSS and status latency on big jobs")
    sizes = sizes or ([1_000_000] if quick else [1_000_000, 10_000_000])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-enq-", dir="/tmp") as tmpdir:
        for n in sizes:
            rows += measure(Path(tmpdir), n)
            for p in Path(tmpdir).glob("enq-*"):  # keep disk use bounded between sizes
                p.unlink()
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1M ARNs only (default 1M and 10M)")
    p.add_argument("--sizes", help="comma-separated ARN counts")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")] if a.sizes else None
    print_rows(run(a.quick, sizes), "enqueue summary")


if __name__ == "__main__":
    main()
