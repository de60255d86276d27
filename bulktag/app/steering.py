"""Steering a job: pause, resume, cancel, retry failed items, change priority.

One function for every front end that steers jobs (the CLI's `pause|resume|cancel|retry` and
`priority`, the dashboard's POST actions): it checks that the action makes sense in the job's
current state, applies it to the store, and returns what changed, or raises `ControlError`
with a sentence an operator can act on. Printing, HTTP status codes and exit codes are the
caller's business. The rules are the CLI's: only ready or active jobs pause; resume also lifts
accounts paused after a refused role; a finished job cannot be cancelled or re-prioritised;
retry moves failed items (optionally of one error code) back to pending and readies the job
(a paused job stays paused); it is refused for a stopped job with items still in flight (its
failures are not all known: `settle.py`) and for a job an undo has put back (retrying would
tag again what the undo removed).
`check_priority` is what a priority must be, given here or with a new job (`submission.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from bulktag.app.settle import STOPPED, busy_message, in_flight
from bulktag.errors import BulktagError, JobBusy, UsageError
from bulktag.store import JOB_DONE, Job, JobState, Store

Action = Literal["pause", "resume", "cancel", "retry", "priority"]
ACTIONS: tuple[str, ...] = get_args(Action)
CANCEL_MESSAGE = "cancelled by the operator"


#: the largest whole number a store keeps (SQLite INTEGER, PostgreSQL BIGINT)
MAX_INT = 2**63 - 1


def check_priority(value: object) -> int:
    """A job's priority: a whole number (JSON's true and false are not) a store can keep;
    higher runs first."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError("priority must be a whole number")
    if not -MAX_INT <= value <= MAX_INT:
        raise UsageError(f"priority must be between {-MAX_INT} and {MAX_INT}")
    return value


def check_job_id(value: object) -> int:
    """A job id as given (a number or its text): a whole number from 1 to MAX_INT."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise UsageError(f"job id must be a whole number, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise UsageError(f"job id must be a whole number from 1 to {MAX_INT}, not {value!r}")
    return value


class ControlError(BulktagError):
    """The action cannot be applied (the message says why)."""


class JobNotFound(ControlError):
    """No job with that id in the store."""


@dataclass(slots=True)
class ControlResult:
    job: int
    action: str
    state: str  #: the job's state after the action
    message: str  #: one line for a human
    details: dict[str, Any] = field(default_factory=dict)  #: requeued, cancelled, was, ...

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "action": self.action, "state": self.state,
                "message": self.message, **self.details}


def why_not(action: str, state: str, failed: int) -> str | None:
    """Why `action` does not apply to a job in `state` with `failed` failed items, or None
    when it does (what the dashboard's buttons show; `control_job` is the authority)."""
    done = state in JOB_DONE
    if action == "pause" and state not in (JobState.READY, JobState.ACTIVE):
        return f"only a ready or active job pauses; this one is {state}"
    if action == "resume" and state != JobState.PAUSED:
        return f"the job is {state}, not paused"
    if action in ("cancel", "priority") and done:
        return f"the job is {state}"
    if action == "retry" and not failed:
        return "no failed items to retry"
    return None


async def control_job(store: Store, job_id: int, action: str, *, code: str | None = None,
                      priority: int | None = None) -> ControlResult:
    """Apply `action` to job `job_id`. `code` narrows `retry` to one error code; `priority` is
    required by `priority`. Raises JobNotFound or ControlError."""
    if action not in ACTIONS:
        raise ControlError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    job = await store.get_job(job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id} in {store.path}")
    details: dict[str, Any] = {}
    if action == "retry":
        await _retryable(store, job)
        n = await store.retry_failed(job.id, code)
        if n and job.state != JobState.PAUSED:
            await store.set_job_state(job.id, JobState.READY)
        details["requeued"] = n
        message = f"job {job.id}: {n} item(s) back to pending"
        if n and job.state == JobState.PAUSED:
            message += " (the job stays paused: `bulktag resume` works them)"
    elif action == "cancel":
        if job.state in JOB_DONE:
            raise ControlError(f"job {job.id} is already {job.state}")
        n = await store.cancel_items(job.id, CANCEL_MESSAGE)
        await store.set_job_state(job.id, JobState.CANCELLED, reason=CANCEL_MESSAGE)
        details["cancelled"] = n
        message = f"job {job.id} cancelled ({n} open item(s))"
    elif action == "pause":
        if job.state not in (JobState.READY, JobState.ACTIVE):
            raise ControlError(f"job {job.id} is {job.state}; only ready or active jobs pause")
        await store.set_job_state(job.id, JobState.PAUSED)
        message = f"job {job.id} paused"
    elif action == "resume":
        accounts = await store.clear_paused_accounts(job.id)
        if job.state != JobState.PAUSED and not accounts:
            raise ControlError(f"job {job.id} is {job.state}, not paused")
        if job.state == JobState.PAUSED:
            await store.set_job_state(job.id, JobState.READY)
        details["accounts_resumed"] = accounts
        message = (f"job {job.id} resumed"
                   f"{f' ({accounts} paused account(s))' if accounts else ''}")
    else:
        if priority is None:
            raise ControlError("priority needs a whole number, e.g. 5 (higher runs first)")
        if job.state in JOB_DONE:
            raise ControlError(f"job {job.id} is already {job.state}")
        await store.set_job_priority(job.id, priority)
        details.update(priority=priority, was=job.priority)
        message = f"job {job.id}: priority {job.priority} -> {priority}"
    after = await store.get_job(job.id)
    return ControlResult(job.id, action, str(after.state if after else job.state), message,
                         details)


async def _retryable(store: Store, job: Job) -> None:
    """Refuse a retry that would miss failures still to come or undo an undo."""
    if job.state in STOPPED:
        leased = await in_flight(store, job.id)
        if leased:
            raise JobBusy(busy_message(job.id, leased, "retry"))
    undone_by = [j.id for j in await store.list_jobs() if j.options.undo_of == job.id]
    if undone_by:
        raise ControlError(f"job {job.id} was undone by job {undone_by[0]}: retrying it would "
                           f"change again what the undo put back (to have job {job.id}'s "
                           f"changes back, undo job {undone_by[0]})")
