"""Dashboard latency on big jobs: `/api/jobs/N` and `/jobs/N` against a 1M- and a 10M-item job.

Builds the store the way `enqueue.py` does (`bulktag tag --detach` of a generated ARN file over
16 shards), then gives the job what a long migration has: 1 % of its items failed (eight error
codes, one of them rare, messages with markup), 7 hours of throughput samples every 10 s, and
state `paused` so that the daemon leaves it alone. Then starts `bulktag daemon --listen` on the
store and times GET `/api/jobs/N`, `/jobs/N`, `/jobs/N/chart.svg`, `/api/jobs` and `/` over
HTTP (median and max of 20, after one warm-up). Also times migration 0006 (the failed-items
index and the samples table) applied to the existing big store, as an upgrade would.

    python benchmarks/dashboard.py [--quick] [--sizes 1000000,10000000]
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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
FAILED_EVERY = 100  # 1 % of items failed
CODES = ["AccessDeniedException", "ResourceNotFoundException", "InvalidParameterException",
         "InternalServiceException", "ThrottlingException", "TagPolicyViolation",
         "InvalidReplicationGroupState", "RareCode"]
SAMPLE_SECONDS, SAMPLE_HOURS = 10, 7
RUNS = 20
PATHS = ["/api/jobs/{job}", "/jobs/{job}", "/jobs/{job}/chart.svg", "/api/jobs", "/"]


def build(tmp: Path, n: int) -> tuple[str, int]:
    label = f"{n // 1_000_000}M"
    src = tmp / f"dash-{label}.txt"
    write_arns(src, arns_for(regions(SHARDS), n // SHARDS))
    db = str(tmp / f"dash-{label}.db")
    t0 = time.perf_counter()
    m = run_measured(bulktag_cmd("tag", "--detach", "--arns", str(src), "--tag", "k=v", "--db",
                                 db, "--name", f"bench-{label}", "--log-format", "json"),
                     env=bulktag_env(tmp), timeout=1800)
    assert m.rc == 0, m.stderr[-2000:]
    job = int(m.stdout.strip().splitlines()[-1])
    src.unlink()
    con = sqlite3.connect(db, timeout=60)
    now = time.time()
    # The failures: one rare code among many common ones (the error example of a rare code is
    # the slow case of `status`); counters follow through the store's triggers.
    con.execute(
        "UPDATE items SET state = 'failed', attempts = 1, http_status = 400, finished_at = ? + id,"
        " error_code = CASE WHEN id % 1000000 = 0 THEN 'RareCode' ELSE"
        f" json_extract(?, '$[' || (id / {FAILED_EVERY} % 7) || ']') END,"
        " message = 'refused <img src=x onerror=alert(1)> for ' || arn"
        f" WHERE id % {FAILED_EVERY} = 0", (now - n, _json(CODES[:7])))
    samples = SAMPLE_HOURS * 3600 // SAMPLE_SECONDS
    start = now - SAMPLE_HOURS * 3600
    con.executemany("INSERT INTO job_samples (job_id, at, done) VALUES (?, ?, ?)",
                    [(job, start + i * SAMPLE_SECONDS, i * (n // 2) // samples)
                     for i in range(samples)])
    con.execute("UPDATE jobs SET state = 'paused', started_at = ? WHERE id = ?", (start, job))
    con.commit()
    con.close()
    print(f"  {label}: store built in {time.perf_counter() - t0:.0f} s "
          f"({Path(db).stat().st_size / 1e9:.2f} GB); {n // FAILED_EVERY:,} failed items, "
          f"{samples:,} samples", flush=True)
    return db, job


def _json(values: list[str]) -> str:
    import json

    return json.dumps(values)


def migration_cost(db: str) -> float:
    """Undo migration 0006 on the big store, then time the open that re-applies it."""
    con = sqlite3.connect(db, timeout=60)
    con.executescript("DROP INDEX items_failed_at; ALTER TABLE job_samples RENAME TO keep_samples;"
                      "DELETE FROM schema_migrations WHERE version = 6;")
    con.close()
    m = run_measured(bulktag_cmd("jobs", "--db", db, "--json"), env=bulktag_env(), timeout=900)
    assert m.rc == 0, m.stderr[-2000:]
    con = sqlite3.connect(db, timeout=60)
    con.executescript("DROP TABLE job_samples; ALTER TABLE keep_samples RENAME TO job_samples;")
    con.close()
    return m.wall


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
        return time.perf_counter() - t0, resp.status, len(body)


def measure(tmp: Path, n: int) -> list[Row]:
    label = f"{n // 1_000_000}M"
    db, job = build(tmp, n)
    upgrade = migration_cost(db)
    print(f"    migration 0006 on the existing {label} store (`bulktag jobs` that applies it): "
          f"{upgrade:.1f} s", flush=True)
    port = free_port()
    env = bulktag_env(tmp)
    daemon = subprocess.Popen(
        [*bulktag_cmd("daemon", "--listen", f"127.0.0.1:{port}", "--db", db, "--log-format",
                      "json")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    rows = [Row(f"dashboard {label}", "migration 0006 on the existing store", upgrade, "s")]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(base + "/healthz")[1] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and daemon.poll() is None, "daemon did not start"
            time.sleep(0.2)
        for path in PATHS:
            url = base + path.format(job=job)
            get(url)  # warm-up
            times, size = [], 0
            for _ in range(RUNS):
                dt, status, size = get(url)
                assert status == 200, (url, status)
                times.append(dt)
            med = statistics.median(times)
            print(f"    GET {path.format(job=job):<22} median {1000 * med:6.1f} ms, max "
                  f"{1000 * max(times):6.1f} ms ({size:,} bytes; {RUNS} runs)", flush=True)
            rows.append(Row(f"dashboard {label}", f"GET {path.format(job='N')} (median)",
                            1000 * med, "ms", "< 300 ms" if "{job}" in path else ""))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    return rows


def run(quick: bool = False, sizes: list[int] | None = None) -> list[Row]:
    print_machine("dashboard: job page and API latency on big jobs")
    sizes = sizes or ([1_000_000] if quick else [1_000_000, 10_000_000])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-dash-", dir="/tmp") as tmpdir:
        for n in sizes:
            rows += measure(Path(tmpdir), n)
            for p in Path(tmpdir).glob("dash-*"):
                p.unlink()
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1M items only (default 1M and 10M)")
    p.add_argument("--sizes", help="comma-separated item counts")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")] if a.sizes else None
    print_rows(run(a.quick, sizes), "dashboard summary")


if __name__ == "__main__":
    main()
