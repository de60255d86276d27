"""`--dry-run`, the plan: per account and region, how many resources would change, be skipped
or are invalid, and how long that takes at the quotas. Nothing is enqueued and nothing tagged:
current tags are read with GetResources (ARN lists for file sources, the query walk for
queries), at the shard's GetResources quota."""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from .arn import ROUTE_EC2, ROUTE_TAGGING, Shard, parse_arn, route_of
from .aws import TokenExpired, Unreadable, get_resources_page, read_tags, tags_of
from .clients import ClientPool
from .config import Settings
from .discovery import Query, decide
from .errors import UsageError
from .limiter import ShardLimiter
from .limits import ARNS_PER_READ
from .limits import ARNS_PER_TAG_CALL as BATCH
from .limits import PAGE_SIZE as PAGE
from .sources import SourceError, open_rows, read_chunks, source_name
from .store import JobOptions
from .submit import (
    MAX_PROBLEMS_SHOWN,
    Problem,
    Request,
    SubmissionRefused,
    item_for_row,
    nothing_to_apply,
    nothing_to_apply_refusal,
)


@dataclass
class ShardPlan:
    change: Counter[str] = field(default_factory=Counter)  # tags to send (JSON) -> resources
    ec2: Counter[str] = field(default_factory=Counter)  # of those, by the ec2 route
    skip: int = 0
    skip_ec2: int = 0  # of those, by the ec2 route
    unread: int = 0  # tags could not be read: counted as changes
    error: str | None = None

    @property
    def changes(self) -> int:
        return sum(self.change.values())


def _tally(specs: list[str], request: Request, fmt: str | None
           ) -> tuple[dict[Shard, list[tuple[str, str]]], int, int, int]:
    """Read the sources: valid (arn, tagset body) per shard, and rows / invalid / duplicates.
    Refuses what the real submission refuses, with its words: SubmissionRefused for bad rows
    (unless --skip-invalid) or no rows; SourceError for a source that cannot be read."""
    per_shard: dict[Shard, list[tuple[str, str]]] = defaultdict(list)
    seen: set[str] = set()
    rows = invalid = dupes = untaggable = 0
    problems: list[Problem] = []
    for spec in specs:
        for chunk in read_chunks(open_rows(spec, fmt=fmt), 10_000):
            for row in chunk:
                rows += 1
                item = item_for_row(row, request)
                if item.problem is not None or item.shard is None or item.tagset is None:
                    invalid += 1
                    untaggable += nothing_to_apply(request, item.problem)
                    if len(problems) < MAX_PROBLEMS_SHOWN:
                        problems.append(Problem(source_name(spec), item.line or 0,
                                                item.problem or "invalid row"))
                elif item.arn in seen:
                    dupes += 1
                else:
                    seen.add(item.arn)
                    per_shard[item.shard].append((item.arn, item.tagset))
    if rows and untaggable == rows:
        raise nothing_to_apply_refusal(request, rows)
    if invalid and not request.skip_invalid:
        raise SubmissionRefused(problems, invalid)
    if rows == 0:
        empty = Problem(", ".join(source_name(s) for s in specs), 0, "no ARNs found")
        raise SubmissionRefused([empty], 1, f"{empty}; nothing was enqueued")
    return per_shard, rows, invalid, dupes


async def _plan_shard(clients: ClientPool, settings: Settings, shard: Shard,
                      items: list[tuple[str, str]], request: Request, options: JobOptions,
                      ) -> ShardPlan:
    plan = ShardPlan()
    check = options.skip_compliant
    limiter = ShardLimiter(settings.rate_for("GetResources"))
    for i in range(0, len(items), ARNS_PER_READ):
        chunk = items[i : i + ARNS_PER_READ]
        current: dict[str, dict[str, str]] | None = None
        if check and plan.error is None:
            try:
                current = await read_tags(clients, shard, limiter, [a for a, _ in chunk],
                                          settings)
            except Unreadable as exc:
                plan.error = exc.reason
        for arn, body in chunk:
            wanted = json.loads(body)
            ec2 = route_of(arn, options.route or settings.route) == ROUTE_EC2
            if current is None:
                plan.change[body] += 1
                plan.ec2[body] += ec2
                plan.unread += int(check)
                continue
            d = decide(request.operation, wanted, current.get(arn, {}),
                       if_absent=options.if_absent)
            if d.send:
                sent = json.dumps(d.override, sort_keys=True) if d.override else body
                plan.change[sent] += 1
                plan.ec2[sent] += ec2
            else:
                plan.skip += 1
                plan.skip_ec2 += ec2
    return plan


async def _walk_plan(clients: ClientPool, settings: Settings, account: str, region: str,
                     query: Query, request: Request, options: JobOptions,
                     plans: dict[Shard, ShardPlan]) -> None:
    limiter = ShardLimiter(settings.rate_for("GetResources"))
    wanted: Any = request.tags if request.operation == "tag" else list(request.keys)
    token = None
    shard_key = Shard("aws", account, region)
    try:
        while True:
            params = {**query.params(), "ResourcesPerPage": PAGE}
            if token:
                params["PaginationToken"] = token
            resp = await get_resources_page(clients, shard_key, limiter, params, settings)
            for m in resp.get("ResourceTagMappingList", []):
                shard = parse_arn(m["ResourceARN"]).shard
                plan = plans.setdefault(shard, ShardPlan())
                d = decide(request.operation, wanted, tags_of(m),
                           if_absent=options.if_absent)
                ec2 = route_of(m["ResourceARN"], options.route or settings.route) == ROUTE_EC2
                if d.send or not options.skip_compliant:
                    sent = json.dumps(d.override or wanted, sort_keys=True)
                    plan.change[sent] += 1
                    plan.ec2[sent] += ec2
                else:
                    plan.skip += 1
                    plan.skip_ec2 += ec2
            token = resp.get("PaginationToken")
            if not token:
                return
    except (Unreadable, TokenExpired) as exc:
        plans.setdefault(shard_key, ShardPlan()).error = str(exc) or "pagination token expired"


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run would do: `data` for --json, `human` for a terminal, and its exit code."""

    data: dict[str, Any]
    human: str
    exit_code: int


def _render(request: Request, settings: Settings, plans: dict[Shard, ShardPlan],
            header: dict[str, Any], invalid: int) -> Plan:
    rate = settings.rate_for("TagResources" if request.operation == "tag" else "UntagResources")
    shards: list[dict[str, Any]] = []
    for shard, plan in sorted(plans.items(), key=lambda kv: str(kv[0])):
        # The routes run side by side, each at its own quota (README "Two routes").
        batches = sum(math.ceil((n - plan.ec2[t]) / BATCH) for t, n in plan.change.items())
        ec2_batches = sum(math.ceil(n / settings.ec2_batch_size) for n in plan.ec2.values())
        seconds = max(batches / rate, ec2_batches / settings.ec2_rate)
        ec2 = sum(plan.ec2.values())
        routes = [  # the route each resource will be stored and sent with
            {"route": ROUTE_EC2, "change": ec2, "skip": plan.skip_ec2, "batches": ec2_batches,
             "seconds_at_quota": round(ec2_batches / settings.ec2_rate, 1)},
            {"route": ROUTE_TAGGING, "change": plan.changes - ec2,
             "skip": plan.skip - plan.skip_ec2, "batches": batches,
             "seconds_at_quota": round(batches / rate, 1)}]
        shards.append({"partition": shard.partition, "account": shard.account,
                       "region": shard.region, "change": plan.changes, "skip": plan.skip,
                       "unread": plan.unread, "batches": batches + ec2_batches,
                       "ec2": ec2, "ec2_batches": ec2_batches,
                       "seconds_at_quota": round(seconds, 1), "error": plan.error,
                       "routes": [r for r in routes if r["change"] or r["skip"]]})
    data = {**header, "operation": request.operation, "invalid": invalid,
            "change": sum(s["change"] for s in shards), "skip": sum(s["skip"] for s in shards),
            "shards": shards,
            # Shards run at once: the run takes as long as its slowest shard.
            "estimated_seconds": max((s["seconds_at_quota"] for s in shards), default=0)}
    lines = [f"plan ({request.operation}, nothing sent): {data['change']} to change, "
             f"{data['skip']} already right, {invalid} invalid; "
             f"{rate:g} calls/s of 20 ARNs per account-region; EC2 resources (via ec2) "
             f"{settings.ec2_rate:g} CreateTags/DeleteTags calls/s of "
             f"{settings.ec2_batch_size} ids",
             f"  {'account':<14}{'region':<16}{'route':<13}{'change':>9}{'skip':>9}"
             f"{'batches':>9}{'est. s':>9}"]
    for s in shards:
        # One row per route of the account-region: the routes run side by side.
        for n, r in enumerate(s["routes"] or [{"route": "-", "change": 0, "skip": 0,
                                               "batches": 0, "seconds_at_quota": 0.0}]):
            line = (f"  {s['account'] or '(caller)':<14}{s['region']:<16}{r['route']:<13}"
                    f"{r['change']:>9}{r['skip']:>9}{r['batches']:>9}"
                    f"{r['seconds_at_quota']:>9}")
            if s["error"] and n == 0:
                line += f"  tags not read: {s['error'][:100]}"
            lines.append(line)
    lines.append(f"  estimated duration: ~{data['estimated_seconds']} s (shards run at once)")
    return Plan(data, "\n".join(lines), 0 if not invalid or request.skip_invalid else 2)


async def dry_run(request: Request, settings: Settings, options: JobOptions,
                  sources: list[str], source_format: str | None) -> Plan:
    """The plan for file sources. Bad sources end as the real run's: the same errors, the
    same words (SubmissionRefused, "nothing was enqueued: ..."), exit 2."""
    try:
        per_shard, rows, invalid, dupes = await anyio.to_thread.run_sync(
            functools.partial(_tally, sources, request, source_format)
        )
    except SourceError as exc:
        raise UsageError(f"nothing was enqueued: {exc}") from None
    clients = ClientPool(settings)
    try:
        results = await asyncio.gather(*(
            _plan_shard(clients, settings, shard, items, request, options)
            for shard, items in per_shard.items()
        ))
    finally:
        await clients.close()
    plans = dict(zip(per_shard, results, strict=True))
    return _render(request, settings, plans, {"rows": rows, "duplicates": dupes}, invalid)


async def plan_query(settings: Settings, request: Request, query: Query, accounts: list[str],
                     regions: list[str], options: JobOptions) -> Plan:
    """The plan for a query: walk it without enqueuing."""
    clients = ClientPool(settings)
    plans: dict[Shard, ShardPlan] = {}
    try:
        await asyncio.gather(*(
            _walk_plan(clients, settings, a, r, query, request, options, plans)
            for a in accounts for r in regions
        ))
    finally:
        await clients.close()
    return _render(request, settings, plans, {"query": query.to_json()}, 0)
