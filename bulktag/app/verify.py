"""`bulktag verify JOB`: re-read the tags of every succeeded item and report drift.

Tags are read with GetResources (100 ARNs a call, at each shard's GetResources quota, every
shard at once). An item drifted when its resource no longer carries the tags the job applied
(or, for an untag job, carries a removed key again). The finding is stored on the item
(`verified_at`, `drift`) and shows in `bulktag report`.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bulktag.api_limits import ARNS_PER_READ
from bulktag.arn import Shard
from bulktag.aws.clients import ClientPool
from bulktag.aws.organizations import PolicyBook
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.aws.reads import Unreadable, read_tags
from bulktag.config import Settings
from bulktag.engine.reader import fixes_policy, job_via
from bulktag.policy import transforms
from bulktag.policy.changes import sendable
from bulktag.policy.tag_policy import TagPolicy
from bulktag.store import Job, Store, SucceededItem


def drift_of(operation: str, wanted: Any, current: Mapping[str, str] | None, *,
             transform: bool = False, policy: TagPolicy | None = None) -> str | None:
    """Pure: what differs between what the job applied and what the resource carries now. A
    transform's resource is as the job left it when its operations would change nothing (a
    fix-policy one: and when its account's tag policy `policy` finds nothing to decide)."""
    if current is None:
        current = {}
    if transform:
        ops = transforms.from_json(wanted)
        applied = transforms.apply(ops, current, "overwrite", policy=policy)
        if applied.conflict is not None:
            return applied.conflict
        changes = transforms.changes_of(current, applied.tags)
        return ("the operations would change it again: " + ", ".join(
            f"{k} → {'absent' if v is None else repr(v)}" for k, v in sorted(changes.items()))
            if changes else None)
    if operation == "untag":
        back = sorted(k for k in wanted if k in current)
        return f"removed keys present again: {', '.join(back)}" if back else None
    problems = []
    for key, value in sendable(wanted).items():  # an undo's: None where it removed the key
        if value is None:
            if key in current:
                problems.append(f"{key} present again")
        elif key not in current:
            problems.append(f"{key} missing")
        elif current[key] != value:
            problems.append(f"{key}: expected {value!r}, found {current[key]!r}")
    return "; ".join(problems) or None


@dataclass
class VerifyResult:
    checked: int = 0
    drifted: int = 0
    unreadable: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)  # drifted items, first 1,000
    errors: dict[str, str] = field(default_factory=dict)  # shard -> why its tags were not read


async def verify_job(store: Store, settings: Settings, job_id: int,
                     clients: ClientPool | None = None) -> VerifyResult:
    job = await store.get_job(job_id)
    if job is None:
        raise ValueError(f"no job {job_id}")
    own = clients is None
    clients = clients or ClientPool(settings)
    result = VerifyResult()
    limiters: dict[Shard, ShardLimiter] = {}
    tagsets: dict[int, Any] = {}
    book = PolicyBook(clients) if fixes_policy(job.options) else None
    try:
        async for page in store.succeeded_items(job_id):
            by_shard: dict[int, list[SucceededItem]] = defaultdict(list)
            for row in page:
                by_shard[row.shard_id].append(row)
            shards = {sid: await store.shard(sid) for sid in by_shard}
            await asyncio.gather(*(
                _verify_shard(store, clients, job, shards[sid], rows,
                              limiters, tagsets, result, settings, book)
                for sid, rows in by_shard.items()
            ))
    finally:
        if own:
            await clients.close()
    return result


async def _verify_shard(store: Store, clients: ClientPool, job: Job,
                        shard: Shard, rows: list[SucceededItem],
                        limiters: dict[Shard, ShardLimiter],
                        tagsets: dict[int, Any], result: VerifyResult,
                        settings: Settings, book: PolicyBook | None = None) -> None:
    limiter = limiters.setdefault(shard, ShardLimiter(settings.rate_for("GetResources")))
    policy = None
    if book is not None:  # fix-policy: checked against the account's policy now
        policy = await book.get(shard.account, shard.partition, job_via(job.options))
        problem = book.problem(shard.account)
        if problem is not None:
            result.errors[str(shard)] = f"tag policy not read: {problem}"
            result.unreadable += len(rows)
            return
    for i in range(0, len(rows), ARNS_PER_READ):
        chunk = rows[i : i + ARNS_PER_READ]
        try:
            current = await read_tags(clients, shard, limiter, [r.arn for r in chunk],
                                      settings, via=job_via(job.options))
        except Unreadable as exc:
            result.errors[str(shard)] = exc.reason
            result.unreadable += len(chunk)
            continue
        findings: list[tuple[int, str | None]] = []
        for r in chunk:
            tid = r.tagset_id
            if tid not in tagsets:
                tagsets[tid] = json.loads(await store.tagset(tid))
            drift = drift_of(job.operation, tagsets[tid], current.get(r.arn),
                             transform=bool(job.options.transform), policy=policy)
            findings.append((r.id, drift))
            result.checked += 1
            if drift:
                result.drifted += 1
                if len(result.rows) < 1000:
                    result.rows.append({"arn": r.arn, "account": shard.account,
                                        "region": shard.region, "drift": drift})
        await store.set_drift(findings)
