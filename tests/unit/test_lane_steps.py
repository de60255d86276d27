"""A lane's end-of-work rule (`engine.steps.next_step`), case by case with plain values: each
case one of the fixes to the lane's wake-up logic was about, named by its commit."""

from __future__ import annotations

import dataclasses

from bulktag.api_limits import ARNS_PER_READ
from bulktag.engine.steps import (
    IDLE_WAIT,
    MIN_WAIT,
    Claim,
    End,
    LaneView,
    RouteJob,
    Wait,
    next_step,
    quiet,
)

JOB = RouteJob(job_id=7, priority=0, due_in=0.0)

# A Tagging API loop past its first claim, with one due job and nothing out.
BUSY = LaneView(stop=False, ending=False, shard_has_work=True, work_current=True, in_flight=0,
                holding=0, jobs=(JOB,), probe_in=None, route_in_flight=0, batch_size=20,
                in_flight_per_shard=4, first_claim=False, turn=0)
# The shard out of work in the dispatcher's view.
OUT = dataclasses.replace(BUSY, shard_has_work=False, jobs=())


def view(base: LaneView = BUSY, **changes: object) -> LaneView:
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_due_work_is_claimed_a_full_claim_at_a_time() -> None:
    assert next_step(BUSY) == Claim(7, 20 * 4)


def test_the_first_claim_is_one_reads_worth() -> None:  # 46cf866
    assert next_step(view(first_claim=True, in_flight_per_shard=8)) == Claim(7, ARNS_PER_READ)
    assert next_step(view(first_claim=True, in_flight_per_shard=2)) == Claim(7, 40)


def test_stopping_or_handing_over_ends_the_loop_alone() -> None:
    assert next_step(view(stop=True)) == End(lane_done=False)
    assert next_step(view(OUT, stop=True, in_flight=3)) == End(lane_done=False)


def test_out_of_work_with_nothing_out_ends_the_whole_lane() -> None:  # 43912a2
    assert next_step(OUT) == End(lane_done=True)


def test_a_loop_ends_when_another_found_the_shard_out_of_work_even_with_work_of_its_own(
) -> None:  # 43912a2: a loop that ended alone left its route unserved while the lane lived
    assert next_step(view(ending=True)) == End(lane_done=True)
    assert next_step(view(ending=True, in_flight=2, holding=1)) == End(lane_done=True)


def test_out_of_work_waits_for_the_lanes_last_batches() -> None:  # 46cf866
    # Their retries come back to this lane; a new lane would start only after they were back
    # and the dispatcher's next look.
    assert next_step(view(OUT, in_flight=1)) == Wait(IDLE_WAIT, idle=True)


def test_out_of_work_waits_while_another_loop_holds_a_claim() -> None:  # b1aaac3
    # The EC2 loop ended the lane while the Tagging API loop was reading its last claim.
    assert next_step(view(OUT, holding=1)) == Wait(IDLE_WAIT, idle=True)


def test_the_last_batch_back_with_retries_not_yet_in_the_view_is_waited_for() -> None:
    # ac19eda: the last batches came back with retries still in the recorder (or written
    # after the dispatcher's last look began): the shard looks out of work but is not.
    assert next_step(view(OUT, work_current=False)) == Wait(IDLE_WAIT, idle=True)
    # Once the view includes them, the retries are work, and they are claimed here.
    assert next_step(view(BUSY, work_current=True)) == Claim(7, 80)


def test_a_retry_due_is_claimed_while_another_loop_of_the_lane_waits() -> None:  # e6b3f6b
    # The EC2 loop waits on the lane's last batches (idle, batches out); the Tagging API loop
    # was poked, its not_before cleared: its due-now retry goes at once, not after a backoff.
    retry = RouteJob(job_id=7, priority=0, due_in=-1e-3)
    assert next_step(view(in_flight=2, holding=1, jobs=(retry,))) == Claim(7, 80)


def test_a_route_with_no_work_while_the_other_has_some_waits_a_second() -> None:  # 0ba7694
    # 64 idle EC2 loops polling every 10 ms cost a core.
    assert next_step(view(jobs=())) == Wait(IDLE_WAIT)


def test_a_route_whose_jobs_are_not_due_waits_for_the_soonest() -> None:
    jobs = (RouteJob(1, 0, 0.5), RouteJob(2, 0, 0.25))
    assert next_step(view(jobs=jobs)) == Wait(0.25)
    assert next_step(view(jobs=(RouteJob(1, 0, 5.0),))) == Wait(IDLE_WAIT)
    assert next_step(view(jobs=(RouteJob(1, 0, 1e-6),))) == Wait(MIN_WAIT)


def test_best_priority_first_round_robin_among_equals() -> None:
    jobs = (RouteJob(1, 0, 0.0), RouteJob(2, 5, 0.0), RouteJob(3, 5, 0.0), RouteJob(4, 9, 1.0))
    picked = [next_step(view(jobs=jobs, turn=t)) for t in range(4)]
    assert [p.job_id for p in picked if isinstance(p, Claim)] == [3, 2, 3, 2]


def test_an_outage_waits_for_its_next_probe_then_sends_one_batch() -> None:
    assert next_step(view(probe_in=30.0)) == Wait(IDLE_WAIT)  # looks again within a second
    assert next_step(view(probe_in=0.5)) == Wait(0.5)
    assert next_step(view(probe_in=1e-3)) == Wait(MIN_WAIT)
    assert next_step(view(probe_in=0.0)) == Claim(7, 20)  # the probe: one batch, no more
    assert next_step(view(probe_in=-2.0, first_claim=True)) == Claim(7, 20)


def test_an_outage_probes_only_once_the_routes_own_batches_are_back() -> None:
    # The last of them back wakes the loop (no polling for it).
    assert next_step(view(probe_in=-1.0, route_in_flight=1)) == Wait(IDLE_WAIT)
    assert next_step(view(probe_in=5.0, route_in_flight=1)) == Wait(IDLE_WAIT)
    # The other route's batches out are no reason to wait: its endpoint is another one.
    assert next_step(view(probe_in=-1.0, in_flight=3, route_in_flight=0)) == Claim(7, 20)


def test_an_outage_with_the_shard_out_of_work_still_ends_the_lane() -> None:
    assert next_step(view(OUT, probe_in=10.0)) == End(lane_done=True)


def test_an_outage_with_no_due_job_of_the_route_waits_like_any_loop() -> None:
    assert next_step(view(probe_in=-1.0, jobs=())) == Wait(IDLE_WAIT)


def test_a_batch_back_or_a_claim_let_go_pokes_only_a_waiting_lane_once_quiet() -> None:
    # f9fd9ec: the one condition for both places that wake a lane waiting on its last work.
    assert quiet(idle=True, in_flight=0, holding=0)
    assert not quiet(idle=True, in_flight=1, holding=0)
    assert not quiet(idle=True, in_flight=0, holding=1)
    assert not quiet(idle=False, in_flight=0, holding=0)
