"""Moving a store: `bulktag store copy SRC DST` copies everything a store holds to another of
either kind (SQLite → PostgreSQL when a migration outgrows its laptop; back for an archive).

Design notes:

- Only through the store contract (`Store.export_*`/`import_*`): this module sees no SQL and
  no connection, so any pair of backends works, the same kind included.
- What moves: jobs (every column, ids kept, so `bulktag status 7` names the same job after the
  move), their items (every column: state, attempts, next_attempt_at, error code/status/
  message, finished_at, line, verified_at/drift; ids kept), discovery walks, paused accounts,
  tag-sync rules with their members. Shards and tagsets travel by value with each item (ids
  are each store's own) and are created on the destination as needed. Counters are not copied
  but rebuilt by the destination as items are imported, then checked against the source's: a
  copy whose counts differ is undone, not left half right. Not copied: workers, leases and
  shard leases (they belong to processes working the source), and jobs still `preparing`
  (a submission in progress; listed in the result).
- Memory is flat in the size of the store: items move in pages of `PAGE` by id over the whole
  items table (one index range scan, whatever the number of jobs), sync members in pages by
  ARN. Jobs, rules and discovery walks are held whole (thousands, not millions).
- The destination must hold no jobs and no sync rules; otherwise the copy is refused before
  anything is written (`CopyRefused`, exit 2). Stray shards or tagsets there do no harm.
- The source must not be worked while it is copied. Leases of owners that are gone (dead pid
  on this host, heartbeat older than `owner_stale_seconds`, or lease expired) are released
  first, as the next worker would (the result says how many: this is the one write to the
  source). A live worker (fresh heartbeat), or items still leased, refuse the copy: stop the
  daemons and runs (`bulktag workers` lists them) and copy again. A worker that starts during
  the copy shows up as a counts mismatch at the end, and the copy is undone.
- A copy that fails or is interrupted deletes what it imported (jobs with their items, rules),
  so the destination can take the copy again; id generators on PostgreSQL are moved past the
  copied ids so that new jobs never collide.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bulktag.errors import BulktagError
from bulktag.store import JobState, Store, StoreError, SyncRule, is_postgres_url

PAGE = 10_000  # items (and sync members) per page read from the source and written at once


class CopyRefused(BulktagError):
    """The copy cannot start: the destination is not empty, the source is being worked, or
    source and destination are the same store. Nothing was copied."""


@dataclass(frozen=True, slots=True)
class CopyProgress:
    """Where a copy is, for a progress line."""

    phase: str  # jobs | items | sync | check | done
    items_done: int
    items_total: int
    jobs: int
    seconds: float


@dataclass
class CopyResult:
    source: str
    destination: str
    jobs: int = 0
    items: int = 0
    discoveries: int = 0
    paused_accounts: int = 0
    sync_rules: int = 0
    sync_members: int = 0
    released_leases: int = 0  #: items leased by gone owners, returned to pending on the source
    skipped_preparing: list[int] = field(default_factory=list)  #: jobs still being submitted
    job_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


ProgressFn = Callable[[CopyProgress], None]


def _same_store(src: str, dst: str) -> bool:
    if is_postgres_url(src) or is_postgres_url(dst):
        return src.rstrip("/") == dst.rstrip("/")
    return os.path.realpath(src) == os.path.realpath(dst)


async def copy_store(src_url: str, dst_url: str, *, progress: ProgressFn | None = None,
                     stale_seconds: float = 90.0, page: int = PAGE) -> CopyResult:
    """Copy the store at src_url into the (empty) store at dst_url; see the module notes.
    Raises CopyRefused before writing anything when the copy cannot start, StoreError when a
    store cannot be opened or the copy fails (what it imported is then removed again)."""
    if _same_store(src_url, dst_url):
        raise CopyRefused(f"{src_url} is both the source and the destination")
    async with (await Store.open(src_url, create=False) as src,
                await Store.open(dst_url) as dst):
        return await copy_between(src, dst, progress=progress, stale_seconds=stale_seconds,
                                  page=page)


async def copy_between(src: Store, dst: Store, *, progress: ProgressFn | None = None,
                       stale_seconds: float = 90.0, page: int = PAGE) -> CopyResult:
    """copy_store on two open stores."""
    started = time.monotonic()
    result = CopyResult(src.location, dst.location)

    held = [j.id for j in await dst.list_jobs()]
    rules_there = [r.name for r in await dst.list_sync_rules()]
    if held or rules_there:
        what = (f"{len(held)} jobs ({_ids(held)})" if held else "") + \
            (" and " if held and rules_there else "") + \
            (f"{len(rules_there)} sync rules ({', '.join(rules_there[:5])})" if rules_there
             else "")
        raise CopyRefused(f"the destination {dst.location} already holds {what}; copy into a "
                          "new, empty store")

    result.released_leases = await src.reap_dead_owners(stale_seconds=stale_seconds)
    now = time.time()
    live = [w for w in await src.workers() if w.heartbeat_at >= now - stale_seconds]
    holders = await src.lease_holders()
    if live or holders:
        names = sorted({w.owner for w in live} | set(holders))
        detail = ", ".join(f"{o} ({holders.get(o, 0)} items leased)" for o in names[:5])
        raise CopyRefused(
            f"the source {src.location} is being worked by {len(names)} live worker(s): "
            f"{detail}; stop them (`bulktag workers` lists them; a daemon drains on SIGTERM) "
            "and copy again")

    jobs = []
    for job in await src.list_jobs():
        if job.state == JobState.PREPARING:
            result.skipped_preparing.append(job.id)
        else:
            jobs.append(job)
    walks = {job.id: await src.job_discoveries(job.id) for job in jobs}
    running = [d for ds in walks.values() for d in ds if d.state == "running"]
    if running:
        raise CopyRefused(f"the source {src.location} has {len(running)} discovery walks "
                          f"running (job {running[0].job_id}); stop the workers and copy again")
    total = 0
    for job in jobs:
        total += (await src.counts(job.id)).total

    def report(phase: str) -> None:
        if progress is not None:
            progress(CopyProgress(phase, result.items, total, result.jobs,
                                  time.monotonic() - started))

    imported_rules: list[SyncRule] = []
    try:
        report("jobs")
        for job in jobs:
            await dst.import_job(job)
            result.jobs += 1
            result.job_ids.append(job.id)
            await dst.import_discoveries(walks[job.id])
            result.discoveries += len(walks[job.id])
            paused = await src.export_paused_accounts(job.id)
            await dst.import_paused_accounts(job.id, paused)
            result.paused_accounts += len(paused)

        wanted = set(result.job_ids)
        after = 0
        while True:
            records = await src.export_items(after, page)
            if not records:
                break
            after = records[-1].id
            result.items += await dst.import_items([r for r in records if r.job_id in wanted])
            report("items")
            if len(records) < page:
                break

        report("sync")
        for rule in await src.list_sync_rules():
            await dst.import_sync_rule(rule)
            imported_rules.append(rule)
            result.sync_rules += 1
            last = ""
            while True:
                members = await src.export_sync_members(rule.id, last, page)
                if not members:
                    break
                await dst.import_sync_members(rule.id, members)
                result.sync_members += len(members)
                last = members[-1].arn
                if len(members) < page:
                    break

        await dst.finish_import()
        report("check")
        await _check(src, dst, result.job_ids)
    except BaseException:
        await _undo(dst, result.job_ids, imported_rules)
        raise
    result.seconds = time.monotonic() - started
    report("done")
    return result


async def _check(src: Store, dst: Store, job_ids: list[int]) -> None:
    """The destination's rebuilt counters equal the source's, job by job."""
    for job_id in job_ids:
        a, b = await src.counts(job_id), await dst.counts(job_id)
        if a.by_state != b.by_state:
            raise StoreError(
                f"job {job_id} counts differ after the copy (source {a.by_state}, destination "
                f"{b.by_state}): did a worker run on the source meanwhile? The copy was undone")
        ea = await src.error_counts(job_id, 1_000_000)
        eb = await dst.error_counts(job_id, 1_000_000)
        if sorted(ea) != sorted(eb):
            raise StoreError(f"job {job_id} error counts differ after the copy (source {ea}, "
                             f"destination {eb}); the copy was undone")


async def _undo(dst: Store, job_ids: list[int], rules: list[SyncRule]) -> None:
    """Best effort: remove what a failed copy imported, so the destination can take it again."""
    for job_id in job_ids:
        with contextlib.suppress(Exception):
            await dst.delete_job(job_id)
    for rule in rules:
        with contextlib.suppress(Exception):
            await dst.remove_sync_rule(rule)


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:5]))
    return shown + (", …" if len(ids) > 5 else "")
