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

from ..arn import ROUTE_EC2, ROUTES, Shard, ec2_route
from ..aws import Unreadable, read_ec2_tags, read_tags
from ..classify import Failure, Verdict, classify_call_error
from ..discovery import decide
from ..limits import ARNS_PER_READ, ARNS_PER_TAG_CALL, EC2_IDS_PER_READ, EC2_OPERATIONS
from ..store import Claimed, ItemState, JobOptions, Outcome, Runnable, StoreError
from .sender import OPERATIONS

if TYPE_CHECKING:
    from .core import Engine

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
    """What one route of a lane keeps: its slots, its outage, and when each job is due."""

    def __init__(self, route: str, in_flight: int) -> None:
        self.route = route
        self.slots = anyio.Semaphore(in_flight)
        self.outage: Outage | None = None
        self.not_before: dict[int, float] = {}
        self.rr = 0


class Lane:
    def __init__(self, engine: Engine, shard_id: int, shard: Shard) -> None:
        self.engine = engine
        self.shard_id = shard_id
        self.shard = shard
        self.log = engine.log.bind(shard=str(shard))
        self.in_flight = 0
        self.handover = False  # stop claiming: the shard goes to another worker
        self.wake = anyio.Event()
        self.routes = {r: RouteLoop(r, engine.settings.in_flight_per_shard) for r in ROUTES}

    @property
    def outage(self) -> Outage | None:
        """An outage of any of the lane's routes (the first found)."""
        return next((r.outage for r in self.routes.values() if r.outage is not None), None)

    def poke(self) -> None:
        """Requeued work of this shard was just written: look again now."""
        self.wake.set()

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

    async def _wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self.wake.wait()

    async def _run_route(self, loop: RouteLoop) -> None:
        engine = self.engine
        in_flight = engine.settings.in_flight_per_shard
        ec2 = loop.route == ROUTE_EC2
        claim_size = (engine.settings.ec2_batch_size if ec2 else ARNS_PER_TAG_CALL) * in_flight
        while not engine.stopping and not self.handover:
            if not engine.work_of(self.shard_id):
                return
            if loop.outage is not None:
                wait = loop.outage.next_probe - time.monotonic()
                if wait > 0 or self.in_flight:
                    await self._wait(max(0.05, min(wait, 1.0)))
                    if self.wake.is_set():
                        self.wake = anyio.Event()
                    continue
            pick = self._pick(loop)
            if pick is None:
                waits = [loop.not_before.get(r.job_id, 0)
                         for r in engine.work_of(self.shard_id) if r.route == loop.route]
                await self._wait(min(1.0, max(0.01, min(waits, default=1) - time.time())))
                if self.wake.is_set():
                    self.wake = anyio.Event()
                    for other in self.routes.values():
                        other.not_before.clear()  # requeued work was just written: look again
                continue
            size = (engine.settings.ec2_batch_size if ec2 else ARNS_PER_TAG_CALL) \
                if loop.outage is not None else claim_size
            claimed = await engine.store.claim(engine.owner, pick.job_id, self.shard_id, size,
                                               lease_seconds=engine.settings.lease_seconds,
                                               route=loop.route)
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
        if (options.skip_compliant or options.if_absent) and options.query is None:
            # A retry (an attempt spent: its last send failed) was read and found to need the
            # change already: sent again at once, without waiting on another read. --if-absent
            # reads again (the keys to send depend on what the resource has now).
            fresh = [c for c in claimed if c.attempts == 0 or options.if_absent]
            retries = [c for c in claimed if c.attempts > 0 and not options.if_absent]
            claimed = retries + (await self._unless_compliant(
                loop, pick.job_id, pick.operation, fresh, options, ids) if fresh else [])
        sends: list[tuple[list[Claimed], str, dict[int, str] | None]] = [
            (b, EC2_OPERATIONS[pick.operation], ids)
            for b in _batches([c for c in claimed if c.id in ids],
                              engine.settings.ec2_batch_size)]
        sends += [(b, OPERATIONS[pick.operation], None)
                  for b in _batches([c for c in claimed if c.id not in ids],
                                    ARNS_PER_TAG_CALL)]
        for n, (batch, api, batch_ids) in enumerate(sends):
            if engine.stopping or self.handover or \
                    (loop.outage is not None and time.monotonic() < loop.outage.next_probe):
                engine.requeue([c for b, _, _ in sends[n:] for c in b])  # not sent: back at once
                return
            limiter = engine.limiter(self.shard, api)
            tagset = batch[0].override or await engine.tagset(batch[0].tagset_id)
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

    async def _unless_compliant(self, loop: RouteLoop, job_id: int, operation: str,
                                claimed: list[Claimed], options: JobOptions,
                                ids: dict[int, str]) -> list[Claimed]:
        """Read current tags (all chunks at once) and end compliant items as `skipped`; with
        --if-absent, send each item only the keys it lacks. EC2 items are read by DescribeTags
        (`EC2_IDS_PER_READ` ids a call, narrowed to the job's keys), the rest by GetResources
        (100 ARNs a call). A read that fails is no reason to stop: the items are sent as they
        are (--if-absent: they wait for a readable moment, since full tags could overwrite a
        value)."""
        engine = self.engine
        by_ec2 = [c for c in claimed if c.id in ids]
        by_arn = [c for c in claimed if c.id not in ids]
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

        async def read_arns(n: int, chunk: list[Claimed]) -> dict[str, dict[str, str]]:
            return await read_tags(engine.clients, self.shard,
                                   engine.limiter(self.shard, "GetResources"),
                                   [c.arn for c in chunk], engine.settings,
                                   **counted("GetResources"))

        async def read_ids(n: int, chunk: list[Claimed]) -> dict[str, dict[str, str]]:
            keys: set[str] = set()
            for c in chunk:
                keys.update(await engine.tagset(c.tagset_id))  # tag keys, or keys to remove
            by_id = await read_ec2_tags(engine.clients, self.shard,
                                        engine.limiter(self.shard, "DescribeTags"),
                                        [ids[c.id] for c in chunk], sorted(keys),
                                        engine.settings, **counted("DescribeTags"))
            return {c.arn: by_id.get(ids[c.id], {}) for c in chunk}

        async def read(n: int, chunk: list[Claimed],
                       how: Callable[[int, list[Claimed]],
                                     Awaitable[dict[str, dict[str, str]]]]) -> None:
            try:
                readings[n] = await how(n, chunk)
            except Unreadable as exc:
                readings[n] = exc.failure

        async with anyio.create_task_group() as tg:
            for n, chunk in enumerate(chunks):
                tg.start_soon(read, n, chunk, read_ids if n < n_ec2 else read_arns)
        keep: list[Claimed] = []
        outcomes: list[Outcome] = []
        for chunk, current in zip(chunks, readings, strict=True):
            if isinstance(current, Failure):
                if classify_call_error(current, 1) is Verdict.UNREACHABLE:
                    self._unreachable(loop, current)
                    engine.requeue(chunk)
                    continue
                self.log.info("compliance_read_failed", error=f"{current.code}: "
                              f"{current.message}", items=len(chunk), route=loop.route)
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
