"""How soon a big file's job is tagged: `bulktag tag --arns FILE` (no --detach: the file is read
and the job run by one process) against the simulator with its quotas lifted.

Generates N random-order ARNs (50 accounts x 8 regions, as benchmarks/enqueue.py), starts the
simulator, starts the command, and polls the simulator's counters every 0.25 s: the seconds to
the first TagResources, and the ARNs tagged by 10, 30 and 60 s. The command is then stopped
with SIGINT (it pauses the job: nothing is lost). Every account other than the caller's is
reached through a role (`--role-name`), as in benchmarks/run_side.py.

    python benchmarks/first_call.py [--sizes 1000000,10000000] [--watch 60] [--db sqlite|URL]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import Row, SimProcess, bulktag_cmd, bulktag_env, print_machine, print_rows
from enqueue import pg_database, random_arns

SIM_ARGS = ["--no-quotas", "--latency-ms", "0"]
MARKS = (10, 30, 60)


def sends(sim: SimProcess) -> int:
    return int(sim.stats().get("arn_sends", {}).get("TagResources", 0))


def measure(tmp: Path, n: int, watch: float, db: str) -> list[Row]:
    src = tmp / f"first-{n}.txt"
    with src.open("w") as f:
        for arn in random_arns(n):
            f.write(arn + "\n")
    label = f"first call {n // 1_000_000}M" if n >= 1_000_000 else f"first call {n:,}"
    store = str(tmp / f"first-{n}.db") if db == "sqlite" else db
    rows: list[Row] = []
    with SimProcess(SIM_ARGS) as sim:
        cmd = bulktag_cmd("tag", "--arns", str(src), "--tag", "bench=first", "--db", store,
                          "--endpoint-url", sim.url, "--role-name", "BenchTagger",
                          "--max-rate", "1000", "--log-level", "warning", "--json")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=bulktag_env(tmp), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        first: float | None = None
        at: dict[int, int] = {}
        try:
            while (elapsed := time.monotonic() - t0) < watch and proc.poll() is None:
                got = sends(sim)
                if got and first is None:
                    first = elapsed
                for mark in MARKS:
                    if mark not in at and elapsed >= mark:
                        at[mark] = got
                time.sleep(0.25)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        print(f"  {label}: first TagResources at "
              f"{'none' if first is None else f'{first:.1f} s'}; tagged by "
              + ", ".join(f"{m} s: {at[m]:,}" for m in MARKS if m in at))
        rows.append(Row(label, "first TagResources after", first,
                        "s", "within seconds"))
        for mark in MARKS:
            if mark in at:
                rows.append(Row(label, f"ARNs tagged by {mark} s", float(at[mark]), "ARN", ""))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000000,10000000", help="comma-separated ARN counts")
    p.add_argument("--watch", type=float, default=60.0, help="seconds to watch each run")
    p.add_argument("--db", default="sqlite",
                   help="sqlite (a file per run) or a PostgreSQL admin URL (a fresh database)")
    args = p.parse_args(argv)
    print_machine("first call: how soon a big file's job is tagged (`tag`, no --detach)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulktag-first-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            db = "sqlite" if args.db == "sqlite" else pg_database(args.db, f"bench_first_{n}")
            rows += measure(Path(tmp), n, args.watch, db)
            if args.db != "sqlite":
                pg_database(args.db, f"bench_first_{n}", drop_only=True)
    print_rows(rows, "first call summary")


if __name__ == "__main__":
    main()
