"""From sources to a job's items: parse, validate, dedupe, group, enqueue.

Sources are read and checked in a worker thread a chunk at a time (the event loop never reads a
file), and written to the store in one transaction per chunk while the job is `preparing`, so
runners do not see it yet. A bad row refuses the whole submission (the job and its items are
deleted, and the error names source, line and reason) unless `skip_invalid` is set, in which
case the row becomes an `invalid` item with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import anyio
import anyio.to_thread
import structlog

from bulktag.arn import ROUTE_TAGGING, Arn, ArnError, Shard, arn_parts, parse_arn, route_of
from bulktag.errors import BulktagError
from bulktag.policy.tags import keys_problem, tagset_problem
from bulktag.sources import Row, SourceError, open_rows, read_chunks, source_name
from bulktag.store import (
    Job,
    JobOptions,
    JobState,
    Loaded,
    NewItem,
    Store,
    new_owner_token,
    tagset_body,
)

#: rows read and checked per step (and staged per transaction): small enough for flat memory
CHUNK = 50_000
#: rows moved from staging into the job per commit: the first commit comes early (a job's
#: first items are workable within moments of reading its file), then each is twice the last
#: up to COMMIT_ROWS, large enough that a random-order file's inserts into the (job, ARN)
#: index do not rewrite the same pages commit after commit: each move of a random-order file
#: touches most of the job's index, so 10M rows took 106 s in moves of up to 1M, 92-98 s in
#: 2M and 80 s in 4M (SQLite; its sorter spills past its cache, so memory stays flat). A move
#: holds the store's write lock for its length (10-15 s for 4M rows on SQLite).
FIRST_COMMIT = CHUNK + 1  # a file of exactly one chunk is all or nothing (STREAM_AFTER)
COMMIT_ROWS = 4_000_000
#: a source longer than this many rows makes its job workable once they are in, while the
#: rest is read (shorter ones are all or nothing)
STREAM_AFTER = CHUNK
LOAD_BEAT = 5.0  #: seconds between a loader's signs of life while it reads
READ_AHEAD = 2  #: chunks parsed ahead of the one being written
MAX_PROBLEMS_SHOWN = 20

log = structlog.get_logger("bulktag.submit")


@dataclass(frozen=True)
class Request:
    """What a user asked for: the operation and the tags (tag) or keys (untag) for every ARN."""

    operation: str  # "tag" | "untag"
    tags: dict[str, str] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    skip_invalid: bool = False
    #: the credentials' account (the pre-flight STS answer; "" when not asked): an ARN that
    #: carries no account (an S3 bucket, an EC2 snapshot) is sharded with that account's
    caller_account: str = ""
    #: a transform job: its operations as the tagset body (`transforms.to_json`)
    transform: str | None = None


@dataclass(frozen=True)
class Problem:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.reason}"


#: (source, chunk of items) -> the problems of rows an enforced tag policy refuses
PolicyCheck = Callable[[str, list[NewItem]], Awaitable[list["Problem"]]]


class SubmissionRefused(BulktagError):
    """Bad rows in the input: nothing was enqueued."""

    @classmethod
    def policy(cls, problems: list[Problem], total: int) -> SubmissionRefused:
        """Rows whose tags an account's tag policy enforces against: AWS would refuse them."""
        shown = "\n".join(f"  {p}" for p in problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        return cls(problems, total, f"{total} row(s) carry tags their account's tag policy "
                   "refuses on that resource type; nothing was enqueued (fix the tags, or "
                   f"--allow-noncompliant to send them anyway):\n{shown}{more}")

    @classmethod
    def conflicts(cls, problems: list[Problem], total: int) -> SubmissionRefused:
        """Rows giving an ARN again with other tags (--skip-invalid does not take these)."""
        shown = "\n".join(f"  {p}" for p in problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        return cls(problems, total, f"{total} row(s) give a resource again with other tags; "
                   f"nothing was enqueued (keep one row per resource):\n{shown}{more}")

    def add_note_for_job(self, job_id: int, result: Submitted) -> None:
        """Say what a refusal after the job became workable leaves: the job, paused."""
        self.args = (str(self).replace("nothing was enqueued", "nothing more was enqueued") +
                     "\n" + paused_note(job_id, result, "fix the rows"),)

    def __init__(self, problems: list[Problem], total: int, message: str | None = None) -> None:
        self.problems = problems
        self.total = total
        if message is not None:
            super().__init__(message)
            return
        shown = "\n".join(f"  {p}" for p in problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(
            f"{total} invalid row(s); nothing was enqueued "
            f"(fix them, or pass --skip-invalid to record them as invalid items):\n{shown}{more}"
        )


@dataclass
class Submitted:
    job_id: int
    rows: int = 0
    added: int = 0
    invalid: int = 0
    #: rows an interrupted earlier run of the same command had put in (a continued load)
    continued_after: int = 0
    duplicates_skipped: int = 0

    @property
    def duplicates(self) -> int:
        return self.rows - self.added - self.duplicates_skipped

    @property
    def loaded_note(self) -> str:
        return f"the job holds {self.added + self.continued_after:,} items from the rows before"


def paused_note(job_id: int, result: Submitted, fix: str) -> str:
    """What a load stopped after its job became workable leaves: the job, paused."""
    return (f"job {job_id} was already running while its file was read ({result.loaded_note}, "
            f"and some may be tagged); it is paused: {fix} and run the same command again to "
            f"continue it after them, or `bulktag cancel {job_id}` (and `bulktag undo "
            f"{job_id}`)")


class LoadStopped(BulktagError):
    """The job was cancelled or ended while its sources were still being read."""

    def __init__(self, job_id: int, result: Submitted) -> None:
        self.result = result
        super().__init__(f"job {job_id} was cancelled or ended while its sources were read; "
                         f"stopped after {result.rows:,} rows (nothing more is added)")


def request_problem(request: Request) -> str | None:
    """A fault in the command line's own tags or keys (checked before reading any source)."""
    if request.transform is not None:
        return None  # checked as its operations were parsed
    if request.operation == "tag":
        return tagset_problem(request.tags) if request.tags else None
    return keys_problem(list(request.keys)) if request.keys else None


def _request_tagset(request: Request) -> tuple[str | None, str | None]:
    """(problem, tagset body) of a row that carries no tags of its own: the same for every such
    row of a request, so it is worked out once per submission rather than once per row."""
    if request.transform is not None:
        return None, request.transform
    if request.operation == "tag":
        if not request.tags:
            return "no tags to apply (give --tag or tag columns)", None
        return tagset_problem(request.tags), tagset_body(request.tags, None)
    keys = list(request.keys)
    if not keys:
        return "no tag keys to remove (give --key)", None
    return keys_problem(sorted(set(keys))), tagset_body(None, keys)


def shard_of(arn: Arn, caller_account: str) -> Shard:
    """The real (account, region) an ARN's calls go to: its own, or for an ARN that carries no
    account the caller's (one shard, one quota, with the caller's other resources there)."""
    shard = arn.shard
    if not shard.account and caller_account:
        return Shard(shard.partition, caller_account, shard.region)
    return shard


def item_for_row(
    row: Row,
    request: Request,
    fixed: tuple[str | None, str | None] | None = None,
    shards: dict[tuple[str, str, str], Shard] | None = None,
) -> NewItem:
    """The item a row becomes: with its shard and tagset, or with the reason it is invalid.

    `fixed` is `_request_tagset(request)` and `shards` a cache of Shard objects, both optional:
    a submission passes them so rows without tags of their own cost no tag checks or JSON.
    """
    if row.problem is not None:
        return NewItem(row.arn or f"<line {row.line}>", None, None, row.line, row.problem)
    # The common case reads the fields with one pattern and makes no Arn object;
    # parse_arn says what is wrong, or takes a rare shape the pattern does not.
    parts = arn_parts(row.arn)
    if parts is None:
        try:
            arn = parse_arn(row.arn)
        except ArnError as exc:
            return NewItem(row.arn, None, None, row.line, f"malformed ARN: {exc}")
        parts = (arn.partition, arn.service, arn.region, arn.account, arn.resource)
    if shards is None:
        shard = shard_of(Arn(row.arn, *parts), request.caller_account)
    else:
        key = (parts[0], parts[3], parts[2])  # partition, account, region
        known = shards.get(key)
        if known is None:
            known = shards[key] = shard_of(Arn(row.arn, *parts), request.caller_account)
        shard = known
    if row.tags and request.transform is not None:
        return NewItem(row.arn, None, None, row.line,
                       "a transform takes no per-row tags (its operations apply to every row)")
    if not row.tags:
        problem, body = _request_tagset(request) if fixed is None else fixed
        if body is None or problem is not None:
            return NewItem(row.arn, None, None, row.line, problem)
        return NewItem(row.arn, shard, body, row.line)
    if request.operation == "tag":
        tags = {**request.tags, **row.tags} if row.tags else request.tags
        if not tags:
            return NewItem(row.arn, None, None, row.line,
                           "no tags to apply (give --tag or tag columns)")
        problem = tagset_problem(tags)
        body = tagset_body(tags, None)
    else:
        keys = list(request.keys) + list(row.tags or ())
        if not keys:
            return NewItem(row.arn, None, None, row.line, "no tag keys to remove (give --key)")
        problem = keys_problem(sorted(set(keys)))
        body = tagset_body(None, keys)
    if problem is not None:
        return NewItem(row.arn, None, None, row.line, problem)
    return NewItem(row.arn, shard, body, row.line)


def conflict_reason(arn: str, first_line: int | None, first: str, again: str | None) -> str:
    where = f"line {first_line}" if first_line else "an earlier row"
    return (f"{arn} is given again with other tags than on {where}: {first} there, "
            f"{again} here (one row per resource, or the same tags on every row)")


def nothing_to_apply(request: Request, problem: str | None) -> bool:
    """A row refused only because neither the command line nor the row gives tags/keys."""
    return problem is not None and ("no tags to apply" in problem
                                    or "no tag keys to remove" in problem)


def nothing_to_apply_refusal(request: Request, rows: int) -> SubmissionRefused:
    """Every row lacks tags (or keys) and the command line gives none: one usage error."""
    if request.operation == "tag":
        what = "no tags to apply: give --tag KEY=VALUE (or per-row tag columns in a CSV/JSONL "
        what += "source)"
    else:
        what = "no tag keys to remove: give --key KEY (or per-row keys in a CSV/JSONL source)"
    return SubmissionRefused([], rows, f"{what}; nothing was enqueued")


async def policy_refusals(sources: Sequence[str], request: Request, fmt: str | None,
                          check: PolicyCheck, route: str | None = None) -> None:
    """The policy check of a submission without the submission (the plan): raises
    SubmissionRefused.policy naming the rows an enforced tag policy refuses."""
    problems: list[Problem] = []
    total = 0
    for spec in sources:
        chunks = _item_chunks(spec, request, fmt, None, route)
        pull = functools.partial(next, chunks, None)
        while (items := await anyio.to_thread.run_sync(pull)) is not None:
            for problem in await check(spec, items):
                total += 1
                if len(problems) < MAX_PROBLEMS_SHOWN:
                    problems.append(problem)
    if total:
        raise SubmissionRefused.policy(problems, total)


def _item_chunks(
    spec: str, request: Request, fmt: str | None, stdin: BinaryIO | None,
    route: str | None = None,
) -> Iterator[list[NewItem]]:
    """Items of a source a chunk at a time, each with its route (`route`: the job's choice,
    auto or tagging-api), decided here once and stored with the item."""
    fixed = _request_tagset(request)
    shards: dict[tuple[str, str, str], Shard] = {}
    name = source_name(spec)
    by_arn = route != ROUTE_TAGGING
    for rows in read_chunks(open_rows(spec, fmt=fmt, stdin=stdin), CHUNK):
        items = [item_for_row(r, request, fixed, shards) for r in rows]
        if by_arn:
            for it in items:
                if it.problem is None:
                    it.route = route_of(it.arn, route)
        if request.skip_invalid:
            # Kept as invalid items: their message carries where the row came from.
            for it in items:
                if it.problem is not None:
                    it.problem = f"{name}:{it.line or 0}: {it.problem}"
        yield items


def _chunk_digest(items: list[NewItem]) -> str:
    """What a chunk of rows asks (ARNs, and tags or problems, in order), in 16 hex digits."""
    h = hashlib.blake2b(digest_size=8)
    h.update("\n".join([it.arn for it in items]).encode())
    h.update("\n".join([it.tagset or it.problem or "" for it in items]).encode())
    return h.hexdigest()


def _digests_through(digests: list[tuple[int, str]], rows: int) -> str:
    """The digests of the chunks read up to `rows` (a move's end is always a chunk's)."""
    return ",".join(d for through, d in digests if through <= rows)


def _take(loaded: Loaded | None, spec: str, result: Submitted,
          clashes: list[Problem]) -> int:
    """Count what a move added; note the conflicting repeats it found: how many."""
    if loaded is None:
        return 0
    result.added += loaded.added
    for c in loaded.conflicts[: MAX_PROBLEMS_SHOWN - len(clashes)]:
        clashes.append(Problem(source_name(spec), c.line or 0, conflict_reason(
            c.arn, c.first_line, c.first, c.again)))
    return loaded.n_conflicts


class _ReadAhead:
    """A source's chunks, read and parsed in a thread of its own up to `ahead` chunks before
    the writer takes them, in order: the thread keeps parsing while a commit runs (the
    database holds no GIL then), and memory stays flat. A read error is raised at its place.
    The thread is a daemon: a reader blocked on a pipe or a terminal that never sends more
    neither holds up `close` nor the process's exit."""

    def __init__(self, chunks: Iterator[list[NewItem]], ahead: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[list[NewItem] | BaseException | None] = asyncio.Queue()
        self._room = threading.Semaphore(ahead)
        self._stop = threading.Event()
        threading.Thread(target=self._fill, args=(chunks,), daemon=True,
                         name="bulktag-source-reader").start()

    def _give(self, got: list[NewItem] | BaseException | None) -> None:
        if not self._stop.is_set():
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is reading
                self._loop.call_soon_threadsafe(self._queue.put_nowait, got)

    def _fill(self, chunks: Iterator[list[NewItem]]) -> None:
        try:
            for items in chunks:
                self._room.acquire()
                if self._stop.is_set():
                    return
                self._give(items)
        except BaseException as exc:  # handed to the reader, raised there
            self._give(exc)
        else:
            self._give(None)

    async def next(self) -> list[NewItem] | None:
        got = await self._queue.get()
        if isinstance(got, BaseException):
            raise got
        if got is not None:
            self._room.release()
        return got

    async def close(self) -> None:
        """Stop reading: the thread ends at its next chunk (or with the process)."""
        self._stop.set()
        self._room.release()


async def interrupted_load(store: Store, operation: str, options: JobOptions) -> Job | None:
    """The job an earlier run of the same command was loading when it stopped (paused by
    `reap_interrupted_loads`): a resubmit continues it instead of starting again."""
    for job in reversed(await store.list_jobs()):
        if job.loading is not None and job.state == JobState.PAUSED and \
                job.operation == operation and job.options == options:
            return job
    return None


async def _beat(store: Store, job_id: int, loader: str) -> None:
    """The loader's sign of life while it waits on its source (a pipe may pause for long)."""
    while True:
        await asyncio.sleep(LOAD_BEAT)
        await store.note_loaded(job_id, loader, None)


async def submit(
    store: Store,
    sources: list[str],
    request: Request,
    *,
    name: str | None = None,
    priority: int = 0,
    options: JobOptions | None = None,
    owner: str | None = None,
    fmt: str | None = None,
    stdin: BinaryIO | None = None,
    policy_check: PolicyCheck | None = None,
    on_workable: Callable[[int], None] | None = None,
) -> Submitted:
    """Create a job from sources. Raises SubmissionRefused on bad rows, and on rows whose tags
    an account's tag policy enforces against (`policy_check`).

    Sources of up to STREAM_AFTER rows are all or nothing: the job becomes workable once every
    row is in, and a refusal keeps nothing. A longer source's job becomes workable after its
    first STREAM_AFTER rows (`on_workable(job_id)` is called then) and takes the rest as it is
    read: a refusal after that pauses the job, keeping what it holds. A submission that stops
    (refused, interrupted, killed) after that point is continued by the same command run
    again, after the rows already in (`interrupted_load`).
    """
    job_options = (options or JobOptions()).with_(
        tags=request.tags, keys=list(request.keys), skip_invalid=request.skip_invalid,
        sources=list(sources))
    token = owner or new_owner_token()
    earlier = await interrupted_load(store, request.operation, job_options)
    beat: asyncio.Task[None] | None = None
    if earlier is not None and earlier.loading is not None and \
            await store.continue_loading(earlier.id, token, earlier.loading):
        job_id, skip, streaming = earlier.id, earlier.loaded, True
        # none recorded (a load paused by an older bulktag): every chunk is read again
        known = earlier.loaded_digests.split(",") if earlier.loaded_digests else []
        beat = asyncio.create_task(_beat(store, job_id, token))
        log.info("load_continued", job=job_id, rows_in=skip)
        if on_workable is not None:
            on_workable(job_id)
    else:
        job_id = await store.create_job(
            request.operation, options=job_options, name=name, priority=priority, owner=token)
        skip, streaming, known = 0, False, []
    result = Submitted(job_id, continued_after=skip)
    #: (rows read through it, its digest) of every chunk read, over all sources in order
    digests: list[tuple[int, str]] = []
    problems: list[Problem] = []
    n_problems = 0
    clashes: list[Problem] = []  # rows giving an ARN again with other tags
    n_conflicts = 0
    refusals: list[Problem] = []  # rows an enforced tag policy refuses
    n_refused = 0
    untaggable = 0  # rows with nothing to apply: no --tag/--key and no tags of their own
    try:
        async with store.loader(job_id) as loader:
            for spec in sources:
                target = FIRST_COMMIT
                flushed_rows = result.rows  # rows read when the move in flight was flushed
                chunks = _item_chunks(spec, request, fmt, stdin, job_options.route)
                ahead = _ReadAhead(chunks, READ_AHEAD)
                try:
                    while (items := await ahead.next()) is not None:
                        result.rows += len(items)
                        digest = _chunk_digest(items)
                        digests.append((result.rows, digest))
                        if skip:  # a continued load: rows in already, if the file is the same
                            if len(digests) <= len(known) and known[len(digests) - 1] == digest \
                                    and len(items) <= skip:
                                skip -= len(items)
                                result.duplicates_skipped += len(items)
                                continue
                            # Edited since (or not recorded): read again from here, the rows
                            # in already are repeats; skipping by count would miss rows.
                            log.warning("load_source_changed", job=job_id,
                                        from_row=result.rows - len(items) + 1,
                                        recorded=bool(known),
                                        hint="rows from here on are read again; those in "
                                             "already are repeats")
                            skip = 0
                        bad = [it for it in items if it.problem is not None]
                        untaggable += sum(1 for it in bad
                                          if nothing_to_apply(request, it.problem))
                        result.invalid += len(bad)
                        if bad and not request.skip_invalid:
                            n_problems += len(bad)
                            for it in bad[: MAX_PROBLEMS_SHOWN - len(problems)]:
                                problems.append(
                                    Problem(source_name(spec), it.line or 0, it.problem or "")
                                )
                        if n_problems or n_conflicts or n_refused:
                            continue  # keep reading to report every bad row, but keep nothing
                        if policy_check is not None:
                            for problem in await policy_check(spec, items):
                                n_refused += 1
                                if len(refusals) < MAX_PROBLEMS_SHOWN:
                                    refusals.append(problem)
                            if n_refused:
                                continue
                        await loader.stage(items)
                        if loader.staged < target:
                            continue
                        # Moved behind the next rows' staging; what the move before did is
                        # known now. Before the job is workable, the first move is awaited:
                        # the job becomes workable as soon as it can.
                        done = await loader.flush(show=MAX_PROBLEMS_SHOWN)
                        done_rows, flushed_rows = flushed_rows, result.rows
                        if not streaming:
                            done, done_rows = await loader.settle(), flushed_rows
                        target = min(target * 2, COMMIT_ROWS)
                        n_conflicts += _take(done, spec, result, clashes)
                        if done is None or n_conflicts:
                            continue
                        through = _digests_through(digests, done_rows)
                        if streaming:
                            if not await store.note_loaded(job_id, token, done_rows, through):
                                raise LoadStopped(job_id, result)
                        elif done_rows > STREAM_AFTER and \
                                await store.start_loading(job_id, token, done_rows, through):
                            streaming = True
                            beat = asyncio.create_task(_beat(store, job_id, token))
                            log.info("job_workable_while_loading", job=job_id,
                                     rows_in=done_rows)
                            if on_workable is not None:
                                on_workable(job_id)
                    # the move in flight (its conflicts are this source's), then the rest
                    n_conflicts += _take(await loader.settle(), spec, result, clashes)
                    if not (n_problems or n_conflicts or n_refused):
                        n_conflicts += _take(await loader.commit(show=MAX_PROBLEMS_SHOWN),
                                             spec, result, clashes)
                        if streaming and not n_conflicts and not await store.note_loaded(
                                job_id, token, result.rows,
                                _digests_through(digests, result.rows)):
                            raise LoadStopped(job_id, result)
                finally:
                    await ahead.close()
        if result.rows and untaggable == result.rows:
            raise nothing_to_apply_refusal(request, untaggable)
        if n_problems:
            raise SubmissionRefused(problems, n_problems)
        if n_conflicts:
            raise SubmissionRefused.conflicts(clashes, n_conflicts)
        if n_refused:
            raise SubmissionRefused.policy(refusals, n_refused)
        if result.rows == 0:
            # Not a bad row: --skip-invalid cannot help, so the message does not suggest it.
            empty = Problem(", ".join(source_name(s) for s in sources), 0, "no ARNs found")
            raise SubmissionRefused([empty], 1, f"{empty}; nothing was enqueued")
        if streaming:
            if not await store.finish_loading(job_id, token, result.rows):
                raise LoadStopped(job_id, result)
        else:
            await store.set_job_state(job_id, JobState.READY)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            if beat is not None:
                beat.cancel()
            if not streaming:
                await store.delete_job(job_id)
            elif not isinstance(exc, LoadStopped):
                # What is in stays (it may be tagged already); nothing more of the job runs
                # until the same command, run again, continues it after the rows in.
                why = "refused rows" if isinstance(exc, SubmissionRefused) else "interrupted"
                # only a job still running: one cancelled or failed meanwhile stays ended
                await store.pause_load(job_id, token, (
                    f"its sources were not fully read ({why}); {result.loaded_note}; run the "
                    "same command again to continue this job, or cancel it"))
                if isinstance(exc, SubmissionRefused):
                    exc.add_note_for_job(job_id, result)
                elif isinstance(exc, SourceError):
                    exc.job_note = paused_note(job_id, result, "fix the source")
        raise
    finally:
        if beat is not None:
            beat.cancel()
    return result
