"""Discovery: find a job's resources by query, walking GetResources over accounts and regions.

A query is an AWS Resource Groups ResourceQuery as users paste it (TAG_FILTERS_1_0 or
CLOUDFORMATION_STACK_1_0), or the short forms --match-tag / --resource-type. Each (account,
region) pair is walked 100 resources a page at the shard's GetResources quota, straight into the
job's items, while the job's tagging runs. The walk's position is saved after every page: a
crash resumes from the saved token while it is fresh, and an expired token
(PaginationTokenExpiredException) restarts the pair's walk; items are unique per (job, ARN), so
a re-walk adds nothing twice. The tags GetResources returns decide skip-compliance for free.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from bulktag.api_limits import PAGE_SIZE as PAGE
from bulktag.api_limits import PAGINATION_TOKEN_SECONDS, RESOURCE_TYPE_FILTERS_MAX
from bulktag.arn import ArnError, Shard, parse_arn, route_of
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.aws.reads import (
    TokenExpired,
    Unreadable,
    get_resources_page,
    list_resources_page,
    tags_of,
)
from bulktag.config import Settings
from bulktag.engine.reader import job_via
from bulktag.errors import BulktagError
from bulktag.policy import transforms
from bulktag.policy.tag_policy import TagPolicy
from bulktag.policy.tags import key_problem
from bulktag.store import JOB_DONE, Discovery, JobOptions, NewItem, Store, tagset_body

log = structlog.get_logger("bulktag.engine.discovery")

TOKEN_FRESH_SECONDS = PAGINATION_TOKEN_SECONDS - 60  # leave a margin
STACK_TAG = "aws:cloudformation:stack-id"
EXPLORER_PAGE = 1000  # ListResources' largest page


class QueryError(BulktagError, ValueError):
    """A query that cannot be used: says which part and why."""


@dataclass(frozen=True)
class Query:
    """GetResources filters: AND across TagFilters, OR across one filter's values."""

    tag_filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    resource_types: tuple[str, ...] = ()
    #: only resources noncompliant with their account's tag policy (GetResources'
    #: IncludeComplianceDetails + ExcludeCompliantResources)
    noncompliant: bool = False
    #: Resource Explorer instead of GetResources: ListResources with this FilterString over
    #: `explorer_view` (None: the default view of the walk's region), never-tagged resources
    #: included
    explorer: str | None = None
    explorer_view: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "TagFilters": [{"Key": k, "Values": list(v)} for k, v in self.tag_filters],
            "ResourceTypeFilters": list(self.resource_types)}
        if self.noncompliant:
            out["ExcludeCompliantResources"] = True
        if self.explorer is not None:
            out["Explorer"] = {"FilterString": self.explorer,
                               **({"ViewArn": self.explorer_view} if self.explorer_view
                                  else {})}
        return out

    def page_params(self, token: str | None) -> dict[str, Any]:
        """One page's call: GetResources' (`params`), or ListResources' for an explorer
        query."""
        if self.explorer is not None:
            out: dict[str, Any] = {"MaxResults": EXPLORER_PAGE}
            if self.explorer:
                out["Filters"] = {"FilterString": self.explorer}
            if self.explorer_view:
                out["ViewArn"] = self.explorer_view
            if token:
                out["NextToken"] = token
            return out
        out = {**self.params(), "ResourcesPerPage": PAGE}
        if token:
            out["PaginationToken"] = token
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, every: bool = False) -> Query:
        """`every`: no filter is allowed (a transform's walk keeps only what it changes)."""
        return _filters(data, "query", every=every)

    def params(self) -> dict[str, Any]:
        """GetResources keyword arguments for this query."""
        out: dict[str, Any] = {}
        if self.tag_filters:
            out["TagFilters"] = [
                {"Key": k, "Values": list(v)} if v else {"Key": k} for k, v in self.tag_filters
            ]
        if self.resource_types:
            out["ResourceTypeFilters"] = list(self.resource_types)
        if self.noncompliant:
            out["IncludeComplianceDetails"] = True
            out["ExcludeCompliantResources"] = True
        return out

    def matches(self, resource_type: str, tags: Mapping[str, str]) -> bool:
        """The same semantics GetResources applies (used by tests and `plan`)."""
        if self.resource_types and not any(
            resource_type == t or resource_type.startswith(t + ":") for t in self.resource_types
        ):
            return False
        return all(k in tags and (not v or tags[k] in v) for k, v in self.tag_filters)


def _filters(data: Mapping[str, Any], where: str, *, every: bool = False) -> Query:
    if not isinstance(data, Mapping):
        raise QueryError(f"{where}: expected a JSON object")
    unknown = set(data) - {"TagFilters", "ResourceTypeFilters", "ExcludeCompliantResources",
                           "Explorer"}
    if unknown:
        raise QueryError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
                         "(expected TagFilters, ResourceTypeFilters)")
    noncompliant = data.get("ExcludeCompliantResources", False)
    if not isinstance(noncompliant, bool):
        raise QueryError(f"{where}: ExcludeCompliantResources must be true or false")
    filters = []
    raw_filters = data.get("TagFilters", [])
    if not isinstance(raw_filters, list) or len(raw_filters) > 50:
        raise QueryError(f"{where}: TagFilters must be a list of at most 50 filters")
    for i, f in enumerate(raw_filters):
        if not isinstance(f, Mapping) or not isinstance(f.get("Key"), str):
            raise QueryError(f"{where}: TagFilters[{i}] needs a string Key")
        values = f.get("Values", [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values) \
                or len(values) > 20:
            raise QueryError(f"{where}: TagFilters[{i}].Values must be at most 20 strings")
        filters.append((f["Key"], tuple(values)))
    types = data.get("ResourceTypeFilters", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types) \
            or len(types) > RESOURCE_TYPE_FILTERS_MAX:
        raise QueryError(f"{where}: ResourceTypeFilters must be a list of at most 100 strings")
    # Resource Groups queries say AWS::AllSupported for "any type": GetResources has no such
    # filter (it would match nothing), so it means no type filter at all.
    types = [t for t in types if t != "AWS::AllSupported"]
    for t in types:
        if t.startswith("AWS::"):
            raise QueryError(f"{where}: resource type {t!r} is a CloudFormation type name; "
                             "the Tagging API filters by service[:type], e.g. ec2:instance")
    explorer = data.get("Explorer")
    if explorer is not None:
        if not isinstance(explorer, Mapping) or not isinstance(explorer.get("FilterString"),
                                                               str):
            raise QueryError(f"{where}: Explorer needs a FilterString")
        if filters or types or noncompliant:
            raise QueryError(f"{where}: a Resource Explorer query takes no GetResources "
                             "filters (put them in its filter string)")
        return Query(explorer=explorer["FilterString"],
                     explorer_view=explorer.get("ViewArn") or None)  # Region: the walk's
    if not filters and not types and not every and not noncompliant:
        raise QueryError(f"{where}: matches every resource; give TagFilters or "
                         "ResourceTypeFilters")
    return Query(tuple(filters), tuple(types), noncompliant)


def parse_resource_query(text: str) -> Query:
    """Parse a ResourceQuery (`{"Type": ..., "Query": "<json string>"}`) as AWS defines it."""
    try:
        outer = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError(f"--query is not JSON: {exc}") from None
    if not isinstance(outer, dict) or "Type" not in outer or "Query" not in outer:
        raise QueryError('--query: expected {"Type": "TAG_FILTERS_1_0" or '
                         '"CLOUDFORMATION_STACK_1_0", "Query": "..."}')
    inner_raw = outer["Query"]
    try:
        inner = json.loads(inner_raw) if isinstance(inner_raw, str) else inner_raw
    except json.JSONDecodeError as exc:
        raise QueryError(f"--query: Query is not JSON: {exc}") from None
    kind = outer["Type"]
    if kind == "TAG_FILTERS_1_0":
        return _filters(inner, "--query")
    if kind == "CLOUDFORMATION_STACK_1_0":
        if not isinstance(inner, Mapping) or not isinstance(inner.get("StackIdentifier"), str):
            raise QueryError("--query: CLOUDFORMATION_STACK_1_0 needs a StackIdentifier")
        # Its ResourceTypeFilters (CloudFormation names such as AWS::EC2::Instance) do not map
        # onto Tagging API filters: the stack's tag alone selects its resources.
        return Query(((STACK_TAG, (inner["StackIdentifier"],)),), ())
    raise QueryError(f"--query: unknown Type {kind!r} "
                     "(expected TAG_FILTERS_1_0 or CLOUDFORMATION_STACK_1_0)")


def query_from_flags(match_tags: Sequence[str], resource_types: Sequence[str]) -> Query:
    """--match-tag KEY=VALUE (or KEY alone: any value) and --resource-type SERVICE[:TYPE]."""
    grouped: dict[str, list[str]] = {}
    for item in match_tags:
        key, sep, value = item.partition("=")
        problem = key_problem(key)
        if problem:
            raise QueryError(f"--match-tag {item!r}: {problem}")
        values = grouped.setdefault(key, [])
        if sep:
            values.append(value)
    return _filters({"TagFilters": [{"Key": k, "Values": v} for k, v in grouped.items()],
                     "ResourceTypeFilters": list(resource_types)}, "--match-tag/--resource-type")


# -- compliance ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    send: bool
    reason: str = ""  # why it is skipped
    override: dict[str, str] | None = None  # tags to send instead of the job's (--if-absent)


def decide(operation: str, wanted: Any, current: Mapping[str, str], *, if_absent: bool) -> Decision:
    """Whether a resource with `current` tags still needs the call, and with which tags."""
    if operation == "untag":
        present = [k for k in wanted if k in current]
        return Decision(True) if present else Decision(False, "none of the keys present")
    if if_absent:
        missing = {k: v for k, v in wanted.items() if k not in current}
        if not missing:
            return Decision(False, "every key already present (--if-absent)")
        return Decision(True, override=missing if len(missing) < len(wanted) else None)
    if all(current.get(k) == v for k, v in wanted.items()):
        return Decision(False, "already carries the tags")
    return Decision(True)


# -- walking --------------------------------------------------------------------------------------


@dataclass
class DiscoveryStats:
    pages: int = 0
    found: int = 0
    skipped: int = 0
    restarts: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def walk(
    store: Store, settings: Settings, clients: ClientPool, limiter: ShardLimiter, owner: str,
    d: Discovery, job_options: JobOptions, operation: str, stats: DiscoveryStats,
    stopping: anyio.Event, rng: random.Random | None = None, account: str | None = None,
    policy: TagPolicy | None = None,
) -> None:
    """Walk one (job, account, region) discovery to its end, saving the position each page.
    `account`: the account its calls go to (d.account, or the caller's when d names none):
    a found ARN that carries no account (an S3 bucket) is that account's, in d's region.
    `policy`: the account's tag policy (a fix-policy job keeps what it has to fix)."""
    account = account or d.account
    via = job_via(job_options)
    assert job_options.query is not None, "a discovery job has a query"
    query = Query.from_json(job_options.query, every=bool(job_options.transform))
    if_absent = job_options.if_absent
    # --if-absent never sends a key a resource has: what is already there is always skipped.
    skip_compliant = if_absent or job_options.skip_compliant
    wanted: Any
    ops = transforms.from_json(job_options.transform or [])
    if ops:
        # decided when claimed, from the tags read then: every resource found that the
        # operations would change (or meet a conflict on) is an item
        wanted, skip_compliant = None, False
        body = transforms.to_json(ops)
    elif operation == "tag":
        wanted = job_options.tags or {}
        body = tagset_body(wanted, None)
    else:
        wanted = job_options.keys or []
        body = tagset_body(None, wanted)
    walk_log = log.bind(job=d.job_id, account=d.account or "caller", region=d.region)
    token = d.token if d.token and d.token_at and time.time() - d.token_at < TOKEN_FRESH_SECONDS \
        else None
    if d.token and token is None:
        stats.restarts += 1
        await store.restart_discovery(d)
        walk_log.info("discovery_restarted", reason="saved pagination token too old")
    read_page = list_resources_page if query.explorer is not None else get_resources_page
    keep = explorer_scope(job_options.accounts, job_options.regions, account) \
        if query.explorer is not None else None
    while not stopping.is_set():
        params = query.page_params(token)
        try:
            resp = await read_page(clients, Shard(d.partition, d.account, d.region), limiter,
                                   params, settings, rng, via=via, errors=stats.errors)
        except TokenExpired:
            token = None
            stats.restarts += 1
            await store.restart_discovery(d)
            walk_log.info("discovery_restarted", reason="pagination token expired")
            continue
        except Unreadable as exc:
            await store.finish_discovery(d, "failed", exc.reason)
            walk_log.error("discovery_failed", code=exc.failure.code,
                           message=exc.failure.message)
            return
        items: list[NewItem] = []
        skipped: list[tuple[str, str]] = []
        for mapping in resp.get("ResourceTagMappingList", []):
            arn_text = mapping["ResourceARN"]
            if keep is not None and not keep(mapping):
                continue  # the view's, but outside the job's accounts and regions
            try:
                arn = parse_arn(arn_text)
            except ArnError as exc:
                items.append(NewItem(arn_text, None, None, None, f"malformed ARN: {exc}"))
                continue
            item_body = body
            if ops and not transforms.affects(ops, tags_of(mapping),
                                              job_options.on_conflict or "skip", policy=policy):
                continue
            if wanted is not None:
                decision = decide(operation, wanted, tags_of(mapping), if_absent=if_absent)
                if skip_compliant and not decision.send:
                    skipped.append((arn_text, decision.reason))
                if decision.override:
                    item_body = tagset_body(decision.override, None)
            # An ARN without account or region (an S3 bucket) belongs where it was found (or
            # where Resource Explorer says it is).
            shard = arn.shard if arn.account and arn.region else Shard(
                arn.partition, arn.account or mapping.get("OwningAccountId") or account,
                arn.region or mapping.get("Region") or d.region)
            items.append(NewItem(arn_text, shard, item_body,
                                 route=route_of(arn_text, job_options.route)))
        job = await store.get_job(d.job_id)
        if job is None or job.state in JOB_DONE:
            # Cancelled, or failed its threshold: adding pending items to it would leave them
            # open forever.
            await store.finish_discovery(
                d, "done", f"stopped: the job is {job.state if job else 'gone'}")
            walk_log.info("discovery_stopped", job_state=job.state if job else None)
            return
        if items:
            await store.add_items(d.job_id, items)
        stats.skipped += await store.skip_items(d.job_id, skipped)
        token = resp.get("PaginationToken") or None
        stats.pages += 1
        stats.found += len(items)
        await store.save_discovery_page(d, owner, token, len(items))
        if not token:
            await store.finish_discovery(d, "done")
            walk_log.info("discovery_done")
            return


def explorer_scope(accounts_given: Sequence[str] | None, regions_given: Sequence[str] | None,
                   caller: str) -> Callable[[Mapping[str, Any]], bool]:
    """Which of a view's resources a job keeps: those of its accounts (none named: the
    caller's) and regions (global resources, region "global" or none, always)."""
    accounts = {a or caller for a in (accounts_given or [""])}
    regions = set(regions_given or ())

    def keep(mapping: Mapping[str, Any]) -> bool:
        owner = mapping.get("OwningAccountId") or mapping["ResourceARN"].split(":")[4]
        region = mapping.get("Region") or ""
        return (not accounts - {""} or owner in accounts) and (
            not regions or region in regions or region in ("", "global"))

    return keep


async def enabled_regions(clients: ClientPool, settings: Settings) -> list[str]:
    """Every region enabled for the caller (EC2 DescribeRegions), for discovery's default."""
    session = clients.accounts.base
    async with session.create_client(
        "ec2", region_name=settings.region or "us-east-1", endpoint_url=settings.endpoint_url
    ) as ec2:
        resp = await ec2.describe_regions()
    return sorted(r["RegionName"] for r in resp["Regions"])
