"""Local cost of two (or more) checkouts, interleaved: CPU µs per ARN end to end, median of N.

`local_cost.py` measures one checkout once; on a shared, noisy machine two such runs minutes
apart differ by more than the change being judged. This runs the same measurement (enqueue with
`bulktag tag --detach`, then `bulktag run JOB --max-rate 1000` against the simulator with quotas
lifted and no latency) for each checkout in turn, round after round (A B, B A, A B ...), so both
see the same machine, and prints every run and the medians. Each checkout's bulktag runs with that
checkout as its working directory and on PYTHONPATH, every resource by the Tagging API
(`BULKTAG_ROUTE=tagging-api`, so checkouts with and without the EC2 route do the same work); the simulator is this checkout's, in its
own process, shared by all runs.

    python benchmarks/local_cost_ab.py --tree before=/work/wt-before --tree after=. \
        [--arns 30000] [--shards 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    PY,
    SimProcess,
    arns_for,
    bulktag_env,
    job_facts,
    print_machine,
    regions,
    run_measured,
    write_arns,
)
from local_cost import SIM_ARGS


def one(tree: Path, tmp: Path, sim: SimProcess, label: str, n_arns: int,
        shards: int) -> dict[str, float]:
    env = bulktag_env(tmp)
    env["PYTHONPATH"] = str(tree)
    # The same work for every checkout: checkouts with the EC2 route would send the EBS volumes
    # among the ARNs by CreateTags (500 a call); older ones know no route and ignore this.
    env["BULKTAG_ROUTE"] = "tagging-api"
    f = tmp / f"{label}.txt"
    n = write_arns(f, arns_for(regions(shards), n_arns // shards, prefix=label))
    db = str(tmp / f"{label}.db")
    ms = run_measured([PY, "-m", "bulktag", "tag", "--detach", "--arns", str(f), "--tag",
                       "bench=cost", "--db", db, "--json", "--log-format", "json"],
                      env=env, timeout=600, cwd=str(tree))
    if ms.rc != 0:
        raise RuntimeError(f"{tree}: submit failed rc {ms.rc}: {ms.stderr[-1500:]}")
    job = int(json.loads(ms.stdout.strip().splitlines()[-1])["job"])
    mr = run_measured([PY, "-m", "bulktag", "run", str(job), "--db", db, "--endpoint-url",
                       sim.url, "--max-rate", "1000", "--json", "--log-format", "json",
                       "--log-level", "warning"], env=env, timeout=900, cwd=str(tree))
    facts = job_facts(db, job)
    if mr.rc != 0 or facts["counts"].get("succeeded", 0) != n:
        raise RuntimeError(f"{tree}: run rc {mr.rc}, counts {facts['counts']}: "
                           f"{mr.stderr[-1500:]}")
    return {"enqueue": 1e6 * ms.cpu / n, "run": 1e6 * mr.cpu / n,
            "total": 1e6 * (ms.cpu + mr.cpu) / n, "run_wall": mr.wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH",
                   help="a checkout to measure (repeat; measured in this order each round)")
    p.add_argument("--arns", type=int, default=30_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    trees = [(label, Path(path).resolve()) for label, _, path in
             (t.partition("=") for t in a.tree)]
    print_machine(f"local cost A/B: {', '.join(f'{lb}={tr}' for lb, tr in trees)}")
    print(f"   simulator: bulktag sim {' '.join(SIM_ARGS)}; {a.arns:,} ARNs over {a.shards} "
          f"shards; bulktag run --max-rate 1000; {a.rounds} rounds, interleaved", flush=True)
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-ab-") as tmpdir, \
            SimProcess(SIM_ARGS) as sim:
        tmp = Path(tmpdir)
        for r in range(a.rounds):
            # A B, then B A: a load that grows or shrinks during the run favours no checkout.
            for label, tree in (trees if r % 2 == 0 else trees[::-1]):
                m = one(tree, tmp, sim, f"{label}{r}", a.arns, a.shards)
                results[label].append(m)
                print(f"  round {r + 1} {label:>8}: end to end {m['total']:6.1f} µs/ARN "
                      f"(enqueue {m['enqueue']:5.1f} + run {m['run']:6.1f}); run wall "
                      f"{m['run_wall']:.2f} s", flush=True)
    print("\n| checkout | end to end, µs/ARN (median) | enqueue | run | runs (end to end) |")
    print("|---|---:|---:|---:|---|")
    for label, tree in trees:
        ms = results[label]
        med = {k: statistics.median(m[k] for m in ms) for k in ("total", "enqueue", "run")}
        runs = ", ".join(f"{m['total']:.1f}" for m in ms)
        print(f"| {label} ({tree.name}) | {med['total']:.1f} | {med['enqueue']:.1f} | "
              f"{med['run']:.1f} | {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
