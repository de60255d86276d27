"""The store's contract: every operation the engine, the CLI, the daemon, discovery, sync,
metrics and reports need, and nothing else.

Two backends sit behind it: `sqlite.py` (one file, one host, zero set-up: the default) and
`postgres.py` (a fleet of workers on many hosts sharing one queue). Nobody outside this package
sees SQL, a connection or a private attribute. A backend guarantees:

- items are unique per (job, ARN); `add_items` ignores an ARN already in the job;
- a claim leases items to one owner; only the lease holder's `record` lands (exactly-once
  recording over at-least-once sending); an owner whose heartbeat is stale loses its leases;
- a shard is driven by one owner at a time through a shard lease renewed with the heartbeat;
- every item keeps the route it was submitted with (`ec2` or `tagging-api`); work is runnable
  and claimed per (job, shard, route), so each route of a shard goes at its own pace;
- counts per (job, shard, route, state) and per error code are kept as items change, so
  `status` reads a handful of rows on any job size;
- a store can be copied to another of either kind (`bulktag store copy`, `storecopy.py`):
  the `export_*`/`import_*` methods move every row with its id, a page at a time, and
  `finish_import` moves the destination's id generators past what was imported.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Self

from bulktag.arn import Shard
from bulktag.store.models import (
    ChangedItem,
    Claimed,
    Counts,
    Discovery,
    FleetRate,
    ItemRecord,
    Job,
    JobOptions,
    JobState,
    Loaded,
    NewItem,
    NewSyncRule,
    Outcome,
    PausedAccount,
    QueueTotals,
    ReportRow,
    Runnable,
    StoreError,
    SucceededItem,
    SyncMember,
    SyncRule,
    Worker,
)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


#: backend name -> (module, class) implementing this contract
BACKENDS = {"sqlite": (".sqlite", "SqliteStore"), "postgres": (".postgres", "PostgresStore")}


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


class Loader(abc.ABC):
    """A submission's way in for many rows (`Store.loader`): rows are staged (an unindexed
    table private to the loader: cheap to append in any order), then each move takes every
    staged row into the job's items in one transaction, in ARN order (the (job, ARN) index
    filled in order, not at random places), the first row of a repeated ARN first (the rows
    of one move come from one source: by line, then as staged).

    A loader has two staging lanes where the store allows it (one connection each): `flush`
    starts moving one lane's rows and returns at once, and the next rows are staged in the
    other lane while the database moves them, so reading a file and writing it overlap.
    Moves run one at a time, in the order flushed. What was staged but not moved when the
    loader ends or its process dies is gone."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        self._lane = 0  # the lane rows are staged in
        self._moving: asyncio.Task[Loaded] | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._open()
        except BaseException:
            await self._close()  # what was opened before the failure
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._stop_moving()
        finally:
            await self._close()

    @abc.abstractmethod
    async def _open(self) -> None:
        """Make the lanes (connections, staging tables)."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Let go of whatever `_open` made, however far it got."""

    @property
    @abc.abstractmethod
    def staged(self) -> int:
        """Rows staged in the current lane since its last move."""

    @abc.abstractmethod
    async def stage(self, items: Sequence[NewItem]) -> None:
        """Stage rows in the current lane."""

    @abc.abstractmethod
    async def _move(self, lane: int, show: int) -> Loaded:
        """Move a lane's staged rows into the job (counted, workable if the job is), and name
        the first `show` rows that give an ARN the job holds with other tags."""

    async def flush(self, *, show: int = 20) -> Loaded | None:
        """Start moving the current lane's rows and stage into the other lane meanwhile; what
        the move flushed before this one did (None if none), once it has ended."""
        previous = await self.settle()
        lane = self._lane
        self._lane = (lane + 1) % self.lanes
        self._moving = asyncio.ensure_future(self._move(lane, show))
        if self.lanes == 1:  # no other lane to stage in: the move ends first
            await asyncio.wait([self._moving])
        return previous

    async def settle(self) -> Loaded | None:
        """Wait for the move in flight, if any: what it did (its error, raised here)."""
        moving, self._moving = self._moving, None
        return None if moving is None else await moving

    async def commit(self, *, show: int = 20) -> Loaded:
        """Move everything staged: the move in flight, then the current lane's rows."""
        before = await self.settle()
        now = await self._move(self._lane, show)
        return now if before is None else before.then(now, show)

    async def _stop_moving(self) -> None:
        """On the way out: a move in flight runs to its end (its result is not wanted)."""
        moving, self._moving = self._moving, None
        if moving is not None:
            await asyncio.wait([moving])
            if not moving.cancelled():
                moving.exception()  # retrieved: an error on the way out is not news


class Store(abc.ABC):
    """A durable queue of jobs and items. Open with `await Store.open(url_or_path)`."""

    #: where the store is, for messages (a path, or a URL without its password)
    location: str

    @staticmethod
    async def open(url: str | os.PathLike[str], *, create: bool = True) -> Store:
        """Open the store a URL names (postgresql://…) or a path (SQLite), applying pending
        migrations. `create=False`: refuse a SQLite file that does not exist yet (read-only
        commands must not create a store at a mistyped path)."""
        text = os.fspath(url)
        scheme = text.partition("://")[0] if "://" in text else ""
        if scheme and not is_postgres_url(text):
            raise StoreError(f"unsupported store URL {scheme}://…: the store is a SQLite file "
                             "(a path) or PostgreSQL (postgresql://HOST/DATABASE)")
        # The backends are looked up by name, not imported here: they import this contract,
        # and asyncpg is only loaded when a PostgreSQL URL is opened.
        module, cls = BACKENDS["postgres" if is_postgres_url(text) else "sqlite"]
        backend = getattr(importlib.import_module(module, __package__), cls)
        store: Store = await backend.connect(text, create=create)
        return store

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def path(self) -> str:
        return self.location

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise when the store does not answer."""

    # -- jobs --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_job(self, operation: str, *, options: JobOptions, name: str | None = None,
                         priority: int = 0, owner: str | None = None) -> int:
        """A new job in state `preparing`: invisible to runners until set `ready`."""

    @abc.abstractmethod
    async def get_job(self, job_id: int) -> Job | None: ...

    @abc.abstractmethod
    async def list_jobs(self) -> list[Job]: ...

    @abc.abstractmethod
    async def set_job_state(self, job_id: int, state: JobState,
                            reason: str | None = None) -> None:
        """Move a job; `reason` (why it failed or was cancelled) is kept until replaced, and
        cleared when the job becomes ready again."""

    @abc.abstractmethod
    async def set_job_priority(self, job_id: int, priority: int) -> None: ...

    @abc.abstractmethod
    async def set_job_rate(self, job_id: int, rate: float) -> None: ...

    @abc.abstractmethod
    async def merge_job_options(self, job_id: int, patch: dict[str, Any]) -> None:
        """Set top-level keys of a job's options, keeping the others (None removes a key)."""

    @abc.abstractmethod
    async def delete_job(self, job_id: int) -> None:
        """Remove a job and everything of it (a refused submission)."""

    @abc.abstractmethod
    async def start_loading(self, job_id: int, loader: str, loaded: int,
                            digests: str | None = None) -> bool:
        """A preparing job becomes workable while `loader` still reads its sources (`loaded`
        rows in, and `digests`: what they were, for a resubmit to check)."""

    @abc.abstractmethod
    async def continue_loading(self, job_id: int, loader: str, previous: str) -> bool:
        """`loader` takes over a job whose load by `previous` was interrupted (paused: ready
        again); False when another took it first or it is no longer paused."""

    @abc.abstractmethod
    async def pause_load(self, job_id: int, loader: str, reason: str) -> bool:
        """A load that stopped pauses its job, if the job is still ready or active."""

    @abc.abstractmethod
    async def note_loaded(self, job_id: int, loader: str, loaded: int | None,
                          digests: str | None = None) -> bool:
        """The loader's progress (rows committed and their chunks' digests; None: a sign of
        life only). False when the load is no longer this loader's."""

    @abc.abstractmethod
    async def finish_loading(self, job_id: int, loader: str, loaded: int) -> bool:
        """Every row of the job's sources is in: the job may complete."""

    @abc.abstractmethod
    async def reap_interrupted_loads(self, stale_seconds: float) -> list[int]:
        """Pause loading jobs whose loader is gone (dead on this host, or silent past
        `stale_seconds`): a half-read submission does not run until it is continued."""

    @abc.abstractmethod
    async def reap_abandoned_submissions(self) -> list[int]:
        """Delete jobs left in `preparing` by a submitting process that is gone."""

    # -- items -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_items(self, job_id: int, items: Sequence[NewItem]) -> int:
        """Insert items in one transaction; an ARN already in the job is ignored. Returns how
        many were added."""

    @abc.abstractmethod
    def loader(self, job_id: int) -> AbstractAsyncContextManager[Loader]:
        """A `Loader` for the job's items: what `add_items` does, for millions of rows."""

    @abc.abstractmethod
    async def shard(self, shard_id: int) -> Shard: ...

    @abc.abstractmethod
    async def tagset(self, tagset_id: int) -> str:
        """A tagset's canonical JSON body."""

    @abc.abstractmethod
    async def counts(self, job_id: int) -> Counts: ...

    @abc.abstractmethod
    async def shard_counts(self, job_id: int) -> dict[Shard | None, Counts]: ...

    @abc.abstractmethod
    async def route_counts(self, job_id: int) -> dict[tuple[Shard | None, str], Counts]:
        """Counts per (shard, route): `shard_counts` split by the items' stored route."""

    @abc.abstractmethod
    async def error_counts(self, job_id: int, limit: int = 5) -> list[tuple[str, int]]: ...

    @abc.abstractmethod
    async def error_example(self, job_id: int,
                            code: str) -> tuple[str, int | None, str] | None:
        """(arn, http status, message) of one failed or invalid item with this code."""

    @abc.abstractmethod
    def report_rows(self, job_id: int, *, unsuccessful_only: bool = False,
                    page: int = 5000) -> AsyncIterator[ReportRow]:
        """Every item of a job in id order, read a page at a time (flat memory)."""

    @abc.abstractmethod
    def succeeded_items(self, job_id: int,
                        page: int = 1000) -> AsyncIterator[list[SucceededItem]]:
        """Succeeded items of a job, a page at a time."""

    @abc.abstractmethod
    async def set_drift(self, results: Sequence[tuple[int, str | None]]) -> None:
        """Record what `verify` found per item: (item id, drift or None)."""

    @abc.abstractmethod
    async def skip_items(self, job_id: int, skipped: Sequence[tuple[str, str]]) -> int:
        """Mark pending items `skipped` with a reason: (arn, reason) pairs."""

    @abc.abstractmethod
    async def retry_failed(self, job_id: int, code: str | None = None) -> int:
        """Failed items (and those cancelled by the failure threshold) back to pending."""

    @abc.abstractmethod
    async def cancel_items(self, job_id: int, message: str, *, code: str = "Cancelled") -> int:
        """End a job's open items as `cancelled` with a code and message saying why."""

    @abc.abstractmethod
    async def last_failures(self, job_id: int, limit: int = 20) -> list[ReportRow]:
        """The `limit` failed or invalid items of a job that ended last, newest first, read
        through an index over failed items only (never a scan of the job)."""

    # -- throughput samples (the dashboard's chart) ------------------------------------------

    @abc.abstractmethod
    async def record_sample(self, job_id: int, at: float, done_total: int, *,
                            min_gap: float = 0.0) -> bool:
        """Keep a job's worked total (succeeded + skipped + failed) at time `at`. Skipped, and
        False returned, when the job has a sample less than `min_gap` seconds before `at`
        (several daemons sharing a store then write one sample an interval between them)."""

    @abc.abstractmethod
    async def samples(self, job_id: int, since: float = 0.0) -> list[tuple[float, int]]:
        """(at, done_total) of a job's samples taken at or after `since`, oldest first."""

    # -- work --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def runnable(self) -> list[Runnable]:
        """(job, shard, route) with pending work in jobs that may run, best priority first."""

    @abc.abstractmethod
    async def finished_jobs(self) -> list[int]:
        """Jobs in ready/active whose items are all terminal and whose discovery is over."""

    @abc.abstractmethod
    async def claim(self, owner: str, job_id: int, shard_id: int, limit: int, *,
                    lease_seconds: float, now: float | None = None,
                    route: str | None = None) -> list[Claimed]:
        """Lease up to `limit` due pending items of one job and shard (and route, unless
        None: any), grouped by tagset."""

    @abc.abstractmethod
    async def next_due(self, job_id: int, shard_id: int,
                       route: str | None = None) -> float | None: ...

    @abc.abstractmethod
    async def set_route(self, job_id: int, route: str) -> int:
        """Move a job's pending items to `route` (a job that takes the setting's route at its
        first run); returns how many moved. Counters follow."""

    @abc.abstractmethod
    async def record(self, owner: str, outcomes: Sequence[Outcome]) -> int:
        """Write outcomes of items this owner leased, in one transaction; an item whose lease
        was lost is left to its new holder. Returns rows written."""

    @abc.abstractmethod
    async def keep_before(self, owner: str, befores: Sequence[tuple[int, str]]) -> int:
        """Keep items' before-images, (item id, compact JSON), in one transaction, before their
        call is sent. Only items this owner leases, and only a first one: an earlier attempt's
        image is what the resource had before this job (a later read may see the job's own
        call, sent before a crash). Returns rows written."""

    @abc.abstractmethod
    async def first_rows(self, job_id: int, arns: Sequence[str]
                         ) -> dict[str, tuple[int | None, str | None]]:
        """For the job's items of these ARNs: (source line, tagset body) of the row kept (the
        first): what a duplicate row is compared with."""

    @abc.abstractmethod
    async def changed_items(self, job_id: int, after_id: int, limit: int) -> list[ChangedItem]:
        """Up to `limit` items of a job with id > after_id, in id order, that it changed: a
        non-empty before-image, and succeeded (or skipped after an earlier attempt landed)."""

    # -- owners (workers) and shard leases ---------------------------------------------------

    # A worker's session (PostgreSQL): its liveness, held by the database. SQLite runs on one
    # host, where the pid check is the liveness: these do nothing there.
    session_generation = 0  #: +1 each time the session is (re)made

    async def hold_session(self, owner: str) -> None:  # noqa: B027 (a default: nothing)
        """Tie this worker's liveness to a session of its own (before `register_owner`)."""

    def session_ok(self) -> bool:
        """Whether this worker's session is up (always, where there is none)."""
        return True

    async def check_session(self) -> bool:
        """Probe the session, making it again when it was lost; False while it cannot be."""
        return True

    @abc.abstractmethod
    async def register_owner(self, owner: str) -> None: ...

    @abc.abstractmethod
    async def heartbeat(self, owner: str) -> None: ...

    @abc.abstractmethod
    async def workers(self) -> list[Worker]: ...

    @abc.abstractmethod
    async def set_worker_rate(self, owner: str, job_id: int, rate: float) -> None:
        """This worker's recent rate on a job (items finished per second)."""

    @abc.abstractmethod
    async def fleet_rate(self, job_id: int, *, fresh_seconds: float,
                         stale_seconds: float) -> FleetRate:
        """The job's rate summed over the workers whose rate was written within
        `fresh_seconds` and whose heartbeat is fresher than `stale_seconds`."""

    async def session_alive(self, owner: str) -> bool | None:
        """Whether `owner`'s database session is up (None: no sessions here)."""
        return None

    @abc.abstractmethod
    async def release_owner(self, owner: str, *, forget: bool = True) -> int:
        """Return an owner's leased items (attempts untouched), discoveries and shard leases."""

    @abc.abstractmethod
    async def reap_dead_owners(self, *, stale_seconds: float, me: str | None = None) -> int:
        """Release leases of owners that are gone: a stale heartbeat wherever they ran, a
        dead pid on this host, or (PostgreSQL) an ended session."""

    @abc.abstractmethod
    async def acquire_shards(self, owner: str, wanted: Iterable[int], *,
                             lease_seconds: float) -> set[int]:
        """Take or renew shard leases for `wanted`; returns those this owner now holds (a
        shard another live owner holds is not taken)."""

    @abc.abstractmethod
    async def release_shards(self, owner: str, shard_ids: Iterable[int] | None = None) -> None:
        """Hand shards back (all of this owner's when None)."""

    @abc.abstractmethod
    async def shard_holders(self) -> dict[int, tuple[str, float]]:
        """shard id → (owner, lease expiry) of every live shard lease."""

    # -- discovery ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_discoveries(self, job_id: int,
                                 pairs: Iterable[tuple[str, str, str]]) -> None:
        """One walk per (partition, account, region)."""

    @abc.abstractmethod
    async def claim_discovery(self, owner: str, job_ids: set[int] | None) -> Discovery | None: ...

    @abc.abstractmethod
    async def save_discovery_page(self, d: Discovery, owner: str, token: str | None,
                                  found: int) -> None: ...

    @abc.abstractmethod
    async def restart_discovery(self, d: Discovery) -> None: ...

    @abc.abstractmethod
    async def finish_discovery(self, d: Discovery, state: str,
                               error: str | None = None) -> None: ...

    @abc.abstractmethod
    async def job_discoveries(self, job_id: int) -> list[Discovery]: ...

    # -- accounts paused after a refused role (--on-access-error pause) ---------------------

    @abc.abstractmethod
    async def pause_account(self, job_id: int, account: str, reason: str) -> bool:
        """True when this call paused it (False: it already was)."""

    @abc.abstractmethod
    async def paused_accounts(self, job_id: int) -> list[tuple[str, str]]: ...

    @abc.abstractmethod
    async def clear_paused_accounts(self, job_id: int) -> int: ...

    # -- tag-sync rules ----------------------------------------------------------------------

    @abc.abstractmethod
    async def add_sync_rule(self, rule: NewSyncRule) -> SyncRule:
        """Raise KeyError when a rule of that name exists."""

    @abc.abstractmethod
    async def get_sync_rule(self, name: str) -> SyncRule | None: ...

    @abc.abstractmethod
    async def list_sync_rules(self) -> list[SyncRule]: ...

    @abc.abstractmethod
    async def remove_sync_rule(self, rule: SyncRule) -> None: ...

    @abc.abstractmethod
    async def due_sync_rules(self, now: float) -> list[str]: ...

    @abc.abstractmethod
    async def claim_sync_rule(self, name: str, *, force: bool = False) -> SyncRule | None:
        """Take the rule's next evaluation (moves next_run_at one interval on); None when it
        is not due or another process took it first. `force`: due or not."""

    @abc.abstractmethod
    async def sync_member_arns(self, rule_id: int) -> list[str]: ...

    @abc.abstractmethod
    async def update_sync_members(self, rule: SyncRule, seen: Sequence[str],
                                  gone: Sequence[str]) -> None: ...

    @abc.abstractmethod
    async def finish_sync_rule(self, rule: SyncRule, status: str, error: str | None,
                               added: int, removed: int, jobs: Sequence[int]) -> None: ...

    # -- metrics -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def totals(self) -> QueueTotals: ...

    # -- moving a store (bulktag store copy) -------------------------------------------------
    # Export reads pages by id (flat memory); import writes rows with the ids they had, so
    # `bulktag status 7` names the same job after the move. Imports expect a destination
    # without jobs or sync rules (the caller checks); an id already taken raises StoreError.

    @abc.abstractmethod
    async def lease_holders(self) -> dict[str, int]:
        """owner → how many items it holds leased right now (expired leases included)."""

    @abc.abstractmethod
    async def import_job(self, job: Job) -> None:
        """Insert a job with its id and every column (no preparing owner)."""

    @abc.abstractmethod
    async def export_items(self, after_id: int, limit: int,
                           job_id: int | None = None) -> list[ItemRecord]:
        """Up to `limit` items with id > after_id in id order (of one job, or of all)."""

    @abc.abstractmethod
    async def import_items(self, records: Sequence[ItemRecord]) -> int:
        """Insert items with their ids and every column in one transaction, creating their
        shards and tagsets as needed and adding them to counts and error_counts."""

    @abc.abstractmethod
    async def import_discoveries(self, records: Sequence[Discovery]) -> None:
        """Insert discovery walks with their ids (none running: owner is not copied)."""

    @abc.abstractmethod
    async def export_paused_accounts(self, job_id: int) -> list[PausedAccount]: ...

    @abc.abstractmethod
    async def import_paused_accounts(self, job_id: int,
                                     accounts: Sequence[PausedAccount]) -> None: ...

    @abc.abstractmethod
    async def import_sync_rule(self, rule: SyncRule) -> None:
        """Insert a rule with its id and every column (`list_sync_rules` exports them)."""

    @abc.abstractmethod
    async def export_sync_members(self, rule_id: int, after_arn: str,
                                  limit: int) -> list[SyncMember]:
        """Up to `limit` members of a rule with ARN > after_arn, in ARN order."""

    @abc.abstractmethod
    async def import_sync_members(self, rule_id: int, members: Sequence[SyncMember]) -> None: ...

    @abc.abstractmethod
    async def finish_import(self) -> None:
        """Move id generators past the highest imported ids (PostgreSQL identities; SQLite
        takes max(id) + 1 by itself), so jobs made later never collide."""
