"""The store alone, SQLite against PostgreSQL side by side: no simulator, no engine.

For each backend, on a fresh store (a temp SQLite file; a new PostgreSQL database, dropped
after):

1. enqueue: one job of `--items` ARNs over `--shards` shards, `add_items` in chunks of 10,000
   (what `bulktag tag` does), one tagset — ARNs/s and how long building took;
2. claim + record: the engine's loop without the network — claim 240 items of one shard (20 ARNs
   × 12 in flight, the default), record them succeeded (1 % failed with an error code), shards
   in turn; one claimer, then four concurrent claimers on distinct shards (four lanes or
   workers) — items/s, for `--seconds` each;
3. status on the large job: `get_job`, `counts`, `shard_counts`, `error_counts` (what `bulktag
   status` reads) — median and worst of 7 calls, in ms.

For PostgreSQL it also gives the CPU seconds of the server backends serving this process
(/proc/PID/stat of the pids in pg_stat_activity for the database), against this process's own.

    python benchmarks/store_backends.py [--items 10000000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import print_machine

from bulktag.arn import Shard
from bulktag.store import (
    ItemState,
    JobOptions,
    JobState,
    NewItem,
    Outcome,
    Store,
    tagset_body,
)

PG_ADMIN = os.environ.get("BULKTAG_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ACCOUNT = "123456789012"
CHUNK = 10_000
CLAIM = 240  # 20 ARNs per call × 12 in flight per shard: what a lane claims at once
OWNER = "bench:1:store"


# -- PostgreSQL helpers ----------------------------------------------------------------------


async def pg_admin(*statements: str) -> None:
    import asyncpg

    con = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        for s in statements:
            await con.execute(s)
    finally:
        await con.close()


def pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN.rpartition("/")
    return f"{base}/{database}"


@asynccontextmanager
async def scratch_store(backend: str, prefix: str) -> AsyncIterator[tuple[str, str | None]]:
    """(url, PostgreSQL database or None) of a new empty store, dropped on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        if backend != "postgres":
            yield str(Path(tmp) / "bulktag.db"), None
            return
        database = f"bulktag_bench_{uuid.uuid4().hex[:10]}"
        await pg_admin(f'CREATE DATABASE "{database}"')
        try:
            yield pg_url(database), database
        finally:
            await pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def backend_pids(database: str) -> list[int]:
    """The server processes serving connections to `database` now."""
    import asyncpg

    con = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        rows = await con.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
        return [int(r["pid"]) for r in rows]
    finally:
        await con.close()


def proc_cpu(pids: list[int]) -> dict[int, float]:
    """utime + stime (seconds) of each pid still alive, from /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


class CpuWatch:
    """CPU of this process and (PostgreSQL) of the database's backends over a phase."""

    def __init__(self, database: str | None) -> None:
        self.database = database
        self.pids: list[int] = []
        self.server_before: dict[int, float] = {}
        self.me_before = 0.0

    async def start(self) -> None:
        self.me_before = time.process_time()
        if self.database:
            self.pids = await backend_pids(self.database)
            self.server_before = proc_cpu(self.pids)

    async def stop(self) -> tuple[float, float | None]:
        me = time.process_time() - self.me_before
        if not self.database:
            return me, None
        # Connections opened during the phase count from zero.
        pids = sorted(set(self.pids) | set(await backend_pids(self.database)))
        after = proc_cpu(pids)
        server = sum(v - self.server_before.get(pid, 0.0) for pid, v in after.items())
        return me, server


# -- the phases ------------------------------------------------------------------------------


def shards_of(n: int) -> list[Shard]:
    return [Shard("aws", ACCOUNT, f"zz-bench-{i}") for i in range(n)]


async def enqueue(store: Store, items: int, shards: list[Shard]) -> tuple[int, float]:
    body = tagset_body({"bench": "yes"}, None)
    job_id = await store.create_job("tag", options=JobOptions(tags={"bench": "yes"}),
                                    name="store-bench")
    started = time.perf_counter()
    n = 0
    while n < items:
        chunk = []
        for i in range(n, min(items, n + CHUNK)):
            shard = shards[i % len(shards)]
            arn = f"arn:aws:ec2:{shard.region}:{ACCOUNT}:volume/vol-{i:017x}"
            chunk.append(NewItem(arn, shard, body))
        n += await store.add_items(job_id, chunk)
    await store.set_job_state(job_id, JobState.READY)
    return job_id, time.perf_counter() - started


async def claim_record(store: Store, job_id: int, shard_ids: list[int], seconds: float,
                       claimers: int, budget: int) -> int:
    """Claim and record for `seconds` (or `budget` items) with `claimers` concurrent loops,
    each on its own shards; returns items recorded."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(mine: list[int]) -> None:
        nonlocal done
        k = 0
        while time.perf_counter() < deadline and mine and done < budget:
            shard_id = mine[k % len(mine)]
            k += 1
            claimed = await store.claim(OWNER, job_id, shard_id, CLAIM, lease_seconds=300)
            if not claimed:
                mine.remove(shard_id)
                continue
            now = time.time()
            outcomes = [
                Outcome(c.id, ItemState.FAILED, 1, 0.0, "InternalServiceException", 500, "x")
                if c.id % 100 == 0 else Outcome(c.id, ItemState.SUCCEEDED, 1, now)
                for c in claimed]
            await store.record(OWNER, outcomes)
            done += len(outcomes)  # not `done += await ...`: done would be read before the await

    await asyncio.gather(*(loop(shard_ids[i::claimers]) for i in range(claimers)))
    return done


async def timed(fn: Callable[[], Awaitable[Any]], n: int = 7) -> tuple[float, float]:
    """Median and worst wall time of n calls, in ms."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


async def bench(backend: str, items: int, n_shards: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend}
    async with scratch_store(backend, "bulktag-store-bench-") as (url, database):
        async with await Store.open(url) as store:
            await store.register_owner(OWNER)
            cpu = CpuWatch(database)
            await cpu.start()
            job_id, took = await enqueue(store, items, shards_of(n_shards))
            me, server = await cpu.stop()
            out.update(enqueue_s=took, enqueue_rate=items / took, enqueue_cpu=me,
                       enqueue_server_cpu=server)
            print(f"   {backend}: built {items:,} items in {took:.1f} s "
                  f"({items / took:,.0f} ARNs/s)", flush=True)
            shard_ids = sorted({r.shard_id for r in await store.runnable()
                                if r.job_id == job_id})
            for claimers in (1, 4):
                cpu = CpuWatch(database)
                await cpu.start()
                t = time.perf_counter()
                n = await claim_record(store, job_id, list(shard_ids), seconds, claimers,
                                       budget=items // 3)
                wall = time.perf_counter() - t
                me, server = await cpu.stop()
                out[f"claim{claimers}_rate"] = n / wall
                out[f"claim{claimers}_cpu_per_item_us"] = me / max(1, n) * 1e6
                out[f"claim{claimers}_server_cpu_per_item_us"] = (
                    None if server is None else server / max(1, n) * 1e6)
                print(f"   {backend}: claim+record x{claimers}: {n:,} items in {wall:.1f} s",
                      flush=True)
            out["status_ms"] = {
                "get_job": await timed(lambda: store.get_job(job_id)),
                "counts": await timed(lambda: store.counts(job_id)),
                "shard_counts": await timed(lambda: store.shard_counts(job_id)),
                "error_counts": await timed(lambda: store.error_counts(job_id)),
            }
            counts = await store.counts(job_id)
            out["counts"] = dict(counts.by_state)
            assert counts.total == items, counts
        if backend == "sqlite":
            out["size_mb"] = sum(p.stat().st_size for p in Path(url).parent.iterdir()) / 2**20
        else:
            import asyncpg

            con = await asyncpg.connect(PG_ADMIN)
            try:
                size = await con.fetchval("SELECT pg_database_size($1)", database)
            finally:
                await con.close()
            out["size_mb"] = int(size) / 2**20
    return out


def report(results: list[dict[str, Any]], items: int, n_shards: int) -> None:
    names = [r["backend"] for r in results]

    def row(label: str, values: list[str]) -> None:
        print(f"   {label:<44}" + "".join(f"{v:>18}" for v in values))

    print(f"\n== {items:,} items over {n_shards} shards")
    row("", names)
    row("enqueue ARNs/s (add_items, 10k chunks)", [f"{r['enqueue_rate']:,.0f}" for r in results])
    row("  building took", [f"{r['enqueue_s']:.1f} s" for r in results])
    row("  client CPU per ARN", [f"{r['enqueue_cpu'] / items * 1e6:.1f} µs" for r in results])
    row("  server CPU per ARN", [
        "-" if r["enqueue_server_cpu"] is None
        else f"{r['enqueue_server_cpu'] / items * 1e6:.1f} µs" for r in results])
    for k in (1, 4):
        row(f"claim {CLAIM} + record, {k} claimer(s): items/s",
            [f"{r[f'claim{k}_rate']:,.0f}" for r in results])
        row("  client CPU per item", [f"{r[f'claim{k}_cpu_per_item_us']:.1f} µs" for r in results])
        row("  server CPU per item", [
            "-" if r[f"claim{k}_server_cpu_per_item_us"] is None
            else f"{r[f'claim{k}_server_cpu_per_item_us']:.1f} µs" for r in results])
    for op in ("get_job", "counts", "shard_counts", "error_counts"):
        row(f"status: {op} ms (median / worst of 7)",
            [f"{r['status_ms'][op][0]:.2f} / {r['status_ms'][op][1]:.2f}" for r in results])
    row("store size", [f"{r['size_mb']:,.0f} MB" for r in results])


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0, help="per claim + record phase")
    p.add_argument("--backends", default="sqlite,postgres")
    args = p.parse_args(argv)
    print_machine(f"store backends: {args.items:,} items, {args.shards} shards")
    results = []
    for backend in args.backends.split(","):
        results.append(await bench(backend, args.items, args.shards, args.seconds))
    report(results, args.items, args.shards)


if __name__ == "__main__":
    asyncio.run(main())
