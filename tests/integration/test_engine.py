"""The engine against the simulator over real HTTP, with a real SQLite store: each error class,
the split of a bad batch, attempt budgets, throttles that spend no attempts, thresholds."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from pathlib import Path

import anyio

from bulktag.app.submit import Request, submit
from bulktag.engine import Engine
from bulktag.policy.classify import Failure, Verdict
from bulktag.sim import RunningSimulator, SimConfig, start_simulator, synthetic_arns
from bulktag.store import Claimed, JobOptions, Store, new_owner_token
from tests.support.engine import ACCOUNT, TAGS, fast_settings, items, run_job
from tests.support.waits import wait_until_async


async def test_every_resource_in_every_region_is_tagged(tmp_path: Path, sim: RunningSimulator) -> None:
    arns = list(synthetic_arns([ACCOUNT], ["us-east-1", "eu-west-1", "ap-south-1"], 70))
    store, job, engine = await run_job(tmp_path, fast_settings(tmp_path / "s.db", sim.url), arns)
    counts = await store.counts(job)
    assert counts.by_state == {"succeeded": 210}
    assert all(sim.state.tags(a) == TAGS for a in arns)
    assert (await store.get_job(job)).state == "completed"  # type: ignore[union-attr]
    # Full batches: 70 per shard in batches of 20 -> 4 calls per shard.
    assert engine.stats.requests["TagResources"] == 12
    await store.close()


async def test_transient_faults_are_retried_until_everything_lands(tmp_path: Path) -> None:
    config = SimConfig(resource_error_rate=0.3, whole_call_error_rate=0.3, seed=11,
                       enforce_quotas=False)
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([ACCOUNT], ["us-east-1", "us-west-2"], 100))
        settings = fast_settings(tmp_path / "s.db", sim.url, max_attempts=30, max_rate=100.0)
        store, job, engine = await run_job(tmp_path, settings, arns)
        rows = await items(store, job)
        assert {r["status"] for r in rows.values()} == {"succeeded"}
        assert all(sim.state.tags(a) == TAGS for a in arns)
        assert max(int(r["attempts"]) for r in rows.values()) > 1  # some needed retries
        assert engine.stats.call_errors["InternalServiceException"] > 0
        await store.close()


async def test_attempt_budget_ends_items_failed_with_the_last_error(tmp_path: Path) -> None:
    config = SimConfig(resource_error_rate=1.0, enforce_quotas=False, seed=2)
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([ACCOUNT], ["us-east-1"], 30))
        settings = fast_settings(tmp_path / "s.db", sim.url, max_attempts=3, max_rate=100.0)
        store, job, _ = await run_job(tmp_path, settings, arns)
        rows = await items(store, job)
        assert {r["status"] for r in rows.values()} == {"failed"}
        assert {r["attempts"] for r in rows.values()} == {3}
        assert {r["error_code"] for r in rows.values()} == {"InternalServiceException"}
        assert {r["http_status"] for r in rows.values()} == {500}
        assert all(str(r["message"]).startswith("gave up after 3 attempts") for r in rows.values())
        assert sim.state.stats["arn_sends"]["TagResources"] == 90  # exactly 3 sends each
        await store.close()


async def test_throttles_slow_the_shard_and_spend_no_attempts(tmp_path: Path) -> None:
    # The service allows 2 calls/s; bulktag is told 20/s, so it gets throttled and must adapt.
    config = SimConfig(quotas={"TagResources": 2.0}, seed=3)
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([ACCOUNT], ["us-east-1"], 200))
        settings = fast_settings(tmp_path / "s.db", sim.url, max_rate=20.0, max_attempts=2)
        store, job, engine = await run_job(tmp_path, settings, arns)
        rows = await items(store, job)
        assert {r["status"] for r in rows.values()} == {"succeeded"}
        assert {r["attempts"] for r in rows.values()} == {1}  # throttles spent nothing
        assert engine.stats.throttled_calls > 0
        assert sim.state.stats["throttled"]["TagResources"] == engine.stats.throttled_calls
        limiter = next(iter(engine.limiters.values()))
        assert limiter.policy.throttles >= engine.stats.throttled_calls
        await store.close()


async def test_throttles_inside_failed_resources_map_retry_on_budget_and_leave_the_shard_rate(
    tmp_path: Path,
) -> None:
    config = SimConfig(resource_throttle_rate=0.3, enforce_quotas=False, seed=5)
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([ACCOUNT], ["us-east-1"], 100))
        settings = fast_settings(tmp_path / "s.db", sim.url, max_rate=100.0, max_attempts=12)
        store, job, engine = await run_job(tmp_path, settings, arns)
        rows = await items(store, job)
        assert {r["status"] for r in rows.values()} == {"succeeded"}
        assert max(r["attempts"] for r in rows.values()) > 1  # retried on the budget
        assert engine.stats.throttled_resources > 0
        limiter = next(iter(engine.limiters.values()))
        # the owning service's quota, not the Tagging API's: the shard's rate is untouched
        assert limiter.policy.throttles == 0
        await store.close()


async def test_a_service_that_keeps_throttling_a_resource_cannot_hold_the_run_open(
    tmp_path: Path,
) -> None:
    config = SimConfig(resource_throttle_rate=1.0, enforce_quotas=False, seed=6)
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([ACCOUNT], ["us-east-1"], 10))
        settings = fast_settings(tmp_path / "s.db", sim.url, max_rate=100.0, max_attempts=3)
        store, job, _ = await run_job(tmp_path, settings, arns)
        rows = await items(store, job)
        assert {(r["status"], r["attempts"], r["error_code"]) for r in rows.values()} == {
            ("failed", 3, "ThrottlingException")}
        await store.close()


async def test_a_bad_arn_fails_alone_and_the_rest_of_its_batch_succeeds(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    good = [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-{n:04d}" for n in range(19)]
    bad = f"arn:aws:iam::{ACCOUNT}:role/legacy"  # global: same shard (us-east-1) as the rest
    store, job, engine = await run_job(tmp_path, fast_settings(tmp_path / "s.db", sim.url),
                                       [*good[:10], bad, *good[10:]])
    rows = await items(store, job)
    assert rows[bad]["status"] == "failed"
    assert rows[bad]["error_code"] == "InvalidParameterException"
    assert rows[bad]["http_status"] == 400
    assert all(rows[a]["status"] == "succeeded" for a in good)
    assert all(sim.state.tags(a) == TAGS for a in good)
    assert engine.stats.splits >= 1
    await store.close()


async def test_permanent_errors_end_the_item_at_once(tmp_path: Path, sim: RunningSimulator) -> None:
    denied = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-denied1"
    missing = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-missing1"
    fine = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-fine"
    store, job, _ = await run_job(tmp_path, fast_settings(tmp_path / "s.db", sim.url),
                                  [denied, missing, fine])
    rows = await items(store, job)
    assert (rows[denied]["status"], rows[denied]["error_code"], rows[denied]["http_status"],
            rows[denied]["attempts"]) == ("failed", "AccessDeniedException", 403, 1)
    assert (rows[missing]["status"], rows[missing]["error_code"], rows[missing]["http_status"]) \
        == ("failed", "ResourceNotFoundException", 404)
    assert rows[fine]["status"] == "succeeded"
    assert (await store.error_counts(job)) == [("AccessDeniedException", 1),
                                               ("ResourceNotFoundException", 1)]
    await store.close()


async def test_an_unreachable_endpoint_pauses_the_shard_and_spends_no_attempts(
    tmp_path: Path,
) -> None:
    """Connection refused is an outage, not a verdict on the items: the lane stops sending,
    probes, and carries on by itself once the endpoint answers; no attempt is spent on it."""
    with socket.socket() as s:  # a port nobody listens on yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = fast_settings(tmp_path / "s.db", f"http://127.0.0.1:{port}", max_attempts=2,
                             connect_timeout=1.0, max_rate=100.0)
    arns = [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-{n}" for n in range(45)]
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    store = await Store.open(settings.db)
    job = await submit(store, [str(source)], Request("tag", tags=TAGS))
    engine = Engine(store, settings, owner=new_owner_token(), job_ids={job.job_id})
    running = asyncio.create_task(engine.run())
    # Refused for a while: several probes, and the shard counted unreachable.
    await wait_until_async(lambda: engine.stats.unreachable_calls >= 2
                           and len(engine.snapshot().unreachable_shards) == 1,
                           "several probes refused", timeout=30)
    assert engine.stats.unreachable_calls >= 2
    assert len(engine.snapshot().unreachable_shards) == 1
    counts = await store.counts(job.job_id)
    assert counts["failed"] == 0 and counts["succeeded"] == 0
    async with await start_simulator(SimConfig(seed=3), port=port) as sim:
        assert await asyncio.wait_for(running, 120)
        rows = await items(store, job.job_id)
        assert {r["status"] for r in rows.values()} == {"succeeded"}
        assert {r["attempts"] for r in rows.values()} == {1}  # the outage spent none
        assert all(sim.state.tags(a) == TAGS for a in arns)
    await store.close()


async def test_job_fails_once_its_failure_threshold_is_passed(tmp_path: Path) -> None:
    config = SimConfig(quotas={"TagResources": 2.0}, seed=9)
    async with await start_simulator(config) as sim:
        arns = [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-denied{n:04d}" for n in range(600)]
        settings = fast_settings(tmp_path / "s.db", sim.url, max_rate=2.0)
        store, job, _ = await run_job(tmp_path, settings, arns,
                                      options=JobOptions(failure_min_items=40, failure_ratio=0.5))
        state = await store.get_job(job)
        assert state is not None and state.state == "failed"
        assert "failure threshold passed" in (state.reason or "")
        counts = await store.counts(job)
        assert counts["failed"] >= 40
        assert counts["cancelled"] > 0  # the rest never sent: ended, with the reason
        assert counts["failed"] + counts["cancelled"] == 600
        rows = await items(store, job)
        cancelled = [r for r in rows.values() if r["status"] == "cancelled"]
        assert {r["error_code"] for r in cancelled} == {"JobFailed"}
        # `retry` brings back both the failed and the threshold-cancelled items.
        assert await store.retry_failed(job) == 600
        await store.close()


async def test_untag_removes_only_the_given_keys(tmp_path: Path, sim: RunningSimulator) -> None:
    arns = list(synthetic_arns([ACCOUNT], ["us-east-1"], 25))
    for a in arns:
        sim.state.put(a, {"team": "x", "env": "y", "keep": "z"}, account=ACCOUNT)
    settings = fast_settings(tmp_path / "s.db", sim.url)
    store, job, _ = await run_job(tmp_path, settings, arns,
                                  Request("untag", keys=("team", "env")))
    assert (await store.counts(job)).by_state == {"succeeded": 25}
    assert all(sim.state.tags(a) == {"keep": "z"} for a in arns)
    await store.close()


async def test_higher_priority_job_on_a_shared_shard_finishes_first(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    settings = fast_settings(tmp_path / "s.db", sim.url, in_flight_per_shard=1)
    store = await Store.open(settings.db)
    low_src, high_src = tmp_path / "low.txt", tmp_path / "high.txt"
    low_src.write_text("\n".join(f"arn:aws:sqs:us-east-1:{ACCOUNT}:low-{n}" for n in range(100)))
    high_src.write_text("\n".join(f"arn:aws:sqs:us-east-1:{ACCOUNT}:high-{n}" for n in range(100)))
    low = await submit(store, [str(low_src)], Request("tag", tags=TAGS), priority=0)
    high = await submit(store, [str(high_src)], Request("tag", tags=TAGS), priority=5)
    engine = Engine(store, settings, owner=new_owner_token())
    assert await engine.run()
    low_rows, high_rows = await items(store, low.job_id), await items(store, high.job_id)
    assert all(r["status"] == "succeeded" for r in [*low_rows.values(), *high_rows.values()])
    high_done = max(str(r["finished_at"]) for r in high_rows.values())  # ISO 8601, UTC
    first_low = min(str(r["finished_at"]) for r in low_rows.values())
    assert high_done <= first_low
    await store.close()


async def test_expired_credentials_are_refreshed_not_counted_as_failures(tmp_path: Path) -> None:
    config = SimConfig(expired_token_rate=0.2, enforce_quotas=False, seed=13)
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([ACCOUNT], ["us-east-1"], 400))
        settings = fast_settings(tmp_path / "s.db", sim.url, max_attempts=5, max_rate=100.0)
        store, job, engine = await run_job(tmp_path, settings, arns)
        rows = await items(store, job)
        assert {r["status"] for r in rows.values()} == {"succeeded"}
        expired = engine.stats.call_errors["ExpiredTokenException"]
        assert expired >= 2
        # A fifth of the calls were refused, but the refresh-and-resend spent no attempt:
        # only a batch refused twice in a row (1 in 25) spends one.
        first_try = sum(1 for r in rows.values() if r["attempts"] == 1)
        assert first_try >= 0.8 * len(arns)
        assert all(sim.state.tags(a) == TAGS for a in arns)
        await store.close()


async def test_a_first_retry_goes_with_the_next_batch_and_later_ones_back_off(
    tmp_path: Path,
) -> None:
    # An hour of backoff: had a first retry waited on it, this run would not end (the guard).
    config = SimConfig(resource_error_rate=0.2, enforce_quotas=False, seed=3)
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([ACCOUNT], ["us-east-1"], 100))
        settings = fast_settings(tmp_path / "s.db", sim.url, max_rate=100.0, max_attempts=2,
                                 backoff_base=3600.0, backoff_cap=3600.0)
        with anyio.fail_after(60):
            store, job, engine = await run_job(tmp_path, settings, arns)
        rows = await items(store, job)
        retried = [r for r in rows.values() if int(r["attempts"]) == 2]
        assert retried and any(r["status"] == "succeeded" for r in retried)
        # What the sender decides for each kind of failure (claims wait on next_attempt_at).
        failure = Failure("InternalServiceException", 500, "momentary")
        fresh, once = Claimed(1, arns[0], 1, 0), Claimed(2, arns[1], 1, 1)
        engine.settings = dataclasses.replace(settings, max_attempts=8)
        engine.sender.settings = engine.settings
        now = time.time()
        # due before any fresh item (0), so the next claim carries it
        assert engine.sender.outcome(job, fresh, Verdict.TRANSIENT, failure).next_attempt_at < 0
        # the second retry, and a resource its own service throttled, back off
        assert engine.sender.outcome(job, once, Verdict.TRANSIENT, failure).next_attempt_at >= \
            now + 1800
        throttled = Failure("ThrottlingException", 400, "Rate exceeded")
        assert engine.sender.outcome(job, fresh, Verdict.TRANSIENT, throttled,
                                     first_at_once=False).next_attempt_at >= now + 1800
        await store.close()


async def test_a_lane_waits_for_its_last_batches_and_sends_their_retries_itself(
    tmp_path: Path,
) -> None:
    # 20 % of resources fail their first call, the last batches' too: their retries come back
    # while the shard has no pending item. The lane must still be there to send them (had it
    # ended, a new lane would start only once its batches were back and the dispatcher looked).
    config = SimConfig(resource_error_rate=0.2, latency_ms=(20, 60), enforce_quotas=False,
                       seed=4)
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([ACCOUNT], ["us-east-1", "eu-west-1"], 100))
        settings = fast_settings(tmp_path / "s.db", sim.url, max_rate=50.0, max_attempts=2)
        store, job, engine = await run_job(tmp_path, settings, arns)
        rows = await items(store, job)
        assert any(int(r["attempts"]) == 2 for r in rows.values())  # retries happened
        assert {r["status"] for r in rows.values()} <= {"succeeded", "failed"}
        assert sorted(engine.lanes_started.values()) == [1, 1]  # one lane per shard, to the end
        await store.close()
