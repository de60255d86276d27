"""A lane: the loops that drive one shard (partition, account, region) for this worker.

Items carry their route (stored at submission, README "Two routes"), and the lane runs one loop
per route side by side, each with its own claims, in-flight slots, limiters and outage state:
EC2 resources go by CreateTags/DeleteTags in batches of ≤ `ec2_batch_size` at EC2's rate while
the shard's other items go by the Tagging API in batches of ≤ 20 at its own, so neither waits
on the other. What a route loop does next (end, wait, claim how many of which job) is decided
by the pure `steps.next_step` from a view of the lane built here; this module only carries it
out. A claim's items are read and decided by `reader.Reader` when the job needs it, split into
`Batch`es of one tagset, and each waits on the limiter and starts in the engine's batch task
group, up to `in_flight_per_shard` at once. When an endpoint cannot be reached its loop pauses:
it stops sending, probes with one batch at growing intervals (capped at a minute), spends no
item's attempts, and carries on when a probe gets through. A bug in one claim's handling is
logged with its traceback and that claim's items go back to the queue, attempts untouched.
The lane sees the engine through `context.LaneContext` only (no import of the dispatcher).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from bulktag.api_limits import ARNS_PER_TAG_CALL
from bulktag.arn import ROUTE_EC2, ROUTES, Shard, ec2_route, resource_type_of
from bulktag.engine.context import LaneContext
from bulktag.engine.reader import Reader, job_via, needs_read
from bulktag.engine.sender import TAGGING_API, Batch, Ec2Tags, RouteCalls
from bulktag.engine.steps import Claim, End, LaneView, RouteJob, Wait, next_step, quiet
from bulktag.policy.changes import sendable, split_tags
from bulktag.policy.classify import Failure
from bulktag.policy.tag_policy import POLICY_CODE, violations
from bulktag.store import Claimed, ItemState, JobOptions, Outcome, Runnable, StoreError

PROBE_FIRST = 1.0  # seconds before the first probe of an unreachable shard
PROBE_CAP = 60.0
WARN_EVERY = 300.0  # an outage is logged again this often while it lasts
TRANSFORM_CLAIM = 5_000  # items a transform or undo claims at once (50 reads)
EMPTY_CLAIM_PAUSE = 0.25  # seconds before claiming again after items due but none claimed


class Outage:
    """A shard's route whose endpoint does not answer, and when to probe it next."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        self.since = time.monotonic()
        self.delay = PROBE_FIRST
        self.next_probe = self.since + self.delay
        self.warned = self.since

    def failed_again(self, failure: Failure) -> bool:
        """Back off; True when it is time to say so again."""
        self.failure = failure
        self.delay = min(PROBE_CAP, self.delay * 2)
        now = time.monotonic()
        self.next_probe = now + self.delay
        if now - self.warned >= WARN_EVERY:
            self.warned = now
            return True
        return False


class RouteLoop:
    """What one route of a lane keeps: its slots, its outage, when each job is due, and its own
    wake-up (a lane's loops each consume their own: with one event shared, the first loop to
    wake took the poke and the other kept waiting on a stale backoff)."""

    def __init__(self, route: str, in_flight: int, batch_size: int) -> None:
        self.route = route
        self.batch_size = batch_size
        self.slots = anyio.Semaphore(in_flight, fast_acquire=True)
        self.in_flight = 0  # this route's batches out (the lane counts every route's too)
        self.outage: Outage | None = None
        self.not_before: dict[int, float] = {}
        self.rr = 0
        # The Tagging API route's first claim is one read's worth (EC2 items are rarely read).
        self.first_claim = route != ROUTE_EC2
        self.wake = anyio.Event()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self.wake.wait()
        if self.wake.is_set():  # poked: requeued work was just written, look again now
            self.wake = anyio.Event()
            self.not_before.clear()


class Lane:
    def __init__(self, ctx: LaneContext, shard_id: int, shard: Shard) -> None:
        self.ctx = ctx
        self.shard_id = shard_id
        self.shard = shard
        self.log = ctx.log.bind(shard=str(shard))
        self.reader = Reader(ctx, shard, self.log)
        self.in_flight = 0
        self._back = anyio.Event()  # set when the last batch out comes back
        self.handover = False  # stop claiming: the shard goes to another worker
        # Set by the first route loop that finds the shard out of work: every loop then ends,
        # so the lane ends and the dispatcher starts a new one when work comes back.
        self.ending = False
        # Loops out of work waiting on the lane's last batches and claims, or on their outcomes
        # reaching the dispatcher's view (their retries come back to this lane).
        self.idle_loops = 0
        # Route loops between a claim and the start of its last batch: the items they hold are
        # neither pending nor in flight, so the shard looks out of work while they are there.
        self.holding = 0
        settings = ctx.settings
        self.routes = {r: RouteLoop(r, settings.in_flight_per_shard,
                                    settings.ec2_batch_size if r == ROUTE_EC2
                                    else ARNS_PER_TAG_CALL) for r in ROUTES}

    @property
    def outage(self) -> Outage | None:
        """An outage of any of the lane's routes (the first found)."""
        return next((r.outage for r in self.routes.values() if r.outage is not None), None)

    @property
    def idle(self) -> bool:
        """Some loop waits on the lane's last work (the dispatcher pokes it after each look)."""
        return self.idle_loops > 0

    def poke(self) -> None:
        """Requeued work of this shard was just written (or the lane is ending): every route
        loop looks again now."""
        for loop in self.routes.values():
            loop.wake.set()

    def _poke_if_quiet(self) -> None:
        if quiet(self.idle, self.in_flight, self.holding):
            self.poke()

    def view(self, loop: RouteLoop) -> LaneView:
        """What `next_step` decides from, for one of the lane's route loops."""
        ctx = self.ctx
        work = ctx.work_of(self.shard_id)
        now = time.time()
        not_before = loop.not_before
        outage = loop.outage
        return LaneView(
            stop=ctx.stopping or self.handover, ending=self.ending, shard_has_work=bool(work),
            work_current=ctx.work_is_current(), in_flight=self.in_flight, holding=self.holding,
            jobs=tuple(RouteJob(r.job_id, r.priority, not_before.get(r.job_id, 0) - now)
                       for r in work if r.route == loop.route),
            probe_in=None if outage is None else outage.next_probe - time.monotonic(),
            route_in_flight=loop.in_flight, batch_size=loop.batch_size,
            in_flight_per_shard=ctx.settings.in_flight_per_shard,
            first_claim=loop.first_claim, turn=loop.rr)

    async def run(self) -> None:
        """Every route's loop at once, until the shard has no work left for this worker; then
        until the lane's batches are back (the shard is handed over only after them)."""
        async with anyio.create_task_group() as tg:
            for loop in self.routes.values():
                tg.start_soon(self._run_route, loop)
        while self.in_flight:
            self._back = anyio.Event()
            await self._back.wait()

    async def _run_route(self, loop: RouteLoop) -> None:
        while True:
            step = next_step(self.view(loop))
            if isinstance(step, End):
                if step.lane_done and not self.ending:
                    self.ending = True
                    self.poke()  # the other loops: end now, not after their wait
                return
            if isinstance(step, Wait):
                if step.idle:
                    self.idle_loops += 1
                    try:
                        await loop.wait(step.seconds)
                    finally:
                        self.idle_loops -= 1
                else:
                    await loop.wait(step.seconds)
                continue
            loop.rr += 1
            loop.first_claim = False
            await self._claim(loop, step)

    async def _claim(self, loop: RouteLoop, step: Claim) -> None:
        """Claim, and hand the items on; nothing claimed: the job is due again when the store
        says (its next item's due time) or in a second."""
        ctx = self.ctx
        pick = next(r for r in ctx.work_of(self.shard_id)
                    if r.job_id == step.job_id and r.route == loop.route)
        size = step.size
        options = await ctx.options(pick.job_id)
        if loop.outage is None and (options.transform or options.undo_of is not None):
            # What a transform (or an undo) sends is known only once read: claims large enough
            # that the resources needing the same tag map fill whole calls (near the fewest).
            size = max(size, TRANSFORM_CLAIM)
        self.holding += 1
        try:
            claimed = await ctx.store.claim(
                ctx.owner, pick.job_id, self.shard_id, size,
                lease_seconds=ctx.settings.lease_seconds, route=loop.route)
            if not claimed:
                # Items due but none claimed: the job was paused or ended since the dispatcher
                # looked (a claim leases only a ready or active job's items), or another
                # worker took them. Look again shortly, not in a tight loop.
                due = await ctx.store.next_due(pick.job_id, self.shard_id, loop.route)
                now = time.time()
                loop.not_before[pick.job_id] = (now + 1.0 if due is None
                                                else max(due, now + EMPTY_CLAIM_PAUSE))
                return
            try:
                await self._work(loop, pick, claimed)
            except StoreError:
                raise
            except Exception:
                self.log.exception("lane_error", job=pick.job_id, route=loop.route,
                                   items=len(claimed))
                ctx.requeue(claimed)
                await anyio.sleep(1.0)  # a bug: not at once into the same again
        finally:
            self.holding -= 1
            self._poke_if_quiet()

    async def _work(self, loop: RouteLoop, pick: Runnable, claimed: list[Claimed]) -> None:
        ctx = self.ctx
        options = await ctx.options(pick.job_id)
        # EC2 items by their resource id; an item stored as `ec2` whose ARN names none (a store
        # migrated from a looser rule) goes by the Tagging API rather than not at all.
        ids: dict[int, str] = {}
        if loop.route == ROUTE_EC2:
            for c in claimed:
                resource_id = ec2_route(c.arn)
                if resource_id is not None:
                    ids[c.id] = resource_id
        if needs_read(options):
            claimed = await self.reader.decide(
                loop.route, pick.job_id, pick.operation, claimed, options, ids,
                lambda failure: self._unreachable(loop, failure))
        if pick.operation == "tag" and not options.allow_noncompliant:
            claimed = await self._refuse_noncompliant(pick, claimed, options)
            if not claimed:
                return
        if options.transform or options.undo_of is not None:
            # each resource its own change of set and removed keys (an undo's too)
            await self._transform(loop, pick, claimed, ids)
            return
        sends: list[tuple[list[Claimed], RouteCalls]] = []
        if ids:
            ec2 = Ec2Tags(ids)
            sends += [(b, ec2) for b in _batches([c for c in claimed if c.id in ids],
                                                 ctx.settings.ec2_batch_size)]
        sends += [(b, TAGGING_API) for b in _batches([c for c in claimed if c.id not in ids],
                                                     ARNS_PER_TAG_CALL)]
        for n, (items, route) in enumerate(sends):
            tagset = items[0].override or sendable(await ctx.tagset(items[0].tagset_id))
            if not await self._dispatch(loop, pick, items, route, tagset):
                ctx.requeue([c for b, _ in sends[n + 1:] for c in b])
                return

    async def _refuse_noncompliant(self, pick: Runnable, claimed: list[Claimed],
                                   options: JobOptions) -> list[Claimed]:
        """Items whose tags the account's tag policy enforces against on their resource type
        fail here, without a call (AWS would refuse them); the rest go on."""
        ctx = self.ctx
        policy = await ctx.tag_policy(self.shard, job_via(options))
        if not policy.rules:
            return claimed
        keep: list[Claimed] = []
        outcomes: list[Outcome] = []
        for c in claimed:
            body = c.override or sendable(await ctx.tagset(c.tagset_id))
            tags = {k: v for k, v in body.items() if v is not None} \
                if isinstance(body, dict) else {}
            kind = resource_type_of(c.arn)
            refused = [v for v in violations(policy, kind, tags) if v.enforced]
            if not refused:
                keep.append(c)
                continue
            ctx.stats.finished[pick.job_id] += 1
            outcomes.append(Outcome(
                c.id, ItemState.FAILED, c.attempts, error_code=POLICY_CODE,
                message="refused before sending: " + "; ".join(v.reason for v in refused) +
                f" on {kind}, which the account's tag policy enforces "
                "(--allow-noncompliant sends it anyway)"))
        if outcomes:
            ctx.recorder.add(outcomes)
        return keep

    async def _dispatch(self, loop: RouteLoop, pick: Runnable, items: list[Claimed],
                        route: RouteCalls, tagset: Any, *,
                        then: Callable[[list[Claimed]], None] | None = None, note: str = "",
                        after: Callable[[], None] | None = None) -> bool:
        """Send one batch: wait on its slot and limiter and start it in the engine's batch
        task group (a probe is sent and awaited here). False, with the items back in the queue,
        when the lane stops, hands over, or waits for its next probe. `then` and `note` go
        with the batch (a transform's steps); `after` is called once the batch is back."""
        ctx = self.ctx
        via = job_via(await ctx.options(pick.job_id))  # cached: no store read per batch
        if ctx.stopping or self.handover or \
                (loop.outage is not None and time.monotonic() < loop.outage.next_probe):
            ctx.requeue(items)  # not sent: back at once
            if after is not None:
                after()
            return False
        # An undo batch that only removes keys is an UntagResources (DeleteTags) call and
        # waits on that API's limiter; one that sets and removes makes both calls on one.
        sets, _ = split_tags(pick.operation, tagset)
        operation = pick.operation if sets is not None or pick.operation == "untag" \
            else "untag"
        limiter = ctx.limiter(self.shard, route.operations[operation])
        batch = Batch(pick.job_id, pick.operation, self.shard_id, self.shard, items,
                      tagset, limiter, route, then=then, note=note, via=via)
        if loop.outage is not None:  # a probe: one batch, its answer awaited here
            await limiter.acquire()
            try:
                await self._send(loop, batch)
            finally:
                if after is not None:
                    after()
            return True
        await loop.slots.acquire()
        try:
            await ctx.open_slots.acquire()
            try:
                await limiter.acquire()
            except BaseException:
                ctx.open_slots.release()
                raise
        except BaseException:
            loop.slots.release()
            raise
        self.in_flight += 1
        loop.in_flight += 1
        ctx.start_batch(self._batch_task, loop, batch, after)
        return True

    async def _transform(self, loop: RouteLoop, pick: Runnable, claimed: list[Claimed],
                         ids: dict[int, str]) -> None:
        """A transform's claim, each item decided (its override: keys to set, keys to remove
        as None). First step: TagResources (CreateTags) of the new keys, batched by the exact
        tag map. An item whose first step succeeded and that has keys to remove goes on to its
        second step, UntagResources (DeleteTags) of the old keys, batched by key set: a call's
        worth is sent as soon as it is ready, so both APIs' quotas are driven at once, and the
        rest once the first steps are all back. Never the removal before the set: a crash in
        between leaves both keys, and the item's next claim reads them and sends only the
        removal."""
        ctx = self.ctx
        first: dict[tuple[bool, str, bool], list[Claimed]] = defaultdict(list)
        ready: list[Claimed] = []  # nothing to set: straight to the second step
        for c in claimed:
            sets = {k: v for k, v in c.override.items() if v is not None}
            removes = len(sets) < len(c.override)
            if sets:
                first[(c.id in ids, json.dumps(sets, sort_keys=True), removes)].append(c)
            else:
                ready.append(c)
        ec2 = Ec2Tags(ids) if ids else None
        sends = [(items, ec2 if by_ec2 and ec2 else TAGGING_API, json.loads(sets), removes)
                 for (by_ec2, sets, removes), group in first.items()
                 for items in _chunks(group, ctx.settings.ec2_batch_size if by_ec2
                                      else ARNS_PER_TAG_CALL)]
        onward, arriving = anyio.create_memory_object_stream[list[Claimed]](math.inf)
        back = anyio.Event()
        out = [len(sends)]

        def one_back() -> None:
            out[0] -= 1
            if out[0] == 0:
                back.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._second_steps, loop, pick, arriving, ids)
            if ready:
                onward.send_nowait(ready)
            for items, route, sets, removes in sends:
                await self._dispatch(loop, pick, items, route, sets,
                                     then=onward.send_nowait if removes else None,
                                     after=one_back)
            if sends:
                await back.wait()
            onward.close()

    async def _second_steps(self, loop: RouteLoop, pick: Runnable,
                            arriving: MemoryObjectReceiveStream[list[Claimed]],
                            ids: dict[int, str]) -> None:
        """The removals of a transform's claim, by key set, a call's worth at a time."""
        buckets: dict[tuple[bool, tuple[str, ...]], list[Claimed]] = defaultdict(list)
        ec2 = Ec2Tags(ids) if ids else None

        async def send(key: tuple[bool, tuple[str, ...]], items: list[Claimed]) -> None:
            by_ec2, removes = key
            await self._dispatch(
                loop, pick, items, ec2 if by_ec2 and ec2 else TAGGING_API,
                dict.fromkeys(removes), note=f"the new keys are set; removing {', '.join(removes)} "
                "failed (the old keys are still there): ")

        async with arriving:
            async for items in arriving:
                for c in items:
                    key = (c.id in ids, tuple(sorted(k for k, v in c.override.items()
                                                     if v is None)))
                    bucket = buckets[key]
                    bucket.append(c)
                    size = self.ctx.settings.ec2_batch_size if key[0] else ARNS_PER_TAG_CALL
                    if len(bucket) >= size:
                        buckets[key] = []
                        await send(key, bucket)
        for key, bucket in buckets.items():
            if bucket:
                await send(key, bucket)

    async def _batch_task(self, loop: RouteLoop, batch: Batch,
                          after: Callable[[], None] | None = None) -> None:
        try:
            await self._send(loop, batch)
        finally:
            if after is not None:
                after()
            self.in_flight -= 1
            loop.in_flight -= 1
            loop.slots.release()
            self.ctx.open_slots.release()
            self.ctx.wake()
            if not self.in_flight:
                self._back.set()
            if loop.outage is not None and not loop.in_flight:
                loop.wake.set()  # its probe waited on these batches: it may go now
            self._poke_if_quiet()

    async def _send(self, loop: RouteLoop, batch: Batch) -> None:
        try:
            sent = await self.ctx.sender.send(batch, acquired=True)
        except Exception:
            self.log.exception("batch_error", job=batch.job_id, items=len(batch.items))
            self.ctx.requeue(batch.items)
            return
        if sent.unreachable is not None:
            self._unreachable(loop, sent.unreachable)
        elif loop.outage is not None:
            down = time.monotonic() - loop.outage.since
            self.log.warning("shard_reachable", route=loop.route,
                             after_seconds=round(down, 1))
            loop.outage = None

    def _unreachable(self, loop: RouteLoop, failure: Failure) -> None:
        if loop.outage is None:
            loop.outage = Outage(failure)
            self.log.warning("shard_unreachable", route=loop.route,
                             error=f"{failure.code}: {failure.message}",
                             hint="sending paused; probing at growing intervals; no item "
                                  "spends an attempt meanwhile")
        elif loop.outage.failed_again(failure):
            self.log.warning("shard_still_unreachable", route=loop.route,
                             for_seconds=round(time.monotonic() - loop.outage.since),
                             error=f"{failure.code}: {failure.message}",
                             next_probe_in=round(loop.outage.delay))


def _chunks(items: list[Claimed], size: int) -> Iterable[list[Claimed]]:
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _batches(claimed: list[Claimed], size: int) -> Iterable[list[Claimed]]:
    """Split claimed items into batches of ≤ `size` that send the same tags."""
    by_tagset: dict[tuple[int, str], list[Claimed]] = defaultdict(list)
    for c in claimed:
        override = json.dumps(c.override, sort_keys=True) if c.override else ""
        by_tagset[(c.tagset_id, override)].append(c)
    for items in by_tagset.values():
        for i in range(0, len(items), size):
            yield items[i: i + size]
