"""Owner tokens name a host and a pid (`host:pid:random`); tests of reaping dead owners need a
pid that surely belongs to no live process."""

from __future__ import annotations

import subprocess
import sys


def dead_pid() -> int:
    """The pid of a process that has already ended (and been waited for)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
