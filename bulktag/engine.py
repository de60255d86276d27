"""Runs queued jobs to the end: a dispatcher, one lane per shard, a recorder.

The dispatcher polls the store for (job, shard) pairs with pending work and starts a lane for
each shard. A lane claims leased items of one job at a time (priority first, round-robin among
equals), groups them into batches of ≤ 20 of one tagset, waits on the shard's limiter and sends
each batch as its own task, up to `in_flight_per_shard` at once. Outcomes go to the recorder,
which writes them in batched transactions. Stopping is a first-class path: stop claiming, let
in-flight batches finish within the grace period, cancel the rest, release every lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from .accounts import AccountAccessError
from .arn import Shard
from .classify import (
    THROTTLE_CODES,
    Failure,
    Verdict,
    backoff_delay,
    classify_call_error,
    classify_resource_error,
    split_batch,
)
from .clients import ClientPool
from .config import Settings
from .discovery import DiscoveryStats, decide, tags_of, walk
from .limiter import ShardLimiter
from .metrics import EngineMetrics
from .store import (
    JOB_DONE,
    Claimed,
    ItemState,
    JobOptions,
    JobState,
    Outcome,
    Runnable,
    Store,
)

TAGSET_CACHE = 50_000  # tagsets kept decoded in memory before the cache starts over

log = structlog.get_logger("bulktag.engine")

BATCH_SIZE = 20
RECORDER_INTERVAL = 0.1  # seconds outcomes may wait in memory before they are written
OPERATIONS = {"tag": "TagResources", "untag": "UntagResources"}


@dataclass
class EngineStats:
    requests: Counter[str] = field(default_factory=Counter)  # by API operation
    throttled_calls: int = 0
    throttled_resources: int = 0
    arns_sent: int = 0
    splits: int = 0
    call_errors: Counter[str] = field(default_factory=Counter)
    resource_errors: Counter[str] = field(default_factory=Counter)
    finished: Counter[int] = field(default_factory=Counter)  # terminal items, by job
    batch_seconds: list[float] = field(default_factory=list)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


@dataclass(frozen=True, slots=True)
class LimiterFigures:
    shard: Shard
    operation: str
    rate: float  # requests per second allowed now
    ceiling: float  # the configured quota or max_rate


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """A read-only view of a running engine, for /metrics and /healthz."""

    lanes: int  # shards with a running lane
    in_flight: int  # batches sent and not answered
    limiters: tuple[LimiterFigures, ...]
    discovery_pages: int  # GetResources pages walked by discoveries
    last_tick: float  # time.monotonic() of the dispatcher loop's last pass


class Recorder:
    """Collects outcomes and writes them in batched transactions."""

    def __init__(self, store: Store, owner: str, *, interval: float = RECORDER_INTERVAL,
                 size: int = 2000,
                 on_flush: Callable[[], None] | None = None):
        self.store = store
        self.owner = owner
        self.on_flush = on_flush
        self.interval = interval
        self.size = size
        self._pending: list[Outcome] = []
        self._wake = asyncio.Event()
        self.written = 0

    def add(self, outcomes: Iterable[Outcome]) -> None:
        self._pending.extend(outcomes)
        if len(self._pending) >= self.size:
            self._wake.set()

    async def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending, []
            try:
                self.written += await self.store.record(self.owner, chunk)
            except BaseException:
                # Not written (rolled back, or cancelled): keep it for the next flush. A chunk
                # that did land is harmless to write again: record() needs the lease.
                self._pending[:0] = chunk
                raise
            if self.on_flush:
                self.on_flush()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()


class Engine:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        owner: str,
        job_ids: set[int] | None = None,
        follow: bool = False,
        clients: ClientPool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.job_ids = job_ids
        self.follow = follow
        self.clients = clients or ClientPool(settings)
        self.rng = rng or random.Random()
        self.stats = EngineStats()
        self.metrics = EngineMetrics()  # per (operation, shard), for /metrics
        self.last_tick = time.monotonic()  # the dispatcher loop's last pass, for /healthz
        self.recorder = Recorder(store, owner, on_flush=self._after_flush)
        self.limiters: dict[tuple[Shard, str], ShardLimiter] = {}
        self.discovery_stats = DiscoveryStats()
        self._discoveries: set[asyncio.Task[None]] = set()
        self._job_options: dict[int, JobOptions] = {}
        self._work: dict[int, list[Runnable]] = {}
        self._lanes: dict[int, asyncio.Task[None]] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._global = asyncio.Semaphore(settings.max_open_requests)
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._wake = asyncio.Event()
        self._rr: dict[int, int] = defaultdict(int)
        self._tagsets: dict[int, Any] = {}
        self._jobs_seen: set[int] = set()  # jobs to watch (thresholds, rates): open ones
        self.jobs_worked: set[int] = set()  # every job this engine worked on
        # Shards whose items went back to pending (retry, throttle): their idle lanes are woken
        # once the outcomes are written, instead of polling for the requeued work.
        self._requeued: set[int] = set()
        self._lane_wake: dict[int, asyncio.Event] = {}
        self.log = log.bind(owner=owner)

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; in-flight batches finish within the grace period."""
        self._stopping.set()
        self._wake.set()

    def stop_now(self) -> None:
        """End the grace period at once: cancel in-flight calls. Outcomes already known are
        still written and every lease still released (the shutdown path is not cut short)."""
        self.request_stop()
        self._hurry.set()
        for t in list(self._batches):
            t.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._batches)

    def wake(self) -> None:
        """Look for runnable work now rather than at the next dispatcher tick."""
        self._wake.set()

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot(
            lanes=len(self._lanes),
            in_flight=len(self._batches),
            limiters=tuple(LimiterFigures(shard, operation, lim.rate, lim.policy.ceiling)
                           for (shard, operation), lim in self.limiters.items()),
            discovery_pages=self.discovery_stats.pages,
            last_tick=self.last_tick,
        )

    def limiter(self, shard: Shard, operation: str) -> ShardLimiter:
        """The shard's limiter for an operation, shared by every job and discovery on it."""
        key = (shard, operation)
        lim = self.limiters.get(key)
        if lim is None:
            lim = self.limiters[key] = ShardLimiter(self.settings.rate_for(operation))
        return lim

    async def run(self) -> bool:
        """Work until no runnable work is left (or forever with follow). False if stopped early."""
        store = self.store
        await store.register_owner(self.owner)
        released = await store.reap_dead_owners(
            stale_seconds=self.settings.owner_stale_seconds, me=self.owner
        )
        if released:
            self.log.info("leases_reclaimed", items=released)
        recorder = asyncio.create_task(self.recorder.run(), name="recorder")
        last_beat = last_rate = time.monotonic()
        done_before = Counter(self.stats.finished)
        interrupted = False
        try:
            while True:
                if self.stopping:
                    interrupted = True
                    break
                runnable = [
                    r for r in await store.runnable()
                    if self.job_ids is None or r.job_id in self.job_ids
                ]
                self.last_tick = time.monotonic()
                work: dict[int, list[Runnable]] = defaultdict(list)
                for r in runnable:
                    work[r.shard_id].append(r)
                    # `ready` again after resume or retry: active again, with a live rate.
                    if r.job_id not in self._jobs_seen or r.state == JobState.READY:
                        self._jobs_seen.add(r.job_id)
                        self.jobs_worked.add(r.job_id)
                        await self._activate(r.job_id)
                self._work = work
                await self._start_discoveries()
                for shard_id in work:
                    if shard_id not in self._lanes:
                        self._lanes[shard_id] = asyncio.create_task(
                            self._lane(shard_id), name=f"lane-{shard_id}"
                        )
                await self._settle_jobs()
                idle = (not runnable and not self._lanes and not self._batches
                        and not self._discoveries)
                if idle and not self.follow:
                    # Retries still in the recorder become pending work once written.
                    await self.recorder.flush()
                    if not await self._has_work():
                        break
                now = time.monotonic()
                if now - last_beat > 10:
                    last_beat = now
                    await store.heartbeat(self.owner)
                    await store.reap_dead_owners(
                        stale_seconds=self.settings.owner_stale_seconds, me=self.owner
                    )
                if now - last_rate > 2:
                    await self._update_rates(self.stats.finished - done_before, now - last_rate)
                    last_rate, done_before = now, Counter(self.stats.finished)
                if recorder.done():
                    recorder.result()  # a store that cannot record stops the run, loudly
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.25)
        finally:
            # Shielded: a second Ctrl-C (or a cancelled caller) must not skip the flush and the
            # release of leases; stop_now() is how to hurry it.
            shutdown = asyncio.ensure_future(self._shutdown(recorder))
            try:
                await asyncio.shield(shutdown)
            except asyncio.CancelledError:
                self.stop_now()
                await shutdown
                raise
        return not interrupted

    async def _shutdown(self, recorder: asyncio.Task[None]) -> None:
        self._stopping.set()
        lanes = list(self._lanes.values()) + list(self._discoveries)
        for t in lanes:
            t.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        if self._batches:
            self.log.info("draining", in_flight=len(self._batches),
                          grace_seconds=self.settings.grace_seconds)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.grace_seconds
            while self._batches and not self._hurry.is_set() and loop.time() < deadline:
                hurry = asyncio.ensure_future(self._hurry.wait())
                await asyncio.wait([*self._batches, hurry], timeout=deadline - loop.time(),
                                   return_when=asyncio.FIRST_COMPLETED)
                hurry.cancel()
            late = {t for t in self._batches if not t.done()}
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)
        await self.recorder.flush()
        released = await self.store.release_owner(self.owner)
        if released:
            self.log.info("leases_released", items=released)
        await self._settle_jobs()
        await self.clients.close()

    async def _options(self, job_id: int) -> JobOptions:
        options = self._job_options.get(job_id)
        if options is None:
            job = await self.store.get_job(job_id)
            options = self._job_options[job_id] = job.options if job else JobOptions()
        return options

    async def _start_discoveries(self, limit: int = 16) -> None:
        """Claim pending discovery walks (this process's jobs) and run them alongside lanes."""
        while not self.stopping and len(self._discoveries) < limit:
            d = await self.store.claim_discovery(self.owner, self.job_ids)
            if d is None:
                return
            job = await self.store.get_job(d.job_id)
            if job is None:
                continue
            if d.job_id not in self._jobs_seen:
                self._jobs_seen.add(d.job_id)
                self.jobs_worked.add(d.job_id)
                await self._activate(d.job_id)
            shard = Shard(d.partition, d.account, d.region)
            task = asyncio.create_task(
                walk(self.store, self.settings, self.clients,
                     self.limiter(shard, "GetResources"), self.owner, d, job.options,
                     job.operation, self.discovery_stats, self._stopping, self.rng),
                name=f"discovery-{d.id}",
            )
            self._discoveries.add(task)

            def done(t: asyncio.Task[None]) -> None:
                self._discoveries.discard(t)
                self._wake.set()
                if not t.cancelled() and t.exception() is not None:
                    self.log.error("discovery_crashed", error=repr(t.exception()))

            task.add_done_callback(done)

    async def _unless_compliant(
        self, job_id: int, operation: str, shard: Shard, claimed: list[Claimed],
        options: JobOptions,
    ) -> list[Claimed]:
        """Read current tags (GetResources, 100 ARNs a call) and end compliant items as
        `skipped`; with --if-absent, send each item only the keys it lacks. A failed read is
        no reason to stop: the items are sent as they are."""
        limiter = self.limiter(shard, "GetResources")

        async def read(chunk: list[Claimed]) -> dict[str, dict[str, str]] | None:
            await limiter.acquire()
            self.stats.requests["GetResources"] += 1
            self.metrics.request("GetResources", shard)
            try:
                client = await self.clients.tagging(shard)
                resp = await client.get_resources(ResourceARNList=[c.arn for c in chunk])
            except (ClientError, BotoCoreError, AccountAccessError, OSError, TimeoutError) as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code in THROTTLE_CODES:
                    limiter.on_throttle()
                    self.metrics.throttle("GetResources", shard)
                self.log.info("compliance_check_skipped", shard=str(shard), error=repr(exc))
                return None
            return {m["ResourceARN"]: tags_of(m) for m in resp.get("ResourceTagMappingList", [])}

        # All reads of a claim at once: the lane waits one call's latency, not one per 100.
        chunks = [claimed[i : i + 100] for i in range(0, len(claimed), 100)]
        readings = await asyncio.gather(*(read(chunk) for chunk in chunks))
        keep: list[Claimed] = []
        outcomes: list[Outcome] = []
        if_absent = options.if_absent
        for chunk, current in zip(chunks, readings, strict=True):
            if current is None:
                if if_absent:
                    # Sending the full tags could overwrite values: wait for a readable moment.
                    retry_at = time.time() + self.settings.throttle_retry_delay * 5
                    outcomes += [Outcome(c.id, ItemState.PENDING, c.attempts, retry_at,
                                         "TagsNotRead", None, "current tags could not be read")
                                 for c in chunk]
                else:
                    keep.extend(chunk)
                continue
            for c in chunk:
                decision = decide(operation, await self._tagset(c.tagset_id),
                                  current.get(c.arn, {}),
                                  if_absent=options.if_absent)
                if decision.send:
                    c.override = decision.override
                    keep.append(c)
                else:
                    outcomes.append(Outcome(c.id, ItemState.SKIPPED, c.attempts, message=decision.reason))
                    self.stats.finished[job_id] += 1
        self.recorder.add(outcomes)
        return keep

    def _after_flush(self) -> None:
        for shard_id in self._requeued:
            event = self._lane_wake.get(shard_id)
            if event is not None:
                event.set()
        self._requeued.clear()

    async def _has_work(self) -> bool:
        return any(
            self.job_ids is None or r.job_id in self.job_ids for r in await self.store.runnable()
        )

    async def _activate(self, job_id: int) -> None:
        job = await self.store.get_job(job_id)
        if job and job.state == JobState.READY:
            await self.store.set_job_state(job_id, JobState.ACTIVE)
            self.log.info("job_started", job=job_id, operation=job.operation)

    async def _settle_jobs(self) -> None:
        """Complete jobs with nothing left; fail those past their failure threshold."""
        for job_id in await self.store.finished_jobs():
            if self.job_ids is None or job_id in self.job_ids:
                await self.store.set_job_state(job_id, JobState.COMPLETED)
                counts = await self.store.counts(job_id)
                self.log.info("job_completed", job=job_id, **counts.by_state)
        for job_id in list(self._jobs_seen):
            job = await self.store.get_job(job_id)
            if job is None or job.state in JOB_DONE:
                # Finished: stop watching (a daemon's tick must not grow with history).
                self._jobs_seen.discard(job_id)
                self._job_options.pop(job_id, None)
                continue
            if job.state == JobState.PAUSED:
                continue
            counts = await self.store.counts(job_id)
            attempted = counts["succeeded"] + counts["failed"]
            min_items = (job.options.failure_min_items
                         if job.options.failure_min_items is not None
                         else self.settings.failure_min_items)
            ratio = (job.options.failure_ratio if job.options.failure_ratio is not None
                     else self.settings.failure_ratio)
            if attempted >= min_items and counts["failed"] > ratio * attempted:
                reason = (f"failure threshold passed: {counts['failed']} of {attempted} "
                          f"attempted items failed (limit {ratio:.0%} after {min_items})")
                await self.store.cancel_items(job_id, f"job failed: {reason}", code="JobFailed")
                await self.store.set_job_state(job_id, JobState.FAILED, reason=reason)
                self.log.error("job_failed", job=job_id, reason=reason)

    async def _update_rates(self, finished: Counter[int], seconds: float) -> None:
        """Store each active job's recent rate (items finished per second) for `status`."""
        for job_id in list(self._jobs_seen):
            job = await self.store.get_job(job_id)
            if job and job.state == JobState.ACTIVE:
                await self.store.set_job_rate(job_id, finished[job_id] / seconds)

    # -- lanes -----------------------------------------------------------------------------

    def _pick(self, shard_id: int, not_before: dict[int, float]) -> Runnable | None:
        """Best-priority job with due work on this shard; round-robin among equals."""
        now = time.time()
        candidates = [r for r in self._work.get(shard_id, ()) if not_before.get(r.job_id, 0) <= now]
        if not candidates:
            return None
        top = max(r.priority for r in candidates)
        best = [r for r in candidates if r.priority == top]
        self._rr[shard_id] += 1
        return best[self._rr[shard_id] % len(best)]

    async def _lane(self, shard_id: int) -> None:
        shard = await self.store.shard(shard_id)
        lane_log = self.log.bind(shard=str(shard))
        in_flight = asyncio.Semaphore(self.settings.in_flight_per_shard)
        not_before: dict[int, float] = {}
        claim_size = BATCH_SIZE * self.settings.in_flight_per_shard
        wake = self._lane_wake[shard_id] = asyncio.Event()
        try:
            while not self.stopping:
                if not self._work.get(shard_id):
                    return
                pick = self._pick(shard_id, not_before)
                if pick is None:
                    waits = [not_before.get(r.job_id, 0) for r in self._work.get(shard_id, ())]
                    timeout = min(1.0, max(0.01, min(waits, default=1) - time.time()))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout)
                    if wake.is_set():
                        wake.clear()
                        not_before.clear()  # requeued work was just written: look again
                    continue
                claimed = await self.store.claim(
                    self.owner, pick.job_id, shard_id, claim_size,
                    lease_seconds=self.settings.lease_seconds,
                )
                if not claimed:
                    due = await self.store.next_due(pick.job_id, shard_id)
                    not_before[pick.job_id] = due if due is not None else time.time() + 1.0
                    continue
                operation = OPERATIONS[pick.operation]
                limiter = self.limiter(shard, operation)
                options = await self._options(pick.job_id)
                if (options.skip_compliant or options.if_absent) and options.query is None:
                    claimed = await self._unless_compliant(pick.job_id, pick.operation, shard,
                                                           claimed, options)
                for batch in _batches(claimed):
                    if self.stopping:
                        break  # leased items left are released at shutdown
                    await in_flight.acquire()
                    await self._global.acquire()
                    try:
                        await limiter.acquire()
                    except BaseException:
                        in_flight.release()
                        self._global.release()
                        raise
                    task = asyncio.create_task(
                        self._send(pick.job_id, pick.operation, shard_id, shard, batch, limiter,
                                   acquired=True)
                    )
                    self._batches.add(task)

                    def done(t: asyncio.Task[None]) -> None:
                        self._batches.discard(t)
                        in_flight.release()
                        self._global.release()
                        self._wake.set()

                    task.add_done_callback(done)
        except asyncio.CancelledError:
            raise
        except Exception:
            lane_log.exception("lane_crashed")
            raise
        finally:
            self._lanes.pop(shard_id, None)
            self._lane_wake.pop(shard_id, None)
            self._wake.set()

    async def _tagset(self, tagset_id: int) -> Any:
        value = self._tagsets.get(tagset_id)
        if value is None:
            if len(self._tagsets) >= TAGSET_CACHE:
                self._tagsets.clear()  # flat memory with per-row tags (one tagset per ARN)
            value = self._tagsets[tagset_id] = json.loads(await self.store.tagset(tagset_id))
        return value

    # -- one batch -------------------------------------------------------------------------

    async def _send(
        self, job_id: int, operation: str, shard_id: int, shard: Shard, batch: list[Claimed],
        limiter: ShardLimiter, *, acquired: bool = False, credentials_retry: bool = True,
    ) -> None:
        if not acquired:
            await limiter.acquire()
        api = OPERATIONS[operation]
        tagset = batch[0].override or await self._tagset(batch[0].tagset_id)
        arns = [c.arn for c in batch]
        started = time.monotonic()
        self.stats.requests[api] += 1
        self.stats.arns_sent += len(arns)
        failure: Failure | None = None
        failed_map: dict[str, Any] = {}
        access_error = False
        try:
            client = await self.clients.tagging(shard)
            if operation == "tag":
                resp = await client.tag_resources(ResourceARNList=arns, Tags=tagset)
            else:
                resp = await client.untag_resources(ResourceARNList=arns, TagKeys=tagset)
            failed_map = resp.get("FailedResourcesMap") or {}
        except AccountAccessError as exc:
            failure = Failure(exc.code, exc.status, str(exc))
            access_error = True
        except ClientError as exc:
            err = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            failure = Failure(
                str(err.get("Code") or "Unknown"),
                meta.get("HTTPStatusCode"),
                str(err.get("Message") or exc),
            )
        except (BotoCoreError, OSError, TimeoutError) as exc:
            failure = Failure(type(exc).__name__, None, str(exc) or type(exc).__name__)
        except Exception as exc:  # aiohttp's errors and anything else of the transport
            if type(exc).__module__.startswith(("aiohttp", "botocore", "aiobotocore")):
                failure = Failure(type(exc).__name__, None, str(exc) or type(exc).__name__)
            else:
                raise
        self.stats.batch_seconds.append(time.monotonic() - started)
        self.metrics.batch(api, shard, self.stats.batch_seconds[-1])
        if len(self.stats.batch_seconds) > 10000:
            del self.stats.batch_seconds[:5000]

        if failure is None:
            if self._record_response(job_id, shard_id, batch, failed_map, limiter):
                self.metrics.throttle(api, shard)
            return
        self.stats.call_errors[failure.code] += 1
        verdict = classify_call_error(failure, len(batch))
        if verdict is Verdict.SPLIT:
            self.stats.splits += 1
            for half in split_batch(batch):
                await self._send(job_id, operation, shard_id, shard, half, limiter)
            return
        if access_error and verdict is Verdict.PERMANENT and \
                self.settings.on_access_error == "pause":
            # The account, not the items, is at fault: park its items, keep the rest going.
            if await self.store.pause_account(job_id, shard.account, failure.message):
                self.log.warning("account_paused", job=job_id, account=shard.account,
                                 reason=failure.message, hint=f"bulktag resume {job_id}")
            self.recorder.add(Outcome(c.id, ItemState.PENDING, c.attempts, time.time(), failure.code,
                                      failure.status, failure.message) for c in batch)
            return
        if verdict is Verdict.CREDENTIALS and credentials_retry:
            self.log.info("credentials_refresh", shard=str(shard), code=failure.code)
            await self.clients.invalidate(shard)
            await self._send(job_id, operation, shard_id, shard, batch, limiter,
                             credentials_retry=False)
            return
        if verdict is Verdict.CREDENTIALS:
            verdict = Verdict.TRANSIENT  # fresh credentials did not help: spend an attempt
        if verdict is Verdict.THROTTLE:
            self.stats.throttled_calls += 1
            self.metrics.throttle(api, shard)
            limiter.on_throttle()
        self._requeued.add(shard_id)
        self.recorder.add(self._outcome(job_id, c, verdict, failure) for c in batch)

    def _record_response(
        self, job_id: int, shard_id: int, batch: list[Claimed], failed_map: dict[str, Any],
        limiter: ShardLimiter,
    ) -> bool:
        """Queue the outcomes of a 200 answer; True when resources in it were throttled."""
        outcomes = []
        throttled = False
        for c in batch:
            info = failed_map.get(c.arn)
            if info is None:
                outcomes.append(Outcome(c.id, ItemState.SUCCEEDED, c.attempts + 1))
                self.stats.finished[job_id] += 1
                continue
            failure = Failure(
                str(info.get("ErrorCode") or "Unknown"),
                info.get("StatusCode"),
                str(info.get("ErrorMessage") or ""),
            )
            self.stats.resource_errors[failure.code] += 1
            verdict = classify_resource_error(failure)
            if verdict is Verdict.THROTTLE:
                throttled = True
                self.stats.throttled_resources += 1
            # A throttle of the owning service slows the shard like any throttle, but the item
            # retries with backoff on its attempt budget (DESIGN, invariant 3): a resource
            # whose service keeps refusing must not hold the run open forever.
            if verdict is Verdict.THROTTLE:
                verdict = Verdict.TRANSIENT
            outcomes.append(self._outcome(job_id, c, verdict, failure))
        if throttled:
            limiter.on_throttle()
        if failed_map:
            self._requeued.add(shard_id)
        self.recorder.add(outcomes)
        return throttled

    def _outcome(self, job_id: int, c: Claimed, verdict: Verdict, failure: Failure) -> Outcome:
        now = time.time()
        if verdict is Verdict.THROTTLE:
            # The service's quota, not the item: back to the queue without spending an attempt.
            delay = self.settings.throttle_retry_delay * (1 + self.rng.random())
            return Outcome(c.id, ItemState.PENDING, c.attempts, now + delay, failure.code,
                           failure.status, failure.message)
        attempts = c.attempts + 1
        if verdict is Verdict.TRANSIENT and attempts < self.settings.max_attempts:
            delay = backoff_delay(attempts, base=self.settings.backoff_base,
                                  cap=self.settings.backoff_cap, rng=self.rng)
            return Outcome(c.id, ItemState.PENDING, attempts, now + delay, failure.code, failure.status,
                           failure.message)
        self.stats.finished[job_id] += 1
        message = failure.message
        if verdict is Verdict.TRANSIENT:
            message = f"gave up after {attempts} attempts: {message}"
        return Outcome(c.id, ItemState.FAILED, attempts, 0.0, failure.code, failure.status, message)


def _batches(claimed: list[Claimed]) -> Iterable[list[Claimed]]:
    """Split claimed items into batches of ≤ 20 that send the same tags."""
    by_tagset: dict[tuple[int, str], list[Claimed]] = defaultdict(list)
    for c in claimed:
        override = json.dumps(c.override, sort_keys=True) if c.override else ""
        by_tagset[(c.tagset_id, override)].append(c)
    for items in by_tagset.values():
        for i in range(0, len(items), BATCH_SIZE):
            yield items[i : i + BATCH_SIZE]


ProgressCallback = Callable[[], None]
