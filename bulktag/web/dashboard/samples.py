"""Throughput samples: what the daemon writes for the dashboard's chart.

Every `sample_seconds` (a setting, 10 s by default) the daemon reads each live job's counters
(a handful of rows per job, never its items) and keeps the worked total (succeeded + skipped
+ failed) with the time.
A job that just ended gets one last sample, so its chart reaches the end. Daemons sharing a
store skip a job sampled less than `MIN_GAP` of an interval ago: one sample per interval.
"""

from __future__ import annotations

import time

from bulktag.store import JobState, Store

SAMPLE_SECONDS = 10.0
MIN_GAP = 0.8  # of an interval: another daemon's sample this recent makes ours redundant
LIVE = frozenset({JobState.READY, JobState.ACTIVE, JobState.PAUSED})


async def sample_jobs(store: Store, previous: set[int], *, now: float | None = None,
                      interval: float = SAMPLE_SECONDS) -> set[int]:
    """Write a sample for every live job and for those of `previous` that ended since; returns
    the live jobs, to pass back as `previous` next time."""
    now = time.time() if now is None else now
    live: set[int] = set()
    for job in await store.list_jobs():
        if job.state in LIVE:
            live.add(job.id)
        elif job.id not in previous:
            continue
        counts = await store.counts(job.id)
        done = counts["succeeded"] + counts["skipped"] + counts["failed"]
        await store.record_sample(job.id, now, done, min_gap=interval * MIN_GAP)
    return live
