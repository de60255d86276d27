"""Measure one command from a small, fresh helper process: `python bench_measure.py OUT.json
TIMEOUT -- CMD...`. Writes {"rc", "wall", "utime", "stime", "maxrss_kb", "timed_out"} to
OUT.json. CPU and peak RSS come from wait4() on the command alone.

Why a helper: on Linux a child's ru_maxrss starts at the RSS high-water mark of the process it
was forked (or vforked) from, so children of a big benchmark process would all report at least
that process's size. This helper is small and imports nothing heavy, so the floor it passes on
is a few MB.
"""

import json
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    out, timeout = sys.argv[1], float(sys.argv[2])
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd)
    timed_out = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            timed_out = True
            os.kill(p.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump({"rc": p.returncode, "wall": wall, "utime": ru.ru_utime, "stime": ru.ru_stime,
                   "maxrss_kb": ru.ru_maxrss, "timed_out": timed_out}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
