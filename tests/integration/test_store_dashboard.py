"""The store methods behind the dashboard, on both backends: throughput samples (one per
interval across a fleet, gone with their job) and a job's latest failures read through the
failed-items index, newest first."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bulktag.arn import Shard
from bulktag.store import ItemState, JobOptions, JobState, NewItem, Outcome, Store

EAST = Shard("aws", "123456789012", "us-east-1")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with await Store.open(store_url) as s:
        yield s


async def new_job(store: Store, n: int) -> int:
    job = await store.create_job("tag", options=JobOptions(tags={"k": "v"}))
    await store.add_items(job, [
        NewItem(f"arn:aws:ec2:us-east-1:123456789012:instance/i-{i:04d}", EAST, '{"k":"v"}')
        for i in range(n)])
    await store.set_job_state(job, JobState.READY)
    return job


async def test_samples_keep_one_per_interval_and_go_with_their_job(store: Store) -> None:
    job = await new_job(store, 3)
    other = await new_job(store, 1)
    assert await store.record_sample(job, 1000.0, 0, min_gap=8)
    assert not await store.record_sample(job, 1005.0, 1, min_gap=8)  # another daemon's, too soon
    assert await store.record_sample(job, 1010.0, 2, min_gap=8)
    assert await store.record_sample(job, 1020.0, 3)
    assert await store.record_sample(other, 1005.0, 1, min_gap=8)  # per job
    assert await store.samples(job) == [(1000.0, 0), (1010.0, 2), (1020.0, 3)]
    assert await store.samples(job, since=1010.0) == [(1010.0, 2), (1020.0, 3)]
    await store.delete_job(job)
    assert await store.samples(job) == []
    assert await store.samples(other) == [(1005.0, 1)]


async def test_last_failures_newest_first_only_failed_and_invalid(store: Store) -> None:
    job = await new_job(store, 12)
    owner = "dash-test:1:abc"
    await store.register_owner(owner)
    claimed = await store.claim(owner, job, await shard_id(store), 12, lease_seconds=60)
    assert len(claimed) == 12
    # Three rounds of outcomes: the later a failure was recorded, the earlier it is listed.
    for round_ in range(3):
        batch = claimed[round_ * 4:(round_ + 1) * 4]
        await store.record(owner, [
            Outcome(c.id, ItemState.FAILED if i % 2 else ItemState.SUCCEEDED, 1,
                    error_code=f"Code{round_}", http_status=400, message=f"<b>{c.arn}</b>")
            for i, c in enumerate(batch)])
    rows = await store.last_failures(job, 4)
    assert [r.state for r in rows] == ["failed"] * 4
    assert [r.error_code for r in rows] == ["Code2", "Code2", "Code1", "Code1"]
    assert rows[0].message == f"<b>{rows[0].arn}</b>"
    assert (rows[0].account, rows[0].region) == ("123456789012", "us-east-1")
    assert len(await store.last_failures(job, 100)) == 6
    assert await store.last_failures(job + 1000, 5) == []


async def shard_id(store: Store) -> int:
    runnable = await store.runnable()
    return runnable[0].shard_id if runnable else 0
