"""Plan only from outcomes that can no longer change: wait until a job is settled.

`undo` and `retry` read a job's recorded outcomes and act on them. A paused job can still have
items leased by a worker: claimed before the pause, sent after it, recorded later. Planning from
the outcomes before those land misses them (an undo that "succeeded" while resources kept the
job's tag). A job is **settled** when nothing of it can reach AWS any more:

- no new claims: a worker claims only items of a ready or active job, checked in the claim's own
  statement (on PostgreSQL it locks the job's row for share, so a pause waits for a claim in
  progress and no claim follows it);
- no item leased: each lease ends with its recorded outcome, with its worker's release (stop,
  death found by pid or stale heartbeat) or at its expiry (`lease_seconds`; leases are not
  renewed), after which the item is pending again and was not sent.

`wait_settled` waits for the last condition, bounded, reporting what it waits for, and releases
the leases of owners found dead or expired as a worker's reaper would, so a job whose worker was
killed settles without one running. Past the bound it raises `JobBusy` (exit 5).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import structlog

from bulktag.errors import JobBusy
from bulktag.store import JOB_DONE, ItemState, JobState, Store

log = structlog.get_logger("bulktag.app.settle")

POLL_SECONDS = 0.5
SAY_EVERY = 5.0  # seconds between "waiting" lines
STOPPED = frozenset({JobState.PAUSED, *JOB_DONE})


async def in_flight(store: Store, job_id: int) -> int:
    """The job's items leased to some worker: claimed, maybe sent, outcome not recorded."""
    return (await store.counts(job_id))[ItemState.LEASED]


def busy_message(job_id: int, leased: int, command: str) -> str:
    return (f"job {job_id} still has {leased} item(s) in flight (leased by a worker, outcome "
            f"not recorded yet): {command} plans from its outcomes, which may still change. "
            f"They land or come back within the lease time; try again then, or give "
            f"--wait SECONDS to wait here")


async def wait_settled(store: Store, job_id: int, *, command: str, wait_seconds: float,
                       stale_seconds: float,
                       on_wait: Callable[[int, float], None] | None = None) -> None:
    """Return once job `job_id` has no leased item; `on_wait(leased, seconds_left)` is called
    at each poll while it has. Raises JobBusy when `wait_seconds` pass first."""
    deadline = time.monotonic() + wait_seconds
    while True:
        leased = await in_flight(store, job_id)
        if leased:
            # the leases of owners found dead, and expired ones, come back now
            await store.reap_dead_owners(stale_seconds=stale_seconds)
            leased = await in_flight(store, job_id)
        if not leased:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise JobBusy(busy_message(job_id, leased, command))
        if on_wait is not None:
            on_wait(leased, left)
        await anyio.sleep(min(POLL_SECONDS, left))


async def settle_stopped(store: Store, job_id: int, *, command: str, wait_seconds: float,
                         stale_seconds: float) -> None:
    """Before `command` plans from a stopped job's outcomes: wait (bounded, a line every few
    seconds) until it is settled. A running job or a missing one is the command's to refuse."""
    job = await store.get_job(job_id)
    if job is None or job.state not in STOPPED:
        return
    said = [0.0]

    def say(leased: int, left: float) -> None:
        if time.monotonic() - said[0] >= SAY_EVERY:
            said[0] = time.monotonic()
            log.warning("waiting_for_in_flight", job=job_id, items=leased,
                        up_to=f"{left:.0f}s", hint=f"{command} plans from the job's outcomes "
                        "once its leased items have landed or come back")

    await wait_settled(store, job_id, command=command, wait_seconds=wait_seconds,
                       stale_seconds=stale_seconds, on_wait=say)
