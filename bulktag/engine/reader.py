"""The read-and-decide step of a claim: current tags read, each item decided, images kept.

Between a lane's claim and its sends, a job that skips compliant resources, sends only absent
keys, keeps before-images or undoes another reads the claimed resources' current tags and
decides each item by the pure rules of `policy.changes.decide`: compliant ones end `skipped`,
guardrails refuse theirs, --if-absent and undo items get the keys to send, and the
before-images of what will be sent are kept in the store before anything is sent. It is apart
from `lane.py` because it is a step of its own (reads, not sends; no slots, no wake-ups): the
lane hands it a claim and gets back the items to send.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from bulktag.api_limits import ARNS_PER_READ, EC2_IDS_PER_READ
from bulktag.arn import Shard
from bulktag.aws.reads import Unreadable, read_ec2_tags, read_tags
from bulktag.engine.context import LaneContext
from bulktag.policy.access import Via, via_of
from bulktag.policy.changes import Rules, decide, encode, kind_of
from bulktag.policy.classify import Failure, Verdict, classify_call_error
from bulktag.policy.tag_policy import POLICY_UNREAD_CODE
from bulktag.policy.transforms import from_json, with_policy
from bulktag.store import Claimed, ItemState, JobOptions, Outcome


def needs_read(options: JobOptions) -> bool:
    """Whether a job's claims are read before they are sent. Query jobs were read by their
    walk; they read again only to keep before-images. A transform is always read: what it
    sends is computed from the tags the resource has now."""
    return ((options.skip_compliant or options.if_absent) and options.query is None) or \
        options.before_images or options.undo_of is not None or bool(options.transform)


def fixes_policy(options: JobOptions) -> bool:
    """Whether the job is a fix-policy transform: each resource needs its account's policy."""
    return bool(options.transform) and with_policy(from_json(options.transform or []))


def job_via(options: JobOptions) -> Via | None:
    """The job's own way into its accounts (a role given at submission), or None: the
    worker's settings."""
    return via_of(options.role_name, options.external_id, options.role_session_name)


def job_rules(operation: str, options: JobOptions) -> Rules:
    """How a job decides each resource (`changes.decide`), for the run and for its plan."""
    undo = options.undo_of is not None
    return Rules(kind=kind_of(operation, options.undo_of, bool(options.transform)),
                 skip_compliant=options.skip_compliant or undo or bool(options.transform),
                 if_absent=options.if_absent, case_conflict=options.case_conflict or "skip",
                 force=options.force, undo_of=options.undo_of,
                 on_conflict=options.on_conflict or "skip")


class Reader:
    """Reads and decides the claims of one shard's lane."""

    def __init__(self, ctx: LaneContext, shard: Shard, log: Any) -> None:
        self.ctx = ctx
        self.shard = shard
        self.log = log

    async def decide(self, route: str, job_id: int, operation: str, claimed: list[Claimed],
                     options: JobOptions, ids: dict[int, str],
                     on_unreachable: Callable[[Failure], None]) -> list[Claimed]:
        """The claimed items still to send, once read and decided (call when `needs_read`).
        A retry (an attempt spent: its last send failed) was read and found to need the
        change already, and its before-image kept: sent again at once, without waiting on
        another read. --if-absent and undo read again (what to send depends on what the
        resource has now), and so does an item whose image was not kept yet."""
        again = options.if_absent or options.undo_of is not None or bool(options.transform)
        fresh = [c for c in claimed if c.attempts == 0 or again
                 or (options.before_images and c.before is None)]
        seen = {c.id for c in fresh}
        retries = [c for c in claimed if c.id not in seen]
        if not fresh:
            return retries
        return retries + await self._read_first(route, job_id, operation, fresh, options, ids,
                                                on_unreachable)

    async def _read_first(self, route: str, job_id: int, operation: str,
                          claimed: list[Claimed], options: JobOptions, ids: dict[int, str],
                          on_unreachable: Callable[[Failure], None]) -> list[Claimed]:
        """Read current tags (every chunk at once) and decide each item (`changes.decide`):
        compliant ones end `skipped`, guardrails refuse theirs, --if-absent and undo items get
        the keys to send; the before-images of what will be sent are kept in the store before
        anything is sent. EC2 items are read by DescribeTags (`EC2_IDS_PER_READ` ids a call,
        narrowed to the keys their tagsets touch; `ec2_read = "get-resources"` reads them as the
        rest), the rest by GetResources (100 ARNs a call). A read that fails is no reason to
        stop: the items are sent as they are, unless what to send depends on the read or a
        before-image must be kept (those retry the read on their attempt budget; --if-absent
        alone waits for a readable moment without spending attempts)."""
        ctx = self.ctx
        undo = options.undo_of is not None or bool(options.transform)
        rules = job_rules(operation, options)
        keep_images = options.before_images or undo
        via = job_via(options)
        by_id = ids if ctx.settings.ec2_read == "describe-tags" else {}
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
                ctx.stats.requests[op] += 1
                ctx.metrics.request(op, self.shard)
            return {"rng": ctx.rng, "max_attempts": 2, "max_throttles": 3, "on_call": call,
                    "on_throttle": lambda: ctx.metrics.throttle(op, self.shard)}

        async def read_arns(chunk: list[Claimed]) -> dict[str, dict[str, str]]:
            return await read_tags(ctx.clients, self.shard,
                                   ctx.limiter(self.shard, "GetResources"),
                                   [c.arn for c in chunk], ctx.settings, via=via,
                                   **counted("GetResources"))

        async def read_ids(chunk: list[Claimed]) -> dict[str, dict[str, str]]:
            keys: set[str] = set()
            if options.transform:
                keys = set()  # a transform reads every key (case variants, sources)
            else:
                for c in chunk:  # the keys each tagset touches (tag and undo bodies: keys)
                    keys.update(await ctx.tagset(c.tagset_id))
            found = await read_ec2_tags(ctx.clients, self.shard,
                                        ctx.limiter(self.shard, "DescribeTags"),
                                        [by_id[c.id] for c in chunk], sorted(keys),
                                        ctx.settings, via=via, **counted("DescribeTags"))
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
        policy = None
        if fixes_policy(options):
            # fix-policy: each resource fixed against its account's policy, read once a run
            policy = await ctx.tag_policy(self.shard, via)
            problem = ctx.tag_policy_problem(self.shard)
            if problem is not None:
                ctx.stats.finished[job_id] += len(claimed)
                ctx.recorder.add([Outcome(
                    c.id, ItemState.FAILED, c.attempts, error_code=POLICY_UNREAD_CODE,
                    message=f"the account's tag policy could not be read ({problem}); "
                            "nothing was sent: allow organizations:DescribeEffectivePolicy, "
                            f"then bulktag retry {job_id}") for c in claimed])
                return []
        for n, (chunk, current) in enumerate(zip(chunks, readings, strict=True)):
            if isinstance(current, Failure):
                if classify_call_error(current, 1) is Verdict.UNREACHABLE:
                    on_unreachable(current)
                    ctx.requeue(chunk)
                    continue
                self.log.info("compliance_read_failed", error=f"{current.code}: "
                              f"{current.message}", items=len(chunk), route=route)
                if keep_images or undo:
                    outcomes += self._unread(job_id, chunk, current, n < n_ec2)
                elif options.if_absent:
                    retry_at = time.time() + ctx.settings.throttle_retry_delay * 5
                    outcomes += [Outcome(c.id, ItemState.PENDING, c.attempts, retry_at,
                                         "TagsNotRead", None, "current tags could not be read")
                                 for c in chunk]
                else:
                    keep.extend(chunk)
                continue
            for c in chunk:
                decision = decide(rules, await ctx.tagset(c.tagset_id),
                                  current.get(c.arn, {}),
                                  case_insensitive=c.arn.split(":", 3)[2:3] == ["iam"],
                                  policy=policy)
                if decision.send:
                    c.override = decision.override
                    keep.append(c)
                    if keep_images and c.before is None:
                        c.before = encode(decision.image())
                        images.append((c.id, c.before))
                    continue
                ctx.stats.finished[job_id] += 1
                if decision.already and c.before is not None and c.before != "{}":
                    # Its image was kept and the resource is now as the job wants: an earlier
                    # attempt's call landed before its outcome was recorded (a crash).
                    outcomes.append(Outcome(c.id, ItemState.SUCCEEDED, c.attempts + 1,
                                            message="an earlier attempt's call had landed"))
                    continue
                state = ItemState.FAILED if decision.failed else ItemState.SKIPPED
                outcomes.append(Outcome(c.id, state, c.attempts, error_code=decision.code,
                                        message=decision.reason))
        ctx.recorder.add(outcomes)
        if images:
            await ctx.store.keep_before(ctx.owner, images)
        return keep

    def _unread(self, job_id: int, chunk: list[Claimed], failure: Failure,
                ec2: bool) -> list[Outcome]:
        """Items whose tags could not be read when their before-image (or an undo check) needs
        them: a throttle waits without an attempt; anything else spends one, and the item fails
        with what to do once its budget is spent."""
        ctx = self.ctx
        allow = "ec2:DescribeTags" if ec2 else "tag:GetResources"
        reason = Failure("TagsNotRead", failure.status,
                         f"current tags could not be read ({failure.code}: {failure.message}); "
                         f"they are needed for the before-image (allow {allow}, or "
                         "submit with --no-before-images)")
        verdict = classify_call_error(failure, 1)
        if verdict is not Verdict.THROTTLE:
            verdict = Verdict.TRANSIENT
        return [ctx.sender.outcome(job_id, c, verdict, reason) for c in chunk]
