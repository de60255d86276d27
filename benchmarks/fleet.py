"""A fleet on one PostgreSQL queue: whole-job throughput of 1, 2 and 3 workers against the
simulator, and whether the store was ever the bottleneck.

For each worker count k, on a fresh PostgreSQL database and a fresh simulator process (documented
quotas enforced: 5 TagResources/s per account-region, i.e. 100 ARNs/s per shard; 200–500 ms
latency): one `bulktag tag --detach` job of `--per-shard` ARNs on each of `--shards` shards (one
account, synthetic regions), then k `bulktag run JOB` processes started at once. Printed:

- the tagging phase's wall time (the job's started_at → finished_at in the store) and ARNs/s
  against the ceiling (shards × 100 ARNs/s);
- throttled share of TagResources calls (the simulator's counters), items not succeeded;
- CPU seconds of each worker (wait4 rusage of exactly that child), of the simulator, and of the
  PostgreSQL backends that served the workers (/proc/PID/stat of the database's pids in
  pg_stat_activity, sampled every 0.5 s while they live) — in cores over the tagging phase;
- all cores: workers + simulator + PostgreSQL CPU over the workers' wall time (this machine
  has os.cpu_count() of them; other users of the machine are not counted);
- the store's answer time seen from outside while the fleet works: a probe claims nothing
  (`claim` on a job with no items) and reads `counts` every 0.5 s — median and worst, ms.

The store is the bottleneck if the fleet is below its ceiling while PostgreSQL's CPU is near a
core or the probe's answers grow; the machine is if workers + simulator + PostgreSQL use all of
its cores.

    python benchmarks/fleet.py [--workers 1,2,3] [--shards 32] [--per-shard 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    REPO,
    SimProcess,
    arns_for,
    bulktag_cmd,
    bulktag_env,
    print_machine,
    regions,
    write_arns,
)
from store_backends import PG_ADMIN, backend_pids, pg_admin, pg_url, proc_cpu

from bulktag.store import ItemState, JobOptions, Store

SIM_ARGS = ["--latency-ms", "200-500"]
CEILING_PER_SHARD = 100.0  # 5 TagResources/s × 20 ARNs


class PgCpuSampler(threading.Thread):
    """CPU seconds of the database's backends: the last reading of every pid seen, summed (a
    backend's counter only grows; connections that close keep their last reading)."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self.halt = threading.Event()
        self.first = True

    def sample(self) -> None:
        """The first sample is the base (connections already open count from there); a
        backend first seen later is a new connection, counted from zero."""
        pids = asyncio.run(backend_pids(self.database))
        for pid, cpu in proc_cpu(pids).items():
            if self.first:
                self.base[pid] = cpu
            self.seen[pid] = cpu
        self.first = False

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(Exception):  # a missed sample only loses precision
                self.sample()
            self.halt.wait(0.5)

    def seconds(self) -> float:
        return sum(v - self.base.get(pid, 0.0) for pid, v in self.seen.items())


class Probe(threading.Thread):
    """The store's answer time as a worker sees it, every 0.5 s: an empty claim and a counts."""

    def __init__(self, url: str, job_id: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.job_id = job_id
        self.claims: list[float] = []
        self.counts: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with await Store.open(self.url, create=False) as store:
            empty = await store.create_job("tag", options=JobOptions(tags={"probe": "1"}),
                                           name="probe")
            while not self.halt.is_set():
                t = time.perf_counter()
                await store.claim("probe:0:x", empty, 1, 240, lease_seconds=60)
                self.claims.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                await store.counts(self.job_id)
                self.counts.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.5)


async def job_figures(url: str, job_id: int) -> dict[str, Any]:
    async with await Store.open(url, create=False) as store:
        job = await store.get_job(job_id)
        counts = await store.counts(job_id)
    assert job is not None
    return {"state": str(job.state), "started_at": job.started_at,
            "finished_at": job.finished_at, "counts": dict(counts.by_state)}


def one_run(k: int, n_shards: int, per_shard: int, tmp: Path) -> dict[str, Any]:
    database = f"bulktag_fleet_{uuid.uuid4().hex[:10]}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{database}"'))
    url = pg_url(database)
    env = bulktag_env(tmp)
    region_list = regions(n_shards)
    arns_file = tmp / f"fleet-{k}.txt"
    total = write_arns(arns_file, arns_for(region_list, per_shard, prefix=f"w{k}"))
    try:
        with SimProcess(SIM_ARGS) as sim:
            sub = subprocess.run(
                bulktag_cmd("tag", "--arns", str(arns_file), "--tag", f"fleet=w{k}",
                            "--detach", "--db", url, "--endpoint-url", sim.url),
                env=env, capture_output=True, text=True, timeout=300, cwd=str(REPO),
                check=False)
            assert sub.returncode == 0, sub.stderr[-2000:]
            job_id = int(sub.stdout.strip())
            sampler = PgCpuSampler(database)
            sampler.sample()  # the base: nothing but this benchmark's own connections yet
            sampler.start()
            probe = Probe(url, job_id)
            probe.start()
            started = time.monotonic()
            logs = [(tmp / f"fleet-{k}-w{i}.log").open("w") for i in range(k)]
            procs = [subprocess.Popen(bulktag_cmd("run", str(job_id), "--db", url,
                                                  "--endpoint-url", sim.url,
                                                  "--log-format", "json"),
                                      env=env, stdout=subprocess.DEVNULL, stderr=log,
                                      cwd=str(REPO))
                     for log in logs]
            workers = []
            for p in procs:
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                workers.append({"rc": p.returncode, "cpu": ru.ru_utime + ru.ru_stime})
            wall = time.monotonic() - started
            probe.halt.set()
            sampler.halt.set()
            probe.join(10)
            sampler.join(10)
            for log in logs:
                log.close()
            stats = sim.stats()
        facts = asyncio.run(job_figures(url, job_id))
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    phase = (facts["finished_at"] or 0) - (facts["started_at"] or 0)
    calls = int(stats["requests"].get("TagResources", 0))
    throttled = int(stats["throttled"].get("TagResources", 0))
    succeeded = facts["counts"].get(ItemState.SUCCEEDED, 0) + \
        facts["counts"].get(ItemState.SKIPPED, 0)
    return {
        "workers": k, "items": total, "state": facts["state"], "wall": wall, "phase": phase,
        "rate": total / phase if phase > 0 else 0.0,
        "ceiling": n_shards * CEILING_PER_SHARD, "calls": calls, "throttled": throttled,
        "not_done": total - succeeded, "worker_rc": [w["rc"] for w in workers],
        "worker_cpu": [w["cpu"] for w in workers], "sim_cpu": sim.cpu_seconds or 0.0,
        "pg_cpu": sampler.seconds(),
        "claim_ms": (statistics.median(probe.claims), max(probe.claims)) if probe.claims
        else (0.0, 0.0),
        "counts_ms": (statistics.median(probe.counts), max(probe.counts)) if probe.counts
        else (0.0, 0.0),
    }


def report(rows: list[dict[str, Any]], n_shards: int) -> None:
    print(f"\n== fleet on one PostgreSQL queue, {n_shards} shards, ceiling "
          f"{n_shards * CEILING_PER_SHARD:,.0f} ARNs/s")
    print(f"   {'workers':>7} {'items':>7} {'phase s':>8} {'ARNs/s':>8} {'% ceil':>7} "
          f"{'throttled':>10} {'not done':>9} {'worker CPU s':>16} {'CPU µs/ARN':>11} "
          f"{'sim CPU s':>10} {'PG CPU s':>9} {'PG cores':>9} {'all cores':>10} {'claim ms med/max':>17} "
          f"{'counts ms med/max':>18}")
    for r in rows:
        cpu = sum(r["worker_cpu"])
        print(f"   {r['workers']:>7} {r['items']:>7} {r['phase']:>8.1f} {r['rate']:>8,.0f} "
              f"{100 * r['rate'] / r['ceiling']:>6.1f}% "
              f"{r['throttled']:>4}/{r['calls']:<5} {r['not_done']:>9} "
              f"{' + '.join(f'{c:.1f}' for c in r['worker_cpu']):>16} "
              f"{cpu / r['items'] * 1e6:>11.0f} {r['sim_cpu']:>10.1f} {r['pg_cpu']:>9.1f} "
              f"{r['pg_cpu'] / max(r['wall'], 1e-9):>9.2f} "
              f"{(cpu + r['sim_cpu'] + r['pg_cpu']) / max(r['wall'], 1e-9):>10.2f} "
              f"{r['claim_ms'][0]:>8.1f}/{r['claim_ms'][1]:<8.1f} "
              f"{r['counts_ms'][0]:>9.1f}/{r['counts_ms'][1]:<8.1f}")
        if any(r["worker_rc"]) or r["state"] != "completed":
            print(f"      !! job {r['state']}, worker exit codes {r['worker_rc']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2,3")
    p.add_argument("--shards", type=int, default=32)
    p.add_argument("--per-shard", type=int, default=1500)
    args = p.parse_args(argv)
    print_machine(f"fleet: {args.workers} workers, {args.shards} shards × {args.per_shard} "
                  f"ARNs, PostgreSQL at {PG_ADMIN.rsplit('@', 1)[-1]}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bulktag-fleet-bench-") as tmp:
        for k in (int(x) for x in args.workers.split(",")):
            row = one_run(k, args.shards, args.per_shard, Path(tmp))
            print(f"   {k} worker(s): {row['rate']:,.0f} ARNs/s over {row['phase']:.1f} s",
                  flush=True)
            rows.append(row)
    report(rows, args.shards)


if __name__ == "__main__":
    main()
