"""`bulktag undo JOB`: a new job that puts back what JOB changed, from its before-images.

Every item JOB changed (a non-empty before-image; succeeded) becomes an item of a new tag job
whose tagset maps each key JOB changed to `[value before, value JOB set]` (`changes.py`): keys
JOB added are removed, values it overwrote are restored, keys an untag removed come back. The
new job goes through the engine like any other (the same roles, ceilings, retries, report) and
keeps its own before-images, so it can be undone in turn. When it runs, each resource is read
first: one whose value is no longer what JOB set is left alone (`skipped`, "changed since job
N") unless `force`.

Undo plans only from a settled job (`settle.py`): stopped, and nothing leased, so no outcome of
JOB changes after the plan. Undoing a paused job also ends it: its open items are cancelled and
JOB becomes `cancelled` ("undone by job U"), so a resume cannot tag again what U put back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from bulktag.app.settle import STOPPED, busy_message, in_flight
from bulktag.arn import Shard, route_of
from bulktag.errors import JobBusy, UsageError
from bulktag.policy.changes import kind_of, undo_body
from bulktag.store import Job, JobOptions, JobState, NewItem, Store

log = structlog.get_logger("bulktag.app.undo")

PAGE = 10_000  # changed items read (and undo items written) per transaction


class NothingToUndo(Exception):
    """The job changed nothing that can be put back (said to the user; not an error)."""


@dataclass(frozen=True, slots=True)
class UndoSubmitted:
    job_id: int
    undo_of: int
    items: int


async def undoable(store: Store, job_id: int) -> Job:
    """The job to undo, refused while it may still change things or when it kept nothing."""
    job = await store.get_job(job_id)
    if job is None:
        raise UsageError(f"no job {job_id} in {store.path}")
    if job.state not in STOPPED:
        raise UsageError(f"job {job_id} is {job.state}: undo puts back what a stopped job "
                         f"changed; pause it (`bulktag pause {job_id}`) or cancel it "
                         f"(`bulktag cancel {job_id}`) first")
    leased = await in_flight(store, job_id)
    if leased:
        raise JobBusy(busy_message(job_id, leased, "undo"))
    if not job.options.before_images and job.options.undo_of is None:
        raise UsageError(f"job {job_id} kept no before-images (submitted with "
                         "--no-before-images, or by a bulktag without undo): there is "
                         "nothing recorded to put back")
    return job


def undo_options(job: Job, *, force: bool, case_conflict: str | None) -> JobOptions:
    """An undo job's options: JOB's route and failure threshold; reads first, keeps images."""
    return JobOptions(undo_of=job.id, force=force, case_conflict=case_conflict,
                      before_images=True, skip_compliant=True, route=job.options.route,
                      failure_ratio=job.options.failure_ratio,
                      failure_min_items=job.options.failure_min_items,
                      # through the accounts the way JOB went
                      role_name=job.options.role_name, external_id=job.options.external_id,
                      role_session_name=job.options.role_session_name)


async def undo_items(store: Store, job: Job) -> AsyncIterator[list[NewItem]]:
    """The undo job's items, a page of JOB's changed items at a time (flat memory)."""
    kind = kind_of(job.operation, job.options.undo_of, bool(job.options.transform))
    after = 0
    while True:
        page = await store.changed_items(job.id, after, PAGE)
        if not page:
            return
        items = []
        for changed in page:
            body = undo_body(kind, changed.tagset, changed.before)
            if body is not None:
                # by the route the undone item took (the same rule on the same choice)
                items.append(NewItem(changed.arn, changed.shard, body,
                                     route=route_of(changed.arn, job.options.route)))
        yield items
        after = page[-1].id


async def submit_undo(store: Store, job_id: int, *, force: bool = False,
                      case_conflict: str | None = None, name: str | None = None,
                      priority: int = 0, owner: str | None = None) -> UndoSubmitted:
    """Create the ready undo job of `job_id`. Raises UsageError (a job still running, none
    kept) or NothingToUndo; nothing is kept then."""
    job = await undoable(store, job_id)
    options = undo_options(job, force=force, case_conflict=case_conflict)
    new_id = await store.create_job("tag", options=options, name=name or f"undo of job {job_id}",
                                    priority=priority, owner=owner)
    added = 0
    try:
        async for items in undo_items(store, job):
            added += await store.add_items(new_id, items)
        if not added:
            raise NothingToUndo(f"job {job_id} changed nothing that can be put back: "
                                "nothing to undo")
        if job.state == JobState.PAUSED:
            reason = f"undone by job {new_id}"
            await store.cancel_items(job_id, reason, code="Undone")
            await store.set_job_state(job_id, JobState.CANCELLED, reason=reason)
        await store.set_job_state(new_id, JobState.READY)
    except BaseException:
        await store.delete_job(new_id)
        raise
    log.info("undo_submitted", job=new_id, undo_of=job_id, items=added, force=force)
    return UndoSubmitted(new_id, job_id, added)


async def undo_by_shard(store: Store, job: Job) -> dict[Shard, list[tuple[str, str]]]:
    """The undo's items per shard, (arn, tagset body), for its plan (`--dry-run`)."""
    per_shard: dict[Shard, list[tuple[str, str]]] = defaultdict(list)
    async for items in undo_items(store, job):
        for it in items:
            assert it.shard is not None and it.tagset is not None
            per_shard[it.shard].append((it.arn, it.tagset))
    return dict(per_shard)
