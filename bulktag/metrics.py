"""Engine counters and the Prometheus text exposition format (version 0.0.4), no dependency.

`EngineMetrics` is what the engine updates per batch (never per ARN): requests and throttles
by (operation, shard) and a batch latency histogram. `render` turns families of samples into
the text `/metrics` serves; `daemon_metrics` gathers them from the store and a running engine.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .arn import Shard

if TYPE_CHECKING:
    from .engine import Engine
    from .store import Store

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative buckets as Prometheus wants them; observe() is a bisect and two adds."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # last: above every bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_number(bound), running))
        out.append(("+Inf", self.count))
        return out


@dataclass
class EngineMetrics:
    requests: Counter[tuple[str, Shard]] = field(default_factory=Counter)
    throttles: Counter[tuple[str, Shard]] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)

    def request(self, operation: str, shard: Shard) -> None:
        self.requests[(operation, shard)] += 1

    def batch(self, operation: str, shard: Shard, seconds: float) -> None:
        """One Tag/UntagResources call, whatever its outcome."""
        self.requests[(operation, shard)] += 1
        self.latency.observe(seconds)

    def throttle(self, operation: str, shard: Shard) -> None:
        self.throttles[(operation, shard)] += 1


# -- the exposition format -----------------------------------------------------------------------


@dataclass
class Family:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    samples: list[tuple[str, Labels, float | int]] = field(default_factory=list)

    def add(self, value: float | int, suffix: str = "", **labels: Any) -> None:
        self.samples.append((suffix, tuple((k, str(v)) for k, v in labels.items()), value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for f in families:
        lines.append(f"# HELP {f.name} {f.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for suffix, labels, value in f.samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{f.name}{suffix}{{{text}}} {_number(value)}" if text
                         else f"{f.name}{suffix} {_number(value)}")
    return "\n".join(lines) + "\n"


def _shard_labels(shard: Shard) -> dict[str, str]:
    return {"partition": shard.partition, "account": shard.account or "caller",
            "region": shard.region}


def engine_families(engine: Engine) -> list[Family]:
    m: EngineMetrics = engine.metrics
    requests = Family("bulktag_requests_total", "counter",
                      "Tagging API calls sent, by operation and shard.")
    for (op, shard), n in sorted(m.requests.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        requests.add(n, operation=op, **_shard_labels(shard))
    throttles = Family("bulktag_throttles_total", "counter",
                       "Calls throttled (whole call, or resources inside a 200), by operation "
                       "and shard.")
    for (op, shard), n in sorted(m.throttles.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        throttles.add(n, operation=op, **_shard_labels(shard))
    rate = Family("bulktag_shard_rate", "gauge",
                  "Requests per second the shard's limiter allows now, by operation.")
    ceiling = Family("bulktag_shard_rate_ceiling", "gauge",
                     "The limiter's ceiling (the configured quota or max_rate).")
    for (shard, op), lim in sorted(engine.limiters.items(), key=lambda kv: (str(kv[0][0]),
                                                                            kv[0][1])):
        rate.add(round(lim.rate, 4), operation=op, **_shard_labels(shard))
        ceiling.add(lim.policy.ceiling, operation=op, **_shard_labels(shard))
    latency = Family("bulktag_batch_seconds", "histogram",
                     "Duration of Tag/UntagResources calls.")
    for bound, n in m.latency.cumulative():
        latency.add(n, "_bucket", le=bound)
    latency.add(m.latency.sum, "_sum")
    latency.add(m.latency.count, "_count")
    in_flight = Family("bulktag_in_flight_batches", "gauge", "Batches sent and not answered.")
    in_flight.add(engine.in_flight)
    lanes = Family("bulktag_lanes", "gauge", "Shards with a running lane.")
    lanes.add(len(engine._lanes))  # noqa: SLF001 - read-only peek, no accessor on the engine
    disc = Family("bulktag_discovery_pages_total", "counter", "GetResources pages walked.")
    disc.add(engine.discovery_stats.pages)
    return [requests, throttles, rate, ceiling, latency, in_flight, lanes, disc]


async def store_families(store: Store) -> list[Family]:
    from .store import ITEM_STATES

    totals = await store.totals()
    items = Family("bulktag_items", "gauge", "Items of every job, by state.")
    for state in ITEM_STATES:
        items.add(totals.items_by_state.get(state, 0), state=state)
    depth = Family("bulktag_queue_depth", "gauge", "Pending items (every job).")
    depth.add(totals.items_by_state.get("pending", 0))
    job_items = Family("bulktag_job_items", "gauge",
                       "Items of ready, active and paused jobs, by job and state.")
    for job, name, operation, item_state, n in totals.job_items:
        job_items.add(n, job=job, name=name or "", operation=operation, state=item_state)
    jobs = Family("bulktag_jobs", "gauge", "Jobs by state.")
    for job_state, n in totals.jobs_by_state.items():
        jobs.add(n, state=job_state)
    rules = Family("bulktag_sync_rules", "gauge", "Tag-sync rules by status.")
    for status, n in totals.sync_rules_by_status.items():
        rules.add(n, status=status)
    return [items, depth, job_items, jobs, rules]


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name from exposition text (tests and the CLI read it back; not a full
    parser: one sample a line, no timestamps, label values without `}`)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, brace, rest = head.partition("{")
        labels: dict[str, str] = {}
        if brace:
            if not rest.endswith("}"):
                raise ValueError(f"bad sample line: {line!r}")
            body = rest[:-1]
            while body:
                key, eq, tail = body.partition('="')
                if not eq:
                    raise ValueError(f"bad labels in: {line!r}")
                val, i = [], 0
                while tail[i] != '"':
                    if tail[i] == "\\":
                        i += 1
                        val.append({"n": "\n"}.get(tail[i], tail[i]))
                    else:
                        val.append(tail[i])
                    i += 1
                labels[key] = "".join(val)
                body = tail[i + 1:].lstrip(",")
        out.setdefault(name, []).append((labels, float(value)))
    return out


def total(samples: Mapping[str, list[tuple[dict[str, str], float]]], name: str,
          **where: str) -> float:
    return sum(v for labels, v in samples.get(name, [])
               if all(labels.get(k) == w for k, w in where.items()))
