"""Tag-sync rules, after AWS Resource Groups tag-sync tasks.

A rule names what to match (a tag key and value, or a ResourceQuery), the tags to apply, and the
accounts and regions to look in. An evaluation walks GetResources with the rule's query over
accounts × regions at the GetResources quota and compares with the rule's members (what matched
last time): resources that newly match or whose applied tags drifted go to a tag job with just
those ARNs; members that stopped matching go to an untag job removing the applied keys, as AWS
tag-sync does when a resource loses the matching tag. Both jobs are named `sync:NAME` and run
like any job. An evaluation that cannot read some account or region (a refused role, access
denied) sets the rule's status to ERROR with the reason: it still tags what it could read, but
removes nothing and keeps the members it could not see.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bulktag.api_limits import PAGE_SIZE as PAGE
from bulktag.arn import ArnError, Shard, parse_arn, route_of
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.aws.reads import TokenExpired, Unreadable, get_resources_page, tags_of
from bulktag.config import Settings
from bulktag.engine.discovery import Query, enabled_regions, parse_resource_query
from bulktag.errors import BulktagError
from bulktag.policy.access import Via, via_of
from bulktag.store import JobOptions, JobState, NewItem, NewSyncRule, Store, SyncRule, tagset_body

log = structlog.get_logger("bulktag.app.sync_rules")

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}$")
MAX_THROTTLE_RETRIES = 100
ENQUEUE_CHUNK = 10_000  # ARNs per add_items call


class RuleError(BulktagError, ValueError):
    """A rule that cannot be added: says which part and why."""


def query_of(rule: SyncRule) -> Query:
    """What a rule matches, as a GetResources query."""
    if rule.resource_query:
        return rule_query(rule.resource_query)
    return Query(((str(rule.tag_key), (str(rule.tag_value),)),), ())


def rule_query(text: str) -> Query:
    """A ResourceQuery as tag-sync takes it. `AWS::AllSupported` means no type filter (GetResources
    has no such type); other CloudFormation type names have no exact Tagging API equivalent, so
    they are refused rather than guessed."""
    query = parse_resource_query(text)
    types = tuple(t for t in query.resource_types if t != "AWS::AllSupported")
    cfn = [t for t in types if t.startswith("AWS::")]
    if cfn:
        raise RuleError(f"--resource-query: ResourceTypeFilters {', '.join(cfn)}: give the "
                        "Tagging API's SERVICE[:TYPE] names instead (e.g. ec2:instance)")
    if not types and not query.tag_filters:
        raise RuleError("--resource-query: matches every resource; give TagFilters")
    return Query(query.tag_filters, types)


def check_rule(name: str, tag_key: str | None, tag_value: str | None,
               resource_query: str | None, apply: dict[str, str], accounts: Sequence[str],
               interval: float, regions: Sequence[str] = ()) -> None:
    """Raise RuleError for a rule that cannot work (pure: no I/O). Keys, values, regions and
    accounts by the same rules as everywhere (`policy.tags`, `arn.py`)."""
    from bulktag.arn import account_problem, region_problem
    from bulktag.policy.tags import key_problem, tagset_problem, value_problem

    if not NAME_PATTERN.match(name):
        raise RuleError(f"rule name {name!r}: 1-128 letters, digits and _.:@+=- "
                        "(starting with a letter or digit)")
    if resource_query is not None:
        if tag_key is not None or tag_value is not None:
            raise RuleError("give either --tag-key/--tag-value or --resource-query, not both")
        rule_query(resource_query)  # QueryError is a ValueError: says what is wrong
    elif tag_key is None or tag_value is None:
        raise RuleError("give --tag-key and --tag-value together, or --resource-query")
    else:
        problem = key_problem(tag_key) or value_problem(tag_key, tag_value)
        if problem:
            raise RuleError(f"--tag-key/--tag-value: {problem}")
    if not apply:
        raise RuleError("--apply: give at least one KEY=VALUE to apply")
    problem = tagset_problem(apply)
    if problem:
        raise RuleError(f"--apply: {problem}")
    for account in accounts:
        if account and account_problem(account):
            raise RuleError(f"--accounts: {account_problem(account)}")
    for region in regions:
        if region_problem(region):
            raise RuleError(f"--regions: {region_problem(region)}")
    if not interval > 0:
        raise RuleError(f"--interval must be positive, not {interval:g}")


async def add_rule(store: Store, rule: NewSyncRule) -> SyncRule:
    """Check and add a rule; RuleError says what is wrong (or that the name is taken)."""
    check_rule(rule.name, rule.tag_key, rule.tag_value, rule.resource_query, rule.apply,
               rule.accounts, rule.interval, rule.regions)
    try:
        return await store.add_sync_rule(rule)
    except KeyError:
        raise RuleError(f"a sync rule named {rule.name!r} exists already") from None


# -- evaluation ---------------------------------------------------------------------------------


@dataclass
class Evaluation:
    rule: str
    matched: int = 0
    added: int = 0  # new or drifted: in the tag job
    removed: int = 0  # stopped matching: in the untag job
    jobs: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # "account/region" -> reason
    requests: int = 0

    def count_request(self) -> None:
        self.requests += 1

    @property
    def status(self) -> str:
        return "ERROR" if self.errors else "ACTIVE"

    @property
    def error(self) -> str | None:
        if not self.errors:
            return None
        return "; ".join(f"{where}: {why}" for where, why in sorted(self.errors.items()))

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "status": self.status, "error": self.error,
                "matched": self.matched, "added": self.added, "removed": self.removed,
                "jobs": self.jobs, "requests": self.requests}


LimiterFor = Callable[[Shard], ShardLimiter]


def own_limiters(settings: Settings) -> LimiterFor:
    """GetResources limiters per shard for a process with no engine (`sync run`)."""
    limiters: dict[Shard, ShardLimiter] = {}

    def get(shard: Shard) -> ShardLimiter:
        lim = limiters.get(shard)
        if lim is None:
            lim = limiters[shard] = ShardLimiter(settings.rate_for("GetResources"))
        return lim

    return get


def rule_via(rule: SyncRule) -> Via | None:
    """The rule's way into its accounts (kept from `sync add`), or None: the worker's."""
    way = rule.way_in or {}
    return via_of(way.get("role_name"), way.get("external_id"), way.get("role_session_name"))


async def _read_pair(clients: ClientPool, settings: Settings, shard: Shard, query: Query,
                     limiter: ShardLimiter, ev: Evaluation, rng: random.Random,
                     via: Via | None = None) -> dict[str, dict[str, str]]:
    """Every resource matching `query` in one (account, region), with its tags."""
    found: dict[str, dict[str, str]] = {}
    token: str | None = None
    while True:
        params = query.params()
        params["ResourcesPerPage"] = PAGE
        if token:
            params["PaginationToken"] = token
        try:
            resp = await get_resources_page(clients, shard, limiter, params, settings, rng,
                                            via=via, max_throttles=MAX_THROTTLE_RETRIES,
                                            on_call=ev.count_request)
        except TokenExpired:
            token, found = None, {}
            continue
        for mapping in resp.get("ResourceTagMappingList", []):
            found[mapping["ResourceARN"]] = tags_of(mapping)
        token = resp.get("PaginationToken") or None
        if not token:
            return found


async def _enqueue(store: Store, rule: SyncRule, operation: str, arns: Sequence[str]) -> int:
    """A ready job `sync:NAME` over `arns`, its items added as submit() adds them."""
    if operation == "tag":
        body = tagset_body(rule.apply, None)
        options = JobOptions(tags=rule.apply, keys=[], sync_rule=rule.name)
    else:
        body = tagset_body(None, list(rule.apply))
        options = JobOptions(tags={}, keys=sorted(rule.apply), sync_rule=rule.name)
    options = options.with_(**(rule.way_in or {}))  # its jobs go the rule's way
    job_id = await store.create_job(operation, options=options, name=f"sync:{rule.name}")
    try:
        for i in range(0, len(arns), ENQUEUE_CHUNK):
            items = []
            for arn in arns[i:i + ENQUEUE_CHUNK]:
                try:
                    # The route by the ARN (the job takes the setting's at its first run:
                    # Engine.options moves its items to tagging-api when the setting says so).
                    items.append(NewItem(arn, parse_arn(arn).shard, body,
                                         route=route_of(arn, None)))
                except ArnError as exc:
                    items.append(NewItem(arn, None, None, None, f"malformed ARN: {exc}"))
            await store.add_items(job_id, items)
        await store.set_job_state(job_id, JobState.READY)
    except BaseException:
        await store.delete_job(job_id)
        raise
    return job_id


async def evaluate(store: Store, settings: Settings, clients: ClientPool, rule: SyncRule,
                   limiter_for: LimiterFor, *, rng: random.Random | None = None) -> Evaluation:
    """One evaluation of a claimed rule: read, compare, enqueue, record. Never raises for an
    account or region it cannot read: that is the rule's ERROR status."""
    rng = rng or random.Random()
    ev = Evaluation(rule.name)
    rule_log = log.bind(rule=rule.name)
    matched: dict[str, dict[str, str]] = {}
    regions = list(rule.regions)
    if not regions:
        try:
            regions = await enabled_regions(clients, settings)
        except Exception as exc:
            ev.errors["*"] = f"cannot list the enabled regions: {exc}"
    query = query_of(rule)
    for account in rule.accounts:
        for region in regions:
            shard = Shard("aws", account, region)
            try:
                matched.update(await _read_pair(clients, settings, shard, query,
                                                limiter_for(shard), ev, rng, rule_via(rule)))
            except Unreadable as exc:
                ev.errors[f"{account or 'caller'}/{region}"] = exc.reason
    ev.matched = len(matched)
    wanted = rule.apply
    to_tag = [arn for arn, tags in matched.items()
              if any(tags.get(k) != v for k, v in wanted.items())]
    members = await store.sync_member_arns(rule.id)
    # With part of the rule unread, a member missing from `matched` may just be unseen:
    # remove nothing until a full evaluation says so.
    gone = [] if ev.errors else [arn for arn in members if arn not in matched]
    if to_tag:
        ev.jobs.append(await _enqueue(store, rule, "tag", to_tag))
        ev.added = len(to_tag)
    if gone:
        ev.jobs.append(await _enqueue(store, rule, "untag", gone))
        ev.removed = len(gone)
    await store.update_sync_members(rule, list(matched), gone)
    await store.finish_sync_rule(rule, ev.status, ev.error, ev.added, ev.removed, ev.jobs)
    if ev.errors:
        rule_log.error("sync_rule_error", error=ev.error, matched=ev.matched, added=ev.added)
    else:
        rule_log.info("sync_rule_evaluated", matched=ev.matched, added=ev.added,
                      removed=ev.removed, jobs=ev.jobs)
    return ev
