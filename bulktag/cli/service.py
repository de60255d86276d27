"""The service commands of the CLI: `daemon`, `sync ...`, `priority`, `workers` and
`store copy`.

Kept apart from cli.py so that building the parser stays cheap: the daemon, the sync engine and
aiobotocore are imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bulktag.cli.output import csv_list, emit, job_arg, priority_arg, settings_from
from bulktag.config import Settings
from bulktag.errors import EXIT_FAILED, EXIT_INTERRUPTED, UsageError
from bulktag.store import Store


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("compliance", help="noncompliant resources per account, region and "
                       "type (GetComplianceSummary: the management account, us-east-1)")
    p.add_argument("--group-by", default="account,region,resource-type",
                   help="comma-separated: account, region, resource-type (default: all three)")
    p.add_argument("--accounts", help="comma-separated accounts (default: every one)")
    p.add_argument("--regions", help="comma-separated regions (default: every one)")
    p.add_argument("--json", action="store_true", help="a JSON array, one object per group")
    r = p.add_argument_group("the organisation-wide report (StartReportCreation), instead of "
                             "the summary")
    r.add_argument("--report-bucket", metavar="NAME",
                   help="start a compliance report of every account into this S3 bucket "
                        "(its policy must let tagpolicies.tag.amazonaws.com write)")
    r.add_argument("--wait", action="store_true",
                   help="with --report-bucket: follow it to SUCCEEDED or FAILED and print the "
                        "report's S3 location")
    r.add_argument("--report-status", action="store_true",
                   help="the last report's status and location (DescribeReportCreation)")
    common(p)

    p = sub.add_parser("iam-policy", help="the least-privilege IAM policy JSON for the "
                       "worker's role (or, --member-role, the role it assumes in members)",
                       epilog="Give the resource types the jobs touch: TagResources also "
                              "needs each service's own tagging permission. deploy/"
                              "member-role.yaml creates the member role (a StackSet).")
    p.add_argument("--resource-type", action="append", default=[], metavar="SERVICE[:TYPE]",
                   help="the types the jobs tag, e.g. lambda, dynamodb:table (repeatable or "
                        "comma-separated; default: every service bulktag knows)")
    p.add_argument("--features", default="discovery",
                   help="comma-separated: discovery, explorer, org, policy, export "
                        "(default: discovery)")
    p.add_argument("--route", choices=("auto", "tagging-api"), default="auto",
                   help="the EC2 route of the jobs (auto: EC2's own API reads DescribeTags)")
    p.add_argument("--member-role", action="store_true",
                   help="the policy of the role assumed in member accounts instead")
    p.add_argument("--bucket", help="export: the bucket written (default: any)")
    p.add_argument("--kms-key-arn", help="export: the SSE-KMS key used")
    common(p)

    p = sub.add_parser("policy", help="the accounts' tag policies (AWS Organizations)")
    actions = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    a = actions.add_parser("show", help="each account's effective tag policy, as a table")
    a.add_argument("--accounts", help="comma-separated accounts (default: the caller's)")
    a.add_argument("--json", action="store_true")
    common(a)

    p = sub.add_parser(
        "daemon", help="run every queued job and the tag-sync rules until stopped",
        epilog="SIGTERM/SIGINT: finish in-flight batches within grace_seconds, release the "
               "rest, exit 0. SIGHUP: reload max_rate, quotas, log level/format, grace, "
               "retry and failure-threshold settings from the config file.")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="serve /healthz and /metrics (Prometheus) here, e.g. 127.0.0.1:9464")
    common(p)

    p = sub.add_parser("priority", help="change a job's priority (takes effect while it runs)")
    p.add_argument("job", type=job_arg, metavar="JOB")
    p.add_argument("priority", type=priority_arg, metavar="N", help="higher runs first")
    p.add_argument("--json", action="store_true")
    common(p)

    p = sub.add_parser("sync", help="tag-sync rules: keep tags on resources matching a query")
    rules = p.add_subparsers(dest="sync_command", required=True, metavar="ACTION")
    a = rules.add_parser("add", help="add a rule (the daemon evaluates it every --interval)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--tag-key", help="resources carrying this tag key ...")
    a.add_argument("--tag-value", help="... with this value")
    a.add_argument("--resource-query", metavar="JSON",
                   help='instead: a ResourceQuery {"Type": "TAG_FILTERS_1_0", "Query": "..."}')
    a.add_argument("--apply", action="append", default=[], metavar="KEY=VALUE",
                   help="a tag to apply to matching resources; repeatable")
    a.add_argument("--regions", help="comma-separated regions (default: every enabled region, "
                   "looked up at each evaluation)")
    a.add_argument("--accounts", help="comma-separated accounts (default: the caller's)")
    a.add_argument("--interval", type=float, default=300.0, metavar="SECONDS",
                   help="seconds between evaluations (default 300)")
    a.add_argument("--json", action="store_true")
    common(a)
    a = rules.add_parser("list", help="list rules with status and member counts")
    a.add_argument("--json", action="store_true")
    common(a)
    a = rules.add_parser("show", help="one rule in full")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--json", action="store_true")
    common(a)
    a = rules.add_parser("remove", help="delete a rule")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--untag", action="store_true",
                   help="also enqueue an untag job removing the applied keys from its members")
    a.add_argument("--json", action="store_true")
    common(a)
    a = rules.add_parser("run", help="evaluate a rule now and run the resulting jobs to the end")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--json", action="store_true")
    common(a)

    p = sub.add_parser("workers", help="live workers of the store: host, pid, heartbeat, shards")
    p.add_argument("--json", action="store_true")
    common(p)

    p = sub.add_parser("store", help="whole-store operations")
    actions = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    a = actions.add_parser(
        "copy", help="copy every job, item and sync rule to another, empty store",
        epilog="SRC and DST are store paths (SQLite) or postgresql:// URLs, either way round. "
               "Job ids are kept. Refused (exit 2) when DST holds jobs or sync rules, or when "
               "a live worker works SRC; leases of workers that are gone are released first.")
    a.add_argument("src", metavar="SRC")
    a.add_argument("dst", metavar="DST")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("--config", help="config file (owner_stale_seconds decides which workers "
                   "are gone)")


# -- commands ---------------------------------------------------------------------------------


async def cmd_daemon(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.web.daemon import run_daemon

    try:
        return await run_daemon(settings, listen=args.listen,
                                reload_settings=lambda: settings_from(args))
    except OSError as exc:  # the port is taken, or not ours to bind
        raise UsageError(f"--listen {args.listen}: {exc.strerror or exc}") from None


async def cmd_priority(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.steering import control_job
    from bulktag.store import Store

    async with await Store.open(settings.db, create=False) as store:
        result = await control_job(store, args.job, "priority", priority=args.priority)
    emit(args, {"job": result.job, "priority": args.priority, "was": result.details["was"],
                "state": result.state}, result.message)
    return 0


def _rule_line(r: dict[str, Any]) -> str:
    what = (f"{r['tag_key']}={r['tag_value']}" if r["tag_key"] is not None
            else "query " + (r["resource_query"] or ""))
    last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_run_at"])) \
        if r["last_run_at"] else "never"
    text = (f"{r['name']:<20} {r['status']:<6} members {r['members']:<7} every "
            f"{r['interval_seconds']:g}s  last run {last}  match {what} -> "
            + ",".join(f"{k}={v}" for k, v in r["apply"].items()))
    return text + (f"\n  error: {r['error']}" if r["error"] else "")


async def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.submission import way_in
    from bulktag.app.sync_rules import add_rule, check_rule
    from bulktag.policy.tags import parse_tag_args
    from bulktag.store import NewSyncRule, Store

    action = args.sync_command
    new: NewSyncRule | None = None
    if action == "add":  # checked before the store is opened (or made)
        try:
            apply = parse_tag_args(args.apply)
        except ValueError as exc:
            raise UsageError(f"--apply: {exc}") from None
        new = NewSyncRule(args.name, tag_key=args.tag_key, tag_value=args.tag_value,
                          resource_query=args.resource_query, apply=apply,
                          regions=csv_list(args.regions, "regions"),
                          accounts=csv_list(args.accounts, "accounts") or [""],
                          interval=args.interval, way_in=way_in(settings) or None)
        try:
            check_rule(new.name, new.tag_key, new.tag_value, new.resource_query, new.apply,
                       new.accounts, new.interval, new.regions)
        except ValueError as exc:  # a QueryError or RuleError is one already
            raise UsageError(str(exc)) from None
    async with await Store.open(settings.db, create=action == "add") as store:
        if new is not None:
            try:
                rule = await add_rule(store, new)
            except ValueError as exc:  # the name is taken
                raise UsageError(str(exc)) from None
            emit(args, rule.to_json(), f"sync rule {rule.name} added; the daemon evaluates it "
                 f"every {rule.interval_seconds:g} s (`bulktag sync run {rule.name}`: now)")
            return 0
        if action == "list":
            listed = [r.to_json() for r in await store.list_sync_rules()]
            emit(args, {"rules": listed}, "\n".join(_rule_line(r) for r in listed) or "no rules")
            return 0
        found = await store.get_sync_rule(args.name)
        if found is None:
            raise UsageError(f"no sync rule named {args.name!r} in {settings.db}")
        rule = found
        if action == "show":
            data = rule.to_json()
            human = _rule_line(data) + f"\n  regions {','.join(rule.regions) or 'all enabled'}" \
                f"  accounts {','.join(a or 'caller' for a in rule.accounts)}" \
                f"\n  last evaluation: {rule.last_added} to tag, {rule.last_removed} to untag, " \
                f"jobs {rule.last_jobs or '-'}"
            emit(args, data, human)
            return EXIT_FAILED if rule.status == "ERROR" else 0
        if action == "remove":
            job = None
            if args.untag:
                from bulktag.app.sync_rules import _enqueue

                members = await store.sync_member_arns(rule.id)
                if members:
                    job = await _enqueue(store, rule, "untag", members)
            await store.remove_sync_rule(rule)
            emit(args, {"removed": rule.name, "untag_job": job},
                 f"sync rule {rule.name} removed" + (
                     f"; job {job} removes {','.join(rule.apply)} from its members "
                     f"(the daemon or `bulktag run {job}` works it)" if job else ""))
            return 0
        return await _sync_run(args, settings, store, rule.name)


async def _sync_run(args: argparse.Namespace, settings: Settings, store: Store,
                    name: str) -> int:
    from bulktag.app.jobs import exit_code_for, job_status
    from bulktag.app.runs import run_engine
    from bulktag.app.sync_rules import evaluate, own_limiters
    from bulktag.aws.clients import ClientPool
    from bulktag.store import Counts

    rule = await store.claim_sync_rule(name, force=True)
    assert rule is not None
    clients = ClientPool(settings)
    try:
        ev = await evaluate(store, settings, clients, rule, own_limiters(settings))
    except BaseException:
        await clients.close()
        raise
    finished = True
    if ev.jobs:
        finished = (await run_engine(store, settings, set(ev.jobs), progress_job=None,
                                     clients=clients)).finished
    else:
        await clients.close()
    statuses = [await job_status(store, j, settings) for j in ev.jobs]
    shown = await store.get_sync_rule(name)
    assert shown is not None
    data = {"evaluation": ev.to_json(), "rule": shown.to_json(), "jobs": statuses,
            "interrupted": not finished}
    human = (f"sync rule {name}: {ev.matched} matching, {ev.added} to tag, {ev.removed} to "
             f"untag" + (f"; jobs {', '.join(map(str, ev.jobs))}" if ev.jobs else "")
             + (f"\n  ERROR: {ev.error}" if ev.error else ""))
    emit(args, data, human)
    if not finished:
        return EXIT_INTERRUPTED
    code = EXIT_FAILED if ev.errors else 0
    for st in statuses:
        code = max(code, exit_code_for(Counts(dict(st["counts"])), st["state"]))
    return code


async def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.workers import list_workers, render_workers
    from bulktag.store import Store

    async with await Store.open(settings.db, create=False) as store:
        listed = await list_workers(store, settings)
    emit(args, {"workers": listed}, render_workers(listed))
    return 0


async def cmd_store(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.store_copy import CopyProgress, CopyRefused, copy_store

    tty = sys.stderr.isatty()

    def progress(p: CopyProgress) -> None:
        end = "\n" if p.phase == "done" else ""
        print(f"\rcopy: {p.phase:<5} {p.jobs} jobs, {p.items_done}/{p.items_total} items, "
              f"{p.seconds:.0f}s", end=end, file=sys.stderr, flush=True)

    try:
        result = await copy_store(args.src, args.dst, progress=progress if tty else None,
                                  stale_seconds=settings.owner_stale_seconds)
    except CopyRefused as exc:
        raise UsageError(f"store copy refused: {exc}") from None  # exit 2
    notes = []
    if result.released_leases:
        notes.append(f"released {result.released_leases} items leased by workers that are gone "
                     "(on the source)")
    if result.skipped_preparing:
        notes.append("skipped jobs still being submitted: "
                     + ", ".join(map(str, result.skipped_preparing)))
    emit(args, result.to_json(),
         f"copied {result.jobs} jobs ({result.items} items, {result.discoveries} discovery "
         f"walks, {result.paused_accounts} paused accounts) and {result.sync_rules} sync rules "
         f"({result.sync_members} members) from {result.source} to {result.destination} in "
         f"{result.seconds:.1f}s" + "".join(f"\n  {n}" for n in notes))
    return 0


REPORT_POLL = (1.0, 2.0, 5.0, 10.0)  #: seconds between DescribeReportCreation calls, then 10


async def _compliance_report(args: argparse.Namespace, settings: Settings) -> int:
    """`--report-bucket NAME [--wait]` / `--report-status`: start the organisation-wide
    report, follow it, print where it is."""
    from bulktag.aws.clients import ClientPool
    from bulktag.aws.organizations import ComplianceUnavailable, report_status, start_report

    if args.wait and not args.report_bucket:
        raise UsageError("--wait goes with --report-bucket")
    clients = ClientPool(settings)
    try:
        if args.report_bucket:
            await start_report(clients, args.report_bucket)
        status = await report_status(clients)
        polls = 0
        while args.wait and status["status"] == "RUNNING":
            await asyncio.sleep(REPORT_POLL[min(polls, len(REPORT_POLL) - 1)])
            polls += 1
            status = await report_status(clients)
    except ComplianceUnavailable as exc:
        raise UsageError(f"cannot {'start' if args.report_bucket else 'read'} the compliance "
                         f"report: {exc}") from None
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("bulktag: stopped following the report; it goes on (bulktag compliance "
              "--report-status)", file=sys.stderr)
        raise
    finally:
        await clients.close()
    state = status["status"]
    human = {"RUNNING": "the report is being made (bulktag compliance --report-status "
                        "follows it; --wait waits)",
             "SUCCEEDED": f"report: {status['location']}",
             "FAILED": f"the report failed: {status['error'] or 'no reason given'} (check the "
                       "bucket's policy lets tagpolicies.tag.amazonaws.com write)",
             "NO REPORT": "no report was made in the last 90 days"}.get(state, state)
    emit(args, {"status": state, "location": status["location"], "error": status["error"],
                **({"bucket": args.report_bucket} if args.report_bucket else {})}, human)
    return EXIT_FAILED if state == "FAILED" else 0


async def cmd_compliance(args: argparse.Namespace, settings: Settings) -> int:
    """`bulktag compliance`: GetComplianceSummary, grouped; a table or a JSON array."""
    from bulktag.aws.clients import ClientPool
    from bulktag.aws.organizations import GROUP_BY, ComplianceUnavailable, compliance_summary

    if args.report_bucket or args.report_status or args.wait:
        return await _compliance_report(args, settings)

    group_by = csv_list(args.group_by, "group-by")
    unknown = [g for g in group_by if g not in GROUP_BY]
    if unknown:
        raise UsageError(f"--group-by: {', '.join(unknown)}: expected account, region or "
                         "resource-type")
    clients = ClientPool(settings)
    try:
        rows = await compliance_summary(clients, group_by, csv_list(args.accounts, "accounts"),
                                        csv_list(args.regions, "regions"))
    except ComplianceUnavailable as exc:
        raise UsageError(f"cannot read the compliance summary: {exc}") from None
    finally:
        await clients.close()
    if args.json:
        print(json.dumps(rows))
        return 0
    lines = [f"{'account':<14}{'region':<16}{'resource type':<28}{'noncompliant':>12}"]
    lines += [f"{r['account'] or '-':<14}{r['region'] or '-':<16}{r['resource_type'] or '-':<28}"
              f"{r['noncompliant']:>12}" for r in rows]
    lines.append(f"total noncompliant: {sum(r['noncompliant'] for r in rows)}")
    print("\n".join(lines))
    return 0


async def cmd_iam_policy(args: argparse.Namespace, settings: Settings) -> int:
    """`bulktag iam-policy`: a policy document on stdout (no AWS call)."""
    from bulktag.policy.iam import IamError, member_policy, to_text, worker_policy

    types = [t for text in args.resource_type for t in text.split(",") if t.strip()]
    features = csv_list(args.features, "features")
    try:
        doc = member_policy(types, features, args.route) if args.member_role else \
            worker_policy(types, features, args.route, role_name=settings.role_name,
                          bucket=args.bucket, kms_key_arn=args.kms_key_arn)
    except IamError as exc:
        raise UsageError(str(exc)) from None
    print(to_text(doc))
    return 0


async def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    """`bulktag policy show`: each account's effective tag policy (the role of the settings
    reaches other accounts), one row per tag key."""
    from bulktag.aws.clients import ClientPool
    from bulktag.aws.organizations import PolicyUnreadable, effective_tag_policy

    accounts = csv_list(args.accounts, "accounts") or [""]
    clients = ClientPool(settings)
    data: dict[str, Any] = {}
    lines = [f"{'account':<14}{'tag key':<24}{'enforced for':<32}allowed values"]
    try:
        for account in accounts:
            name = account or "(caller)"
            try:
                policy = await effective_tag_policy(clients, account)
            except PolicyUnreadable as exc:
                data[name] = {"error": str(exc)}
                lines.append(f"{name:<14}cannot read its policy: {exc}")
                continue
            data[name] = {"rules": {k: r.to_json() for k, r in policy.rules.items()}}
            if not policy.rules:
                lines.append(f"{name:<14}(no tag policy)")
            for rule in policy.rules.values():
                values = ", ".join(rule.values) if rule.values is not None else "(any)"
                lines.append(f"{name:<14}{rule.tag_key:<24}"
                             f"{', '.join(rule.enforced_for) or '-':<32}{values}")
    finally:
        await clients.close()
    emit(args, {"accounts": data}, "\n".join(lines))
    return 2 if all("error" in v for v in data.values()) else 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]] = {
    "daemon": cmd_daemon, "priority": cmd_priority, "sync": cmd_sync, "policy": cmd_policy,
    "compliance": cmd_compliance, "iam-policy": cmd_iam_policy,
    "workers": cmd_workers, "store": cmd_store,
}
