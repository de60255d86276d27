"""`--dry-run`, the plan: per account and region, how many resources would change (and which
keys would be added, modified, removed), be skipped, be refused by a guardrail or are invalid,
and how long that takes at the quotas, with a sample of `key: before → after`. Nothing is
enqueued and nothing tagged: current tags are read with GetResources (ARN lists for file
sources and undo, the query walk for queries) at the shard's GetResources quota, whenever the
run would read them, and each resource is decided by `changes.decide` as the run decides it."""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from bulktag.api_limits import ARNS_PER_READ
from bulktag.api_limits import ARNS_PER_TAG_CALL as BATCH
from bulktag.app.submit import (
    MAX_PROBLEMS_SHOWN,
    PolicyCheck,
    Problem,
    Request,
    SubmissionRefused,
    conflict_reason,
    item_for_row,
    nothing_to_apply,
    nothing_to_apply_refusal,
    policy_refusals,
)
from bulktag.arn import ROUTE_EC2, ROUTE_TAGGING, Shard, parse_arn, resource_type_of, route_of
from bulktag.aws.clients import ClientPool
from bulktag.aws.organizations import PolicyBook
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.aws.reads import (
    TokenExpired,
    Unreadable,
    get_resources_page,
    list_resources_page,
    read_tags,
    tags_of,
)
from bulktag.config import Settings
from bulktag.engine.discovery import Query, explorer_scope
from bulktag.engine.reader import fixes_policy, job_rules, job_via
from bulktag.errors import UsageError
from bulktag.policy import transforms
from bulktag.policy.changes import Decision, Rules, decide, diff_text, sendable
from bulktag.policy.tag_policy import POLICY_CODE, TagPolicy, violations
from bulktag.sources import SourceError, open_rows, read_chunks, source_name
from bulktag.store import JobOptions, tagset_body

S3_BUCKET = ":s3:::"  #: in a bucket's ARN: no region, no account
#: a GetResources discovery without tag filters: what it cannot see
NEVER_TAGGED = ("GetResources lists only resources that are or were tagged: resources never "
                "tagged are not found here; --explorer 'FILTER' finds them through AWS "
                "Resource Explorer")
SAMPLE = 10  #: resources shown with `key: before → after` (and refusals with their reason)


@dataclass
class ShardPlan:
    change: Counter[str] = field(default_factory=Counter)  # tags to send (JSON) -> resources
    ec2: Counter[str] = field(default_factory=Counter)  # of those, by the ec2 route
    skip: int = 0
    skip_ec2: int = 0  # of those, by the ec2 route
    fail: int = 0  # refused by a guardrail, without a call (more than 50 tags)
    keys: Counter[str] = field(default_factory=Counter)  # add / change / remove, in keys
    refused: Counter[str] = field(default_factory=Counter)  # guardrail or undo code -> items
    unread: int = 0  # tags could not be read: counted as changes
    buckets: int = 0  # S3 bucket ARNs: no region of their own, sent through the shard's
    error: str | None = None

    @property
    def changes(self) -> int:
        return sum(self.change.values())


@dataclass
class Samples:
    """The first resources of the plan that change, and the first refused, with why."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)


def _count(plan: ShardPlan, d: Decision, body: str, arn: str, ec2: bool,
           samples: Samples) -> None:
    """One resource's decision into its shard's plan (and the samples while they have room)."""
    if d.send:
        sent = json.dumps(d.override, sort_keys=True) if d.override is not None else body
        plan.change[sent] += 1
        plan.ec2[sent] += ec2
        # a transform's image also holds keys it read but did not change
        after = {k: v for k, v in d.after.items() if d.before.get(k) != v}
        before = {k: d.before.get(k) for k in after}
        for key, value in after.items():
            plan.keys["remove" if value is None else
                      "add" if before.get(key) is None else "change"] += 1
        if after and len(samples.changes) < SAMPLE:
            samples.changes.append({"arn": arn, "before": before, "after": after,
                                    "diff": diff_text(before, after)})
        return
    if d.failed:
        plan.fail += 1
    else:
        plan.skip += 1
        plan.skip_ec2 += ec2
    if d.code is not None:
        plan.refused[d.code] += 1
        if len(samples.refusals) < SAMPLE:
            samples.refusals.append({"arn": arn, "state": "failed" if d.failed else "skipped",
                                     "code": d.code, "reason": d.reason})


def rules_for(request: Request, options: JobOptions) -> Rules:
    return job_rules(request.operation, options)


def reads_tags(options: JobOptions) -> bool:
    """The run reads current tags before sending: the plan reads them too."""
    return options.skip_compliant or options.if_absent or options.before_images or \
        options.undo_of is not None


def _tally(specs: list[str], request: Request, fmt: str | None
           ) -> tuple[dict[Shard, list[tuple[str, str]]], int, int, int]:
    """Read the sources: valid (arn, tagset body) per shard, and rows / invalid / duplicates.
    Refuses what the real submission refuses, with its words: SubmissionRefused for bad rows
    (unless --skip-invalid) or no rows; SourceError for a source that cannot be read."""
    per_shard: dict[Shard, list[tuple[str, str]]] = defaultdict(list)
    seen: dict[str, tuple[str, int | None]] = {}  # ARN -> (tagset, line) of its first row
    rows = invalid = dupes = untaggable = conflicts = 0
    problems: list[Problem] = []
    clashes: list[Problem] = []  # conflicting duplicates: refused even with --skip-invalid
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
                    first, line = seen[item.arn]
                    if first != item.tagset:  # the submission refuses it: so does the plan
                        conflicts += 1
                        if len(clashes) < MAX_PROBLEMS_SHOWN:
                            clashes.append(Problem(source_name(spec), item.line or 0,
                                                   conflict_reason(item.arn, line, first,
                                                                   item.tagset)))
                else:
                    seen[item.arn] = (item.tagset, item.line)
                    per_shard[item.shard].append((item.arn, item.tagset))
    if rows and untaggable == rows:
        raise nothing_to_apply_refusal(request, rows)
    if invalid and not request.skip_invalid:
        raise SubmissionRefused(problems, invalid)
    if conflicts:
        raise SubmissionRefused.conflicts(clashes, conflicts)
    if rows == 0:
        empty = Problem(", ".join(source_name(s) for s in specs), 0, "no ARNs found")
        raise SubmissionRefused([empty], 1, f"{empty}; nothing was enqueued")
    return per_shard, rows, invalid, dupes


def _as_the_run_reads(tags: dict[str, str], body: Any, ec2: bool,
                      settings: Settings) -> dict[str, str]:
    """The tags the run's read will see: on the EC2 route, DescribeTags narrowed to the keys
    the job touches (README "Two routes"), so the plan counts what the run will do, guardrails
    that need the other keys included (they do not apply there)."""
    if not ec2 or settings.ec2_read != "describe-tags":
        return tags
    keys = set(body)  # a tag or undo body's keys, an untag body's list
    return {k: v for k, v in tags.items() if k in keys}


async def _policy(book: PolicyBook | None, shard: Shard, options: JobOptions,
                  plan: ShardPlan) -> TagPolicy | None:
    """The account's tag policy (None: no book, --allow-noncompliant). A fix-policy job needs
    it: one that cannot be read is the shard's plan error, as for the run; other jobs go on
    without it (AWS checks their tags alone)."""
    if book is None:
        return None
    policy = await book.get(shard.account, shard.partition, job_via(options))
    problem = book.problem(shard.account)
    if problem is not None and fixes_policy(options):
        plan.error = f"the account's tag policy could not be read: {problem}"
    return policy


def _policy_book(clients: ClientPool, options: JobOptions) -> PolicyBook | None:
    """Policies are read for every plan but one that sends noncompliant tags on purpose."""
    if options.allow_noncompliant and not fixes_policy(options):
        return None
    return PolicyBook(clients)


def _as_the_policy_allows(d: Decision, policy: TagPolicy | None, arn: str,
                          options: JobOptions, wanted: Any) -> Decision:
    """What the run's worker does with a change an enforced tag policy refuses on the
    resource's type: the item fails TagPolicyViolation without a call."""
    if not d.send or policy is None or not policy.rules or options.allow_noncompliant:
        return d
    body = d.override if d.override is not None else sendable(wanted)
    sets = {k: v for k, v in body.items() if v is not None} if isinstance(body, dict) else {}
    kind = resource_type_of(arn)
    refused = [v for v in violations(policy, kind, sets) if v.enforced]
    if not refused:
        return d
    return Decision(False, "refused before sending: " + "; ".join(v.reason for v in refused) +
                    f" on {kind}, which the account's tag policy enforces", failed=True,
                    code=POLICY_CODE)


async def _plan_shard(clients: ClientPool, settings: Settings, shard: Shard,
                      items: list[tuple[str, str]], rules: Rules, options: JobOptions,
                      samples: Samples, book: PolicyBook | None = None) -> ShardPlan:
    plan = ShardPlan()
    check = reads_tags(options)
    limiter = ShardLimiter(settings.rate_for("GetResources"))
    policy = await _policy(book, shard, options, plan)
    for i in range(0, len(items), ARNS_PER_READ):
        chunk = items[i : i + ARNS_PER_READ]
        current: dict[str, dict[str, str]] | None = None
        if check and plan.error is None:
            try:
                current = await read_tags(clients, shard, limiter, [a for a, _ in chunk],
                                          settings, via=job_via(options))
            except Unreadable as exc:
                plan.error = exc.reason
        for arn, body in chunk:
            plan.buckets += S3_BUCKET in arn
            ec2 = route_of(arn, options.route or settings.route) == ROUTE_EC2
            if current is None:
                sent = json.dumps(sendable(json.loads(body)), sort_keys=True)
                plan.change[sent] += 1
                plan.ec2[sent] += ec2
                plan.unread += int(check)
                continue
            wanted = json.loads(body)
            tags = current.get(arn, {})
            if not options.transform:  # a transform reads every key
                tags = _as_the_run_reads(tags, wanted, ec2, settings)
            decision = decide(rules, wanted, tags,
                              case_insensitive=arn.split(":", 3)[2:3] == ["iam"],
                              policy=policy)
            _count(plan, _as_the_policy_allows(decision, policy, arn, options, wanted), body,
                   arn, ec2, samples)
    return plan


async def _walk_plan(clients: ClientPool, settings: Settings, account: str, region: str,
                     query: Query, request: Request, options: JobOptions,
                     plans: dict[Shard, ShardPlan], samples: Samples,
                     book: PolicyBook | None = None) -> None:
    limiter = ShardLimiter(settings.rate_for("GetResources"))
    wanted: Any = request.tags if request.operation == "tag" else list(request.keys)
    body = tagset_body(request.tags, None) if request.operation == "tag" else \
        tagset_body(None, list(request.keys))
    if request.transform is not None:
        body = request.transform
        wanted = json.loads(body)
    rules = rules_for(request, options)
    token = None
    shard_key = Shard("aws", account, region)
    explorer = query.explorer is not None
    keep = explorer_scope(options.accounts, options.regions,
                          account or request.caller_account) if explorer else None
    read_page = list_resources_page if explorer else get_resources_page
    policies: dict[str, TagPolicy | None] = {}
    if not explorer:
        policies[account] = await _policy(book, shard_key, options,
                                          plans.setdefault(shard_key, ShardPlan()))
        if plans[shard_key].error is not None:
            return
    try:
        while True:
            resp = await read_page(clients, shard_key, limiter, query.page_params(token),
                                   settings, via=job_via(options))
            for m in resp.get("ResourceTagMappingList", []):
                if keep is not None and not keep(m):
                    continue
                shard = parse_arn(m["ResourceARN"]).shard
                if not shard.account:
                    shard = Shard(shard.partition, m.get("OwningAccountId") or account,
                                  shard.region or m.get("Region") or region)
                plan = plans.setdefault(shard, ShardPlan())
                if explorer and shard.account not in policies:
                    policies[shard.account] = await _policy(book, shard, options, plan)
                policy = policies[shard.account if explorer else account]
                arn = m["ResourceARN"]
                ec2 = route_of(arn, options.route or settings.route) == ROUTE_EC2
                tags = tags_of(m) if request.transform is not None else \
                    _as_the_run_reads(tags_of(m), wanted, ec2, settings)
                decision = decide(rules, wanted, tags,
                                  case_insensitive=arn.split(":", 3)[2:3] == ["iam"],
                                  policy=policy)
                if request.transform is not None and decision.already:
                    continue  # the walk does not enqueue what the operations leave alone
                _count(plan, _as_the_policy_allows(decision, policy, arn, options, wanted),
                       body, arn, ec2, samples)
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


def _render(operation: str, settings: Settings, plans: dict[Shard, ShardPlan],
            header: dict[str, Any], invalid: int, samples: Samples, *,
            skip_invalid: bool = False) -> Plan:
    rate = settings.rate_for("TagResources" if operation in ("tag", "undo", "transform")
                             else "UntagResources")
    shards: list[dict[str, Any]] = []
    for shard, plan in sorted(plans.items(), key=lambda kv: str(kv[0])):
        # The routes run side by side, each at its own quota (README "Two routes").
        batches = sum(math.ceil((n - plan.ec2[t]) / BATCH) for t, n in plan.change.items())
        calls = transform_calls(plan) if operation == "transform" else None
        if calls is not None:  # two steps, each at its own API's quota
            batches = calls["TagResources"] + calls["UntagResources"]
        ec2_batches = sum(math.ceil(n / settings.ec2_batch_size) for n in plan.ec2.values())
        seconds = max(batches / rate, ec2_batches / settings.ec2_rate)
        if calls is not None:
            seconds = max(calls["TagResources"] / rate, calls["UntagResources"] / rate,
                          ec2_batches / settings.ec2_rate)
        ec2 = sum(plan.ec2.values())
        routes = [  # the route each resource will be stored and sent with
            {"route": ROUTE_EC2, "change": ec2, "skip": plan.skip_ec2, "batches": ec2_batches,
             "seconds_at_quota": round(ec2_batches / settings.ec2_rate, 1)},
            {"route": ROUTE_TAGGING, "change": plan.changes - ec2,
             "skip": plan.skip - plan.skip_ec2, "batches": batches,
             "seconds_at_quota": round(batches / rate, 1)}]
        shards.append({"partition": shard.partition, "account": shard.account,
                       "region": shard.region, "change": plan.changes, "skip": plan.skip,
                       "fail": plan.fail, "add": plan.keys["add"],
                       "modify": plan.keys["change"], "remove": plan.keys["remove"],
                       "refused": dict(plan.refused),
                       "unread": plan.unread, "s3_buckets": plan.buckets,
                       "batches": batches + ec2_batches,
                       "ec2": ec2, "ec2_batches": ec2_batches,
                       "seconds_at_quota": round(seconds, 1), "error": plan.error,
                       "routes": [r for r in routes if r["change"] or r["skip"]],
                       **({"calls": calls} if calls is not None else {})})
    refused: Counter[str] = Counter()
    for s in shards:
        refused.update(s["refused"])
    data = {**header, "operation": operation, "invalid": invalid,
            "change": sum(s["change"] for s in shards), "skip": sum(s["skip"] for s in shards),
            "fail": sum(s["fail"] for s in shards),
            "keys": {k: sum(s[k] for s in shards) for k in ("add", "modify", "remove")},
            "refused": dict(refused), "shards": shards,
            "sample": samples.changes, "refusals": samples.refusals,
            # Shards run at once: the run takes as long as its slowest shard.
            "estimated_seconds": max((s["seconds_at_quota"] for s in shards), default=0)}
    keys = data["keys"]
    lines = [f"plan ({operation}, nothing sent): {data['change']} to change "
             f"(keys: {keys['add']} added, {keys['modify']} changed, {keys['remove']} removed), "
             f"{data['skip']} skipped, {data['fail']} failed, {invalid} invalid; "
             f"{rate:g} calls/s of 20 ARNs per account-region; EC2 resources (via ec2) "
             f"{settings.ec2_rate:g} CreateTags/DeleteTags calls/s of "
             f"{settings.ec2_batch_size} ids",
             f"  {'account':<14}{'region':<16}{'change':>9}{'add':>7}{'modify':>7}"
             f"{'remove':>7}{'skip':>9}{'fail':>6}{'batches':>9}{'est. s':>9}{'via ec2':>9}"]
    for s in shards:
        line = (f"  {s['account'] or '(caller)':<14}{s['region']:<16}{s['change']:>9}"
                f"{s['add']:>7}{s['modify']:>7}{s['remove']:>7}{s['skip']:>9}{s['fail']:>6}"
                f"{s['batches']:>9}{s['seconds_at_quota']:>9}{s['ec2']:>9}")
        if s["refused"]:
            line += "  " + ", ".join(f"{code} {n}" for code, n in sorted(s["refused"].items()))
        if s["error"]:
            line += f"  tags not read: {s['error'][:100]}"
        lines.append(line)
        if s["s3_buckets"]:
            lines.append(f"    {s['s3_buckets']} S3 bucket(s): their ARN names no region or "
                         f"account; sent through {s['region']} with this account's "
                         "credentials (a bucket of another region is found and tagged by a "
                         "discovery in its own region: --resource-type s3 --regions R)")
        # The routes of the account-region run side by side, each at its own quota.
        lines.append("    by route: " + "; ".join(
            f"{r['route']} {r['change']} to change, {r['skip']} skipped, {r['batches']} "
            f"batches, ~{r['seconds_at_quota']} s" for r in s["routes"]))
    if header.get("warning"):
        lines.insert(1, f"  note: {header['warning']}")
    if header.get("accounts_skipped"):
        states = Counter(header["accounts_skipped"].values())
        lines.insert(1, f"  accounts: {len(header['accounts'])} active worked; skipped "
                        + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))
    if operation == "transform":
        lines[1:1] = [f"  operations: {'; '.join(header.get('operations', []))}"]
        tag = sum(s["calls"]["TagResources"] for s in shards)
        untag = sum(s["calls"]["UntagResources"] for s in shards)
        full = sum(s["calls"]["full_batches"] for s in shards)
        data["calls"] = {"TagResources": tag, "UntagResources": untag, "full_batches": full}
        lines.append(f"  estimated calls: {tag} TagResources + {untag} UntagResources for "
                     f"{data['change']} resources ({full} if every call carried 20" +
                     ("; the values are diverse: calls carry fewer resources, the job takes "
                      "longer" if tag + untag > 1.5 * full else "") + ")")
    lines.append(f"  estimated duration: ~{data['estimated_seconds']} s (shards run at once)")
    if samples.changes:
        lines.append(f"  sample (first {len(samples.changes)} that change):")
        lines += [f"    {c['arn']}: {c['diff']}" for c in samples.changes]
    if samples.refusals:
        lines.append(f"  refused (first {len(samples.refusals)}):")
        lines += [f"    {r['arn']}: {r['state']}: {r['reason']}" for r in samples.refusals]
    refused_by_policy = data["refused"].get(POLICY_CODE, 0)
    if refused_by_policy:
        lines.append(f"  {refused_by_policy} resource(s) would get tags their account's tag "
                     "policy refuses on their type: the run fails them without a call "
                     "(change the operations or tags, or --allow-noncompliant)")
    bad = (invalid and not skip_invalid) or refused_by_policy
    return Plan(data, "\n".join(lines), 2 if bad else 0)


def _kind(request: Request, options: JobOptions) -> tuple[str, dict[str, Any]]:
    """The plan's operation (tag, untag or transform) and, for a transform, its operations."""
    if not options.transform:
        return request.operation, {}
    return "transform", {"operations": [transforms.describe(op) for op in
                                        transforms.from_json(options.transform)]}


def transform_calls(plan: ShardPlan) -> dict[str, int]:
    """A transform's calls on one shard (Tagging API route): its first steps batched by the
    exact tag map, its second by the key set removed, 20 a call (the fewest these resources
    can take); and `full_batches`, the calls if every resource needed the same tag map."""
    sets: Counter[str] = Counter()
    removes: Counter[str] = Counter()
    for sent, n in plan.change.items():
        n -= plan.ec2[sent]
        if n <= 0:
            continue
        change = json.loads(sent)
        set_part = {k: v for k, v in change.items() if v is not None}
        remove_part = sorted(k for k, v in change.items() if v is None)
        if set_part:
            sets[json.dumps(set_part, sort_keys=True)] += n
        if remove_part:
            removes[json.dumps(remove_part)] += n
    return {"TagResources": sum(math.ceil(n / BATCH) for n in sets.values()),
            "UntagResources": sum(math.ceil(n / BATCH) for n in removes.values()),
            "full_batches": math.ceil(sum(sets.values()) / BATCH) +
            math.ceil(sum(removes.values()) / BATCH)}


async def _plan_shards(settings: Settings, per_shard: dict[Shard, list[tuple[str, str]]],
                       rules: Rules, options: JobOptions, samples: Samples
                       ) -> dict[Shard, ShardPlan]:
    clients = ClientPool(settings)
    book = _policy_book(clients, options)
    try:
        results = await asyncio.gather(*(
            _plan_shard(clients, settings, shard, items, rules, options, samples, book)
            for shard, items in per_shard.items()
        ))
    finally:
        await clients.close()
    return dict(zip(per_shard, results, strict=True))


async def dry_run(request: Request, settings: Settings, options: JobOptions,
                  sources: list[str], source_format: str | None, *,
                  policy_check: PolicyCheck | None = None) -> Plan:
    """The plan for file sources. Bad sources end as the real run's: the same errors, the
    same words (SubmissionRefused, "nothing was enqueued: ..."), exit 2; so do rows an
    enforced tag policy refuses (`policy_check`)."""
    try:
        per_shard, rows, invalid, dupes = await anyio.to_thread.run_sync(
            functools.partial(_tally, sources, request, source_format)
        )
        if policy_check is not None:
            await policy_refusals(sources, request, source_format, policy_check,
                                  options.route)
    except SourceError as exc:
        raise UsageError(f"nothing was enqueued: {exc}") from None
    samples = Samples()
    plans = await _plan_shards(settings, per_shard, rules_for(request, options), options,
                               samples)
    kind, extra = _kind(request, options)
    return _render(kind, settings, plans, {"rows": rows, "duplicates": dupes, **extra},
                   invalid, samples, skip_invalid=request.skip_invalid)


async def plan_query(settings: Settings, request: Request, query: Query, accounts: list[str],
                     regions: list[str], options: JobOptions, *,
                     skipped: dict[str, str] | None = None) -> Plan:
    """The plan for a query: walk it without enqueuing. `skipped`: accounts of the
    organisation left out for their state (SUSPENDED, ...), counted in the plan."""
    clients = ClientPool(settings)
    plans: dict[Shard, ShardPlan] = {}
    samples = Samples()
    book = _policy_book(clients, options)
    walks = [(a, r) for a in accounts for r in regions]
    if query.explorer is not None:  # one walk over the view, in its region
        walks = [("", (options.query or {})["Explorer"]["Region"])]
    try:
        await asyncio.gather(*(
            _walk_plan(clients, settings, a, r, query, request, options, plans, samples, book)
            for a, r in walks
        ))
    finally:
        await clients.close()
    kind, extra = _kind(request, options)
    header = {"query": query.to_json(), "accounts": [a or "(caller)" for a in accounts],
              "accounts_skipped": dict(skipped or {}), **extra}
    if query.explorer is None and not query.tag_filters:
        header["warning"] = NEVER_TAGGED
    return _render(kind, settings, plans, header, 0, samples)


async def plan_undo(settings: Settings, per_shard: dict[Shard, list[tuple[str, str]]],
                    options: JobOptions) -> Plan:
    """The plan of an undo (`bulktag undo JOB --dry-run`): its items' current tags read and
    decided as the undo job would, nothing enqueued."""
    samples = Samples()
    rules = rules_for(Request("tag"), options)
    plans = await _plan_shards(settings, per_shard, rules, options, samples)
    return _render("undo", settings, plans, {"undo_of": options.undo_of,
                                             "resources": sum(map(len, per_shard.values()))},
                   0, samples)
