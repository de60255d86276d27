"""The throughput chart: samples in, ARNs/s points and SVG geometry out. Pure functions.

The daemon keeps a job's worked total (succeeded + skipped + failed) every ~10 s in the store
(`Store.samples`); a rate is the difference of two totals over the time between them. Short
jobs are drawn per sample; from ten minutes on, per minute, as the issue asks; a long job is
bucketed further so that the page never draws more than `MAX_POINTS` points (a 10-million-item
job over a day is 8,640 samples, drawn as 360 buckets). The SVG itself is a Jinja2 template
(`templates/chart.svg`, autoescaped): this module only computes numbers and labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

MAX_POINTS = 360
PER_MINUTE_FROM = 600.0  # seconds of samples from which points are per minute at least
WIDTH, HEIGHT = 720, 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 12, 12, 28


def throughput(samples: Sequence[tuple[float, int]],
               max_points: int = MAX_POINTS) -> list[tuple[float, float]]:
    """(end time, ARNs/s) per bucket of consecutive samples, oldest first. Fewer than two
    samples: no point. A total that went down (retry moved failed items back) counts as 0."""
    if len(samples) < 2:
        return []
    span = samples[-1][0] - samples[0][0]
    width = max(60.0 if span >= PER_MINUTE_FROM else 0.0, span / max_points)
    points: list[tuple[float, float]] = []
    start_at, start_done = samples[0]
    for i, (at, done) in enumerate(samples[1:], start=1):
        last = i == len(samples) - 1
        if at - start_at < width and not last:
            continue
        if at > start_at:
            points.append((at, max(0.0, (done - start_done) / (at - start_at))))
        start_at, start_done = at, done
    return points


@dataclass(frozen=True, slots=True)
class Chart:
    """What the SVG template draws: a polyline, y-axis ticks and the time span's labels."""

    width: int
    height: int
    points: str  #: "x,y x,y ..." for <polyline points=...>, empty with no data
    markers: list[tuple[float, float]]  #: the same points, for dots on short series
    area: str  #: the same line closed down to the x axis, for a filled <polygon>
    y_ticks: list[tuple[float, str]]  #: (y, label)
    x_labels: list[tuple[float, str, str]]  #: (x, text-anchor, label)
    peak: float
    latest: float | None
    plot: tuple[int, int, int, int]  #: left, top, right, bottom of the plotting area


def _nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at or above value (an axis maximum)."""
    if value <= 0:
        return 1.0
    exp: float = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _clock(ts: float, seconds: bool = False) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.localtime(ts))


def build_chart(points: Sequence[tuple[float, float]], *, since: float | None = None,
                width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """`since`: the first sample's time, where the first point's interval starts. The line
    then begins there at the first point's rate (its average over that interval), so a job's
    first point is a line over the time it covers, under two distinct times, not a lone dot
    under one time written twice."""
    left, top = PAD_LEFT, PAD_TOP
    right, bottom = width - PAD_RIGHT, height - PAD_BOTTOM
    top_value = _nice_ceiling(max((r for _, r in points), default=0.0) * 1.05)
    ticks = [(bottom - (bottom - top) * f, f"{top_value * f:g}") for f in (0, 0.25, 0.5, 0.75, 1)]
    if not points:
        return Chart(width, height, "", [], "", ticks, [], 0.0, None,
                     (left, top, right, bottom))
    line = list(points)
    if since is not None and since < points[0][0]:
        line.insert(0, (since, points[0][1]))
    t0, t1 = line[0][0], line[-1][0]
    span = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return left + (right - left) * ((t - t0) / span if len(line) > 1 else 1.0)

    def y(r: float) -> float:
        return bottom - (bottom - top) * r / top_value

    markers = [(x(t), y(r)) for t, r in points]
    coords = [f"{x(t):.1f},{y(r):.1f}" for t, r in line]
    area = " ".join([f"{x(t0):.1f},{bottom}", *coords, f"{x(t1):.1f},{bottom}"])
    short = span < PER_MINUTE_FROM
    labels = [(float(right), "end", _clock(t1, short))]
    if _clock(t0, short) != _clock(t1, short):  # one time, once
        labels.insert(0, (float(left), "start", _clock(t0, short)))
    if span >= 30 and _clock((t0 + t1) / 2, short) not in (_clock(t0, short), _clock(t1, short)):
        labels.insert(1, ((left + right) / 2, "middle", _clock((t0 + t1) / 2, short)))
    return Chart(width, height, " ".join(coords), markers, area, ticks, labels,
                 max(r for _, r in points), points[-1][1], (left, top, right, bottom))
