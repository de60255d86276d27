"""Run every benchmark (or one) and print a summary table. Prints figures; never asserts.

    python benchmarks/run.py [--quick] [--only NAME]

NAME: throughput, alternatives, local_cost, enqueue, dashboard (comma-separated for several).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alternatives
import dashboard
import enqueue
import local_cost
import throughput
from bench_common import Row, print_machine, print_rows

BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "throughput": throughput.run,
    "alternatives": alternatives.run,
    "local_cost": local_cost.run,
    "enqueue": enqueue.run,
    "dashboard": dashboard.run,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="throughput 1 and 4 shards; alternatives 400 ARNs/region; local_cost "
                        "40k ARNs; enqueue and dashboard 1M only")
    p.add_argument("--only", help=f"one or more of {', '.join(BENCHMARKS)} (comma-separated)")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.only.split(",")] if a.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    m = print_machine(f"bulktag benchmarks{' (quick)' if a.quick else ''}: {', '.join(names)}")
    rows: list[Row] = []
    times = {}
    for name in names:
        print(flush=True)
        t0 = time.perf_counter()
        try:
            rows += BENCHMARKS[name](a.quick)
        except Exception as exc:  # report and go on with the others
            traceback.print_exc()
            rows.append(Row(name, "error", f"{type(exc).__name__}: {exc}"[:80]))
        times[name] = time.perf_counter() - t0
    print_rows(rows, f"summary ({m['date']}; {m['cpu']} x {m['cores']} cores; "
                     f"{m['platform']}; Python {m['python']})")
    print("\n  benchmark wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
