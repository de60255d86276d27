"""Engine counters, and what `/metrics` serves, through prometheus_client.

`EngineMetrics` is what the engine updates per batch (never per ARN): requests and throttles
by (operation, shard) and a batch latency histogram, plain counters with no lock and no
registry. The figures `/metrics` serves are gathered at scrape time instead: the daemon reads
a `Scrape` (store totals, which need an await, the engine's snapshot and its own figures),
loads it into its `BulktagCollector`, and prometheus_client's `generate_latest` writes the text
from the collector's families. One `CollectorRegistry` per daemon, never the global default,
so several daemons in one process (tests) do not collide.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bulktag.api_limits import route_of_operation
from bulktag.arn import Shard

if TYPE_CHECKING:
    from bulktag.store import QueueTotals

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SHARD_LABELS = ("partition", "account", "region")


class Histogram:
    """Per-bucket counts; observe() is a bisect and two adds, cumulated only when scraped."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # last: above every bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations ≤ le) for every bound, then ("+Inf", count), as Prometheus wants."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))  # 0.025, 1.0, 60.0: Go's spelling
        out.append(("+Inf", self.count))
        return out


@dataclass(frozen=True, slots=True)
class LimiterFigures:
    shard: Shard
    operation: str
    rate: float  # requests per second allowed now
    ceiling: float  # the configured quota or max_rate


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """What metrics and health may read of a running engine (the engine fills it in)."""

    lanes: int
    in_flight: int
    shards_held: int
    unreachable_shards: tuple[str, ...]
    limiters: tuple[LimiterFigures, ...]
    discovery_pages: int
    last_tick: float  # time.monotonic() of the dispatcher's last pass
    #: active job -> its rate as the fleet works it (every live worker's, summed)
    job_rates: tuple[tuple[int, float], ...] = ()
    fenced_batches: int = 0  # batches not sent: the shard's lease had lapsed



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


# -- what a scrape reads -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonFigures:
    up: bool  # running and healthy (/healthz would answer 200)
    start_time: float  # Unix time
    reloads: int  # SIGHUP reloads applied
    sync_evaluations: Mapping[str, int]  # tag-sync evaluations by resulting status
    sync_requests: int  # GetResources calls made by tag-sync evaluations


@dataclass(frozen=True, slots=True)
class Scrape:
    """Everything one scrape serves. `counters` is the engine's live object: load the scrape
    and generate the text with no await in between, and it cannot move under the collector."""

    totals: QueueTotals
    engine: EngineSnapshot
    counters: EngineMetrics
    daemon: DaemonFigures


def _shard_values(shard: Shard) -> list[str]:
    return [shard.partition, shard.account or "caller", shard.region]


def _by_operation_and_shard(counts: Counter[tuple[str, Shard]]) -> list[tuple[str, Shard, int]]:
    return sorted(((op, shard, n) for (op, shard), n in counts.items()),
                  key=lambda row: (row[0], str(row[1])))


def daemon_families(d: DaemonFigures) -> list[Metric]:
    evaluations = CounterMetricFamily("bulktag_sync_evaluations_total",
                                      "Tag-sync rule evaluations by resulting status.",
                                      labels=["status"])
    for status, n in sorted(d.sync_evaluations.items()):
        evaluations.add_metric([status], n)
    return [
        GaugeMetricFamily("bulktag_daemon_up", "1 while the daemon runs and is healthy.",
                          value=1 if d.up else 0),
        GaugeMetricFamily("bulktag_daemon_start_time_seconds", "Unix time the daemon started.",
                          value=d.start_time),
        CounterMetricFamily("bulktag_config_reloads_total", "SIGHUP reloads.", value=d.reloads),
        evaluations,
        CounterMetricFamily("bulktag_sync_requests_total",
                            "GetResources calls made by tag-sync evaluations.",
                            value=d.sync_requests),
    ]


def store_families(totals: QueueTotals) -> list[Metric]:
    from bulktag.store import ITEM_STATES

    items = GaugeMetricFamily("bulktag_items", "Items of every job, by state.", labels=["state"])
    for state in ITEM_STATES:
        items.add_metric([state], totals.items_by_state.get(state, 0))
    job_items = GaugeMetricFamily("bulktag_job_items",
                                  "Items of ready, active and paused jobs, by job and state.",
                                  labels=["job", "name", "operation", "state"])
    for job, name, operation, item_state, n in totals.job_items:
        job_items.add_metric([str(job), name or "", operation, item_state], n)
    jobs = GaugeMetricFamily("bulktag_jobs", "Jobs by state.", labels=["state"])
    for job_state, n in totals.jobs_by_state.items():
        jobs.add_metric([job_state], n)
    rules = GaugeMetricFamily("bulktag_sync_rules", "Tag-sync rules by status.", labels=["status"])
    for status, n in totals.sync_rules_by_status.items():
        rules.add_metric([status], n)
    return [
        items,
        GaugeMetricFamily("bulktag_queue_depth", "Pending items (every job).",
                          value=totals.items_by_state.get("pending", 0)),
        job_items, jobs, rules,
    ]


def engine_families(engine: EngineSnapshot, counters: EngineMetrics) -> list[Metric]:
    # `route` (ec2 | tagging-api) beside the operation: the two routes of one shard have
    # their own quotas, so a dashboard groups by it (docs/routes.md).
    labels = ["operation", "route", *SHARD_LABELS]
    requests = CounterMetricFamily("bulktag_requests_total",
                                   "AWS calls sent, by operation, route and shard.",
                                   labels=labels)
    for op, shard, n in _by_operation_and_shard(counters.requests):
        requests.add_metric([op, route_of_operation(op), *_shard_values(shard)], n)
    throttles = CounterMetricFamily("bulktag_throttles_total",
                                    "Calls throttled (whole call, or resources inside a 200), "
                                    "by operation, route and shard.", labels=labels)
    for op, shard, n in _by_operation_and_shard(counters.throttles):
        throttles.add_metric([op, route_of_operation(op), *_shard_values(shard)], n)
    rate = GaugeMetricFamily("bulktag_shard_rate",
                             "Requests per second the shard's limiter allows now, by operation.",
                             labels=labels)
    ceiling = GaugeMetricFamily("bulktag_shard_rate_ceiling",
                                "The limiter's ceiling (the configured quota or max_rate).",
                                labels=labels)
    for lim in sorted(engine.limiters, key=lambda lim: (str(lim.shard), lim.operation)):
        values = [lim.operation, route_of_operation(lim.operation), *_shard_values(lim.shard)]
        rate.add_metric(values, round(lim.rate, 4))
        ceiling.add_metric(values, lim.ceiling)
    latency = HistogramMetricFamily("bulktag_batch_seconds",
                                    "Duration of tag calls (Tag/UntagResources, "
                                    "Create/DeleteTags).",
                                    buckets=counters.latency.cumulative(),
                                    sum_value=counters.latency.sum)
    return [
        requests, throttles, rate, ceiling, latency,
        GaugeMetricFamily("bulktag_in_flight_batches", "Batches sent and not answered.",
                          value=engine.in_flight),
        GaugeMetricFamily("bulktag_lanes", "Shards with a running lane.", value=engine.lanes),
        CounterMetricFamily("bulktag_discovery_pages_total", "GetResources pages walked.",
                            value=engine.discovery_pages),
        _job_rates(engine),
        GaugeMetricFamily("bulktag_unreachable_shards", "Shards whose endpoint is unreachable "
                          "(an outage: they probe and carry on by themselves).",
                          value=len(engine.unreachable_shards)),
        CounterMetricFamily("bulktag_fenced_batches_total", "Batches not sent because this "
                            "worker's lease on their shard had lapsed (fencing).",
                            value=engine.fenced_batches),
    ]


def _job_rates(engine: EngineSnapshot) -> GaugeMetricFamily:
    family = GaugeMetricFamily("bulktag_job_rate", "Items finished per second of an active "
                               "job, by the whole fleet (the same on every worker).",
                               labels=["job"])
    for job_id, rate in engine.job_rates:
        family.add_metric([str(job_id)], round(rate, 2))
    return family


def families(scrape: Scrape) -> list[Metric]:
    """Every family `/metrics` serves, from one scrape's figures."""
    return [*daemon_families(scrape.daemon), *store_families(scrape.totals),
            *engine_families(scrape.engine, scrape.counters)]


class BulktagCollector(Collector):
    """Serves the last loaded `Scrape`; nothing before the first load."""

    def __init__(self) -> None:
        self._scrape: Scrape | None = None

    def load(self, scrape: Scrape) -> None:
        self._scrape = scrape

    def collect(self) -> Iterable[Metric]:
        return iter(families(self._scrape)) if self._scrape is not None else iter(())
