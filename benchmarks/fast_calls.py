"""CPU of one Tagging API call in bulktag's process, botocore's pipeline against `fast_calls`.

One shard's client from `ClientPool` (fast_calls off, then on; the order alternates each
round), against the simulator in its own process with quotas lifted and no latency: 20
warm-up calls, then N sequential TagResources (20 ARNs, 2 tags) and N GetResources (100 ARNs),
timed with this process's CPU clock, so the simulator's work is not counted. Medians of the
rounds.

    python benchmarks/fast_calls.py [--calls 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bulktag

from bench_common import SimProcess, bulktag_env, print_machine

from bulktag.arn import Shard
from bulktag.aws.clients import ClientPool
from bulktag.config import Settings

SHARD = Shard("aws", "123456789012", "eu-west-1")
ARNS = [f"arn:aws:ec2:eu-west-1:123456789012:instance/i-{n:04}" for n in range(100)]


async def cpu_per_call(url: str, fast: bool, calls: int) -> dict[str, float]:
    pool = ClientPool(Settings(endpoint_url=url, fast_calls=fast))
    try:
        client = await pool.tagging(SHARD)
        shapes: dict[str, Callable[[], Awaitable[Any]]] = {
            "TagResources, 20 ARNs": lambda: client.tag_resources(
                ResourceARNList=ARNS[:20], Tags={"team": "data", "env": "prod"}),
            "GetResources, 100 ARNs": lambda: client.get_resources(ResourceARNList=ARNS),
        }
        out = {}
        for name, call in shapes.items():
            for _ in range(20):
                await call()
            started = time.process_time()
            for _ in range(calls):
                await call()
            out[name] = 1e6 * (time.process_time() - started) / calls
        return out
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    os.environ.update(bulktag_env())  # fake credentials, no user config: as every benchmark
    print_machine("CPU per call: botocore's pipeline against fast_calls")
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with SimProcess(["--no-quotas", "--latency-ms", "0"]) as sim:
        for r in range(a.rounds):
            for fast in ((False, True) if r % 2 == 0 else (True, False)):
                results[fast].append(asyncio.run(cpu_per_call(sim.url, fast, a.calls)))
    print("\n| call | botocore, µs CPU (median) | fast_calls | runs (botocore / fast) |")
    print("|---|---:|---:|---|")
    for name in results[False][0]:
        piped = [m[name] for m in results[False]]
        direct = [m[name] for m in results[True]]
        runs = " / ".join(", ".join(f"{v:.0f}" for v in vs) for vs in (piped, direct))
        print(f"| {name} | {statistics.median(piped):.0f} | {statistics.median(direct):.0f} | "
              f"{runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
