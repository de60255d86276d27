"""Does a long run's claim + record stay flat? The store alone, one owner, over time.

A run leases and records every item of a job under one owner. Each lease writes an entry to
the partial index `items_leased (lease_owner, lease_expires_at) WHERE state = 'leased'`; on
PostgreSQL the entry stays in the index, dead, after `record` ends the lease, until a vacuum
removes it. A statement that finds "this owner's leased rows" through that index walks all of
them, so its cost grows with the run. This script shows whether it does, for each backend:

- the engine's loop without the network, as `store_backends.py`: claim 240 items of a shard
  (shards in turn), keep a before-image of each (`keep_before`), record them (1 % failed); per
  window of `--every` items it prints ms per claim, per keep_before and per record (mean and
  worst);
- at each window's end, the owner-scoped statements outside the loop, with one claim of 240
  held: `release_owner` (a lane's orphan check, shutdown), `reap_dead_owners` (every heartbeat:
  `release_expired`) and `lease_holders` (store copy);
- on PostgreSQL, `EXPLAIN (ANALYZE, BUFFERS)` of `record` and `keep_before` for one claim of
  240 (custom and generic plan), in a transaction rolled back: at each window the index each
  went through, the entries it found there and the buffers it read; in full at the start and
  at the end, with the plans of release_owner, release_expired and lease_holders.

The script leaves autovacuum as the server has it and prints the setting: with it on, a vacuum
now and then removes dead entries; between two vacuums (at the default scale factor, after a
fifth of the table has changed) they pile up all the same.

    python benchmarks/lease_scans.py [--items 100000] [--every 10000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import print_machine
from store_backends import CLAIM, enqueue, scratch_store, shards_of

from bulktag.store import ItemState, Outcome, Store

OWNER = "bench:1:lease-scans"
T = TypeVar("T")


def outcomes_of(claimed: list[Any]) -> list[Outcome]:
    now = time.time()
    return [Outcome(c.id, ItemState.FAILED, 1, 0.0, "InternalServiceException", 500, "x")
            if c.id % 100 == 0 else Outcome(c.id, ItemState.SUCCEEDED, 1, now)
            for c in claimed]


def befores_of(claimed: list[Any]) -> list[tuple[int, str]]:
    return [(c.id, '{"bench": "before"}') for c in claimed]


async def ms(call: Awaitable[T]) -> tuple[float, T]:
    """Wall time of a store call (a coroutine runs only once awaited), in ms, and its result."""
    t = time.perf_counter()
    result = await call
    return (time.perf_counter() - t) * 1000, result


async def explain_pg(url: str, store: Store, job_id: int, shard_id: int,
                     lease_seconds: float, generic: bool = False) -> dict[str, list[str]]:
    """EXPLAIN (ANALYZE, BUFFERS) of keep_before and record for one fresh claim, each in a
    transaction rolled back; then the claim is kept and recorded for real. `generic`: the plan
    a prepared statement settles on after its first executions (asyncpg prepares them)."""
    import asyncpg

    from bulktag.store.postgres import Q

    claimed = await store.claim(OWNER, job_id, shard_id, CLAIM, lease_seconds=lease_seconds)
    if not claimed:
        return {}
    outcomes = outcomes_of(claimed)
    befores = befores_of(claimed)
    now = time.time()
    queries = {
        "keep_before": (Q["keep_before"], (OWNER, [i for i, _ in befores],
                                           [b for _, b in befores])),
        "record": (Q["record"], (
            OWNER, [o.item_id for o in outcomes], [str(o.state) for o in outcomes],
            [o.attempts for o in outcomes], [o.next_attempt_at for o in outcomes],
            [o.error_code for o in outcomes], [o.http_status for o in outcomes],
            [o.message for o in outcomes], [now for _ in outcomes])),
    }
    plans: dict[str, list[str]] = {}
    con = await asyncpg.connect(url)
    try:
        if generic:
            await con.execute("SET plan_cache_mode = force_generic_plan")
        for name, (sql, args) in queries.items():
            tr = con.transaction()
            await tr.start()
            try:
                rows = await con.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
            finally:
                await tr.rollback()
            plans[name] = [r[0] for r in rows]
    finally:
        await con.close()
    await store.keep_before(OWNER, befores)
    await store.record(OWNER, outcomes)
    return plans


async def explain_pg_reclaim(url: str, store: Store, job_id: int, shard_id: int,
                             lease_seconds: float) -> dict[str, list[str]]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements that look for leases by owner or expiry
    (release_owner, release_expired, lease_holders), one claim of 240 held, rolled back."""
    import asyncpg

    from bulktag.store.postgres import Q

    claimed = await store.claim(OWNER, job_id, shard_id, CLAIM, lease_seconds=lease_seconds)
    queries: dict[str, tuple[str, tuple[Any, ...]]] = {
        "release_owner": (Q["release_owner"], (OWNER,)),
        "release_expired": (Q["release_expired"], (time.time(),)),
        "lease_holders": (Q["lease_holders"], ()),
    }
    plans: dict[str, list[str]] = {}
    con = await asyncpg.connect(url)
    try:
        for name, (sql, args) in queries.items():
            tr = con.transaction()
            await tr.start()
            try:
                if name != "lease_holders" and "plain_index_scans" in Q:
                    await con.execute(Q["plain_index_scans"])  # as the store runs them
                rows = await con.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
            finally:
                await tr.rollback()
            plans[name] = [r[0] for r in rows]
    finally:
        await con.close()
    assert await store.release_owner(OWNER, forget=False) == len(claimed)
    return plans


def plan_summary(plan: list[str]) -> str:
    """How a plan reaches items: each scan of it and the buffers that scan touched (the
    statement's own total also counts the trigger and the index inserts of the update)."""
    out = []
    for i, line in enumerate(plan):
        m = re.search(r"(Bitmap Index Scan on|Index Scan using|Seq Scan on) \S+", line)
        if not m:
            continue
        rows = re.search(r"actual time=\S+ rows=(\d+) loops=(\d+)", line)
        touched = 0
        for later in plan[i + 1:i + 6]:
            if b := re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", later):
                touched = sum(int(g) for g in b.groups() if g)
                break
        found = int(rows.group(1)) * int(rows.group(2)) if rows else 0
        out.append(f"{m.group(0)}: {found:,} entries, {touched:,} buffers")
    return "; ".join(out)


def print_plans(title: str, plans: dict[str, list[str]]) -> None:
    print(f"   {title}:")
    for name, plan in plans.items():
        print(f"     -- {name}")
        for line in plan:
            print("     " + line)


def explain_sqlite(path: str) -> list[str]:
    from bulktag.store.sqlite import Q

    con = sqlite3.connect(path)
    try:
        lines = []
        for name in ("keep_before", "record", "release_owner", "release_expired"):
            n = Q[name].count("?")
            rows = con.execute("EXPLAIN QUERY PLAN " + Q[name], (None,) * n).fetchall()
            lines.append(f"-- {name}: " + "; ".join(str(r[-1]) for r in rows))
        return lines
    finally:
        con.close()


async def autovacuum(url: str) -> str:
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        return str(await con.fetchval("SHOW autovacuum"))
    finally:
        await con.close()


async def probes(store: Store, job_id: int, shard_id: int,
                 lease_seconds: float) -> dict[str, float]:
    """ms of the owner-scoped statements outside the loop, with one claim of 240 held."""
    out: dict[str, float] = {}
    claimed = await store.claim(OWNER, job_id, shard_id, CLAIM, lease_seconds=lease_seconds)
    out["reap"], _ = await ms(store.reap_dead_owners(stale_seconds=3600, me=OWNER))
    out["holders"], _ = await ms(store.lease_holders())
    out["release"], n = await ms(store.release_owner(OWNER, forget=False))
    assert n == len(claimed), (n, len(claimed))
    return out


async def bench(backend: str, items: int, n_shards: int, every: int,
                lease_seconds: float) -> None:
    async with scratch_store(backend, "bulktag-lease-scans-") as (url, _):
        async with await Store.open(url) as store:
            await store.register_owner(OWNER)
            job_id, took = await enqueue(store, items, shards_of(n_shards))
            if backend == "postgres":
                print(f"\n   PostgreSQL autovacuum: {await autovacuum(url)}", end="")
            print(f"\n-- {backend}: built {items:,} items over {n_shards} shards in {took:.1f} s",
                  flush=True)
            shard_ids = sorted({r.shard_id for r in await store.runnable()
                                if r.job_id == job_id})
            if backend == "postgres":
                print_plans("EXPLAIN at the start (first claim)",
                            await explain_pg(url, store, job_id, shard_ids[0], lease_seconds))
            else:
                for line in explain_sqlite(url):
                    print("   " + line)
            print(f"   {'items done':>10} {'claim ms':>14} {'keep_before ms':>16} "
                  f"{'record ms':>14} {'items/s':>8} | with 240 held: {'reap ms':>8} "
                  f"{'holders ms':>10} {'release ms':>10}")
            print(f"   {'':>10} {'mean / worst':>14} {'mean / worst':>16} {'mean / worst':>14}")
            # The last shard is kept aside for the probes and the end's plans: the loop works
            # the others to the end, as a run does.
            reserve = shard_ids.pop()
            done = 0
            k = 0
            window: dict[str, list[float]] = {"claim": [], "keep": [], "record": []}
            started = time.perf_counter()
            live = list(shard_ids)
            while live:
                shard_id = live[k % len(live)]
                k += 1
                t_claim, claimed = await ms(store.claim(
                    OWNER, job_id, shard_id, CLAIM, lease_seconds=lease_seconds))
                if claimed:
                    t_keep, kept = await ms(store.keep_before(OWNER, befores_of(claimed)))
                    t_rec, recorded = await ms(store.record(OWNER, outcomes_of(claimed)))
                    assert kept == recorded == len(claimed), (kept, recorded, len(claimed))
                    window["claim"].append(t_claim)
                    window["keep"].append(t_keep)
                    window["record"].append(t_rec)
                else:
                    live.remove(shard_id)
                before = done
                done += len(claimed)
                if not (done // every > before // every or (not live and window["claim"])):
                    continue
                wall = time.perf_counter() - started
                n = len(window["claim"]) * CLAIM
                p = await probes(store, job_id, reserve, lease_seconds)
                cells = [f"{statistics.fmean(window[x]):6.2f} / {max(window[x]):5.1f}"
                         for x in ("claim", "keep", "record")]
                print(f"   {done:>10,} {cells[0]:>14} {cells[1]:>16} {cells[2]:>14} "
                      f"{n / wall:>8,.0f} | {'':>14}"
                      + "".join(f"{p[x]:>11.2f}" for x in ("reap", "holders", "release")),
                      flush=True)
                for generic in (False, True) if backend == "postgres" else ():
                    plans: dict[str, list[str]] = {}
                    for shard_id in live:  # the first one with an item left
                        if plans := await explain_pg(url, store, job_id, shard_id,
                                                     lease_seconds, generic=generic):
                            break
                    for name, plan in plans.items():
                        label = name + (" (generic plan)" if generic else "")
                        print(f"   {'':>10}   {label:<28} {plan_summary(plan)}")
                window = {"claim": [], "keep": [], "record": []}
                started = time.perf_counter()
            if backend == "postgres":
                print_plans("EXPLAIN at the end",
                            await explain_pg(url, store, job_id, reserve, lease_seconds))
                print_plans("EXPLAIN at the end, generic plan",
                            await explain_pg(url, store, job_id, reserve, lease_seconds,
                                             generic=True))
                print_plans("EXPLAIN at the end: finding leases by owner or expiry",
                            await explain_pg_reclaim(url, store, job_id, reserve,
                                                     lease_seconds))


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--every", type=int, default=10_000, help="items per printed window")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--lease-seconds", type=float, default=300.0,
                   help="of each claim (the default is bulktag's); a short lease puts the dead "
                        "entries below `now`, where release_expired looks, as hours of a run do")
    args = p.parse_args(argv)
    print_machine(f"lease scans: claim {CLAIM} + keep_before + record over a run of "
                  f"{args.items:,} items, {args.shards} shards, one owner, leases of "
                  f"{args.lease_seconds:g} s")
    for backend in args.backends.split(","):
        await bench(backend, args.items, args.shards, args.every, args.lease_seconds)


if __name__ == "__main__":
    asyncio.run(main())
