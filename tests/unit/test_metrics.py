"""/metrics in-process: the collector's families (names, types, label sets, histogram buckets)
read back with prometheus_client's parser, and the daemon's handler over a real store."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import make_mocked_request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bulktag.app.submit import Request, submit
from bulktag.arn import Shard
from bulktag.config import Settings
from bulktag.engine import EngineSnapshot, LimiterFigures
from bulktag.engine.metrics import (
    LATENCY_BUCKETS,
    BulktagCollector,
    DaemonFigures,
    EngineMetrics,
    Scrape,
)
from bulktag.store import ITEM_STATES, QueueTotals, Store
from bulktag.web.daemon import Daemon

SHARD = ("partition", "account", "region")
# Sample name -> (family type, label names): what dashboards rely on.
SERVED = {
    "bulktag_daemon_up": ("gauge", set()),
    "bulktag_daemon_start_time_seconds": ("gauge", set()),
    "bulktag_config_reloads_total": ("counter", set()),
    "bulktag_sync_evaluations_total": ("counter", {"status"}),
    "bulktag_sync_requests_total": ("counter", set()),
    "bulktag_items": ("gauge", {"state"}),
    "bulktag_queue_depth": ("gauge", set()),
    "bulktag_job_items": ("gauge", {"job", "name", "operation", "state"}),
    "bulktag_jobs": ("gauge", {"state"}),
    "bulktag_sync_rules": ("gauge", {"status"}),
    "bulktag_requests_total": ("counter", {"operation", "route", *SHARD}),
    "bulktag_throttles_total": ("counter", {"operation", "route", *SHARD}),
    "bulktag_shard_rate": ("gauge", {"operation", "route", *SHARD}),
    "bulktag_shard_rate_ceiling": ("gauge", {"operation", "route", *SHARD}),
    "bulktag_batch_seconds_bucket": ("histogram", {"le"}),
    "bulktag_batch_seconds_sum": ("histogram", set()),
    "bulktag_batch_seconds_count": ("histogram", set()),
    "bulktag_in_flight_batches": ("gauge", set()),
    "bulktag_lanes": ("gauge", set()),
    "bulktag_discovery_pages_total": ("counter", set()),
    "bulktag_unreachable_shards": ("gauge", set()),
    "bulktag_fenced_batches_total": ("counter", set()),
}


def served(text: str) -> dict[str, list[tuple[str, Sample]]]:
    """(family type, sample) by sample name."""
    out: dict[str, list[tuple[str, Sample]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((family.type, s))
    return out


def value(by_name: dict[str, list[tuple[str, Sample]]], name: str, /, **where: str) -> float:
    return sum(s.value for _, s in by_name.get(name, [])
               if all(s.labels.get(k) == v for k, v in where.items()))


def scrape_of(counters: EngineMetrics) -> Scrape:
    east = Shard("aws", "123456789012", "us-east-1")
    caller = Shard("aws", "", "eu-west-1")
    return Scrape(
        totals=QueueTotals(
            items_by_state={"pending": 5, "succeeded": 7},
            job_items=[(3, "nightly", "tag", "pending", 5), (4, None, "untag", "leased", 2)],
            jobs_by_state={"active": 1, "completed": 2},
            sync_rules_by_status={"ACTIVE": 1}),
        engine=EngineSnapshot(
            lanes=2, in_flight=3, shards_held=2, unreachable_shards=(), discovery_pages=11,
            last_tick=0.0,
            limiters=(LimiterFigures(east, "TagResources", 4.123456, 5.0),
                      LimiterFigures(caller, "GetResources", 10.0, 10.0))),
        counters=counters,
        daemon=DaemonFigures(up=True, start_time=1_700_000_000.5, reloads=2,
                             sync_evaluations={"ACTIVE": 3, "ERROR": 1}, sync_requests=9))


def test_the_collector_serves_every_family_with_its_type_labels_and_buckets() -> None:
    counters = EngineMetrics()
    east = Shard("aws", "123456789012", "us-east-1")
    caller = Shard("aws", "", "eu-west-1")
    for seconds in (0.01, 0.03, 0.2, 0.2, 7.0, 99.0):
        counters.batch("TagResources", east, seconds)
    counters.request("GetResources", caller)
    counters.throttle("TagResources", east)
    counters.request("CreateTags", east)
    counters.request("DescribeTags", east)
    collector = BulktagCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    assert generate_latest(registry) == b""  # nothing before the first scrape is loaded
    collector.load(scrape_of(counters))

    m = served(generate_latest(registry).decode())

    assert set(m) == set(SERVED)
    for name, (kind, label_names) in SERVED.items():
        assert {k for k, _ in m[name]} == {kind}, name
        assert all(set(s.labels) == label_names for _, s in m[name]), name
    assert value(m, "bulktag_requests_total", operation="TagResources", account="123456789012",
                 region="us-east-1", partition="aws") == 6
    assert value(m, "bulktag_requests_total", operation="GetResources", account="caller") == 1
    assert value(m, "bulktag_throttles_total", operation="TagResources") == 1
    # the route label: the EC2 route's calls apart from the Tagging API's, in one shard
    assert value(m, "bulktag_requests_total", route="ec2", region="us-east-1") == 2
    assert value(m, "bulktag_requests_total", route="tagging-api", region="us-east-1") == 6
    assert value(m, "bulktag_shard_rate", operation="TagResources", route="tagging-api") == 4.1235
    assert value(m, "bulktag_shard_rate", operation="TagResources") == 4.1235
    assert value(m, "bulktag_shard_rate_ceiling", region="eu-west-1") == 10.0
    assert value(m, "bulktag_items", state="succeeded") == 7
    assert {s.labels["state"] for _, s in m["bulktag_items"]} == set(ITEM_STATES)
    assert value(m, "bulktag_queue_depth") == 5
    assert value(m, "bulktag_job_items", job="4", name="", operation="untag") == 2
    assert value(m, "bulktag_job_items", job="3", name="nightly", state="pending") == 5
    assert value(m, "bulktag_sync_evaluations_total", status="ERROR") == 1
    assert (value(m, "bulktag_daemon_up"), value(m, "bulktag_config_reloads_total"),
            value(m, "bulktag_sync_requests_total")) == (1, 2, 9)
    assert value(m, "bulktag_daemon_start_time_seconds") == 1_700_000_000.5
    assert (value(m, "bulktag_lanes"), value(m, "bulktag_in_flight_batches"),
            value(m, "bulktag_discovery_pages_total")) == (2, 3, 11)

    buckets = [(s.labels["le"], s.value) for _, s in m["bulktag_batch_seconds_bucket"]]
    assert [le for le, _ in buckets] == [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
    cumulative = dict(buckets)
    assert (cumulative["0.025"], cumulative["0.05"], cumulative["0.25"], cumulative["5.0"],
            cumulative["10.0"], cumulative["60.0"], cumulative["+Inf"]) == (1, 2, 4, 4, 5, 5, 6)
    assert value(m, "bulktag_batch_seconds_count") == 6
    assert abs(value(m, "bulktag_batch_seconds_sum") - 106.44) < 1e-9


async def test_two_daemons_in_one_process_serve_their_own_figures(tmp_path: Path) -> None:
    arns = tmp_path / "arns.txt"
    arns.write_text("".join(f"arn:aws:sqs:us-east-1:123456789012:q{i}\n" for i in range(4)))
    settings = Settings(db=str(tmp_path / "bulktag.db"))
    async with await Store.open(settings.db) as store:
        await submit(store, [str(arns)], Request("tag", tags={"team": "a"}))
        first, second = Daemon(store, settings), Daemon(store, settings)
        shard = Shard("aws", "123456789012", "us-east-1")
        first.engine.limiter(shard, "TagResources")
        first.engine.metrics.batch("TagResources", shard, 0.3)
        first.reloads = 1

        responses = [await d.metrics(make_mocked_request("GET", "/metrics"))
                     for d in (first, second)]
        for d in (first, second):
            await d.engine.clients.close()

    assert all(r.headers["Content-Type"] == CONTENT_TYPE_LATEST for r in responses)
    a, b = (served(r.text or "") for r in responses)
    assert value(a, "bulktag_items", state="pending") == value(b, "bulktag_queue_depth") == 4
    assert value(a, "bulktag_daemon_up") == 0  # the engine is not running
    assert value(a, "bulktag_requests_total", region="us-east-1") == 1
    assert value(b, "bulktag_requests_total") == 0
    assert value(a, "bulktag_config_reloads_total") == 1
    assert value(b, "bulktag_config_reloads_total") == 0
    assert [s.labels["region"] for _, s in a["bulktag_shard_rate"]] == ["us-east-1"]
    assert "bulktag_shard_rate" not in b
    assert value(a, "bulktag_batch_seconds_count") == 1
