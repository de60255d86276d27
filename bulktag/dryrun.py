"""`--dry-run`: what a submission would send, per shard, without enqueuing anything."""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections import Counter, defaultdict

import anyio.to_thread

from .arn import Shard
from .config import Settings
from .engine import BATCH_SIZE, OPERATIONS
from .sources import open_rows, read_chunks
from .submit import Request, item_for_row


def _tally(specs: list[str], request: Request, fmt: str | None) -> tuple[dict[Shard, Counter[str]], int, int, int]:
    per_shard: dict[Shard, Counter[str]] = defaultdict(Counter)  # tagset body -> items
    seen: set[str] = set()
    rows = invalid = dupes = 0
    for spec in specs:
        for chunk in read_chunks(open_rows(spec, fmt=fmt), 10_000):
            for row in chunk:
                rows += 1
                item = item_for_row(row, request)
                if item.problem is not None or item.shard is None or item.tagset is None:
                    invalid += 1
                elif item.arn in seen:
                    dupes += 1
                else:
                    seen.add(item.arn)
                    per_shard[item.shard][item.tagset] += 1
    return per_shard, rows, invalid, dupes


async def dry_run(args: argparse.Namespace, request: Request, settings: Settings) -> int:
    per_shard, rows, invalid, dupes = await anyio.to_thread.run_sync(
        functools.partial(_tally, args.arns, request, args.source_format)
    )
    rate = settings.rate_for(OPERATIONS[request.operation])
    shards = []
    for shard, tagsets in sorted(per_shard.items(), key=lambda kv: str(kv[0])):
        batches = sum(math.ceil(n / BATCH_SIZE) for n in tagsets.values())
        shards.append({"partition": shard.partition, "account": shard.account,
                       "region": shard.region, "items": sum(tagsets.values()),
                       "tagsets": len(tagsets), "batches": batches,
                       "seconds_at_quota": round(batches / rate, 1)})
    data = {"operation": request.operation, "rows": rows, "invalid": invalid,
            "duplicates": dupes, "shards": shards,
            # Shards run at once: the run takes as long as its slowest shard.
            "estimated_seconds": max((s["seconds_at_quota"] for s in shards), default=0)}
    if args.json:
        print(json.dumps(data))
    else:
        print(f"dry run: {rows} rows, {invalid} invalid, {dupes} duplicates; "
              f"{OPERATIONS[request.operation]} at {rate:g} requests/s per shard")
        for s in shards:
            print(f"  {s['partition']}/{s['account'] or '-'}/{s['region']}: {s['items']} items, "
                  f"{s['tagsets']} tagset(s), {s['batches']} batches, ~{s['seconds_at_quota']} s")
        print(f"  estimated duration: ~{data['estimated_seconds']} s (shards run at once)")
    return 0 if not invalid or request.skip_invalid else 2
