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
from ..classify import Failure, Verdict, classify_call_error
from ..discovery import decide
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
        if (options.skip_compliant or options.if_absent) and options.query is None:
            # A retry (an attempt spent: its last send failed) was read and found to need the
            # change already: sent again at once, without waiting on another read. --if-absent
            # reads again (the keys to send depend on what the resource has now).
            fresh = [c for c in claimed if c.attempts == 0 or options.if_absent]
            retries = [c for c in claimed if c.attempts > 0 and not options.if_absent]
            claimed = retries + (await self._unless_compliant(
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
        sends: list[tuple[list[Claimed], str, dict[int, str] | None]] = [
            (b, EC2_OPERATIONS[pick.operation], ids)
            for b in _batches([c for c in claimed if c.id in ids],
                              engine.settings.ec2_batch_size)]
        sends += [(b, OPERATIONS[pick.operation], None)
                  for b in _batches([c for c in claimed if c.id not in ids],
                                    ARNS_PER_TAG_CALL)]
        for n, (batch, api, batch_ids) in enumerate(sends):
            if engine.stopping or self.handover or \
                    (self.outage is not None and time.monotonic() < self.outage.next_probe):
                engine.requeue([c for b, _, _ in sends[n:] for c in b])  # not sent: back at once
                return
            limiter = engine.limiter(self.shard, api)
            tagset = batch[0].override or await engine.tagset(batch[0].tagset_id)
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

    async def _unless_compliant(self, job_id: int, operation: str, claimed: list[Claimed],
                                options: JobOptions) -> list[Claimed]:
        """Read current tags (GetResources, 100 ARNs a call, all at once) and end compliant
        items as `skipped`; with --if-absent, send each item only the keys it lacks. A read
        that fails is no reason to stop: the items are sent as they are (--if-absent: they
        wait for a readable moment, since full tags could overwrite a value)."""
        engine = self.engine
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
        for chunk, current in zip(chunks, readings, strict=True):
            if isinstance(current, Failure):
                if classify_call_error(current, 1) is Verdict.UNREACHABLE:
                    self._unreachable(current)
                    engine.requeue(chunk)
                    continue
                self.log.info("compliance_read_failed", error=f"{current.code}: "
                              f"{current.message}", items=len(chunk))
                if options.if_absent:
                    retry_at = time.time() + engine.settings.throttle_retry_delay * 5
                    outcomes += [Outcome(c.id, ItemState.PENDING, c.attempts, retry_at,
                                         "TagsNotRead", None, "current tags could not be read")
                                 for c in chunk]
                else:
                    keep.extend(chunk)
                continue
            for c in chunk:
                decision = decide(operation, await engine.tagset(c.tagset_id),
                                  current.get(c.arn, {}), if_absent=options.if_absent)
                if decision.send:
                    c.override = decision.override
                    keep.append(c)
                else:
                    outcomes.append(Outcome(c.id, ItemState.SKIPPED, c.attempts,
                                            message=decision.reason))
                    engine.stats.finished[job_id] += 1
        engine.recorder.add(outcomes)
        return keep


def _batches(claimed: list[Claimed], size: int) -> Iterable[list[Claimed]]:
    """Split claimed items into batches of ≤ `size` that send the same tags."""
    by_tagset: dict[tuple[int, str], list[Claimed]] = defaultdict(list)
    for c in claimed:
        override = json.dumps(c.override, sort_keys=True) if c.override else ""
        by_tagset[(c.tagset_id, override)].append(c)
    for items in by_tagset.values():
        for i in range(0, len(items), size):
            yield items[i: i + size]
