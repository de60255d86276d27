"""Local cost: CPU seconds per 1,000 ARNs end to end with the API's quotas lifted, and where
they go.

The simulator runs in its own process with `--no-quotas --latency-ms 0` (no faults), so what is
left is bulktag's own work: read + validate + enqueue (`bulktag tag --detach`), then claim +
batch + HTTP client + record (`bulktag run JOB --max-rate 1000`, so bulktag's own limiter does
not bind either). CPU comes from wait4() rusage of exactly each bulktag child. Then a profile of
a `bulktag run` on a smaller job: cProfile (top 15 by cumulative and by own time) and, when
importable, pyinstrument (not a project dependency: `pip install pyinstrument`).

    python benchmarks/local_cost.py [--quick] [--arns N] [--shards 8]
"""

from __future__ import annotations

import importlib.util
import io
import json
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    PY,
    Measured,
    Row,
    SimProcess,
    arns_for,
    bulktag_cmd,
    bulktag_env,
    job_facts,
    print_machine,
    print_rows,
    regions,
    run_measured,
    write_arns,
)

SIM_ARGS = ["--no-quotas", "--latency-ms", "0"]


def submit(tmp: Path, sim: SimProcess, label: str, n_arns: int,
           shards: int) -> tuple[str, int, tuple[Measured, int]]:
    per = n_arns // shards
    f = tmp / f"{label}.txt"
    n = write_arns(f, arns_for(regions(shards), per, prefix=label))
    db = str(tmp / f"{label}.db")
    m = run_measured(bulktag_cmd("tag", "--detach", "--arns", str(f), "--tag", "bench=cost",
                                 "--db", db, "--json", "--log-format", "json"),
                     env=bulktag_env(tmp), timeout=600)
    if m.rc != 0:
        raise RuntimeError(f"submit failed rc {m.rc}: {m.stderr[-1500:]}")
    job = int(json.loads(m.stdout.strip().splitlines()[-1])["job"])
    return db, job, (m, n)


def run_cmd(db: str, job: int, sim: SimProcess, *prefix: str) -> list[str]:
    return [*prefix, "-m", "bulktag", "run", str(job), "--db", db, "--endpoint-url", sim.url,
            "--max-rate", "1000", "--json", "--log-format", "json", "--log-level", "warning"]


def run(quick: bool = False, n_arns: int | None = None, shards: int = 8) -> list[Row]:
    print_machine("local cost: CPU per ARN with quotas lifted (simulator in its own process)")
    n_arns = n_arns or (40_000 if quick else 100_000)
    n_prof = 20_000 if quick else 40_000
    rows: list[Row] = []
    print(f"   simulator: bulktag sim {' '.join(SIM_ARGS)}; {n_arns:,} ARNs over {shards} shards; "
          f"bulktag run --max-rate 1000")
    with tempfile.TemporaryDirectory(prefix="bulktag-bench-cost-") as tmpdir, \
            SimProcess(SIM_ARGS) as sim:
        tmp = Path(tmpdir)
        # Start-up cost alone: the same interpreter importing bulktag and printing --version.
        base = run_measured(bulktag_cmd("--version"), env=bulktag_env(tmp))
        print(f"  interpreter + import start-up (`bulktag --version`): CPU {base.cpu:.3f} s, "
              f"wall {base.wall:.3f} s, peak RSS {base.maxrss_mb:.1f} MB")

        db, job, (ms, n) = submit(tmp, sim, "cost", n_arns, shards)
        sim_cpu0 = _proc_cpu(sim)
        mr = run_measured(run_cmd(db, job, sim, PY), env=bulktag_env(tmp), timeout=900)
        sim_cpu1 = _proc_cpu(sim)
        sim_cpu = sim_cpu1 - sim_cpu0 if sim_cpu0 is not None and sim_cpu1 is not None else None
        facts = job_facts(db, job)
        c = facts["counts"]
        wall_tag = (facts["finished_at"] or 0) - (facts["started_at"] or 0)
        done = c.get("succeeded", 0) + c.get("failed", 0)
        total_cpu = ms.cpu + mr.cpu
        print(f"  enqueue (`tag --detach`, {n:,} ARNs): CPU {ms.cpu:.2f} s (user {ms.utime:.2f} "
              f"+ sys {ms.stime:.2f}) = {1000 * ms.cpu / n:.3f} CPU s per 1,000 ARNs; wall "
              f"{ms.wall:.2f} s; peak RSS {ms.maxrss_mb:.1f} MB")
        print(f"  run (`bulktag run {job} --max-rate 1000`, rc {mr.rc}): CPU {mr.cpu:.2f} s (user "
              f"{mr.utime:.2f} + sys {mr.stime:.2f}) = {1000 * mr.cpu / n:.3f} CPU s per 1,000 "
              f"ARNs; process wall {mr.wall:.2f} s; tagging phase {wall_tag:.2f} s = "
              f"{done / wall_tag if wall_tag > 0 else 0:,.0f} ARNs/s; peak RSS "
              f"{mr.maxrss_mb:.1f} MB; outcome {c}")
        if sim_cpu is not None:
            print(f"  simulator CPU during the run: {sim_cpu:.2f} s "
                  f"({1e6 * sim_cpu / n:.0f} µs/ARN) — on the other core, not counted above")
        net_run = max(0.0, mr.cpu - base.cpu)
        print(f"  end to end: {total_cpu:.2f} CPU s = {1000 * total_cpu / n:.3f} CPU s per 1,000 "
              f"ARNs = {1e6 * total_cpu / n:.0f} µs/ARN (budget ≤ 100 µs/ARN); run alone minus "
              f"start-up: {1e6 * net_run / n:.0f} µs/ARN")
        b = f"local_cost {n // 1000}k/{shards}sh"
        rows += [
            Row(b, "CPU per 1,000 ARNs, end to end", 1000 * total_cpu / n, "CPU s",
                "≤ 0.100 s"),
            Row(b, "CPU per ARN, end to end", 1e6 * total_cpu / n, "µs/ARN", "≤ 100 µs"),
            Row(b, "CPU per ARN, enqueue", 1e6 * ms.cpu / n, "µs/ARN"),
            Row(b, "CPU per ARN, run (engine)", 1e6 * mr.cpu / n, "µs/ARN"),
            Row(b, "run rate, quotas lifted", done / wall_tag if wall_tag > 0 else None,
                "ARN/s"),
        ]

        # -- profiles --------------------------------------------------------------------------
        print(f"\n  profile of `bulktag run` on a {n_prof:,}-ARN job ({shards} shards):")
        db2, job2, _ = submit(tmp, sim, "prof", n_prof, shards)
        prof = tmp / "run.prof"
        mp = run_measured(run_cmd(db2, job2, sim, PY, "-m", "cProfile", "-o", str(prof)),
                          env=bulktag_env(tmp), timeout=900)
        if prof.exists():
            for key, what in (("cumulative", "cumulative time"), ("tottime", "own time")):
                s = io.StringIO()
                st = pstats.Stats(str(prof), stream=s)
                st.sort_stats(key).print_stats(15)
                text = s.getvalue()
                start = text.find("   ncalls")
                print(f"\n  cProfile, top 15 by {what} (run under cProfile: CPU {mp.cpu:.2f} s, "
                      f"wall {mp.wall:.2f} s):")
                print("\n".join("    " + ln for ln in text[start:].rstrip().splitlines()))
        else:
            print(f"  cProfile run failed rc {mp.rc}: {mp.stderr[-1000:]}")
        if importlib.util.find_spec("pyinstrument") is not None:
            db3, job3, _ = submit(tmp, sim, "pyi", n_prof, shards)
            out = tmp / "pyi.txt"
            mi = run_measured([PY, "-m", "pyinstrument", "-r", "text", "-o", str(out),
                               *run_cmd(db3, job3, sim)],
                              env=bulktag_env(tmp), timeout=900)
            if out.exists():
                lines = out.read_text().splitlines()
                print(f"\n  pyinstrument (wall-clock sampling; CPU {mi.cpu:.2f} s, wall "
                      f"{mi.wall:.2f} s), first 70 lines:")
                print("\n".join("    " + ln for ln in lines[:70]))
            else:
                print(f"  pyinstrument run failed rc {mi.rc}: {mi.stderr[-1000:]}")
        else:
            print("  pyinstrument not installed (pip install pyinstrument): cProfile only")
    return rows


def _proc_cpu(sim: SimProcess) -> float | None:
    """CPU seconds the simulator process has used so far (from /proc/PID/stat)."""
    import os

    if sim.proc is None:
        return None
    try:
        fields = Path(f"/proc/{sim.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, AttributeError, IndexError, ValueError):
        return None


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="40k ARNs (default 100k)")
    p.add_argument("--arns", type=int)
    p.add_argument("--shards", type=int, default=8)
    a = p.parse_args(argv)
    print_rows(run(a.quick, a.arns, a.shards), "local cost summary")


if __name__ == "__main__":
    main()
