"""One batch: send TagResources or UntagResources, classify what came back, queue the outcomes.

The verdicts of `classify.py` decide each item: success; a whole-call throttle slows the shard
and requeues without spending attempts; an unreachable endpoint requeues without spending
attempts and tells the lane to pause and probe; a transient error retries with backoff on the
attempt budget; a whole-call InvalidParameterException splits the batch; a permanent error ends
the item. A throttle inside FailedResourcesMap is the owning service's quota, not the Tagging
API's: those items back off on their own budget and the shard's rate is left alone.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bulktag.api_limits import EC2_OPERATIONS
from bulktag.arn import Shard
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.aws.reads import failure_of, is_call_error
from bulktag.config import Settings
from bulktag.engine.metrics import EngineMetrics
from bulktag.engine.recorder import Recorder
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
    call_errors: Counter[str] = field(default_factory=Counter)
    resource_errors: Counter[str] = field(default_factory=Counter)
    finished: Counter[int] = field(default_factory=Counter)  # terminal items, by job
    batch_seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Sent:
    """What a batch's call told about its shard: None, or why the endpoint is unreachable."""

    unreachable: Failure | None = None


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
        self._retries: dict[Shard, Counter[str]] = {}  # codes of retries not logged yet
        self._retry_logged: dict[Shard, float] = {}

    async def send(self, job_id: int, operation: str, shard_id: int, shard: Shard,
                   batch: list[Claimed], tagset: Any, limiter: ShardLimiter, *,
                   acquired: bool = False, credentials_retry: bool = True) -> Sent:
        if not acquired:
            await limiter.acquire()
        # An undo batch sets some keys and removes others: TagResources, then UntagResources
        # for the ARNs the first did not fail (both idempotent: a retry sends both again).
        sets, removes = split_tags(operation, tagset)
        api = OPERATIONS["tag" if sets is not None else "untag"]
        arns = [c.arn for c in batch]
        started = time.monotonic()
        self.stats.arns_sent += len(arns)
        failure: Failure | None = None
        failed_map: dict[str, Any] = {}
        access_error = False
        try:
            client = await self.clients.tagging(shard)
            if sets is not None:
                self.stats.requests["TagResources"] += 1
                resp = await client.tag_resources(ResourceARNList=arns, Tags=sets)
                failed_map = dict(resp.get("FailedResourcesMap") or {})
            rest = [a for a in arns if a not in failed_map]
            if removes is not None and rest:
                self.stats.requests["UntagResources"] += 1
                resp = await client.untag_resources(ResourceARNList=rest, TagKeys=removes)
                failed_map.update(resp.get("FailedResourcesMap") or {})
        except Exception as exc:
            if not is_call_error(exc):
                raise
            failure = failure_of(exc)
            access_error = type(exc).__name__ == "AccountAccessError"
        seconds = self._timed(api, shard, started)

        if failure is None:
            outcomes = self._record_response(job_id, shard_id, batch, failed_map)
            self._log_batch(shard, api, job_id, batch, seconds, outcomes)
            return Sent()
        self.stats.call_errors[failure.code] += 1
        verdict = classify_call_error(failure, len(batch))
        log.debug("batch_failed", shard=str(shard), operation=api, job=job_id,
                  size=len(batch), seconds=round(seconds, 3), code=failure.code,
                  status=failure.status, verdict=verdict.value)
        if access_error and failure.status is None and verdict is Verdict.TRANSIENT:
            verdict = Verdict.UNREACHABLE  # STS cannot be reached: the same outage

        async def resend(items: list[Claimed], credentials_retry: bool) -> Sent:
            return await self.send(job_id, operation, shard_id, shard, items, tagset, limiter,
                                   credentials_retry=credentials_retry)

        return await self._settle_failure(job_id, shard_id, shard, api, batch, failure,
                                          verdict, access_error, limiter, resend,
                                          credentials_retry)

    async def _settle_failure(
        self, job_id: int, shard_id: int, shard: Shard, api: str, batch: list[Claimed],
        failure: Failure, verdict: Verdict, access_error: bool, limiter: ShardLimiter,
        resend: Callable[[list[Claimed], bool], Awaitable[Sent]], credentials_retry: bool,
    ) -> Sent:
        """What a failed call means for its batch, whichever API it went to: an outage
        requeues without attempts, a split resends halves, a refused role pauses its account
        (--on-access-error pause), expired credentials are refreshed once, a throttle slows
        the shard; the rest end or retry by their verdict."""
        if verdict is Verdict.UNREACHABLE:
            self.stats.unreachable_calls += 1
            self.on_requeue(shard_id)
            self.recorder.add(Outcome(c.id, ItemState.PENDING, c.attempts, time.time(),
                                      failure.code, failure.status, failure.message)
                              for c in batch)
            return Sent(unreachable=failure)
        if verdict is Verdict.SPLIT:
            self.stats.splits += 1
            for half in split_batch(batch):
                sent = await resend(half, True)
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
                              for c in batch)
            return Sent()
        if verdict is Verdict.CREDENTIALS and credentials_retry:
            log.info("credentials_refresh", shard=str(shard), code=failure.code)
            await self.clients.invalidate(shard)
            return await resend(batch, False)
        if verdict is Verdict.CREDENTIALS:
            verdict = Verdict.TRANSIENT  # fresh credentials did not help: spend an attempt
        if verdict is Verdict.THROTTLE:
            self.stats.throttled_calls += 1
            self.metrics.throttle(api, shard)
            if limiter.on_throttle():
                log.info("shard_slowed", shard=str(shard), operation=api,
                         rate=round(limiter.rate, 2))
        self.on_requeue(shard_id)
        outcomes = [self.outcome(job_id, c, verdict, failure) for c in batch]
        self.recorder.add(outcomes, hurry=True)
        self._note_retries(shard, batch, outcomes)
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

    async def send_ec2(self, job_id: int, operation: str, shard_id: int, shard: Shard,
                       batch: list[Claimed], ids: dict[int, str], tagset: Any,
                       limiter: ShardLimiter, *, acquired: bool = False,
                       credentials_retry: bool = True) -> Sent:
        """One CreateTags / DeleteTags call for a batch of EC2 items (`ids`: item id -> resource
        id). EC2 changes all resources of a call or none: a missing id fails the whole call and
        is named only in the message. Those items fail with the code and message; the rest are
        resent at once without spending attempts. A failure naming no id (TagLimitExceeded,
        ConcurrentTagAccess, an unauthorized resource) splits the batch until it is alone."""
        if not acquired:
            await limiter.acquire()
        sets, removes = split_tags(operation, tagset)  # an undo batch may make both calls
        api = EC2_OPERATIONS["tag" if sets is not None else "untag"]
        resources = [ids[c.id] for c in batch]
        started = time.monotonic()
        self.stats.arns_sent += len(resources)
        failure: Failure | None = None
        access_error = False
        try:
            client = await self.clients.ec2(shard)
            if sets is not None:
                self.stats.requests["CreateTags"] += 1
                await client.create_tags(Resources=resources, Tags=[
                    {"Key": k, "Value": v} for k, v in sets.items()])
            if removes is not None:
                self.stats.requests["DeleteTags"] += 1
                await client.delete_tags(Resources=resources, Tags=[{"Key": k} for k in removes])
        except Exception as exc:
            if not is_call_error(exc):
                raise
            failure = failure_of(exc)
            access_error = type(exc).__name__ == "AccountAccessError"
        self._timed(api, shard, started)
        if failure is None:
            self._record_response(job_id, shard_id, batch, {})
            return Sent()
        self.stats.call_errors[failure.code] += 1
        again = (job_id, operation, shard_id, shard)
        named = ec2_named_ids(failure)
        if named:
            bad = [c for c in batch if ids[c.id] in named]
            if bad:
                self.stats.resource_errors[failure.code] += len(bad)
                self.recorder.add(self.outcome(job_id, c, Verdict.PERMANENT, failure)
                                  for c in bad)
                rest = [c for c in batch if ids[c.id] not in named]
                if rest:
                    return await self.send_ec2(*again, rest, ids, tagset, limiter)
                return Sent()
        verdict = classify_call_error(failure, len(batch))
        if access_error and failure.status is None and verdict is Verdict.TRANSIENT:
            verdict = Verdict.UNREACHABLE
        if verdict is Verdict.PERMANENT and not access_error and failure.status is not None \
                and failure.status < 500:
            # About one resource, naming none (or naming ids of no item here): isolate it.
            if len(batch) > 1:
                verdict = Verdict.SPLIT
            elif failure.code == "ConcurrentTagAccess":
                verdict = Verdict.TRANSIENT  # another caller was changing its tags: retry

        async def resend(items: list[Claimed], credentials_retry: bool) -> Sent:
            return await self.send_ec2(*again, items, ids, tagset, limiter,
                                       credentials_retry=credentials_retry)

        return await self._settle_failure(job_id, shard_id, shard, api, batch, failure,
                                          verdict, access_error, limiter, resend,
                                          credentials_retry)

    def _record_response(self, job_id: int, shard_id: int, batch: list[Claimed],
                         failed_map: dict[str, Any]) -> list[Outcome]:
        """Queue the outcomes of a 200 answer."""
        outcomes = []
        for c in batch:
            info = failed_map.get(c.arn)
            if info is None:
                outcomes.append(Outcome(c.id, ItemState.SUCCEEDED, c.attempts + 1))
                self.stats.finished[job_id] += 1
                continue
            failure = Failure(str(info.get("ErrorCode") or "Unknown"), info.get("StatusCode"),
                              str(info.get("ErrorMessage") or ""))
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
        self.recorder.add(outcomes, hurry=bool(failed_map))
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
