"""The store's records: what goes in and comes out of every backend, with no SQL in sight.

States are `StrEnum`s, so they compare equal to the text the tables hold and print as it;
`JobOptions` is the typed view of a job's options (kept as JSON in the store, so a new option
needs no migration); the rest are plain records the engine, the CLI and the reports read.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from bulktag.arn import ROUTE_TAGGING, Shard
from bulktag.errors import BulktagError


class StoreError(BulktagError):
    """The store cannot be opened, migrated or reached (bad path or URL, not a database,
    no permission, server down)."""


class JobState(StrEnum):
    PREPARING = "preparing"  #: being submitted; invisible to runners
    READY = "ready"  #: submitted (or resumed, retried): runners may start it
    ACTIVE = "active"  #: a runner works it
    PAUSED = "paused"  #: kept, not worked, until resumed
    COMPLETED = "completed"
    FAILED = "failed"  #: passed its failure threshold
    CANCELLED = "cancelled"


JOB_DONE = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class ItemState(StrEnum):
    PENDING = "pending"
    LEASED = "leased"  #: claimed by one owner until it records an outcome or its lease ends
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"  #: already compliant, or refused by a guardrail
    FAILED = "failed"
    INVALID = "invalid"  #: a bad source row kept with --skip-invalid
    CANCELLED = "cancelled"


TERMINAL = frozenset({ItemState.SUCCEEDED, ItemState.SKIPPED, ItemState.FAILED,
                      ItemState.INVALID, ItemState.CANCELLED})
ITEM_STATES = tuple(ItemState)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What a job was asked to do, beyond its operation. Unknown keys of an older or newer
    bulktag are kept in `extra` so that a round trip loses nothing."""

    tags: dict[str, str] | None = None  #: tag jobs: the tags every item gets (per-row tags aside)
    keys: list[str] | None = None  #: untag jobs: the keys to remove
    sources: list[str] | None = None  #: file jobs: the sources the items came from
    query: dict[str, Any] | None = None  #: discovery jobs: the ResourceQuery, as JSON
    accounts: list[str] | None = None  #: discovery jobs: accounts walked ("" = the caller's)
    regions: list[str] | None = None  #: discovery jobs: regions walked
    skip_compliant: bool = False  #: read current tags first; skip resources already right
    if_absent: bool = False  #: only add keys a resource lacks
    skip_invalid: bool = False  #: bad rows became `invalid` items instead of a refusal
    failure_ratio: float | None = None  #: None: the setting's
    failure_min_items: int | None = None
    sync_rule: str | None = None  #: the tag-sync rule that made this job
    route: str | None = None  #: auto | tagging-api (None: auto), chosen at submit
    export_on_finish: dict[str, Any] | None = None  #: destination, region, kms_key_arn, format
    exported: dict[str, Any] | None = None  #: the last export of this job's end
    #: keep each changed item's before-image (README "Undo"); the CLI turns it on by default
    before_images: bool = False
    case_conflict: str | None = None  #: skip (None) | apply: a key differing only in case
    undo_of: int | None = None  #: undo jobs: the job they put back
    force: bool = False  #: undo jobs: restore even what another client changed since
    #: transform jobs (a tag job): the operations, as `policy.transforms.to_json` arrays
    transform: list[Any] | None = None
    on_conflict: str | None = None  #: transform jobs: skip (None) | overwrite
    #: how the job reaches its accounts, given at submission and used by whichever worker
    #: works it (a worker's [accounts."ID"] entries still win): the role in every account but
    #: the caller's, its external id, the session name. None: the worker's settings decide.
    role_name: str | None = None
    external_id: str | None = None
    role_session_name: str | None = None
    #: send tags the accounts' tag policies refuse (AWS refuses them on enforced types)
    allow_noncompliant: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> JobOptions:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        return {**self.extra, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    def merged(self, patch: dict[str, Any]) -> JobOptions:
        """These options with top-level keys replaced (a None value removes its key)."""
        data = self.to_dict()
        for key, value in patch.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return JobOptions.from_json(data)

    def with_(self, **changes: Any) -> JobOptions:
        return replace(self, **changes)


@dataclass(slots=True)
class Job:
    id: int
    name: str | None
    operation: str  # tag | untag
    state: JobState
    priority: int
    options: JobOptions
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    rate: float
    reason: str | None
    #: the process still reading the job's sources while the job is workable (a big file's
    #: first items are worked while the rest is read), and the rows of its sources committed
    loading: str | None = None
    loaded: int = 0
    loading_at: float | None = None
    #: a digest of each chunk of the sources committed (comma-separated hex): a resubmit skips
    #: a chunk only if it reads the same (`app/submit.py`)
    loaded_digests: str | None = None

    @property
    def kind(self) -> str:
        """What users call the job: tag, untag, or transform (a tag job changing the tags
        resources have, `options.transform`)."""
        return "transform" if self.options.transform else self.operation


@dataclass(slots=True)
class NewItem:
    """An item to add: a valid one has a shard and a tagset body; an invalid one a reason."""

    arn: str
    shard: Shard | None
    tagset: str | None  # canonical body from tagset_body()
    line: int | None = None
    problem: str | None = None
    #: `ec2` or `tagging-api` (arn.route_of): stored with the item, claimed and sent by it
    route: str = ROUTE_TAGGING


@dataclass(frozen=True, slots=True)
class Conflict:
    """A row giving an ARN the job already holds with other tags (first: the kept row's)."""

    arn: str
    line: int | None
    first_line: int | None
    first: str
    again: str


@dataclass(slots=True)
class Loaded:
    """What one `Loader` move did: rows moved from staging, items added (the rest were ARNs
    the job already held), and the rows among them that conflict (the first few, in input
    order, and how many in all)."""

    staged: int
    added: int
    conflicts: list[Conflict] = field(default_factory=list)
    n_conflicts: int = 0

    def then(self, later: Loaded, show: int) -> Loaded:
        """This move and a later one as one."""
        return Loaded(self.staged + later.staged, self.added + later.added,
                      (self.conflicts + later.conflicts)[:show],
                      self.n_conflicts + later.n_conflicts)


@dataclass(slots=True)
class Claimed:
    id: int
    arn: str
    tagset_id: int
    attempts: int
    # tags (None: remove the key) or keys to send instead of the tagset (--if-absent, undo)
    override: Any = None
    before: str | None = None  # the before-image kept by an earlier attempt (compact JSON)


@dataclass(slots=True)
class Outcome:
    """A leased item's new state, written by record()."""

    item_id: int
    state: ItemState  # pending (retry or requeue) or a terminal state
    attempts: int
    next_attempt_at: float = 0.0
    error_code: str | None = None
    http_status: int | None = None
    message: str | None = None


@dataclass(slots=True)
class Runnable:
    job_id: int
    shard_id: int
    priority: int
    operation: str
    state: JobState = JobState.ACTIVE
    route: str = ROUTE_TAGGING  #: a (job, shard) has one Runnable per route with pending work


@dataclass
class Counts:
    by_state: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, state: str) -> int:
        return self.by_state.get(state, 0)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def open(self) -> int:
        return self[ItemState.PENDING] + self[ItemState.LEASED]

    @property
    def done(self) -> int:
        return self.total - self.open


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One item as reports show it."""

    id: int
    arn: str
    account: str | None
    region: str | None
    state: str
    attempts: int
    error_code: str | None
    http_status: int | None
    message: str | None
    finished_at: float | None
    line: int | None
    before: str | None = None  #: the before-image (compact JSON), when one was kept
    tagset: str | None = None  #: the item's tagset body (what the job set)
    route: str = ROUTE_TAGGING  #: the route stored with the item


@dataclass(frozen=True, slots=True)
class ChangedItem:
    """An item a job changed, with what it set and what was there before (undo's source)."""

    id: int
    arn: str
    shard: Shard
    tagset: str  # canonical body
    before: str  # compact JSON before-image


@dataclass(frozen=True, slots=True)
class SucceededItem:
    id: int
    arn: str
    shard_id: int
    tagset_id: int


@dataclass(slots=True)
class Discovery:
    id: int
    job_id: int
    partition: str
    account: str
    region: str
    state: str  # pending | running | done | failed
    token: str | None
    token_at: float | None
    pages: int
    found: int
    restarts: int
    error: str | None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One item with every column, as `store copy` moves it between stores. The shard and the
    tagset travel by value (a store's shard and tagset ids are its own); invalid items have
    neither."""

    id: int
    job_id: int
    arn: str
    shard: Shard | None
    tagset: str | None  # canonical body
    state: ItemState
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    error_code: str | None
    http_status: int | None
    message: str | None
    finished_at: float | None
    line: int | None
    verified_at: float | None
    drift: str | None
    before: str | None = None
    route: str = ROUTE_TAGGING


@dataclass(frozen=True, slots=True)
class PausedAccount:
    account: str
    reason: str
    paused_at: float


@dataclass(frozen=True, slots=True)
class SyncMember:
    """A resource a tag-sync rule applied its tags to."""

    arn: str
    applied: str  # JSON of the tags applied
    digest: str  # sha256 of applied
    last_seen_at: float


FLEET_RATE_FRESH = 10.0  #: seconds: a worker's job rate older than this is not counted


@dataclass(frozen=True, slots=True)
class FleetRate:
    """A job's rate as the fleet works it: the sum of the live workers' recent rates."""

    rate: float  #: items finished per second
    workers: int  #: live workers that wrote a rate for the job lately
    last_at: float | None  #: when any worker last wrote one (None: never)


@dataclass(frozen=True, slots=True)
class Worker:
    """A process that holds (or may hold) leases: a daemon or a `bulktag run`."""

    owner: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float


@dataclass
class SyncRule:
    id: int
    name: str
    tag_key: str | None
    tag_value: str | None
    resource_query: str | None
    apply: dict[str, str]
    regions: list[str]
    accounts: list[str]
    interval_seconds: float
    status: str
    error: str | None
    created_at: float
    last_run_at: float | None
    next_run_at: float
    members: int
    last_added: int
    last_removed: int
    last_jobs: list[int]
    #: how its jobs reach their accounts (role_name, external_id, role_session_name); None:
    #: the worker's settings
    way_in: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "tag_key": self.tag_key, "tag_value": self.tag_value,
            "resource_query": self.resource_query, "apply": self.apply,
            "regions": self.regions, "accounts": [a or "caller" for a in self.accounts],
            "interval_seconds": self.interval_seconds, "status": self.status,
            "error": self.error, "created_at": self.created_at, "last_run_at": self.last_run_at,
            "next_run_at": self.next_run_at, "members": self.members,
            "last_added": self.last_added, "last_removed": self.last_removed,
            "last_jobs": self.last_jobs,
            "role_name": (self.way_in or {}).get("role_name"),  # never the external id
        }


@dataclass(frozen=True, slots=True)
class NewSyncRule:
    name: str
    tag_key: str | None
    tag_value: str | None
    resource_query: str | None
    apply: dict[str, str]
    regions: Sequence[str]
    accounts: Sequence[str]
    interval: float
    way_in: dict[str, Any] | None = None  #: as SyncRule.way_in


@dataclass(frozen=True, slots=True)
class QueueTotals:
    """Store-wide figures for /metrics: items by state, open items of live jobs, jobs and
    sync rules by status. Read from counters, never from items."""

    items_by_state: dict[str, int]
    job_items: list[tuple[int, str | None, str, str, int]]  # job, name, operation, state, n
    jobs_by_state: dict[str, int]
    sync_rules_by_status: dict[str, int]


def tagset_body(tags: dict[str, str] | None, keys: Sequence[str] | None) -> str:
    """Canonical JSON of a tag map (tag jobs) or key list (untag jobs), the tagset identity."""
    if tags is not None:
        return json.dumps(tags, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(sorted(set(keys or ())), separators=(",", ":"), ensure_ascii=False)


def new_owner_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_host_pid(owner: str) -> tuple[str, int]:
    parts = owner.split(":")
    try:
        return parts[0], int(parts[1])
    except (IndexError, ValueError):
        return parts[0], 0
