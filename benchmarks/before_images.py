"""The cost of before-images (issue 13, README "Undo"): store bytes per item, enqueue and run
throughput, with and without them.

1. The store alone, both backends (no simulator, no engine), `--items` items over 16 shards, a
   fresh store per mode:
   - enqueue: `add_items` in chunks of 10,000 (what `bulktag tag` does) — ARNs/s;
   - run: the engine's store traffic — claim 240 items of a shard, then (with) `keep_before`
     of their images, then `record` them succeeded — items/s;
   - size: SQLite file size after a WAL checkpoint, and after VACUUM; PostgreSQL
     `pg_total_relation_size('items')` (heap, TOAST, indexes) as run, and after VACUUM FULL —
     bytes per item, and the difference "with" minus "without" = the cost of an image;
   - undo enqueue: `submit_undo` of the finished job (reads the images, writes the undo items).
   Images are a realistic mix of what a bulk tag of two keys finds: 60 % both keys absent
   (`{"Owner":null,"Team":null}`), 30 % one overwritten value, 10 % two values unique to the
   resource.
2. End to end on the simulator (its own process, quotas lifted, no latency), SQLite:
   `bulktag tag --detach` then `bulktag run` of `--arns` ARNs over 8 shards, measured per
   process (CPU, wall, peak RSS): without images (`--no-before-images`: the skip-compliant read
   still happens, as before this feature), with (the default: the same read, images kept before
   each call), and with no read at all (`--no-before-images --no-skip-compliant`) for reference.

    python benchmarks/before_images.py [--items 1000000] [--arns 40000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    PY,
    SimProcess,
    arns_for,
    bulktag_cmd,
    bulktag_env,
    job_facts,
    print_machine,
    regions,
    run_measured,
    write_arns,
)
from store_backends import PG_ADMIN, scratch_store

from bulktag.app.undo import submit_undo
from bulktag.arn import Shard
from bulktag.policy.changes import encode
from bulktag.store import ItemState, JobOptions, JobState, NewItem, Outcome, Store, tagset_body

ACCOUNT = "123456789012"
CHUNK = 10_000
CLAIM = 240
OWNER = "bench:1:images"
SHARDS = [Shard("aws", ACCOUNT, f"zz-bench-{i}") for i in range(16)]


def image(i: int) -> str:
    if i % 10 < 6:
        return encode({"Owner": None, "Team": None})
    if i % 10 < 9:
        return encode({"Owner": "platform-team", "Team": None})
    return encode({"Owner": f"someone-{i:08d}", "Team": f"team-{i % 997:04d}"})


async def store_phase(backend: str, items: int, with_images: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "images": with_images}
    async with scratch_store(backend, "bulktag-images-bench-") as (url, _):
        store = await Store.open(url)
        tags = {"Owner": "new", "Team": "x"}
        body = tagset_body(tags, None)
        job_id = await store.create_job("tag", options=JobOptions(
            tags=tags, before_images=with_images, skip_compliant=True), name="images-bench")
        started = time.perf_counter()
        n = 0
        while n < items:
            chunk = [NewItem(f"arn:aws:ec2:{SHARDS[i % 16].region}:{ACCOUNT}:volume/"
                             f"vol-{i:017x}", SHARDS[i % 16], body)
                     for i in range(n, min(items, n + CHUNK))]
            n += await store.add_items(job_id, chunk)
        await store.set_job_state(job_id, JobState.READY)
        out["enqueue_rate"] = items / (time.perf_counter() - started)

        shard_ids = sorted({sid for sid in [r.shard_id for r in await store.runnable()]})
        started = time.perf_counter()
        done = 0
        image_bytes = 0
        for sid in shard_ids:
            while claimed := await store.claim(OWNER, job_id, sid, CLAIM, lease_seconds=300):
                if with_images:
                    pairs = [(c.id, image(c.id)) for c in claimed]
                    image_bytes += sum(len(p[1].encode()) for p in pairs)
                    await store.keep_before(OWNER, pairs)
                now = time.time()
                await store.record(OWNER, [Outcome(c.id, ItemState.SUCCEEDED, 1, now)
                                           for c in claimed])
                done += len(claimed)
        out["run_rate"] = done / (time.perf_counter() - started)
        out["image_chars"] = image_bytes / done if with_images else 0.0
        await store.set_job_state(job_id, JobState.COMPLETED)

        await store.close()

        if backend == "sqlite":
            con = sqlite3.connect(url)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            out["bytes_as_run"] = os.path.getsize(url) / items
            con.execute("VACUUM")
            con.close()
            out["bytes_compact"] = os.path.getsize(url) / items
        else:
            import asyncpg

            con = await asyncpg.connect(url)
            try:
                await con.execute("VACUUM items")
                out["bytes_as_run"] = await con.fetchval(
                    "SELECT pg_total_relation_size('items')") / items
                await con.execute("VACUUM FULL items")
                out["bytes_compact"] = await con.fetchval(
                    "SELECT pg_total_relation_size('items')") / items
            finally:
                await con.close()
        if with_images:  # the undo job: read every image, write its items and tagsets
            store = await Store.open(url)
            tagsets_before = await _tagsets(backend, url)
            started = time.perf_counter()
            undo = await submit_undo(store, job_id)
            out["undo_enqueue_rate"] = undo.items / (time.perf_counter() - started)
            await store.close()
            out["undo_tagsets"] = await _tagsets(backend, url) - tagsets_before
    return out


async def _tagsets(backend: str, url: str) -> int:
    if backend == "sqlite":
        con = sqlite3.connect(url)
        try:
            return int(con.execute("SELECT count(*) FROM tagsets").fetchone()[0])
        finally:
            con.close()
    import asyncpg

    pg = await asyncpg.connect(url)
    try:
        return int(await pg.fetchval("SELECT count(*) FROM tagsets"))
    finally:
        await pg.close()


def e2e(n_arns: int, shards: int = 8) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-images-e2e-") as tmpdir, \
            SimProcess(["--no-quotas", "--latency-ms", "0"]) as sim:
        tmp = Path(tmpdir)
        for label, flags in (("no read (--no-before-images --no-skip-compliant)",
                              ["--no-before-images", "--no-skip-compliant"]),
                             ("without images (--no-before-images; read as before)",
                              ["--no-before-images"]),
                             ("with images (default)", [])):
            tag = f"r{len(rows)}"
            f = tmp / f"{tag}.txt"
            n = write_arns(f, arns_for(regions(shards), n_arns // shards, prefix=tag))
            db = str(tmp / f"{tag}.db")
            env = bulktag_env(tmp)
            ms = run_measured(bulktag_cmd("tag", "--detach", "--arns", str(f), "--tag",
                                          "Owner=bench", "--db", db, "--json",
                                          "--log-format", "json", *flags), env=env)
            if ms.rc != 0:
                raise RuntimeError(f"submit failed: {ms.stderr[-1500:]}")
            job = int(json.loads(ms.stdout.strip().splitlines()[-1])["job"])
            mr = run_measured([PY, "-m", "bulktag", "run", str(job), "--db", db,
                               "--endpoint-url", sim.url, "--max-rate", "1000", "--json",
                               "--log-format", "json", "--log-level", "warning"], env=env,
                              timeout=900)
            facts = job_facts(db, job)
            wall = (facts["finished_at"] or 0) - (facts["started_at"] or 0)
            rows.append({"label": label, "n": n, "enqueue_rate": n / ms.wall,
                         "enqueue_cpu_us": 1e6 * ms.cpu / n, "run_rate": n / wall if wall else 0,
                         "run_cpu_us": 1e6 * mr.cpu / n, "rss_mb": mr.maxrss_mb,
                         "counts": facts["counts"], "db_bytes": os.path.getsize(db) / n})
    return rows


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--arns", type=int, default=40_000)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--skip-e2e", action="store_true")
    args = p.parse_args(argv)
    print_machine("before-images: store bytes per item, enqueue and run, with and without")
    print(f"\n1. the store alone: {args.items:,} items over 16 shards "
          f"(PostgreSQL: {PG_ADMIN.rsplit('@', 1)[-1]})")
    print(f"   {'backend':<10}{'images':<8}{'enqueue/s':>11}{'claim+keep+record/s':>21}"
          f"{'B/item as run':>15}{'B/item compact':>16}{'undo enqueue/s':>16}{'image chars':>13}")
    for backend in args.backends.split(","):
        results = [await store_phase(backend, args.items, w) for w in (False, True)]
        for r in results:
            print(f"   {r['backend']:<10}{'with' if r['images'] else 'without':<8}"
                  f"{r['enqueue_rate']:>11,.0f}{r['run_rate']:>21,.0f}"
                  f"{r['bytes_as_run']:>15.1f}{r['bytes_compact']:>16.1f}"
                  f"{r.get('undo_enqueue_rate', 0):>16,.0f}{r['image_chars']:>13.1f}")
        off, on = results
        print(f"   {backend}: the undo job of {args.items:,} items made {on['undo_tagsets']:,} "
              "tagsets (one per distinct [before, after] body)")
        print(f"   {backend}: an image costs {on['bytes_as_run'] - off['bytes_as_run']:+.1f} "
              f"B/item as run, {on['bytes_compact'] - off['bytes_compact']:+.1f} B/item "
              f"compact; claim+record {100 * (on['run_rate'] / off['run_rate'] - 1):+.0f} % "
              f"with keep_before")
    if args.skip_e2e:
        return
    print(f"\n2. end to end on the simulator (quotas lifted, no latency), SQLite, {args.arns:,} "
          "ARNs over 8 shards, `bulktag run --max-rate 1000`")
    print(f"   {'mode':<52}{'enqueue/s':>10}{'µs/ARN':>8}{'run ARN/s':>11}{'µs/ARN':>8}"
          f"{'RSS MB':>8}{'store B/ARN':>12}")
    for r in e2e(args.arns):
        print(f"   {r['label']:<52}{r['enqueue_rate']:>10,.0f}{r['enqueue_cpu_us']:>8.0f}"
              f"{r['run_rate']:>11,.0f}{r['run_cpu_us']:>8.0f}{r['rss_mb']:>8.1f}"
              f"{r['db_bytes']:>12.0f}  {r['counts']}")


if __name__ == "__main__":
    asyncio.run(main())
