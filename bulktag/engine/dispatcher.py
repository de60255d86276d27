"""Runs queued jobs to the end: the dispatcher, its shard leases, and shutdown.

The dispatcher polls the store for (job, shard) pairs with pending work, takes shard leases for
its fair share of the busy shards (the quota belongs to the account-region, so one worker at a
time drives a shard, whatever the number of workers on the store), starts a lane for each shard
it holds, claims discovery walks, completes jobs with nothing left and fails those past their
failure threshold.

Each pass looks at the store (at least every `TICK`, at once when woken); the periodic duties
— heartbeat with the dead-owner reap, job rates, a daemon's idle orphan release — are loops of
their own beside it (`_every`), not branches of the pass. A lane is handed the engine as a
`context.LaneContext`, so `lane.py` does not import this module.

Concurrency is structured (anyio task groups): lanes, discoveries and the periodic duties live
in one task group, in-flight batches in another around it, the recorder in a third. Stopping
is the task groups' exit: the lanes' group is cancelled (no more claims), the batches' group
gets the grace period as a deadline (`stop_now` cancels it at once), then — shielded — the
recorder flushes, every lease is released and the jobs are settled.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from bulktag.arn import ROUTE_TAGGING, Shard
from bulktag.aws.clients import ClientPool
from bulktag.aws.organizations import PolicyBook
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.config import Settings
from bulktag.engine.discovery import DiscoveryStats, walk
from bulktag.engine.lane import Lane
from bulktag.engine.metrics import EngineMetrics, EngineSnapshot, LimiterFigures
from bulktag.engine.reader import fixes_policy, job_via
from bulktag.engine.recorder import Recorder
from bulktag.engine.sender import EngineStats, Sender
from bulktag.policy.access import Via
from bulktag.policy.tag_policy import POLICY_UNREAD_CODE, TagPolicy
from bulktag.store import (
    FLEET_RATE_FRESH,
    JOB_DONE,
    Claimed,
    Discovery,
    ItemState,
    Job,
    JobOptions,
    JobState,
    Outcome,
    Runnable,
    Store,
    StoreError,
)

log = structlog.get_logger("bulktag.engine")

TAGSET_CACHE = 50_000  # tagsets kept decoded in memory before the cache starts over
TICK = 0.25  # seconds between dispatcher passes at most
SHARD_ROUND = 1.0  # seconds between shard-lease rounds (renew, take a fair share, hand over)
HEARTBEAT = 5.0  # seconds between heartbeats (and, in a daemon, idle orphan releases)
SESSION_EVERY = 1.0  # seconds between checks of the worker's database session
RATES_EVERY = 2.0  # seconds between job rate updates (FLEET_RATE_FRESH: 5 of them)
LOADS_EVERY = 5.0  # seconds between looks for loads whose reader is gone (to pause their jobs)
DISCOVERY_WALKS = 16  # walks at once per worker


GC_YOUNG = 10_000  # allocations between young-generation collections (Python's default: 700)
_gc_settled = False


def settle_gc() -> None:
    """For a process that runs the engine (`bulktag run`, the daemon), once: what is alive
    when work starts (modules, botocore's models and event hooks, the store) lives as long as
    the process, yet every full collection walked it again, and young collections ran every
    700 allocations: at 400 shards ~9 % of a run's CPU went to the cyclic GC (1.7 s of 26 s
    for 200k ARNs, benchmarks/run_side.py). Frozen out of the collector, with young
    collections every GC_YOUNG allocations, it was 0.55 s. Cyclic garbage is still collected."""
    global _gc_settled
    if _gc_settled:
        return
    _gc_settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 10, 10)


@dataclass(frozen=True, slots=True)
class LeaseHolders:
    """Items of this run's jobs leased to other owners that still look alive."""

    items: int
    owners: tuple[str, ...]
    stale_at: float  # when the freshest holder's heartbeat will be stale (epoch seconds)


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
        wait_for_leases: bool = True,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.job_ids = job_ids
        self.follow = follow
        self.wait_for_leases = wait_for_leases
        self.clients = clients or ClientPool(settings)
        self.rng = rng or random.Random()
        self.stats = EngineStats()
        self.metrics = EngineMetrics()  # per (operation, shard), for /metrics
        self.last_tick = time.monotonic()  # the dispatcher loop's last pass, for /healthz
        # Shards whose items went back to pending (retry, throttle): their idle lanes are
        # woken once the outcomes are written, instead of polling for the requeued work.
        self._requeued: set[int] = set()
        self.recorder = Recorder(store, owner, on_flush=self._after_flush)
        self.sender = Sender(store, settings, self.clients, self.recorder, self.stats,
                             self.metrics, self.rng, self._requeued.add)
        self.sender.fence = self.may_send
        self.sender.on_fenced = self._lapsed
        self.limiters: dict[tuple[Shard, str], ShardLimiter] = {}
        self.discovery_stats = DiscoveryStats()
        self.jobs_worked: set[int] = set()  # every job this engine worked on
        self.blocked: LeaseHolders | None = None  # set when the run ended waiting on others
        # fast_acquire: no event-loop round trip when a slot is free (twice per batch otherwise)
        self.open_slots = anyio.Semaphore(settings.max_open_requests, fast_acquire=True)
        self.log = log.bind(owner=owner)
        self._job_options: dict[int, JobOptions] = {}
        self._work: dict[int, list[Runnable]] = {}
        self._lanes: dict[int, Lane] = {}
        self._loads_checked = 0.0  # monotonic time of the last look for interrupted loads
        self.lanes_started: Counter[int] = Counter()  # by shard: a lane ends only out of work
        # Flushes of the recorder so far, and how many of them the dispatcher's view of the
        # work (`work_of`) had seen when it was read: a lane decides it is out of work only on
        # a view that includes every outcome written (a retry just written is work).
        self.flushes = 0
        self.work_flushes = 0
        self._held: set[int] = set()  # shards this worker holds a lease on
        # Fencing: this worker sends on a shard only while its lease surely holds (monotonic
        # deadlines, a margin before any other worker may take it), and its session is the
        # one its leases were renewed under.
        stale = self.settings.owner_stale_seconds
        self._margin = max(0.5, min(5.0, 0.15 * stale))
        self._lease_ok_until = 0.0  # the last lease renewal's deadline
        self._beat_ok_until = 0.0  # the last heartbeat's deadline
        self._round_generation = -1  # the store session under which leases were renewed
        self._fenced: set[int] = set()  # shards whose lapse was logged
        self.fleet_rates: dict[int, float] = {}  # active job -> the fleet's rate (/metrics)
        self._discoveries = 0
        self._walking: Counter[tuple[str, str]] = Counter()  # (account, region) of the walks
        self._in_flight = 0
        self._stopping = False
        self._wake = anyio.Event()
        self._tagsets: dict[int, Any] = {}
        self._caller: str | None = None  # the credentials' account, once a shard needs it
        self.policies = PolicyBook(self.clients)  # effective tag policies, per account
        self._jobs_seen: set[int] = set()  # jobs to watch (thresholds, rates): open ones
        self._lanes_tg: TaskGroup | None = None
        self._batches_tg: TaskGroup | None = None
        self._free_rounds: Counter[int] = Counter()  # busy shards nobody holds, rounds in a row
        self._keep_until = 0.0  # do not hand shards over before (a worker declined them)
        self._last_waiting_log = 0.0
        self._slowed: set[tuple[str, str]] = set()  # (shard, operation) below the ceiling
        # Held by each dispatcher pass (it starts lanes, which claim) and by the idle orphan
        # release (it releases every lease of ours): never both at once.
        self._passing = anyio.Lock()
        self._last_round = 0.0  # monotonic time of the last shard-lease round
        self._rate_mark = (time.monotonic(), Counter[int]())  # rates measured from here

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; in-flight batches finish within the grace period."""
        self._stopping = True
        self.wake()

    def stop_now(self) -> None:
        """End the grace period at once: cancel in-flight calls. Outcomes already known are
        still written and every lease still released (the shutdown path is not cut short)."""
        self.request_stop()
        if self._batches_tg is not None:
            self._batches_tg.cancel_scope.cancel()

    def wake(self) -> None:
        """Look at the store now rather than at the next tick (new jobs, finished batches)."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot(
            lanes=len(self._lanes), in_flight=self._in_flight, shards_held=len(self._held),
            unreachable_shards=tuple(str(lane.shard) for lane in self._lanes.values()
                                     if lane.outage is not None),
            limiters=tuple(LimiterFigures(shard, op, lim.rate, lim.policy.ceiling)
                           for (shard, op), lim in self.limiters.items()),
            discovery_pages=self.discovery_stats.pages, last_tick=self.last_tick,
            job_rates=tuple(sorted(self.fleet_rates.items())),
            fenced_batches=self.stats.fenced_batches)

    async def real_shard(self, shard: Shard) -> Shard:
        """The (account, region) a shard's calls really go to. Items of ARNs that carry no
        account (S3 buckets, EC2 snapshots and images) are the caller's: their shard becomes
        the caller's, so both drive one limiter, not two at full rate on one quota."""
        if shard.account:
            return shard
        if self._caller is None:
            try:
                self._caller = await self.clients.accounts.caller_account()
            except Exception as exc:  # no STS answer: the shard stays apart, said once
                self._caller = ""
                self.log.warning("caller_account_unknown", error=str(exc),
                                 hint="ARNs without an account get a limiter of their own "
                                      "beside the caller's account's")
        return Shard(shard.partition, self._caller, shard.region) if self._caller else shard

    async def tag_policy(self, shard: Shard, via: Via | None) -> TagPolicy:
        return await self.policies.get(shard.account, shard.partition, via)

    def tag_policy_problem(self, shard: Shard) -> str | None:
        return self.policies.problem(shard.account)

    def limiter(self, shard: Shard, operation: str) -> ShardLimiter:
        """The shard's limiter for an operation, shared by every job and discovery on it."""
        key = (shard, operation)
        lim = self.limiters.get(key)
        if lim is None:
            lim = self.limiters[key] = ShardLimiter(self.settings.rate_for(operation))
        return lim

    # -- what lanes ask of the engine -----------------------------------------------------

    def work_of(self, shard_id: int) -> list[Runnable]:
        return self._work.get(shard_id, [])

    async def options(self, job_id: int) -> JobOptions:
        options = self._job_options.get(job_id)
        if options is None:
            job = await self.store.get_job(job_id)
            options = self._job_options[job_id] = job.options if job else JobOptions()
            if job is not None and options.route is None:
                # A job submitted without a route (tag-sync's, or older) takes the setting's,
                # kept with the job so its report and later runs agree on it whatever the
                # config says then. Its items were stored with the routes their ARNs imply:
                # with `tagging-api` the pending ones move to it before any is claimed.
                options = self._job_options[job_id] = dataclasses.replace(
                    options, route=self.settings.route)
                await self.store.merge_job_options(job_id, {"route": options.route})
                if options.route == ROUTE_TAGGING:
                    await self.store.set_route(job_id, ROUTE_TAGGING)
        return options

    async def tagset(self, tagset_id: int) -> Any:
        value = self._tagsets.get(tagset_id)
        if value is None:
            if len(self._tagsets) >= TAGSET_CACHE:
                self._tagsets.clear()  # flat memory with per-row tags (one tagset per ARN)
            value = self._tagsets[tagset_id] = json.loads(await self.store.tagset(tagset_id))
        return value

    def requeue(self, items: Iterable[Claimed]) -> None:
        """Leased items back to pending at once, attempts untouched (not sent, or a bug)."""
        now = time.time()
        self.recorder.add(Outcome(c.id, ItemState.PENDING, c.attempts, now) for c in items)

    def start_batch(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._batches_tg is not None
        self._in_flight += 1

        async def batch() -> None:
            try:
                await fn(*args)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self.recorder.hurry()  # perhaps a job's last outcomes: write them now

        self._batches_tg.start_soon(batch)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> bool:
        """Work until no runnable work is left (or forever with follow). False if stopped
        early. Raises StoreError when the store cannot be used."""
        await self.store.hold_session(self.owner)  # before it is listed: never seen lockless
        started = time.monotonic()
        await self.store.register_owner(self.owner)
        self._beat_ok_until = started + self.settings.owner_stale_seconds - self._margin
        released = await self.store.reap_dead_owners(
            stale_seconds=self.settings.owner_stale_seconds, me=self.owner)
        if released:
            self.log.info("leases_reclaimed", items=released)
        finished = False
        self._rate_mark = (time.monotonic(), Counter(self.stats.finished))
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self.recorder.run)
                try:
                    async with anyio.create_task_group() as batches:
                        self._batches_tg = batches
                        async with anyio.create_task_group() as lanes:
                            self._lanes_tg = lanes
                            self._start_duties(lanes)
                            finished = await self._dispatch()
                            lanes.cancel_scope.cancel()
                        if self._in_flight:
                            self.log.info("draining", in_flight=self._in_flight,
                                          grace_seconds=self.settings.grace_seconds)
                        batches.cancel_scope.deadline = (
                            anyio.current_time() + self.settings.grace_seconds)
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._shutdown()
                    outer.cancel_scope.cancel()
        finally:
            self._lanes_tg = self._batches_tg = None
        return finished

    async def _dispatch(self) -> bool:
        """The dispatcher loop; True when the work ran out, False when asked to stop."""
        started = time.monotonic()
        # A one-shot run takes its shards on the first pass (a short job's first call ~0.2 s
        # sooner); a daemon waits a moment so daemons started together share the shards.
        self._last_round = started if self.follow else started - SHARD_ROUND
        while True:
            if self.stopping:
                return False
            async with self._passing:
                if await self._pass(started):
                    return True
            self._wake = anyio.Event()
            with anyio.move_on_after(TICK):
                await self._wake.wait()

    async def _pass(self, started: float) -> bool:
        """One look at the store: note the work, start lanes and discoveries, settle jobs;
        True when this run is over (no work left, or all of it leased elsewhere)."""
        store = self.store
        seen = self.flushes
        runnable = [r for r in await store.runnable()
                    if self.job_ids is None or r.job_id in self.job_ids]
        self.last_tick = now = time.monotonic()
        work: dict[int, list[Runnable]] = defaultdict(list)
        for r in runnable:
            work[r.shard_id].append(r)
            # `ready` again after resume or retry: active again, with a live rate.
            if r.job_id not in self._jobs_seen or r.state == JobState.READY:
                self._jobs_seen.add(r.job_id)
                self.jobs_worked.add(r.job_id)
                await self.options(r.job_id)  # its route settled before lanes claim
                await self._activate(r.job_id)
        self._work = work
        self.work_flushes = seen
        for lane in self._lanes.values():  # waiting on its last batches: look again
            if lane.idle:
                lane.poke()
        await self._start_discoveries()
        if (set(work) - self._held - set(self._lanes) and now - self._last_round > 0.2) \
                or now - self._last_round > SHARD_ROUND:
            await self._shard_round(set(work))
            self._last_round = now
        for shard_id in self._held & set(work):
            if shard_id not in self._lanes:
                await self._start_lane(shard_id)
        await self._settle_jobs()
        if work and self._last_round >= started and not self._lanes and not self._in_flight \
                and not self._discoveries and not self.follow:
            # Work left, but every shard of it is leased to another live worker.
            holders = await self._shards_elsewhere(set(work))
            if holders is not None:
                if not self.wait_for_leases:
                    self.blocked = holders
                    return True
                self._say_waiting(holders)
        if self._idle() and not self.follow:
            await self._release_orphans()
            if not await self._has_work():
                holders = await self._leased_elsewhere()
                if holders is None:
                    return True
                if not self.wait_for_leases:
                    self.blocked = holders
                    return True
                self._say_waiting(holders)
        return False

    def _idle(self) -> bool:
        """No work seen at the last look, and nothing of ours running."""
        return not self._work and not self._lanes and not self._in_flight \
            and not self._discoveries

    # -- periodic duties, each its own loop (saq's `Worker.upkeep`) -------------------------

    def _start_duties(self, tg: TaskGroup) -> None:
        # beat often enough that a stale-seconds window always holds two heartbeats or more
        tg.start_soon(self._every, min(HEARTBEAT, self.settings.owner_stale_seconds / 4),
                      self._heartbeat)
        tg.start_soon(self._every, SESSION_EVERY, self._check_session)
        tg.start_soon(self._every, RATES_EVERY, self._rates)
        tg.start_soon(self._every, min(HEARTBEAT, self.settings.idle_shard_seconds / 2),
                      self._release_idle)
        if self.follow:  # a one-shot run releases them in its end-of-run check
            tg.start_soon(self._every, HEARTBEAT, self._orphans_when_idle)

    @staticmethod
    async def _every(seconds: float, duty: Callable[[], Awaitable[None]]) -> None:
        while True:
            await anyio.sleep(seconds)
            await duty()

    # -- fencing ---------------------------------------------------------------------------

    def may_send(self, shard_id: int) -> bool:
        """Whether this worker may send a call on the shard now: it holds the lease, renewed
        and heartbeat written recently enough that no other worker may take it yet (by lease
        expiry or stale heartbeat, less a margin for clocks), under its current session."""
        now = time.monotonic()
        return shard_id in self._held and now < self._lease_ok_until and \
            now < self._beat_ok_until and self.store.session_ok() and \
            self.store.session_generation == self._round_generation

    def _lapsed(self, shard_id: int) -> None:
        """A batch was not sent: the shard's lease may have lapsed. Its lane stops and hands
        the shard back; the next round takes it again if it is still ours to take."""
        if shard_id not in self._fenced:
            self._fenced.add(shard_id)
            self.log.warning("lease_lapsed", shard=shard_id, hint="this worker could not "
                             "renew its lease in time (a frozen process, a slow or unreachable "
                             "store): it stops sending on the shard before another may take it")
        lane = self._lanes.get(shard_id)
        if lane is not None:
            lane.handover = True
            lane.poke()

    async def _check_session(self) -> None:
        """The worker's database session answers; when it was lost the shards are fenced
        (`may_send`) until leases are renewed under the new one."""
        if not await self.store.check_session():
            if self._round_generation >= 0:
                self.log.warning("store_session_lost", hint="no call is sent until the "
                                 "store answers again and the shard leases are renewed")
                self._round_generation = -1

    async def _heartbeat(self) -> None:
        """This worker is alive; the leases of owners whose heartbeat is stale come back."""
        started = time.monotonic()
        await self.store.heartbeat(self.owner)
        self._beat_ok_until = started + self.settings.owner_stale_seconds - self._margin
        reclaimed = await self.store.reap_dead_owners(
            stale_seconds=self.settings.owner_stale_seconds, me=self.owner)
        if reclaimed:
            self.log.warning("leases_reclaimed", items=reclaimed,
                             reason="their owner's heartbeat is stale or it is gone")

    async def _rates(self) -> None:
        """Shards back at their ceiling logged; each active job's recent rate stored."""
        now = time.monotonic()
        since, done_before = self._rate_mark
        self._log_rate_changes()
        await self._update_rates(self.stats.finished - done_before, now - since)
        self._rate_mark = (now, Counter(self.stats.finished))

    async def _release_idle(self) -> None:
        """Shards out of work for `idle_shard_seconds` hold nothing: their clients, rate
        limiters (once back at their ceiling) and their accounts' credentials are let go, and
        built again if work comes back. A shard with a lane or a walk keeps everything."""
        idle = self.settings.idle_shard_seconds
        busy = {(lane.shard.account, lane.shard.region) for lane in self._lanes.values()}
        busy |= set(self._walking)
        for key in [k for k, lim in self.limiters.items()
                    if (k[0].account, k[0].region) not in busy and lim.idle_for(idle)]:
            del self.limiters[key]
        self.sender.forget({shard for shard, _ in self.limiters}, busy)
        released = await self.clients.release_idle(idle, busy)
        if released:
            self.log.debug("idle_shards_released", clients=released,
                           limiters=len(self.limiters), held=self.clients.holds())

    async def _orphans_when_idle(self) -> None:
        # Under the dispatcher's pass lock: no lane can start (and claim) meanwhile, and the
        # release takes only leases nothing of ours is working on.
        async with self._passing:
            if self._idle():
                await self._release_orphans()

    async def _release_orphans(self) -> None:
        """Nothing of ours is running, yet items may be leased to us: a claim whose answer was
        lost with its connection (the store retried it). Back to pending."""
        # Retries still in the recorder become pending work once written.
        await self.recorder.flush()
        orphans = await self.store.release_owner(self.owner, forget=False)
        if orphans:
            self.log.warning("orphaned_leases_released", items=orphans,
                             reason="claimed, but the claim's answer never arrived")

    async def _shutdown(self) -> None:
        await self.recorder.flush()
        released = await self.store.release_owner(self.owner)
        self._held.clear()
        if released:
            self.log.info("leases_released", items=released)
        await self._settle_jobs()
        await self.clients.close()

    # -- shards ----------------------------------------------------------------------------

    async def _shard_round(self, busy: set[int]) -> None:
        """Renew this worker's shard leases, take its fair share of the busy shards, and hand
        over what is beyond it when another live worker has fewer."""
        now = time.time()
        stale = now - self.settings.owner_stale_seconds
        live = [w.owner for w in await self.store.workers() if w.heartbeat_at >= stale]
        if self.owner not in live:
            live.append(self.owner)
        holders = await self.store.shard_holders()
        others: Counter[str] = Counter(owner for sid, (owner, _) in holders.items()
                                       if owner != self.owner and sid in busy)
        share = max(1, math.ceil(len(busy) / max(1, len(live))))
        mine = [s for s in self._held if s in busy]
        free = [s for s in sorted(busy) if s not in holders or holders[s][0] == self.owner]
        free = [s for s in free if s not in mine]
        for s in list(self._free_rounds):
            if s not in free:
                del self._free_rounds[s]
        for s in free:
            self._free_rounds[s] += 1
        # Shards nobody takes for two rounds are taken anyway (a worker that only runs other
        # jobs counts as live but will not drive them), and then kept for a while.
        unwanted = [s for s in free if self._free_rounds[s] >= 3]
        room = max(0, share - len(mine))
        # A shard whose lane still runs (its last batches, a transform's second step) keeps
        # its lease renewed until the lane ends, work left or not: it may still send.
        running = {s for s in self._lanes if s in self._held}
        want = set(mine) | set(free[:room]) | set(unwanted) | running
        if unwanted:
            self._keep_until = time.monotonic() + 30
        started, generation = time.monotonic(), self.store.session_generation
        held = await self.store.acquire_shards(self.owner, sorted(want),
                                               lease_seconds=self.settings.owner_stale_seconds)
        if generation == self.store.session_generation and self.store.session_ok():
            self._lease_ok_until = started + self.settings.owner_stale_seconds - self._margin
            self._round_generation = generation
        self._fenced &= set(busy) - held  # held again: a later lapse is news
        self._held = held
        # Hand over: more than our share while a live worker holds fewer than its share.
        hungry = any(others.get(o, 0) < share for o in live if o != self.owner)
        extra = len(held) - share
        if extra > 0 and hungry and time.monotonic() >= self._keep_until:
            for shard_id in sorted(held, reverse=True)[:extra]:
                lane = self._lanes.get(shard_id)
                if lane is not None:
                    lane.handover = True
                    lane.poke()
                else:
                    await self.store.release_shards(self.owner, [shard_id])
                    self._held.discard(shard_id)
            self.log.info("shards_handed_over", shards=extra, share=share, workers=len(live))
        # Shards without work: give their leases back so another worker can start at once.
        idle = [s for s in held if s not in busy and s not in self._lanes]
        if idle:
            await self.store.release_shards(self.owner, idle)
            self._held.difference_update(idle)

    async def _start_lane(self, shard_id: int) -> None:
        assert self._lanes_tg is not None
        shard = await self.real_shard(await self.store.shard(shard_id))
        lane = self._lanes[shard_id] = Lane(self, shard_id, shard)
        self.lanes_started[shard_id] += 1

        async def drive() -> None:
            try:
                await lane.run()  # returns once its batches are back: then it may be handed over
            finally:
                self._lanes.pop(shard_id, None)
                if lane.handover:
                    with anyio.CancelScope(shield=True):
                        await self.store.release_shards(self.owner, [shard_id])
                    self._held.discard(shard_id)
                self.wake()

        self._lanes_tg.start_soon(drive)

    def work_is_current(self) -> bool:
        """Whether `work_of` reflects every outcome: none waiting in the recorder or being
        written, and the dispatcher's last look began after the last write."""
        return not self.recorder.busy and self.work_flushes >= self.flushes

    def _after_flush(self) -> None:
        self.flushes += 1
        for shard_id in self._requeued:
            lane = self._lanes.get(shard_id)
            if lane is not None:
                lane.poke()
        # The dispatcher looks now (lanes see work through it; a finished job is settled by
        # it) rather than at its next tick.
        self.wake()
        self._requeued.clear()

    # -- discovery -------------------------------------------------------------------------

    async def _start_discoveries(self) -> None:
        """Claim pending discovery walks (this run's jobs) and run them alongside lanes."""
        assert self._lanes_tg is not None
        while not self.stopping and self._discoveries < DISCOVERY_WALKS:
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
            self._discoveries += 1
            self._lanes_tg.start_soon(self._walk, d, job)

    async def _walk(self, d: Discovery, job: Job) -> None:
        try:
            shard = await self.real_shard(Shard(d.partition, d.account, d.region))
            policy = None
            if fixes_policy(job.options):
                # fix-policy: the walk keeps what the account's policy has something to fix
                policy = await self.tag_policy(shard, job_via(job.options))
                problem = self.tag_policy_problem(shard)
                if problem is not None:
                    await self.store.finish_discovery(
                        d, "failed", f"the account's tag policy could not be read ({problem})"
                        "; allow organizations:DescribeEffectivePolicy, then resubmit")
                    self.log.error("discovery_failed", job=d.job_id, account=shard.account,
                                   region=d.region, code=POLICY_UNREAD_CODE, message=problem)
                    return
            explorer = "Explorer" in (job.options.query or {})
            where = (shard.account, shard.region)
            self._walking[where] += 1
            try:
                await walk(self.store, self.settings, self.clients,
                           self.limiter(shard, "ListResources" if explorer else "GetResources"),
                           self.owner, d, job.options,
                           job.operation, self.discovery_stats, anyio.Event(), self.rng,
                           account=shard.account, policy=policy)
            finally:
                self._walking[where] -= 1
                if not self._walking[where]:
                    del self._walking[where]
        except StoreError:
            raise
        except Exception as exc:
            self.log.exception("discovery_crashed", error=repr(exc))
        finally:
            self._discoveries -= 1
            self.wake()

    # -- jobs ------------------------------------------------------------------------------

    async def _has_work(self) -> bool:
        # A job of this run whose sources are still being read has more items coming. Asked
        # before the runnable work: a load that ends in between left its last items runnable.
        for job_id in self.job_ids or ():
            job = await self.store.get_job(job_id)
            if job is not None and job.loading is not None and \
                    job.state in (JobState.READY, JobState.ACTIVE):
                return True
        return any(self.job_ids is None or r.job_id in self.job_ids
                   for r in await self.store.runnable())

    async def _leased_elsewhere(self) -> LeaseHolders | None:
        """Open items of this run's jobs held by other owners that still look alive."""
        if self.follow:
            return None
        ids = self.job_ids if self.job_ids is not None else set(self._jobs_seen)
        if not ids:
            return None
        held = 0
        for job_id in ids:
            job = await self.store.get_job(job_id)
            if job is None or job.state in JOB_DONE or job.state == JobState.PAUSED:
                continue
            held += (await self.store.counts(job_id))[ItemState.LEASED]
        if not held:
            return None
        stale = self.settings.owner_stale_seconds
        others = [w for w in await self.store.workers() if w.owner != self.owner]
        freshest = max((w.heartbeat_at for w in others), default=time.time())
        return LeaseHolders(held, tuple(w.owner for w in others), freshest + stale)

    async def _shards_elsewhere(self, busy: set[int]) -> LeaseHolders | None:
        """When every busy shard is leased to another owner: who, and until when at most."""
        if busy & self._held:
            return None
        holders = await self.store.shard_holders()
        if any(s not in holders or holders[s][0] == self.owner for s in busy):
            return None
        owners = {holders[s][0] for s in busy}
        ids = self.job_ids if self.job_ids is not None else set(self._jobs_seen)
        items = 0
        for job_id in ids:
            items += (await self.store.counts(job_id)).open
        stale = self.settings.owner_stale_seconds
        beats = [w.heartbeat_at for w in await self.store.workers() if w.owner in owners]
        until = max(holders[s][1] for s in busy)
        if beats:  # reclaimed once the heartbeat is stale, if that comes first
            until = min(until, max(beats) + stale)
        return LeaseHolders(items, tuple(sorted(owners)), until)

    def _say_waiting(self, holders: LeaseHolders) -> None:
        now = time.monotonic()
        if now - self._last_waiting_log < 30:
            return
        self._last_waiting_log = now
        until = time.strftime("%H:%M:%S", time.localtime(holders.stale_at))
        self.log.warning("waiting_for_leases", items=holders.items,
                         holders=", ".join(holders.owners) or "an owner no longer registered",
                         until=until, hint="another worker holds these items; they come back "
                         "when it finishes or its heartbeat goes stale (use --no-wait to exit)")

    async def _activate(self, job_id: int) -> None:
        job = await self.store.get_job(job_id)
        if job and job.state == JobState.READY:
            await self.store.set_job_state(job_id, JobState.ACTIVE)
            self.log.info("job_started", job=job_id, operation=job.operation)

    async def _settle_jobs(self) -> None:
        """Complete jobs with nothing left; fail those past their failure threshold; pause
        those whose sources' reader is gone (a half-read submission waits to be continued)."""
        now = time.monotonic()
        if now - self._loads_checked >= LOADS_EVERY:
            self._loads_checked = now
            for job_id in await self.store.reap_interrupted_loads(
                    self.settings.owner_stale_seconds):
                self.log.warning("load_interrupted", job=job_id, hint="the job is paused; the "
                                 "same submit command, run again, continues it")
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
            attempted = counts[ItemState.SUCCEEDED] + counts[ItemState.FAILED]
            min_items = (job.options.failure_min_items
                         if job.options.failure_min_items is not None
                         else self.settings.failure_min_items)
            ratio = (job.options.failure_ratio if job.options.failure_ratio is not None
                     else self.settings.failure_ratio)
            if attempted >= min_items and counts[ItemState.FAILED] > ratio * attempted:
                reason = (f"failure threshold passed: {counts[ItemState.FAILED]} of "
                          f"{attempted} attempted items failed (limit {ratio:.0%} after "
                          f"{min_items})")
                await self.store.cancel_items(job_id, f"job failed: {reason}", code="JobFailed")
                await self.store.set_job_state(job_id, JobState.FAILED, reason=reason)
                self.log.error("job_failed", job=job_id, reason=reason)

    def _log_rate_changes(self) -> None:
        """info: a shard slowed by throttles that is back at its ceiling (the slowing itself
        is logged by the sender as `shard_slowed`)."""
        for (shard, op), lim in self.limiters.items():
            key = (str(shard), op)
            if lim.rate < lim.policy.ceiling * 0.99:
                self._slowed.add(key)
            elif key in self._slowed:
                self._slowed.discard(key)
                self.log.info("shard_rate_recovered", shard=str(shard), operation=op,
                              rate=round(lim.rate, 2))

    async def _update_rates(self, finished: Counter[int], seconds: float) -> None:
        """Store this worker's recent rate on each active job, and the job's as the fleet's:
        the sum over the live workers (`status`, the dashboard and /metrics show that)."""
        for job_id in list(self._jobs_seen):
            job = await self.store.get_job(job_id)
            if job and job.state == JobState.ACTIVE:
                await self.store.set_worker_rate(self.owner, job_id, finished[job_id] / seconds)
                fleet = await self.store.fleet_rate(
                    job_id, fresh_seconds=FLEET_RATE_FRESH,
                    stale_seconds=self.settings.owner_stale_seconds)
                await self.store.set_job_rate(job_id, fleet.rate)
                self.fleet_rates[job_id] = fleet.rate
            else:
                self.fleet_rates.pop(job_id, None)
