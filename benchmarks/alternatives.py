"""Against the alternatives: what users write today, on the same simulator, in the same run.

One simulator process (quota 5 TagResources/s per account-region, 200–500 ms latency, 1 %
whole-call 500s, 1 % per-resource 500s) and, for 1 and 4 shards (regions of one account):

  (a) boto3 loop, the AWS CLI pattern: one client per region with botocore's legacy retry mode
      (boto3's historical default: 5 attempts on 5xx/throttling codes it knows), regions one
      after the other, chunks of 20 one at a time; FailedResourcesMap ignored and exceptions
      caught-and-logged, as a typical script does.
  (b) boto3 with Config(retries={"mode": "adaptive", "max_attempts": 10}) and a
      ThreadPoolExecutor(8) over all chunks (chunks listed region by region, one client per
      region shared by the threads); same script semantics as (a).
  (c) Cloud Custodian's pattern, approximated: chunks of 20 sent one at a time per region,
      regions one after the other (as `custodian run` with several regions does, without c7n-org),
      each call wrapped in a re-implementation of c7n's `universal_retry`: up to 6 attempts,
      resending only the ARNs whose FailedResourcesMap entry is ThrottlingException after an
      exponential backoff with jitter (1.5 s doubling); any other per-ARN error raises, which
      the tag action logs before moving on to the next chunk. Whole-call errors (500,
      ThrottledException) are left to botocore's legacy retries, as in c7n's client.
  bulktag: `bulktag tag` CLI subprocess on the same ARN count (figures as in throughput.py).

For each: ARNs/s (submitted ARNs / wall time of the run), resources left untagged (checked one
by one in the simulator), requests and throttled requests (simulator counters).

    python benchmarks/alternatives.py [--quick] [--per-region N]
"""

from __future__ import annotations

import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    Row,
    SimProcess,
    arns_for,
    print_machine,
    print_rows,
    regions,
    set_boto_env,
    stats_delta,
)
from throughput import SIM_ARGS, TAG_KEY, describe, run_bulktag

log = logging.getLogger("bench.alternatives")


def chunks(seq: list[str], n: int = 20) -> list[list[str]]:
    return [seq[i : i + n] for i in range(0, len(seq), n)]


def make_client(url: str, region: str, retries: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "resourcegroupstaggingapi", region_name=region, endpoint_url=url,
        config=Config(retries=retries),
    )


# (a) ---------------------------------------------------------------------------------------


def plain_loop(url: str, by_region: dict[str, list[str]], tags: dict[str, str]) -> dict[str, Any]:
    errors = 0
    for region, arns in by_region.items():  # sequential over regions, like a shell/Python loop
        client = make_client(url, region, {"mode": "legacy"})
        for chunk in chunks(arns):
            try:
                client.tag_resources(ResourceARNList=chunk, Tags=tags)  # FailedResourcesMap ignored
            except Exception as exc:  # caught and logged, the script goes on
                errors += 1
                log.debug("tag_resources failed: %s", exc)
    return {"exceptions": errors}


# (b) ---------------------------------------------------------------------------------------


def adaptive_pool(url: str, by_region: dict[str, list[str]], tags: dict[str, str]
                  ) -> dict[str, Any]:
    clients = {r: make_client(url, r, {"mode": "adaptive", "max_attempts": 10})
               for r in by_region}
    errors = 0

    def one(region: str, chunk: list[str]) -> None:
        clients[region].tag_resources(ResourceARNList=chunk, Tags=tags)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, r, c) for r, arns in by_region.items() for c in chunks(arns)]
        for f in as_completed(futures):
            if f.exception() is not None:
                errors += 1
                log.debug("tag_resources failed: %s", f.exception())
    return {"exceptions": errors}


# (c) ---------------------------------------------------------------------------------------


def backoff_delays(start: float, stop: float, factor: float = 2.0,
                   jitter: bool = False) -> Iterator[float]:
    """As c7n.utils.backoff_delays: start, start*factor, ... up to stop (jitter: ×U(0.5,1.5))."""
    cur = start
    while cur <= stop:
        yield cur * random.uniform(0.5, 1.5) if jitter else cur
        cur *= factor


def universal_retry(method: Callable[..., Any], ResourceARNList: list[str], **kw: Any) -> Any:
    """Re-implementation of c7n.tags.universal_retry (approximate, from its documented behaviour):
    retry only the ARNs throttled inside FailedResourcesMap; raise on any other per-ARN error."""
    max_attempts = 6
    for idx, delay in enumerate(backoff_delays(1.5, 2**8, jitter=True)):
        response = method(ResourceARNList=ResourceARNList, **kw)
        failures = response.get("FailedResourcesMap", {})
        if not failures:
            return response
        errors, throttles = {}, set()
        for arn, info in failures.items():
            code = info.get("ErrorCode")
            if code == "ThrottlingException":
                throttles.add(arn)
            elif code == "ResourceNotFoundException":
                continue
            else:
                errors[arn] = code
        if errors:
            raise Exception(f"Resource Tag Errors {errors}")
        if idx == max_attempts - 1:
            raise Exception(f"Resource Tag Throttled {', '.join(throttles)}")
        time.sleep(delay)
        ResourceARNList = list(throttles)
    return None


def custodian_pattern(url: str, by_region: dict[str, list[str]], tags: dict[str, str]
                      ) -> dict[str, Any]:
    errors = 0
    for region, arns in by_region.items():
        client = make_client(url, region, {"mode": "legacy"})
        for chunk in chunks(arns):
            try:
                universal_retry(client.tag_resources, ResourceARNList=chunk, Tags=tags)
            except Exception as exc:  # the tag action logs "Exception with tags" and goes on
                errors += 1
                log.debug("Exception with tags: %s %s", tags, exc)
    return {"exceptions": errors}


APPROACHES: list[tuple[str, str, Callable[..., dict[str, Any]]]] = [
    ("a", "boto3 loop (AWS CLI pattern, legacy retries, sequential)", plain_loop),
    ("b", "boto3 adaptive retries + ThreadPoolExecutor(8)", adaptive_pool),
    ("c", "Cloud Custodian pattern (universal_retry, sequential)", custodian_pattern),
]


def run_script(sim: SimProcess, name: str, fn: Callable[..., dict[str, Any]],
               region_list: list[str], per_region: int, label: str) -> dict[str, Any]:
    value = f"{label}-{int(time.time() * 1000)}"
    by_region: dict[str, list[str]] = {r: [] for r in region_list}
    for arn in arns_for(region_list, per_region, prefix=value):
        by_region[arn.split(":")[3]].append(arn)
    n = sum(len(v) for v in by_region.values())
    before = sim.stats()
    t0 = time.perf_counter()
    extra = fn(sim.url, by_region, {TAG_KEY: value})
    wall = time.perf_counter() - t0
    d = stats_delta(before, sim.stats())
    untagged = sim.count_without((a for v in by_region.values() for a in v), TAG_KEY, value)
    return {"name": name, "submitted": n, "wall": wall, "arns_per_s": n / wall,
            "tagged_per_s": (n - untagged) / wall, "untagged": untagged, **d, **extra}


def run(quick: bool = False, per_region: int | None = None) -> list[Row]:
    print_machine("alternatives: boto3 loop, boto3 adaptive + threads, Custodian pattern, bulktag")
    set_boto_env()
    import botocore

    per = per_region or (400 if quick else 1000)
    print(f"   simulator: bulktag sim {' '.join(SIM_ARGS)}; {per} ARNs per region; "
          f"boto3/botocore {botocore.__version__}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-alt-") as tmpdir, \
            SimProcess(SIM_ARGS) as sim:
        tmp = Path(tmpdir)
        for n in (1, 4):
            ceiling = 100.0 * n
            rl = regions(n)
            print(f"\n  -- {n} shard(s) ({', '.join(rl)}); ceiling {ceiling:.0f} ARNs/s")
            for key, name, fn in APPROACHES:
                r = run_script(sim, name, fn, rl, per, f"alt{key}{n}")
                req = r["requests"]
                print(f"  ({key}) {name}: {r['submitted']:,} ARNs in {r['wall']:.2f} s = "
                      f"{r['arns_per_s']:,.1f} ARNs/s ({100 * r['arns_per_s'] / ceiling:.1f} % of "
                      f"ceiling); left untagged {r['untagged']:,} "
                      f"({100 * r['untagged'] / r['submitted']:.2f} %); TagResources requests "
                      f"{req:,} of which throttled {r['throttled']:,} "
                      f"({100 * r['throttled'] / req if req else 0:.1f} %); exceptions caught by "
                      f"the script {r['exceptions']:,}", flush=True)
                b = f"alt N={n} ({key})"
                rows += [Row(b, "ARNs/s", r["arns_per_s"], "ARN/s", f"ceiling {ceiling:.0f}"),
                         Row(b, "left untagged", r["untagged"], "resources")]
            r = run_bulktag(sim, tmp, rl, per, f"altbt{n}")
            print("  (bulktag) bulktag tag CLI:")
            print(describe(r, ceiling), flush=True)
            if "error" in r:
                rows.append(Row(f"alt N={n} (bulktag)", "error", r["error"][:60]))
                continue
            whole = r["submitted"] / r["wall_process"]
            print(f"    whole process (incl. enqueue and start-up): {whole:,.1f} ARNs/s")
            untagged = r["submitted"] - r["succeeded"] + r["untagged_of_checked"]
            print(f"    left untagged: {untagged:,} (not succeeded, or succeeded but untagged)")
            b = f"alt N={n} (bulktag)"
            rows += [Row(b, "ARNs/s (tagging phase)", r.get("arns_per_s"), "ARN/s",
                         f"ceiling {ceiling:.0f}"),
                     Row(b, "ARNs/s (whole process)", whole, "ARN/s"),
                     Row(b, "left untagged", untagged, "resources")]
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="400 ARNs per region (default 1000)")
    p.add_argument("--per-region", type=int)
    a = p.parse_args(argv)
    print_rows(run(a.quick, a.per_region), "alternatives summary")


if __name__ == "__main__":
    main()
