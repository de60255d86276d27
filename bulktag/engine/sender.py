"""One batch: send it by its route, classify what came back, queue the outcomes.

One driver (`Sender.send`) for both routes; what differs between them is a small strategy
(`RouteCalls`): the Tagging API's TagResources / UntagResources by ARN with per-item failures in
FailedResourcesMap, or EC2's CreateTags / DeleteTags by resource id, all or nothing, with the
ids a failure is about named only in its message. A batch is one `Batch` value, from the lane's
claim to the call; a split or a resend is a copy with fewer items.

The verdicts of `classify.py` decide each item: success; a whole-call throttle slows the shard
and requeues without spending attempts; an unreachable endpoint requeues without spending
attempts and tells the lane to pause and probe; a transient error retries with backoff on the
attempt budget; a whole-call InvalidParameterException splits the batch; a permanent error ends
the item. A throttle inside FailedResourcesMap is the owning service's quota, not the Tagging
API's: those items back off on their own budget and the shard's rate is left alone.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from bulktag.api_limits import EC2_OPERATIONS
from bulktag.arn import Shard
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.aws.reads import failure_of, is_call_error
from bulktag.config import Settings
from bulktag.engine.metrics import EngineMetrics
from bulktag.engine.recorder import Recorder
from bulktag.policy.access import Via
from bulktag.policy.changes import split_tags
from bulktag.policy.classify import (
    Failure,
    Verdict,
    backoff_delay,
    classify_call_error,
    classify_resource_error,
    split_batch,
)
from bulktag.store import Claimed, ItemState, Outcome, Store

log = structlog.get_logger("bulktag.engine")

OPERATIONS = {"tag": "TagResources", "untag": "UntagResources"}
# next_attempt_at of a retry due at once. Claims take a shard's due items in (tagset,
# next_attempt_at) order and fresh items have 0: a retry stamped with the time it failed came
# after every fresh item, so a run's retries all waited for its end, where one that failed
# again cost the whole job another backoff and round trip. Below 0 it rides the next claim.
DUE_FIRST = -1.0
RETRY_LOG_EVERY = 5.0  # seconds between `retrying` events of a shard (info)

# A whole-call EC2 error naming the ids it is about: `Invalid<Kind>.NotFound`, `InvalidID`,
# `NatGatewayNotFound`, ... Their messages quote the ids: "The snapshot 'snap-1, snap-2' does
# not exist.", "The ID 'x-1' is not valid".
_QUOTED = re.compile(r"'([^']*)'")
# Whole-call EC2 errors about one resource that name none: the batch is split until it is alone.
EC2_ISOLATE_CODES = frozenset({"TagLimitExceeded", "ConcurrentTagAccess"})


def ec2_named_ids(failure: Failure) -> set[str]:
    """The resource ids an EC2 NotFound / InvalidID error names (empty: it names none)."""
    code = failure.code
    if not (code.endswith((".NotFound", "NotFound", ".Malformed")) or code == "InvalidID"):
        return set()
    ids: set[str] = set()
    for quoted in _QUOTED.findall(failure.message):
        ids.update(part.strip() for part in quoted.split(",") if part.strip())
    return ids


@dataclass
class EngineStats:
    requests: Counter[str] = field(default_factory=Counter)  # by API operation
    throttled_calls: int = 0
    throttled_resources: int = 0
    arns_sent: int = 0
    splits: int = 0
    unreachable_calls: int = 0
    fenced_batches: int = 0  # not sent: the shard's lease lapsed
    call_errors: Counter[str] = field(default_factory=Counter)
    resource_errors: Counter[str] = field(default_factory=Counter)
    finished: Counter[int] = field(default_factory=Counter)  # terminal items, by job
    batch_seconds: list[float] = field(default_factory=list)


FENCED_CODE = "LeaseLapsed"  #: a batch not sent: its shard's lease may have lapsed


@dataclass(frozen=True, slots=True)
class Sent:
    """What a batch's call told about its shard: None, or why the endpoint is unreachable."""

    unreachable: Failure | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """One call's worth of claimed items of one job and tagset, and how they go: what flows
    from a lane's claim to the sender (split halves and resends are copies with fewer items)."""

    job_id: int
    operation: str  # the job's ("tag" | "untag"); an undo body may set and remove
    shard_id: int
    shard: Shard
    items: list[Claimed]
    tagset: Any  # the tags to send (a tag map, a key list, or an undo body)
    limiter: ShardLimiter  # the shard's limiter of the API this batch calls
    route: RouteCalls
    #: a transform's first step: the items whose call succeeded go on to this (their second
    #: step, the removal of the old keys) instead of ending `succeeded`
    then: Callable[[list[Claimed]], None] | None = None
    note: str = ""  #: put before every failure's message (a transform's second step)
    via: Via | None = None  #: the job's way into the account (None: the worker's settings)

    def with_items(self, items: list[Claimed]) -> Batch:
        return dataclasses.replace(self, items=items)


class RouteCalls(Protocol):
    """What differs between the routes: the client and calls, what an answer says per item, and
    what a whole-call error means for the batch. The driver (`Sender.send`) does the rest."""

    operations: Mapping[str, str]  # "tag" / "untag" -> the API operation

    async def call(self, clients: ClientPool, stats: EngineStats, batch: Batch,
                   sets: dict[str, str] | None, removes: list[str] | None) -> dict[str, Any]:
        """Make the batch's call(s); the per-item failures of a 200 answer, by ARN."""
        ...

    def named(self, failure: Failure, batch: Batch) -> list[Claimed]:
        """Items a whole-call error is about by name (they fail; the rest are resent)."""
        ...

    def verdict(self, failure: Failure, verdict: Verdict, batch: Batch,
                access_error: bool) -> Verdict:
        """The route's reading of a whole-call error's verdict."""
        ...


class TaggingApi:
    """TagResources / UntagResources by ARN, ≤ 20 a call; per-item failures in
    FailedResourcesMap. An undo batch sets, then removes for the ARNs the first did not fail
    (both idempotent: a retry sends both again)."""

    operations: Mapping[str, str] = OPERATIONS

    async def call(self, clients: ClientPool, stats: EngineStats, batch: Batch,
                   sets: dict[str, str] | None, removes: list[str] | None) -> dict[str, Any]:
        arns = [c.arn for c in batch.items]
        failed_map: dict[str, Any] = {}
        client = await clients.calls(batch.shard, batch.via)
        if sets is not None:
            stats.requests["TagResources"] += 1
            resp = await client.tag_resources(ResourceARNList=arns, Tags=sets)
            failed_map = dict(resp.get("FailedResourcesMap") or {})
        rest = [a for a in arns if a not in failed_map]
        if removes is not None and rest:
            stats.requests["UntagResources"] += 1
            resp = await client.untag_resources(ResourceARNList=rest, TagKeys=removes)
            failed_map.update(resp.get("FailedResourcesMap") or {})
        return failed_map

    def named(self, failure: Failure, batch: Batch) -> list[Claimed]:
        return []

    def verdict(self, failure: Failure, verdict: Verdict, batch: Batch,
                access_error: bool) -> Verdict:
        return verdict


TAGGING_API = TaggingApi()


class Ec2Tags:
    """CreateTags / DeleteTags by resource id (`ids`: item id -> resource id). EC2 changes all
    resources of a call or none: a missing id fails the whole call and is named only in the
    message. Those items fail with the code and message; the rest are resent at once without
    spending attempts. A failure naming no id (TagLimitExceeded, ConcurrentTagAccess, an
    unauthorized resource) splits the batch until it is alone."""

    operations: Mapping[str, str] = EC2_OPERATIONS

    def __init__(self, ids: dict[int, str]) -> None:
        self.ids = ids

    async def call(self, clients: ClientPool, stats: EngineStats, batch: Batch,
                   sets: dict[str, str] | None, removes: list[str] | None) -> dict[str, Any]:
        resources = [self.ids[c.id] for c in batch.items]
        client = await clients.ec2(batch.shard, batch.via)
        if sets is not None:
            stats.requests["CreateTags"] += 1
            await client.create_tags(Resources=resources, Tags=[
                {"Key": k, "Value": v} for k, v in sets.items()])
        if removes is not None:
            stats.requests["DeleteTags"] += 1
            await client.delete_tags(Resources=resources, Tags=[{"Key": k} for k in removes])
        return {}

    def named(self, failure: Failure, batch: Batch) -> list[Claimed]:
        named = ec2_named_ids(failure)
        return [c for c in batch.items if self.ids[c.id] in named] if named else []

    def verdict(self, failure: Failure, verdict: Verdict, batch: Batch,
                access_error: bool) -> Verdict:
        if verdict is Verdict.PERMANENT and not access_error and failure.status is not None \
                and failure.status < 500:
            # About one resource, naming none (or naming ids of no item here): isolate it.
            if len(batch.items) > 1:
                return Verdict.SPLIT
            if failure.code == "ConcurrentTagAccess":
                return Verdict.TRANSIENT  # another caller was changing its tags: retry
        return verdict


class Sender:
    def __init__(self, store: Store, settings: Settings, clients: ClientPool,
                 recorder: Recorder, stats: EngineStats, metrics: EngineMetrics,
                 rng: random.Random, on_requeue: Callable[[int], None]) -> None:
        self.store = store
        self.settings = settings
        self.clients = clients
        self.recorder = recorder
        self.stats = stats
        self.metrics = metrics
        self.rng = rng
        self.on_requeue = on_requeue  # a shard's items went back to pending
        #: fencing: whether this worker may send on a shard now, and what to do when not
        self.fence: Callable[[int], bool] | None = None
        self.on_fenced: Callable[[int], None] | None = None
        self._retries: dict[Shard, Counter[str]] = {}  # codes of retries not logged yet
        self._retry_logged: dict[Shard, float] = {}

    async def send(self, batch: Batch, *, acquired: bool = False,
                   credentials_retry: bool = True) -> Sent:
        """Send one batch by its route and queue its outcomes; `acquired` when the caller
        already waited on the limiter."""
        if not acquired:
            await batch.limiter.acquire()
        if self.fence is not None and not self.fence(batch.shard_id):
            # The lease may have lapsed (another worker may take the shard now): not sent,
            # the items back to pending with attempts untouched (a write the new holder's
            # lease fences off when the items are already its).
            self.stats.fenced_batches += 1
            self.recorder.add(Outcome(c.id, ItemState.PENDING, c.attempts, time.time(),
                                      FENCED_CODE, None, "not sent: this worker's lease on the "
                                      "shard lapsed") for c in batch.items)
            if self.on_fenced is not None:
                self.on_fenced(batch.shard_id)
            return Sent()
        route = batch.route
        sets, removes = split_tags(batch.operation, batch.tagset)
        api = route.operations["tag" if sets is not None else "untag"]
        started = time.monotonic()
        self.stats.arns_sent += len(batch.items)
        failure: Failure | None = None
        failed_map: dict[str, Any] = {}
        access_error = False
        try:
            failed_map = await route.call(self.clients, self.stats, batch, sets, removes)
        except Exception as exc:
            if not is_call_error(exc):
                raise
            failure = failure_of(exc)
            access_error = type(exc).__name__ == "AccountAccessError"
        seconds = self._timed(api, batch.shard, started)

        if failure is None:
            outcomes = self._record_response(batch, failed_map)
            self._log_batch(batch.shard, api, batch.job_id, batch.items, seconds, outcomes)
            return Sent()
        self.stats.call_errors[failure.code] += 1
        if batch.note:
            failure = Failure(failure.code, failure.status, batch.note + failure.message)
        bad = route.named(failure, batch)
        if bad:
            self.stats.resource_errors[failure.code] += len(bad)
            self.recorder.add(self.outcome(batch.job_id, c, Verdict.PERMANENT, failure)
                              for c in bad)
            named = {c.id for c in bad}
            rest = [c for c in batch.items if c.id not in named]
            return await self.send(batch.with_items(rest)) if rest else Sent()
        verdict = classify_call_error(failure, len(batch.items))
        log.debug("batch_failed", shard=str(batch.shard), operation=api, job=batch.job_id,
                  size=len(batch.items), seconds=round(seconds, 3), code=failure.code,
                  status=failure.status, verdict=verdict.value)
        if access_error and failure.status is None and verdict is Verdict.TRANSIENT:
            verdict = Verdict.UNREACHABLE  # STS cannot be reached: the same outage
        verdict = route.verdict(failure, verdict, batch, access_error)
        return await self._settle_failure(batch, api, failure, verdict, access_error,
                                          credentials_retry)

    async def _settle_failure(self, batch: Batch, api: str, failure: Failure, verdict: Verdict,
                              access_error: bool, credentials_retry: bool) -> Sent:
        """What a failed call means for its batch, whichever route it went by: an outage
        requeues without attempts, a split resends halves, a refused role pauses its account
        (--on-access-error pause), expired credentials are refreshed once, a throttle slows
        the shard; the rest end or retry by their verdict."""
        job_id, shard_id, shard, items = batch.job_id, batch.shard_id, batch.shard, batch.items
        if verdict is Verdict.UNREACHABLE:
            self.stats.unreachable_calls += 1
            self.on_requeue(shard_id)
            self.recorder.add(Outcome(c.id, ItemState.PENDING, c.attempts, time.time(),
                                      failure.code, failure.status, failure.message)
                              for c in items)
            return Sent(unreachable=failure)
        if verdict is Verdict.SPLIT:
            self.stats.splits += 1
            for half in split_batch(items):
                sent = await self.send(batch.with_items(half))
                if sent.unreachable is not None:
                    return sent
            return Sent()
        if access_error and verdict is Verdict.PERMANENT and \
                self.settings.on_access_error == "pause":
            # The account, not the items, is at fault: park its items, keep the rest going.
            if await self.store.pause_account(job_id, shard.account, failure.message):
                log.warning("account_paused", job=job_id, account=shard.account,
                            reason=failure.message, hint=f"bulktag resume {job_id}")
            self.recorder.add(Outcome(c.id, ItemState.PENDING, c.attempts, time.time(),
                                      failure.code, failure.status, failure.message)
                              for c in items)
            return Sent()
        if verdict is Verdict.CREDENTIALS and credentials_retry:
            log.info("credentials_refresh", shard=str(shard), code=failure.code)
            await self.clients.invalidate(shard)
            return await self.send(batch, credentials_retry=False)
        if verdict is Verdict.CREDENTIALS:
            verdict = Verdict.TRANSIENT  # fresh credentials did not help: spend an attempt
        if verdict is Verdict.THROTTLE:
            self.stats.throttled_calls += 1
            self.metrics.throttle(api, shard)
            if batch.limiter.on_throttle():
                log.info("shard_slowed", shard=str(shard), operation=api,
                         rate=round(batch.limiter.rate, 2))
        self.on_requeue(shard_id)
        outcomes = [self.outcome(job_id, c, verdict, failure) for c in items]
        self.recorder.add(outcomes, hurry=True)
        self._note_retries(shard, items, outcomes)
        return Sent()

    def _timed(self, api: str, shard: Shard, started: float) -> float:
        """A call's seconds since `started`, kept for the stats (bounded) and /metrics."""
        seconds = time.monotonic() - started
        self.stats.batch_seconds.append(seconds)
        self.metrics.batch(api, shard, seconds)
        if len(self.stats.batch_seconds) > 10000:
            del self.stats.batch_seconds[:5000]
        return seconds

    def _log_batch(self, shard: Shard, api: str, job_id: int, batch: list[Claimed],
                   seconds: float, outcomes: list[Outcome]) -> None:
        """debug: one event per answered batch; info: retries, at most every few seconds."""
        if log.is_enabled_for(logging.DEBUG):  # the tally is per item: only when it is shown
            verdicts = Counter(str(getattr(o.state, "value", o.state)) for o in outcomes)
            log.debug("batch_sent", shard=str(shard), operation=api, job=job_id,
                      size=len(batch), seconds=round(seconds, 3), outcomes=dict(verdicts))
        self._note_retries(shard, batch, outcomes)

    def forget(self, keep: set[Shard], busy: set[tuple[str, str]]) -> None:
        """Drop the retry log's memory of shards neither kept nor busy (idle shards)."""
        for shard in [s for s in self._retries if s not in keep
                      and (s.account, s.region) not in busy]:
            del self._retries[shard]
            self._retry_logged.pop(shard, None)

    def _note_retries(self, shard: Shard, batch: list[Claimed], outcomes: list[Outcome]) -> None:
        attempts = {c.id: c.attempts for c in batch}
        pending = [o for o in outcomes if o.state == ItemState.PENDING
                   and o.attempts > attempts.get(o.item_id, 0)]
        if not pending:
            return
        codes = self._retries.setdefault(shard, Counter())
        codes.update(o.error_code or "?" for o in pending)
        now = time.monotonic()
        if now - self._retry_logged.get(shard, 0.0) >= RETRY_LOG_EVERY:
            self._retry_logged[shard] = now
            log.info("retrying", shard=str(shard), items=sum(codes.values()), codes=dict(codes),
                     hint="transient errors: the items back off and are sent again")
            codes.clear()

    def _record_response(self, batch: Batch, failed_map: dict[str, Any]) -> list[Outcome]:
        """Queue the outcomes of a 200 answer (a first step's successes go on to `then`)."""
        job_id, shard_id = batch.job_id, batch.shard_id
        outcomes = []
        onward: list[Claimed] = []
        for c in batch.items:
            info = failed_map.get(c.arn)
            if info is None:
                if batch.then is not None:
                    onward.append(c)
                    continue
                outcomes.append(Outcome(c.id, ItemState.SUCCEEDED, c.attempts + 1))
                self.stats.finished[job_id] += 1
                continue
            failure = Failure(str(info.get("ErrorCode") or "Unknown"), info.get("StatusCode"),
                              batch.note + str(info.get("ErrorMessage") or ""))
            self.stats.resource_errors[failure.code] += 1
            verdict = classify_resource_error(failure)
            if verdict is Verdict.THROTTLE:
                # The owning service's quota: this item backs off on its attempt budget (a
                # service that never stops refusing cannot hold the run open); the shard's
                # Tagging API rate is not the one at fault and is left alone.
                self.stats.throttled_resources += 1
                outcomes.append(self.outcome(job_id, c, Verdict.TRANSIENT, failure,
                                             first_at_once=False))
                continue
            outcomes.append(self.outcome(job_id, c, verdict, failure))
        if failed_map:
            self.on_requeue(shard_id)
        if outcomes:
            self.recorder.add(outcomes, hurry=bool(failed_map))
        if onward:
            assert batch.then is not None
            batch.then(onward)
        return outcomes

    def outcome(self, job_id: int, c: Claimed, verdict: Verdict, failure: Failure, *,
                first_at_once: bool = True) -> Outcome:
        now = time.time()
        if verdict is Verdict.THROTTLE:
            # The quota, not the item: back to the queue without spending an attempt.
            delay = self.settings.throttle_retry_delay * (1 + self.rng.random())
            return Outcome(c.id, ItemState.PENDING, c.attempts, now + delay, failure.code,
                           failure.status, failure.message)
        attempts = c.attempts + 1
        if verdict is Verdict.TRANSIENT and attempts < self.settings.max_attempts:
            # The first retry goes with the shard's next batch: its call already took a round
            # trip and the shard's limiter paces it; most 500s are momentary, and at the end of
            # a job a wait here is time the whole job waits. Later retries back off
            # exponentially from backoff_base. An item its own service throttled backs off
            # from the first (`first_at_once=False`): that service's quota needs the pause.
            step = attempts - 1 if first_at_once else attempts
            due = DUE_FIRST if step == 0 else now + backoff_delay(
                step, base=self.settings.backoff_base, cap=self.settings.backoff_cap,
                rng=self.rng)
            return Outcome(c.id, ItemState.PENDING, attempts, due, failure.code,
                           failure.status, failure.message)
        self.stats.finished[job_id] += 1
        message = failure.message
        if verdict is Verdict.TRANSIENT:
            message = f"gave up after {attempts} attempts: {message}"
        return Outcome(c.id, ItemState.FAILED, attempts, 0.0, failure.code, failure.status,
                       message)
