"""Enqueue rate, peak RSS and `status` latency on big jobs.

Generates 1,000,000 ARNs (and, unless --quick, 10,000,000) into a text file, in one of two
orders: `ordered` (16 shards, ids in sequence: the shape generated lists have) or `random` (50
accounts x 8 regions, random 10-hex-digit ids in random order: the shape real exports have);
times `bulktag tag --detach --arns FILE --tag k=v --db STORE` (a SQLite file, or a fresh
PostgreSQL database with --stores postgres) as a subprocess and reports ARNs/s,
the peak RSS of exactly that child (wait4() rusage: equivalent to RUSAGE_CHILDREN in a fresh
helper process, without other children mixing in), CPU seconds, and the sizes of the source
file and the store. Then `status JOB --json` latency on that job: median of 5 subprocess runs
(includes interpreter start-up), and in-process timings of the store calls behind it.

    python benchmarks/enqueue.py [--quick] [--sizes 1000000,10000000]
        [--orders ordered,random] [--stores sqlite,postgres] [--pg postgresql://...]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
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
RANDOM_ACCOUNTS = [f"{100000000000 + n * 7919:012d}" for n in range(50)]
RANDOM_REGIONS = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2",
                  "eu-central-1", "ap-south-1"]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def random_arns(n: int, seed: int = 7) -> Iterator[str]:
    """The issue's real-export shape: 50 accounts x 8 regions (400 shards), random ids."""
    import random

    rng = random.Random(seed)
    for _ in range(n):
        yield (f"arn:aws:lambda:{rng.choice(RANDOM_REGIONS)}:{rng.choice(RANDOM_ACCOUNTS)}:"
               f"function:fn-{rng.getrandbits(40):010x}")


def pg_database(admin: str, name: str, *, drop_only: bool = False) -> str:
    """A fresh PostgreSQL database `name` on the admin URL's server; its URL."""
    import asyncpg

    async def go() -> None:
        con = await asyncpg.connect(admin)
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}"')
            if not drop_only:
                await con.execute(f'CREATE DATABASE "{name}"')
        finally:
            await con.close()

    asyncio.run(go())
    return admin.rsplit("/", 1)[0] + "/" + name


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


def source(tmp: Path, n: int, order: str) -> tuple[Path, int]:
    label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
    src = tmp / f"enq-{label}-{order}.txt"
    if not src.exists():
        t0 = time.perf_counter()
        arns = random_arns(n) if order == "random" else arns_for(regions(SHARDS), n // SHARDS)
        n = write_arns(src, arns)
        shards = "400 shards (50 accounts x 8 regions)" if order == "random" else \
            f"{SHARDS} shards"
        print(f"  {label} {order}: generated {n:,} ARNs over {shards} in "
              f"{time.perf_counter() - t0:.1f} s; source file {src.stat().st_size / 1e6:,.1f} "
              "MB", flush=True)
    return src, sum(1 for _ in open(src, "rb"))


def measure(tmp: Path, n: int, order: str = "ordered", store: str = "sqlite",
            pg_admin: str = PG_ADMIN) -> list[Row]:
    label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
    src, n = source(tmp, n, order)
    fsize = src.stat().st_size
    print(f"  {label} {order} on {store}:", flush=True)
    if store == "postgres":
        db = pg_database(pg_admin, f"bulktag_bench_enq_{label.lower()}_{order}")
    else:
        db = str(tmp / f"enq-{label}-{order}.db")
    m = run_measured(bulktag_cmd("tag", "--detach", "--arns", str(src), "--tag", "k=v", "--db",
                                 db, "--json", "--log-format", "json"),
                     env=bulktag_env(tmp), timeout=1500)
    b = f"enqueue {label} {order} {store}"
    if m.rc != 0 or m.timed_out:
        print(f"    tag --detach FAILED rc {m.rc}{' (timed out)' if m.timed_out else ''} after "
              f"{m.wall:.1f} s; peak RSS {m.maxrss_mb:.1f} MB; stderr: {m.stderr[-1500:]}")
        return [Row(b, "error", f"rc {m.rc} timed_out={m.timed_out}")]
    res = json.loads(m.stdout.strip().splitlines()[-1])
    job = int(res["job"])
    dbsize = _size(Path(db)) if store == "sqlite" else 0
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
    if store == "postgres":
        pg_database(pg_admin, db.rsplit("/", 1)[1], drop_only=True)
    return rows


def run(quick: bool = False, sizes: list[int] | None = None,
        orders: list[str] | None = None, stores: list[str] | None = None,
        pg_admin: str = PG_ADMIN) -> list[Row]:
    print_machine("enqueue: rate, peak RSS and status latency on big jobs")
    sizes = sizes or ([1_000_000] if quick else [1_000_000, 10_000_000])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-enq-", dir="/tmp") as tmpdir:
        for n in sizes:
            for order in orders or ["ordered", "random"]:
                for store in stores or ["sqlite"]:
                    rows += measure(Path(tmpdir), n, order, store, pg_admin)
                    for p in Path(tmpdir).glob("enq-*.db*"):
                        p.unlink()
            for p in Path(tmpdir).glob("enq-*"):  # keep disk use bounded between sizes
                p.unlink()
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1M ARNs only (default 1M and 10M)")
    p.add_argument("--sizes", help="comma-separated ARN counts")
    p.add_argument("--orders", default="ordered,random",
                   help="comma-separated: ordered, random (default both)")
    p.add_argument("--stores", default="sqlite", help="comma-separated: sqlite, postgres")
    p.add_argument("--pg", default=PG_ADMIN,
                   help="a PostgreSQL admin URL: each run gets a database of its own there")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")] if a.sizes else None
    print_rows(run(a.quick, sizes, a.orders.split(","), a.stores.split(","), a.pg),
               "enqueue summary")


if __name__ == "__main__":
    main()
