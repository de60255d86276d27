"""A lane: the loops that drive one shard (partition, account, region) for this worker.

Items carry their route (stored at submission, README "Two routes"), and the lane runs one loop
per route side by side, each with its own claims, in-flight slots, limiters and outage state:
EC2 resources go by CreateTags/DeleteTags in batches of ≤ `ec2_batch_size` at EC2's rate while
the shard's other items go by the Tagging API in batches of ≤ 20 at its own, so neither waits
on the other. A route loop claims leased items of one job at a time (priority first,
round-robin among equals), reads current tags when the job skips compliant resources (the
Tagging API route through GetResources, the EC2 route through DescribeTags), splits them into
batches of one tagset, waits on the limiter and starts each batch in the engine's batch task
group, up to `in_flight_per_shard` at once. When an endpoint cannot be reached its loop pauses:
it stops sending, probes with one batch at growing intervals (capped at a minute), spends no
item's attempts, and carries on when a probe gets through. A bug in one claim's handling is
logged with its traceback and that claim's items go back to the queue, attempts untouched.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from bulktag.api_limits import ARNS_PER_READ, ARNS_PER_TAG_CALL, EC2_IDS_PER_READ, EC2_OPERATIONS
from bulktag.arn import ROUTE_EC2, ROUTES, Shard, ec2_route
from bulktag.aws.reads import Unreadable, read_ec2_tags, read_tags
from bulktag.engine.sender import OPERATIONS
from bulktag.policy.changes import Rules, decide, encode, kind_of, sendable, split_tags
from bulktag.policy.classify import Failure, Verdict, classify_call_error
from bulktag.store import Claimed, ItemState, JobOptions, Outcome, Runnable, StoreError

if TYPE_CHECKING:
    from bulktag.engine.dispatcher import Engine

log = structlog.get_logger("bulktag.engine")

PROBE_FIRST = 1.0  # seconds before the first probe of an unreachable shard
PROBE_CAP = 60.0
WARN_EVERY = 300.0  # an outage is logged again this often while it lasts


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

    def __init__(self, route: str, in_flight: int) -> None:
        self.route = route
        self.slots = anyio.Semaphore(in_flight, fast_acquire=True)
        self.outage: Outage | None = None
        self.not_before: dict[int, float] = {}
        self.rr = 0
        self.wake = anyio.Event()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self.wake.wait()
        if self.wake.is_set():  # poked: requeued work was just written, look again now
            self.wake = anyio.Event()
            self.not_before.clear()


class Lane:
    def __init__(self, engine: Engine, shard_id: int, shard: Shard) -> None:
        self.engine = engine
        self.shard_id = shard_id
        self.shard = shard
        self.log = engine.log.bind(shard=str(shard))
        self.in_flight = 0
        self.handover = False  # stop claiming: the shard goes to another worker
        # Set by the first route loop that finds the shard out of work: every loop then ends,
        # so the lane ends and the dispatcher starts a new one when work comes back. (Had each
        # loop decided alone, one could end while the other went on, and work of the ended
        # route that came back — a retry after a 500 — had a lane that no longer served it.)
        self.ending = False
        # Out of work but batches still out, or outcomes not yet in the dispatcher's view:
        # waiting for them (their retries come back to this lane; a lane that ended would have
        # to wait for its batches and the dispatcher's next look before a new one started).
        self.idle = False
        # Route loops between a claim and the start of its last batch: the items they hold are
        # neither pending nor in flight, so the shard looks out of work while they are there.
        self.holding = 0
        self.routes = {r: RouteLoop(r, engine.settings.in_flight_per_shard) for r in ROUTES}

    @property
    def outage(self) -> Outage | None:
        """An outage of any of the lane's routes (the first found)."""
        return next((r.outage for r in self.routes.values() if r.outage is not None), None)

    def poke(self) -> None:
        """Requeued work of this shard was just written (or the lane is ending): every route
        loop looks again now."""
        for loop in self.routes.values():
            loop.wake.set()

    def _poke_if_quiet(self) -> None:
        """A loop waits on the shard's last batches and claims: once none is out, look again
        (and end)."""
        if self.idle and not self.in_flight and not self.holding:
            self.poke()

    def _pick(self, loop: RouteLoop) -> Runnable | None:
        """Best-priority job with due work of this route; round-robin among equals."""
        now = time.time()
        candidates = [r for r in self.engine.work_of(self.shard_id)
                      if r.route == loop.route and loop.not_before.get(r.job_id, 0) <= now]
        if not candidates:
            return None
        top = max(r.priority for r in candidates)
        best = [r for r in candidates if r.priority == top]
        loop.rr += 1
        return best[loop.rr % len(best)]

    async def run(self) -> None:
        """Every route's loop at once, until the shard has no work left for this worker."""
        async with anyio.create_task_group() as tg:
            for loop in self.routes.values():
                tg.start_soon(self._run_route, loop)

    async def _run_route(self, loop: RouteLoop) -> None:
        engine = self.engine
        in_flight = engine.settings.in_flight_per_shard
        ec2 = loop.route == ROUTE_EC2
        claim_size = (engine.settings.ec2_batch_size if ec2 else ARNS_PER_TAG_CALL) * in_flight
        # The first claim is one read's worth: its batches go out after one GetResources call
        # rather than the slowest of several (the next claim is read while they are sent).
        first = not ec2
        while not engine.stopping and not self.handover:
            if self.ending or not engine.work_of(self.shard_id):
                if not self.ending and (self.in_flight or self.holding
                                        or not engine.work_is_current()):
                    self.idle = True
                    await loop.wait(1.0)
                    self.idle = False
                    continue
                self.ending = True
                self.poke()  # the other loops: end now, not after their wait
                return
            if loop.outage is not None:
                wait = loop.outage.next_probe - time.monotonic()
                if wait > 0 or self.in_flight:
                    await loop.wait(max(0.05, min(wait, 1.0)))
                    continue
            pick = self._pick(loop)
            if pick is None:
                # Due again at the earliest not_before of its jobs; a route with no work of
                # its own (most lanes have no EC2 items) looks again in a second, or at once
                # when poked — not every 10 ms, which cost 64 idle loops a core.
                now = time.time()
                soonest = min((loop.not_before.get(r.job_id, 0)
                               for r in engine.work_of(self.shard_id) if r.route == loop.route),
                              default=now + 1.0)
                await loop.wait(min(1.0, max(0.01, soonest - now)))
                continue
            size = (engine.settings.ec2_batch_size if ec2 else ARNS_PER_TAG_CALL) \
                if loop.outage is not None else min(claim_size, ARNS_PER_READ) if first \
                else claim_size
            first = False
            self.holding += 1
            try:
                claimed = await engine.store.claim(
                    engine.owner, pick.job_id, self.shard_id, size,
                    lease_seconds=engine.settings.lease_seconds, route=loop.route)
                if not claimed:
                    due = await engine.store.next_due(pick.job_id, self.shard_id, loop.route)
                    loop.not_before[pick.job_id] = due if due is not None else time.time() + 1.0
                    continue
                try:
                    await self._work(loop, pick, claimed)
                except StoreError:
                    raise
                except Exception:
                    self.log.exception("lane_error", job=pick.job_id, route=loop.route,
                                       items=len(claimed))
                    engine.requeue(claimed)
                    await anyio.sleep(1.0)
            finally:
                self.holding -= 1
                self._poke_if_quiet()

    async def _work(self, loop: RouteLoop, pick: Runnable, claimed: list[Claimed]) -> None:
        engine = self.engine
        options = await engine.options(pick.job_id)
        # EC2 items by their resource id; an item stored as `ec2` whose ARN names none (a store
        # migrated from a looser rule) goes by the Tagging API rather than not at all.
        ids: dict[int, str] = {}
        if loop.route == ROUTE_EC2:
            for c in claimed:
                resource_id = ec2_route(c.arn)
                if resource_id is not None:
                    ids[c.id] = resource_id
        undo = options.undo_of is not None
        # Query jobs were read by their walk; they read again only to keep before-images.
        if ((options.skip_compliant or options.if_absent) and options.query is None) or \
                options.before_images or undo:
            # A retry (an attempt spent: its last send failed) was read and found to need the
            # change already, and its before-image kept: sent again at once, without waiting
            # on another read. --if-absent and undo read again (what to send depends on what
            # the resource has now), and so does an item whose image was not kept yet.
            again = options.if_absent or undo
            fresh = [c for c in claimed if c.attempts == 0 or again
                     or (options.before_images and c.before is None)]
            seen = {c.id for c in fresh}
            retries = [c for c in claimed if c.id not in seen]
            claimed = retries + (await self._read_first(
                loop, pick.job_id, pick.operation, fresh, options, ids) if fresh else [])
        sends: list[tuple[list[Claimed], dict[int, str] | None]] = [
            (b, ids) for b in _batches([c for c in claimed if c.id in ids],
                                       engine.settings.ec2_batch_size)]
        sends += [(b, None) for b in _batches([c for c in claimed if c.id not in ids],
                                              ARNS_PER_TAG_CALL)]
        for n, (batch, batch_ids) in enumerate(sends):
            if engine.stopping or self.handover or \
                    (loop.outage is not None and time.monotonic() < loop.outage.next_probe):
                engine.requeue([c for b, _ in sends[n:] for c in b])  # not sent: back at once
                return
            tagset = batch[0].override or sendable(await engine.tagset(batch[0].tagset_id))
            # An undo batch that only removes keys is an UntagResources (DeleteTags) call and
            # waits on that API's limiter; one that sets and removes makes both calls on one.
            sets, _ = split_tags(pick.operation, tagset)
            operation = pick.operation if sets is not None or pick.operation == "untag" \
                else "untag"
            api = (EC2_OPERATIONS if batch_ids is not None else OPERATIONS)[operation]
            limiter = engine.limiter(self.shard, api)
            if loop.outage is not None:  # a probe: one batch, its answer awaited here
                await limiter.acquire()
                await self._send(loop, pick, batch, tagset, limiter, batch_ids)
                continue
            await loop.slots.acquire()
            try:
                await engine.open_slots.acquire()
                try:
                    await limiter.acquire()
                except BaseException:
                    engine.open_slots.release()
                    raise
            except BaseException:
                loop.slots.release()
                raise
            self.in_flight += 1
            engine.start_batch(self._batch_task, loop, pick, batch, tagset, limiter, batch_ids)

    async def _batch_task(self, loop: RouteLoop, pick: Runnable, batch: list[Claimed],
                          tagset: Any, limiter: Any, ids: dict[int, str] | None) -> None:
        try:
            await self._send(loop, pick, batch, tagset, limiter, ids)
        finally:
            self.in_flight -= 1
            loop.slots.release()
            self.engine.open_slots.release()
            self.engine.wake()
            self._poke_if_quiet()

    async def _send(self, loop: RouteLoop, pick: Runnable, batch: list[Claimed], tagset: Any,
                    limiter: Any, ids: dict[int, str] | None = None) -> None:
        engine = self.engine
        try:
            if ids is None:
                sent = await engine.sender.send(pick.job_id, pick.operation, self.shard_id,
                                                self.shard, batch, tagset, limiter,
                                                acquired=True)
            else:
                sent = await engine.sender.send_ec2(pick.job_id, pick.operation, self.shard_id,
                                                    self.shard, batch, ids, tagset, limiter,
                                                    acquired=True)
        except Exception:
            self.log.exception("batch_error", job=pick.job_id, items=len(batch))
            engine.requeue(batch)
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

    async def _read_first(self, loop: RouteLoop, job_id: int, operation: str,
                          claimed: list[Claimed], options: JobOptions,
                          ids: dict[int, str]) -> list[Claimed]:
        """Read current tags (every chunk at once) and decide each item (`changes.decide`):
        compliant ones end `skipped`, guardrails refuse theirs, --if-absent and undo items get
        the keys to send; the before-images of what will be sent are kept in the store before
        anything is sent. EC2 items are read by DescribeTags (`EC2_IDS_PER_READ` ids a call,
        narrowed to the keys their tagsets touch; `ec2_read = "get-resources"` reads them as the
        rest), the rest by GetResources (100 ARNs a call). A read that fails is no reason to
        stop: the items are sent as they are, unless what to send depends on the read or a
        before-image must be kept (those retry the read on their attempt budget; --if-absent
        alone waits for a readable moment without spending attempts)."""
        engine = self.engine
        undo = options.undo_of is not None
        rules = Rules(kind=kind_of(operation, options.undo_of),
                      skip_compliant=options.skip_compliant or undo,
                      if_absent=options.if_absent, case_conflict=options.case_conflict or "skip",
                      force=options.force, undo_of=options.undo_of)
        keep_images = options.before_images or undo
        by_id = ids if engine.settings.ec2_read == "describe-tags" else {}
        by_ec2 = [c for c in claimed if c.id in by_id]
        by_arn = [c for c in claimed if c.id not in by_id]
        chunks = [by_ec2[i: i + EC2_IDS_PER_READ] for i in range(0, len(by_ec2),
                                                                 EC2_IDS_PER_READ)]
        n_ec2 = len(chunks)
        chunks += [by_arn[i: i + ARNS_PER_READ] for i in range(0, len(by_arn), ARNS_PER_READ)]
        readings: list[dict[str, dict[str, str]] | Failure] = [{} for _ in chunks]

        def counted(op: str) -> dict[str, Any]:
            """Retry settings of a compliance read, every call of it counted for /metrics."""
            def call() -> None:
                engine.stats.requests[op] += 1
                engine.metrics.request(op, self.shard)
            return {"rng": engine.rng, "max_attempts": 2, "max_throttles": 3, "on_call": call,
                    "on_throttle": lambda: engine.metrics.throttle(op, self.shard)}

        async def read_arns(chunk: list[Claimed]) -> dict[str, dict[str, str]]:
            return await read_tags(engine.clients, self.shard,
                                   engine.limiter(self.shard, "GetResources"),
                                   [c.arn for c in chunk], engine.settings,
                                   **counted("GetResources"))

        async def read_ids(chunk: list[Claimed]) -> dict[str, dict[str, str]]:
            keys: set[str] = set()
            for c in chunk:  # the keys each tagset touches (tag and undo bodies: their keys)
                keys.update(await engine.tagset(c.tagset_id))
            found = await read_ec2_tags(engine.clients, self.shard,
                                        engine.limiter(self.shard, "DescribeTags"),
                                        [by_id[c.id] for c in chunk], sorted(keys),
                                        engine.settings, **counted("DescribeTags"))
            return {c.arn: found.get(by_id[c.id], {}) for c in chunk}

        async def read(n: int, chunk: list[Claimed],
                       how: Callable[[list[Claimed]], Awaitable[dict[str, dict[str, str]]]]
                       ) -> None:
            try:
                readings[n] = await how(chunk)
            except Unreadable as exc:
                readings[n] = exc.failure

        async with anyio.create_task_group() as tg:
            for n, chunk in enumerate(chunks):
                tg.start_soon(read, n, chunk, read_ids if n < n_ec2 else read_arns)
        keep: list[Claimed] = []
        outcomes: list[Outcome] = []
        images: list[tuple[int, str]] = []
        for n, (chunk, current) in enumerate(zip(chunks, readings, strict=True)):
            if isinstance(current, Failure):
                if classify_call_error(current, 1) is Verdict.UNREACHABLE:
                    self._unreachable(loop, current)
                    engine.requeue(chunk)
                    continue
                self.log.info("compliance_read_failed", error=f"{current.code}: "
                              f"{current.message}", items=len(chunk), route=loop.route)
                if keep_images or undo:
                    outcomes += self._unread(job_id, chunk, current, n < n_ec2)
                elif options.if_absent:
                    retry_at = time.time() + engine.settings.throttle_retry_delay * 5
                    outcomes += [Outcome(c.id, ItemState.PENDING, c.attempts, retry_at,
                                         "TagsNotRead", None, "current tags could not be read")
                                 for c in chunk]
                else:
                    keep.extend(chunk)
                continue
            for c in chunk:
                decision = decide(rules, await engine.tagset(c.tagset_id),
                                  current.get(c.arn, {}))
                if decision.send:
                    c.override = decision.override
                    keep.append(c)
                    if keep_images and c.before is None:
                        c.before = encode(decision.before)
                        images.append((c.id, c.before))
                    continue
                engine.stats.finished[job_id] += 1
                if decision.already and c.before is not None and c.before != "{}":
                    # Its image was kept and the resource is now as the job wants: an earlier
                    # attempt's call landed before its outcome was recorded (a crash).
                    outcomes.append(Outcome(c.id, ItemState.SUCCEEDED, c.attempts + 1,
                                            message="an earlier attempt's call had landed"))
                    continue
                state = ItemState.FAILED if decision.failed else ItemState.SKIPPED
                outcomes.append(Outcome(c.id, state, c.attempts, error_code=decision.code,
                                        message=decision.reason))
        engine.recorder.add(outcomes)
        if images:
            await engine.store.keep_before(engine.owner, images)
        return keep

    def _unread(self, job_id: int, chunk: list[Claimed], failure: Failure,
                ec2: bool) -> list[Outcome]:
        """Items whose tags could not be read when their before-image (or an undo check) needs
        them: a throttle waits without an attempt; anything else spends one, and the item fails
        with what to do once its budget is spent."""
        engine = self.engine
        allow = "ec2:DescribeTags" if ec2 else "tag:GetResources"
        reason = Failure("TagsNotRead", failure.status,
                         f"current tags could not be read ({failure.code}: {failure.message}); "
                         f"they are needed for the before-image (allow {allow}, or "
                         "submit with --no-before-images)")
        verdict = classify_call_error(failure, 1)
        if verdict is not Verdict.THROTTLE:
            verdict = Verdict.TRANSIENT
        return [engine.sender.outcome(job_id, c, verdict, reason) for c in chunk]


def _batches(claimed: list[Claimed], size: int) -> Iterable[list[Claimed]]:
    """Split claimed items into batches of ≤ `size` that send the same tags."""
    by_tagset: dict[tuple[int, str], list[Claimed]] = defaultdict(list)
    for c in claimed:
        override = json.dumps(c.override, sort_keys=True) if c.override else ""
        by_tagset[(c.tagset_id, override)].append(c)
    for items in by_tagset.values():
        for i in range(0, len(items), size):
            yield items[i: i + size]
