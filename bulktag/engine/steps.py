"""What a lane's route loop does next: end, wait, or claim — one pure function of a small view.

A lane's end-of-work rule depends on a dozen flags and counters (the lane ending as a whole,
batches still out, claims still being read, outcomes not yet in the dispatcher's view, an
outage's next probe, each job's next due time); six fixes in a row patched it where it was
spread over the lane's async loop. Here it is a function of plain values, tested case by case
(`tests/unit/test_lane_steps.py`) without an event loop; `lane.py` builds the view, calls
`next_step` and carries the answer out. The view holds no clock: every time in it is seconds
from now (the lane reads the wall clock for due times and the monotonic one for probes).
"""

from __future__ import annotations

from dataclasses import dataclass

from bulktag.api_limits import ARNS_PER_READ

IDLE_WAIT = 1.0  # seconds a loop waits on its last batches / a route with no work, unless poked
MIN_WAIT = 0.01  # a job due in less than this is looked at after this (one claim per wake-up)


@dataclass(frozen=True, slots=True)
class RouteJob:
    """A job with pending work of this route on the shard, as the dispatcher last saw it."""

    job_id: int
    priority: int
    due_in: float  # seconds until this loop may claim for it again (≤ 0: now)


@dataclass(frozen=True, slots=True)
class LaneView:
    """What one route loop of a lane knows when it decides what to do next."""

    stop: bool  # the engine is stopping or the shard is being handed over
    ending: bool  # another loop of the lane found the shard out of work: the lane ends
    shard_has_work: bool  # the dispatcher's view shows pending work of any route on the shard
    # True when that view includes every outcome written (none waiting in the recorder, and
    # the dispatcher's last look began after the last write): a retry just written is work.
    work_current: bool
    in_flight: int  # the lane's batches out (every route)
    holding: int  # the lane's loops between a claim and the start of its last batch
    jobs: tuple[RouteJob, ...]  # this route's jobs with work
    probe_in: float | None  # outage of this route: seconds until its next probe; None: none
    route_in_flight: int  # this route's batches out
    batch_size: int  # items per call of this route (20 for the Tagging API)
    in_flight_per_shard: int
    first_claim: bool  # the loop's first claim: one read's worth, sent after one read
    turn: int  # round-robin counter among jobs of equal priority


@dataclass(frozen=True, slots=True)
class End:
    """The loop ends. `lane_done`: the shard is out of work, the lane's other loops end too
    (a lane ends as a whole: a loop that ended alone left its route unserved while the lane
    lived on). Otherwise the engine stops or hands the shard over."""

    lane_done: bool


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait on the loop's wake-up at most `seconds`. `idle`: waiting on the lane's last batches
    and claims (or on their outcomes being written); they poke the loop when they are back.
    In an outage the route's last batch back wakes its loop too."""

    seconds: float
    idle: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """Claim up to `size` due items of `job_id` (the round-robin counter moves on)."""

    job_id: int
    size: int


Step = End | Wait | Claim


def next_step(view: LaneView) -> Step:
    """The loop's next step. Out of work, it ends only when nothing of the lane is out or held
    and the view of the work includes every outcome written: the retries of its last batches
    come back to it rather than to a lane started after it."""
    if view.stop:
        return End(lane_done=False)
    if view.ending:
        return End(lane_done=True)
    if not view.shard_has_work:
        if view.in_flight or view.holding or not view.work_current:
            return Wait(IDLE_WAIT, idle=True)
        return End(lane_done=True)
    if view.probe_in is not None:
        # Unreachable: no sends while the route's last batches are still out (they answer the
        # question a probe would ask; the last one back wakes the loop), none until the next
        # probe.
        if view.route_in_flight:
            return Wait(IDLE_WAIT)
        if view.probe_in > 0:
            return Wait(min(IDLE_WAIT, max(MIN_WAIT, view.probe_in)))
    due = [j for j in view.jobs if j.due_in <= 0]
    if not due:
        # Due again at the earliest of its jobs; a route with no work of its own (most lanes
        # have no EC2 items) looks again in a second, or at once when poked — not every 10 ms,
        # which cost 64 idle loops a core.
        soonest = min((j.due_in for j in view.jobs), default=IDLE_WAIT)
        return Wait(min(IDLE_WAIT, max(MIN_WAIT, soonest)))
    top = max(j.priority for j in due)
    best = [j for j in due if j.priority == top]
    job_id = best[(view.turn + 1) % len(best)].job_id  # round-robin among equals
    if view.probe_in is not None:
        return Claim(job_id, view.batch_size)  # a probe: one batch
    size = view.batch_size * view.in_flight_per_shard
    if view.first_claim:
        # One read's worth: its batches go out after one GetResources call rather than the
        # slowest of several (the next claim is read while they are sent).
        size = min(size, ARNS_PER_READ)
    return Claim(job_id, size)


def quiet(idle: bool, in_flight: int, holding: int) -> bool:
    """Whether a batch back or a claim let go should poke the lane's loops: one waits on the
    lane's last work, and none is out or held any more (it looks again, and ends)."""
    return idle and not in_flight and not holding
