"""The simulator run as a process (`python -m bulktag.sim`, its own command): it prints its URL,
serves the seeded resources and exits 0 on SIGTERM. Its options parsed in-process and its
synthetic ARNs: tests/unit/test_sim_cli.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request


def test_process_prints_its_url_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulktag.sim", "--seed-resources", "3", "--regions", "us-east-1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("bulktag-sim listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        with urllib.request.urlopen(f"{url}/_sim/stats", timeout=5) as resp:
            assert json.load(resp)["resources"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
