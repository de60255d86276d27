"""The best any client can do on the short-job scenario (issue 12): a model, not a measurement.

`short_jobs.py` measures bulktag on 15-second jobs (1,500 ARNs per shard) against the simulator
with 200–500 ms latency, 1 % per-resource and 1 % whole-call 500s and the documented quota (5
TagResources/s per shard, a bucket of one second's worth). This script plays the same scenario
for an *ideal* client with no CPU cost and no bookkeeping: every compliance read (100 ARNs each,
all at once at t = 0: GetResources has its own quota of 15/s), a TagResources call the instant
a token and an ARN are both there, partial batches at the end, and every failed ARN ready
again the moment its answer arrives (no backoff, no store). What is left is physics: the first
read's and the last call's latency, the calls the 500s cost, and — over many shards — the
unluckiest shard, since a job ends with its slowest one.

It prints the whole-job % of the ceiling (15 s ÷ the slowest shard's end) over many trials, for
the client's bucket sized as the simulator's (5 calls) and as bulktag's limiter (4: it keeps
0.2 s of margin so jittered arrivals never find the endpoint's bucket empty).

    python benchmarks/short_jobs_floor.py [--trials 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics

RATE = 5.0  # TagResources per second per shard
PER_CALL = 20
PER_READ = 100
LATENCY = (0.2, 0.5)
ARN_500 = 0.01
CALL_500 = 0.01


def shard_end(rng: random.Random, n: int, burst: float) -> float:
    """When an ideal client's last ARN of one shard is tagged (seconds from the job's start)."""
    ready: list[tuple[float, int]] = [(rng.uniform(*LATENCY), min(PER_READ, n - i))
                                      for i in range(0, n, PER_READ)]
    heapq.heapify(ready)
    answers: list[tuple[float, int]] = []  # (when, ARNs tagged)
    tokens, last, now, available, done, end = burst, 0.0, 0.0, 0, 0, 0.0
    while done < n:
        while ready and ready[0][0] <= now:
            available += heapq.heappop(ready)[1]
        tokens, last = min(burst, tokens + (now - last) * RATE), now
        if available and tokens >= 1.0 - 1e-9:
            size = min(PER_CALL, available)
            available -= size
            tokens -= 1.0
            back = now + rng.uniform(*LATENCY)
            if rng.random() < CALL_500:
                heapq.heappush(ready, (back, size))
                continue
            failed = sum(rng.random() < ARN_500 for _ in range(size))
            heapq.heappush(answers, (back, size - failed))
            if failed:
                heapq.heappush(ready, (back, failed))
            continue
        upcoming = [t for t in (ready[0][0] if ready else None,
                                answers[0][0] if answers else None,
                                now + (1.0 - tokens) / RATE if available else None)
                    if t is not None]
        now = min(upcoming)
        while answers and answers[0][0] <= now:
            when, tagged = heapq.heappop(answers)
            done += tagged
            end = max(end, when)
    return end


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--per-shard", type=int, default=1500)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    ideal = args.per_shard / (RATE * PER_CALL)
    print(f"ideal client, {args.per_shard} ARNs per shard ({ideal:.0f} s at the ceiling), "
          f"latency {LATENCY[0]}-{LATENCY[1]} s, {ARN_500:.0%} per-ARN and {CALL_500:.0%} "
          f"whole-call 500s; {args.trials} trials each")
    print("| client bucket | shards | mean | 10th percentile | worst |")
    print("|---:|---:|---:|---:|---:|")
    for burst in (5.0, 4.0):
        for shards in (1, 4, 16, 64):
            pct = sorted(100 * ideal / max(shard_end(rng, args.per_shard, burst)
                                           for _ in range(shards))
                         for _ in range(args.trials))
            print(f"| {burst:.0f} calls | {shards} | {statistics.mean(pct):.1f} % | "
                  f"{pct[len(pct) // 10]:.1f} % | {pct[0]:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
