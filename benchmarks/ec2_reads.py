"""Issue 15, reads at the EC2 route's width: the compliance read of EC2 resources through
GetResources (100 ARNs a call, 15 calls/s per account-region) against EC2 DescribeTags with a
`resource-id` filter (a "describe" action: bucket of 100 refilled 20/s per account-region;
bulktag asks 16/s, `ec2_read_rate`; up to 1,000 rows a page, one row per tag).

The simulator runs in its own process at those quotas with realistic latency, seeded with N EC2
resources in one account-region (snapshots, volumes, instances) that carry TAGS tags each, the
job's key among them (a re-run of a finished migration: the read decides everything). bulktag's own read functions (`aws.read_tags`,
`aws.read_ec2_tags`) read all N, every chunk at once behind the shard's limiter, as a lane does
with a claim. Printed per read: calls, rows answered, wall time, resources/s, throttles, and the
client's CPU per resource.

    python benchmarks/ec2_reads.py [--resources N] [--ids 200,500,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
import urllib.request
from typing import Any

import anyio
from bench_common import SimProcess, print_machine, set_boto_env

from bulktag.api_limits import ARNS_PER_READ
from bulktag.arn import parse_arn
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.aws.reads import read_ec2_tags, read_tags
from bulktag.config import Settings
from bulktag.sim import ec2_resource_id, synthetic_resources

ACCOUNT = "123456789012"
REGION = "us-east-1"
LATENCY = "150-450"  # ms per call, as in ec2_route.py
TAGS = 10  # tags each resource carries (DescribeTags answers a row per tag)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def post(url: str, body: object) -> object:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


async def read(sim: SimProcess, arns: list[str], how: str, ids_per_call: int,
               use_keys: bool) -> dict[str, float]:
    settings = Settings(endpoint_url=sim.url, db=":memory:")
    clients = ClientPool(settings)
    op = "GetResources" if how == "get-resources" else "DescribeTags"
    limiter = ShardLimiter(settings.rate_for(op))
    shards = {parse_arn(a).shard for a in arns}
    assert len(shards) == 1, shards
    (shard,) = shards
    size = ARNS_PER_READ if how == "get-resources" else ids_per_call
    chunks = [arns[i: i + size] for i in range(0, len(arns), size)]
    seen = {"calls": 0, "throttles": 0, "found": 0}

    def on_call() -> None:
        seen["calls"] += 1

    def on_throttle() -> None:
        seen["throttles"] += 1

    async def one(chunk: list[str]) -> None:
        retry: dict[str, Any] = {"on_call": on_call, "on_throttle": on_throttle,
                                 "max_attempts": 4}
        if how == "get-resources":
            got = await read_tags(clients, shard, limiter, chunk, settings, **retry)
        else:
            ids = [ec2_resource_id(a)[0] for a in chunk]  # type: ignore[index]
            got = await read_ec2_tags(clients, shard, limiter, ids,
                                      ["bench"] if use_keys else None, settings, **retry)
        seen["found"] += len(got)

    before = sim.stats()
    await clients.tagging(shard)  # client creation is not the read
    await clients.ec2(shard)
    started, c0 = time.monotonic(), cpu()
    async with anyio.create_task_group() as tg:
        for chunk in chunks:
            tg.start_soon(one, chunk)
    wall, used = time.monotonic() - started, cpu() - c0
    after = sim.stats()
    await clients.close()
    return {"wall": wall, "cpu": used, **seen,
            "sim_calls": after["requests"].get(op, 0) - before["requests"].get(op, 0),
            "sim_throttled": after["throttled"].get(op, 0) - before["throttled"].get(op, 0)}


async def main_async(n: int, id_sizes: list[int]) -> None:
    set_boto_env()
    print_machine(f"ec2_reads: compliance reads of {n:,} EC2 resources in one account-region, "
                  f"{TAGS} tags each, simulator latency {LATENCY} ms, documented quotas")
    with SimProcess(["--latency-ms", LATENCY, "--regions", REGION,
                     "--accounts", ACCOUNT]) as sim:
        # Every resource carries the job's key already: a re-run of a finished migration, the
        # case where the read decides everything (all skipped, nothing sent).
        tags = {f"k{i}": f"v{i}" for i in range(TAGS - 1)} | {"bench": "x"}
        post(f"{sim.url}/_sim/seed", {"accounts": [ACCOUNT], "regions": [REGION],
                                       "per_region": n, "tags": tags, "ec2_share": 1.0})
        arns = [a for _, a in synthetic_resources([ACCOUNT], [REGION], n, ec2_share=1.0)
                if ":snapshot/" in a]  # one shard: snapshots are the caller's own
        print(f"{len(arns):,} snapshots read (of {n:,} seeded EC2 resources)")
        print(f"{'read':<14} {'ids/call':>8} {'key filter':>10} {'calls':>6} {'thr':>4} "
              f"{'wall s':>7} {'res/s':>8} {'CPU µs/res':>10} {'found':>7}")
        runs = [("get-resources", ARNS_PER_READ, False)]
        runs += [("describe-tags", k, True) for k in id_sizes]
        runs += [("describe-tags", max(id_sizes), False)]
        for how, k, keys in runs:
            r = await read(sim, arns, how, k, keys)
            print(f"{how:<14} {k:>8} {'bench' if keys else '-':>10} {r['sim_calls']:>6.0f} "
                  f"{r['sim_throttled']:>4.0f} {r['wall']:>7.1f} {len(arns) / r['wall']:>8.0f} "
                  f"{1e6 * r['cpu'] / len(arns):>10.0f} {r['found']:>7.0f}", flush=True)
            await asyncio.sleep(6)  # let the buckets refill between runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--resources", type=int, default=90_000,
                   help="EC2 resources seeded (a third are snapshots, the ones read)")
    p.add_argument("--ids", default="200,500,1000", help="resource ids per DescribeTags call")
    args = p.parse_args()
    asyncio.run(main_async(args.resources, [int(k) for k in args.ids.split(",")]))


if __name__ == "__main__":
    main()
