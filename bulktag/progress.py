"""What a person watching a run sees: a one-line progress bar on a terminal, else periodic
`progress` events; and the figures both are made of (done/total, ARNs/s, ETA, failures)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Protocol, TextIO

import structlog

log = structlog.get_logger("bulktag.progress")

CLEAR_LINE = "\r\x1b[K"  # back to the line's start and erase it

_bar: Progress | None = None  # the bar drawn on a terminal now, if any


def write_log_line(stream: TextIO, line: str) -> None:
    """Write a log line without mixing it into the progress bar's line: clear the bar, write
    the line, draw the bar again below it (logs.py's logger writes through here)."""
    bar = _bar
    if bar is not None and bar.stream is stream and bar.line:
        stream.write(CLEAR_LINE + line + "\n" + bar.line)
    else:
        stream.write(line + "\n")
    stream.flush()


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class CountsView(Protocol):
    """What the bar reads of a job's counts (the store's `Counts` is one)."""

    @property
    def done(self) -> int: ...
    @property
    def open(self) -> int: ...
    @property
    def total(self) -> int: ...
    def __getitem__(self, state: str) -> int: ...


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
        self.line = ""  # the bar as last drawn (without the leading carriage return)

    def rate(self) -> float:
        if len(self._window) < 2:
            return 0.0
        first, last = self._window[0], self._window[-1]
        return (last.done - first.done) / max(last.at - first.at, 1e-9)

    def update(self, counts: CountsView) -> None:
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
            line = (f"job {self.job_id} [{'#' * filled}{'.' * (width - filled)}] "
                    f"{counts.done}/{counts.total} {rate:6.1f} ARN/s ETA {format_duration(eta)} "
                    f"failed {failed}")
            global _bar
            self.stream.write(CLEAR_LINE + line)
            self.stream.flush()
            self.line = line
            self._drawn = True
            _bar = self
        elif now - self._last_log >= self.log_every:
            self._last_log = now
            log.info("progress", job=self.job_id, done=counts.done, total=counts.total,
                     rate=round(rate, 1), eta_seconds=None if eta is None else round(eta),
                     failed=failed)

    def close(self) -> None:
        global _bar
        if _bar is self:
            _bar = None
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
