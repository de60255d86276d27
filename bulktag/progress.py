"""What a person watching a run sees: a one-line progress bar on a terminal, else periodic
`progress` events; and the figures both are made of (done/total, ARNs/s, ETA, failures)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

import structlog

from .store import Counts

log = structlog.get_logger("bulktag.progress")


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@dataclass
class Snapshot:
    at: float
    done: int


class Progress:
    """Feed it counts; it works out the rate over a sliding window and draws or logs."""

    def __init__(self, job_id: int, *, stream: TextIO | None = None, log_every: float = 10.0):
        self.job_id = job_id
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.log_every = log_every
        self._window: list[Snapshot] = []
        self._last_log = 0.0
        self._drawn = False

    def rate(self) -> float:
        if len(self._window) < 2:
            return 0.0
        first, last = self._window[0], self._window[-1]
        return (last.done - first.done) / max(last.at - first.at, 1e-9)

    def update(self, counts: Counts) -> None:
        now = time.monotonic()
        self._window.append(Snapshot(now, counts.done))
        while self._window and now - self._window[0].at > 15:
            self._window.pop(0)
        rate = self.rate()
        eta = counts.open / rate if rate > 0 else None
        failed = counts["failed"] + counts["invalid"]
        if self.tty:
            total = max(counts.total, 1)
            width = 30
            filled = int(width * counts.done / total)
            line = (f"\rjob {self.job_id} [{'#' * filled}{'.' * (width - filled)}] "
                    f"{counts.done}/{counts.total} {rate:6.1f} ARN/s ETA {format_duration(eta)} "
                    f"failed {failed}")
            self.stream.write(line)
            self.stream.flush()
            self._drawn = True
        elif now - self._last_log >= self.log_every:
            self._last_log = now
            log.info("progress", job=self.job_id, done=counts.done, total=counts.total,
                     rate=round(rate, 1), eta_seconds=None if eta is None else round(eta),
                     failed=failed)

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
