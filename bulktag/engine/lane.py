"""A lane: the loop that drives one shard (partition, account, region) for this worker.

It claims leased items of one job at a time (priority first, round-robin among equals), reads
current tags when the job skips compliant resources, splits them by route (EC2 resources that
CreateTags takes go by EC2's API in batches of ≤ `ec2_batch_size`, the rest by the Tagging API
in batches of ≤ 20), each batch of one tagset, waits on the shard's limiter and starts each
batch in the engine's batch task group, up to `in_flight_per_shard` at once. When the endpoint
cannot be reached the lane pauses: it stops sending, probes with one batch at growing intervals
(capped at a minute), spends no item's attempts, and carries on when a probe gets through. A bug
in one claim's handling is logged with its traceback and that claim's items go back to the
queue, attempts untouched.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from ..arn import ROUTE_TAGGING, Shard, ec2_route
from ..aws import Unreadable, read_tags
from ..changes import Rules, decide, encode, kind_of, sendable, split_tags
from ..classify import Failure, Verdict, classify_call_error
from ..limits import ARNS_PER_READ, ARNS_PER_TAG_CALL, EC2_OPERATIONS
from ..store import Claimed, ItemState, JobOptions, Outcome, Runnable, StoreError
from .sender import OPERATIONS

if TYPE_CHECKING:
    from .core import Engine

log = structlog.get_logger("bulktag.engine")

PROBE_FIRST = 1.0  # seconds before the first probe of an unreachable shard
PROBE_CAP = 60.0
WARN_EVERY = 300.0  # an outage is logged again this often while it lasts


class Outage:
    """A shard whose endpoint does not answer, and when to probe it next."""

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


class Lane:
    def __init__(self, engine: Engine, shard_id: int, shard: Shard) -> None:
        self.engine = engine
        self.shard_id = shard_id
        self.shard = shard
        self.log = engine.log.bind(shard=str(shard))
        self.in_flight = 0
        self.handover = False  # stop claiming: the shard goes to another worker
        self.wake = anyio.Event()
        self.outage: Outage | None = None
        self._slots = anyio.Semaphore(engine.settings.in_flight_per_shard, fast_acquire=True)
        self._not_before: dict[int, float] = {}
        self._rr = 0
        self._ec2_seen: dict[int, bool] = {}  # job -> its last claim here had EC2 items

    def poke(self) -> None:
        """Requeued work of this shard was just written: look again now."""
        self.wake.set()

    def _pick(self) -> Runnable | None:
        """Best-priority job with due work on this shard; round-robin among equals."""
        now = time.time()
        candidates = [r for r in self.engine.work_of(self.shard_id)
                      if self._not_before.get(r.job_id, 0) <= now]
        if not candidates:
            return None
        top = max(r.priority for r in candidates)
        best = [r for r in candidates if r.priority == top]
        self._rr += 1
        return best[self._rr % len(best)]

    async def run(self) -> None:
        engine = self.engine
        in_flight = engine.settings.in_flight_per_shard
        claim_size = ARNS_PER_TAG_CALL * in_flight
        ec2_claim_size = max(claim_size, engine.settings.ec2_batch_size * in_flight)
        while not engine.stopping and not self.handover:
            if not engine.work_of(self.shard_id):
                return
            if self.outage is not None:
                wait = self.outage.next_probe - time.monotonic()
                if wait > 0 or self.in_flight:
                    with anyio.move_on_after(max(0.05, min(wait, 1.0))):
                        await self.wake.wait()
                    self.wake = anyio.Event()
                    continue
            pick = self._pick()
            if pick is None:
                waits = [self._not_before.get(r.job_id, 0)
                         for r in engine.work_of(self.shard_id)]
                timeout = min(1.0, max(0.01, min(waits, default=1) - time.time()))
                with anyio.move_on_after(timeout):
                    await self.wake.wait()
                if self.wake.is_set():
                    self.wake = anyio.Event()
                    self._not_before.clear()  # requeued work was just written: look again
                continue
            # EC2 items go in batches of up to ec2_batch_size: a shard whose last claim held
            # any claims enough to fill them (claims are per shard, items of either route).
            size = ARNS_PER_TAG_CALL if self.outage is not None else \
                ec2_claim_size if self._ec2_seen.get(pick.job_id) else claim_size
            claimed = await engine.store.claim(engine.owner, pick.job_id, self.shard_id, size,
                                               lease_seconds=engine.settings.lease_seconds)
            if not claimed:
                due = await engine.store.next_due(pick.job_id, self.shard_id)
                self._not_before[pick.job_id] = due if due is not None else time.time() + 1.0
                continue
            try:
                await self._work(pick, claimed)
            except StoreError:
                raise
            except Exception:
                self.log.exception("lane_error", job=pick.job_id, items=len(claimed))
                engine.requeue(claimed)
                await anyio.sleep(1.0)

    async def _work(self, pick: Runnable, claimed: list[Claimed]) -> None:
        engine = self.engine
        options = await engine.options(pick.job_id)
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
                pick.job_id, pick.operation, fresh, options) if fresh else [])
        # The route of each item, from its ARN (README "Two routes"): EC2 resources that
        # CreateTags takes go by EC2's API unless the job says tagging-api.
        ids: dict[int, str] = {}
        if (options.route or engine.settings.route) != ROUTE_TAGGING:
            for c in claimed:
                resource_id = ec2_route(c.arn)
                if resource_id is not None:
                    ids[c.id] = resource_id
        self._ec2_seen[pick.job_id] = bool(ids)
        sends: list[tuple[list[Claimed], dict[int, str] | None]] = [
            (b, ids) for b in _batches([c for c in claimed if c.id in ids],
                                       engine.settings.ec2_batch_size)]
        sends += [(b, None) for b in _batches([c for c in claimed if c.id not in ids],
                                              ARNS_PER_TAG_CALL)]
        for n, (batch, batch_ids) in enumerate(sends):
            if engine.stopping or self.handover or \
                    (self.outage is not None and time.monotonic() < self.outage.next_probe):
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
            if self.outage is not None:  # a probe: one batch, its answer awaited here
                await limiter.acquire()
                await self._send(pick, batch, tagset, limiter, batch_ids)
                continue
            await self._slots.acquire()
            try:
                await engine.open_slots.acquire()
                try:
                    await limiter.acquire()
                except BaseException:
                    engine.open_slots.release()
                    raise
            except BaseException:
                self._slots.release()
                raise
            self.in_flight += 1
            engine.start_batch(self._batch_task, pick, batch, tagset, limiter, batch_ids)

    async def _batch_task(self, pick: Runnable, batch: list[Claimed], tagset: Any,
                          limiter: Any, ids: dict[int, str] | None) -> None:
        try:
            await self._send(pick, batch, tagset, limiter, ids)
        finally:
            self.in_flight -= 1
            self._slots.release()
            self.engine.open_slots.release()
            self.engine.wake()

    async def _send(self, pick: Runnable, batch: list[Claimed], tagset: Any,
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
            self._unreachable(sent.unreachable)
        elif self.outage is not None:
            down = time.monotonic() - self.outage.since
            self.log.warning("shard_reachable", after_seconds=round(down, 1))
            self.outage = None

    def _unreachable(self, failure: Failure) -> None:
        if self.outage is None:
            self.outage = Outage(failure)
            self.log.warning("shard_unreachable", error=f"{failure.code}: {failure.message}",
                             hint="sending paused; probing at growing intervals; no item "
                                  "spends an attempt meanwhile")
        elif self.outage.failed_again(failure):
            self.log.warning("shard_still_unreachable",
                             for_seconds=round(time.monotonic() - self.outage.since),
                             error=f"{failure.code}: {failure.message}",
                             next_probe_in=round(self.outage.delay))

    async def _read_first(self, job_id: int, operation: str, claimed: list[Claimed],
                          options: JobOptions) -> list[Claimed]:
        """Read current tags (GetResources, 100 ARNs a call, all at once) and decide each item
        (`changes.decide`): compliant ones end `skipped`, guardrails refuse theirs, --if-absent
        and undo items get the keys to send; the before-images of what will be sent are kept
        in the store before anything is sent. A read that fails is no reason to stop: the items
        are sent as they are, unless what to send depends on the read or a before-image must be
        kept (those retry the read on their attempt budget; --if-absent alone waits for a
        readable moment without spending attempts, as before)."""
        engine = self.engine
        undo = options.undo_of is not None
        rules = Rules(kind=kind_of(operation, options.undo_of),
                      skip_compliant=options.skip_compliant or undo,
                      if_absent=options.if_absent, case_conflict=options.case_conflict or "skip",
                      force=options.force, undo_of=options.undo_of)
        keep_images = options.before_images or undo
        limiter = engine.limiter(self.shard, "GetResources")
        chunks = [claimed[i: i + ARNS_PER_READ] for i in range(0, len(claimed), ARNS_PER_READ)]
        readings: list[dict[str, dict[str, str]] | Failure] = [{} for _ in chunks]

        async def read(n: int, chunk: list[Claimed]) -> None:
            engine.stats.requests["GetResources"] += 1
            engine.metrics.request("GetResources", self.shard)
            try:
                readings[n] = await read_tags(
                    engine.clients, self.shard, limiter, [c.arn for c in chunk],
                    engine.settings, rng=engine.rng, max_attempts=2, max_throttles=3,
                    on_throttle=lambda: engine.metrics.throttle("GetResources", self.shard))
            except Unreadable as exc:
                readings[n] = exc.failure

        async with anyio.create_task_group() as tg:
            for n, chunk in enumerate(chunks):
                tg.start_soon(read, n, chunk)
        keep: list[Claimed] = []
        outcomes: list[Outcome] = []
        images: list[tuple[int, str]] = []
        for chunk, current in zip(chunks, readings, strict=True):
            if isinstance(current, Failure):
                if classify_call_error(current, 1) is Verdict.UNREACHABLE:
                    self._unreachable(current)
                    engine.requeue(chunk)
                    continue
                self.log.info("compliance_read_failed", error=f"{current.code}: "
                              f"{current.message}", items=len(chunk))
                if keep_images or undo:
                    outcomes += self._unread(job_id, chunk, current)
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

    def _unread(self, job_id: int, chunk: list[Claimed], failure: Failure) -> list[Outcome]:
        """Items whose tags could not be read when their before-image (or an undo check) needs
        them: a throttle waits without an attempt; anything else spends one, and the item fails
        with what to do once its budget is spent."""
        engine = self.engine
        reason = Failure("TagsNotRead", failure.status,
                         f"current tags could not be read ({failure.code}: {failure.message}); "
                         "they are needed for the before-image (allow tag:GetResources, or "
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
