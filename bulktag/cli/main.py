"""The `bulktag` command line.

Exit codes: 0 done, 2 bad input or usage, 3 some items failed (or the job failed or was
cancelled), 4 a report export failed, 5 `run --no-wait` found another live owner's leases,
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import math
import os
import sys
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog

from bulktag import __version__
from bulktag.app.jobs import (
    ORG,
    job_status,
    job_summaries,
    resolve_accounts,
    resolve_regions,
    submit_query_job,
)
from bulktag.cli.output import (
    csv_list,
    emit,
    job_arg,
    print_run,
    priority_arg,
    render_status,
    settings_from,
)
from bulktag.cli.service import COMMANDS as SERVICE_COMMANDS
from bulktag.cli.service import add_parsers as add_service_parsers
from bulktag.cli.transform import add_parsers as add_transform_parsers
from bulktag.config import Settings
from bulktag.errors import (
    EXIT_BUG,
    EXIT_EXPORT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BulktagError,
    UsageError,
)
from bulktag.logs import configure_logging
from bulktag.policy.tags import parse_tag_args
from bulktag.store import Store, is_postgres_url, new_owner_token

log = structlog.get_logger("bulktag.cli.main")


# -- argument parsing --------------------------------------------------------------------------


def _settle_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="a stopped job's items still in flight: wait this long at most for "
                        "them to land before planning from its outcomes, else exit 5 "
                        "(default: the lease time, lease_seconds; 0: do not wait)")



def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("settings (override config file and BULKTAG_* environment)")
    g.add_argument("--db", help="store path (default $XDG_STATE_HOME/bulktag/bulktag.db)")
    g.add_argument("--config", help="config file (default $XDG_CONFIG_HOME/bulktag/config.toml)")
    g.add_argument("--endpoint-url", help="Tagging API endpoint (default: botocore's)")
    g.add_argument("--profile", help="AWS profile")
    g.add_argument("--max-rate", type=float, help="requests/s per shard for tag/untag calls")
    g.add_argument("--max-attempts", type=int, help="attempts per item on transient errors")
    g.add_argument("--role-name", help="assume arn:<partition>:iam::<account>:role/NAME in "
                   "accounts other than the caller's")
    g.add_argument("--external-id", help="external id for the assumed roles")
    g.add_argument("--role-session-name", help="session name of the assumed roles "
                   "(default bulktag); with --role-name and --external-id, kept with a "
                   "submitted job and used by whichever worker works it")
    g.add_argument("--on-access-error", choices=("fail", "pause"),
                   help="items of an account whose role is refused: fail (default) or pause")
    g.add_argument("--log-format", choices=("auto", "console", "json"))
    g.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def _read_only(p: argparse.ArgumentParser, *, aws: bool = False) -> None:
    """The settings a command that only reads the store takes (`aws`: it may write to S3)."""
    g = p.add_argument_group("settings (override config file and BULKTAG_* environment)")
    g.add_argument("--db", help="store path or postgresql:// URL (default "
                   "$XDG_STATE_HOME/bulktag/bulktag.db)")
    g.add_argument("--config", help="config file (default $XDG_CONFIG_HOME/bulktag/config.toml)")
    if aws:
        g.add_argument("--profile", help="AWS profile (for -o s3://)")
    g.add_argument("--log-format", choices=("auto", "console", "json"))
    g.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def _job_submission(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arns", action="append", metavar="SRC",
                   help="ARN source: a file (.txt, .csv, .jsonl, optionally .gz) or - for stdin; "
                        "repeatable")
    q = p.add_argument_group("discovery (instead of --arns: find the resources by query)")
    q.add_argument("--query", help='an AWS Resource Groups ResourceQuery: {"Type": '
                   '"TAG_FILTERS_1_0", "Query": "{\\"TagFilters\\": [...]}"} or '
                   "CLOUDFORMATION_STACK_1_0 with a StackIdentifier")
    q.add_argument("--match-tag", action="append", default=[], metavar="KEY[=VALUE]",
                   help="resources carrying this tag (repeatable; same key twice: either value)")
    q.add_argument("--resource-type", action="append", default=[], metavar="SERVICE[:TYPE]",
                   help="resources of this type, e.g. ec2:instance (repeatable)")
    q.add_argument("--regions", help="comma-separated regions (default: every enabled region)")
    q.add_argument("--explorer", metavar="FILTER",
                   help="find the resources with AWS Resource Explorer (ListResources), "
                        "never-tagged ones included: its filter syntax, e.g. 'service:lambda "
                        "region:us-east-1 tag:none'")
    q.add_argument("--explorer-view", metavar="ARN",
                   help="the Resource Explorer view (default: the default view of "
                        "--explorer-region)")
    q.add_argument("--explorer-region", metavar="REGION",
                   help="where the view lives: the aggregator index's region (default: the "
                        "home region)")
    _org_accounts(q)
    p.add_argument("--route", choices=("auto", "tagging-api"),
                   help="auto (default): EC2 resources CreateTags takes go through EC2's API, "
                        "the rest through the Tagging API; tagging-api: all through it")
    p.add_argument("--skip-compliant", action=argparse.BooleanOptionalAction, default=None,
                   help="read current tags first and skip resources already right "
                        "(default: on for tag, off for untag)")
    p.add_argument("--if-absent", action="store_true",
                   help="only add keys a resource does not have yet (never overwrite a value)")
    p.add_argument("--before-images", action=argparse.BooleanOptionalAction, default=True,
                   help="read each resource's tags just before its call and keep the prior "
                        "values of the keys it changes, so `bulktag undo` can put them back "
                        "(default: on)")
    _case_conflict(p)
    p.add_argument("--allow-noncompliant", action="store_true",
                   help="send tags the accounts' tag policies refuse (by default they are "
                        "refused before anything is sent; AWS refuses them on the types a "
                        "policy enforces)")
    p.add_argument("--format", dest="source_format", choices=("text", "csv", "jsonl"),
                   help="source format when the file name does not tell (stdin)")
    p.add_argument("--name", help="a name for the job")
    p.add_argument("--priority", type=priority_arg, default=0,
                   help="higher runs first (default 0)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="record bad rows as invalid items instead of refusing the submission")
    p.add_argument("--detach", action="store_true", help="only submit; print the job id")
    p.add_argument("--dry-run", action="store_true",
                   help="show the batches that would be sent per shard; submit nothing")
    p.add_argument("--failure-ratio", type=float,
                   help="fail the job when more than this share of attempted items failed")
    p.add_argument("--failure-min-items", type=int,
                   help="... once at least this many items were attempted (default 1000)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _export_on_finish(p)


def _org_accounts(g: Any) -> None:
    g.add_argument("--accounts", help="comma-separated accounts, or org: every active account "
                   "of the organization (default: the caller's)")
    g.add_argument("--ou", metavar="OU[,OU]", help="the active accounts under these "
                   "organizational units, recursively (AWS Organizations)")
    g.add_argument("--exclude-accounts", metavar="ID[,ID]", help="leave these accounts out")


async def _accounts(args: argparse.Namespace, settings: Settings
                    ) -> tuple[list[str], dict[str, str]]:
    """The accounts a discovery walks, and those skipped for their state."""
    given = [ORG] if (args.accounts or "").strip().lower() == ORG else \
        csv_list(args.accounts, "accounts")
    return await resolve_accounts(settings, given, csv_list(args.ou, "ou"),
                                  csv_list(args.exclude_accounts, "exclude-accounts"))


def _case_conflict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case-conflict", choices=("skip", "apply"),
                   help="a key differing only in case from one the resource has (Owner vs "
                        "owner): skip the resource, naming the key (default), or apply it")


def _export_destination(text: str) -> str:
    """Checked while parsing, so a bad destination is refused before anything is enqueued."""
    if text.startswith("s3://") and not text.removeprefix("s3://").split("/", 1)[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: no bucket name after s3://")
    return text


def _export_on_finish(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("export when the job ends (kept with the job: a later run exports)")
    g.add_argument("--export-on-finish", metavar="DEST", type=_export_destination,
                   help="s3://bucket/prefix or a directory: the report and manifest.json go to "
                        "DEST/job-<id>/ once the job is completed or failed")
    g.add_argument("--export-region", metavar="REGION", help="the bucket's region")
    g.add_argument("--export-kms-key-arn", metavar="ARN",
                   help="encrypt with SSE-KMS under this key (default SSE-S3, AES256)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulktag",
        description="Tag and untag AWS resources in bulk through the Resource Groups Tagging API.",
    )
    parser.add_argument("--version", action="version", version=f"bulktag {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tag", help="tag resources (runs the job to the end unless --detach)")
    _job_submission(p)
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="a tag to apply; repeatable")
    _common(p)

    p = sub.add_parser("untag", help="remove tag keys from resources")
    _job_submission(p)
    p.add_argument("--key", action="append", default=[], metavar="KEY",
                   help="a tag key to remove; repeatable")
    _common(p)

    p = sub.add_parser(
        "undo", help="put back what a job changed (a new job, from its before-images)",
        epilog="Keys the job added are removed, values it overwrote restored, keys it removed "
               "put back. A resource whose value is no longer what the job set is skipped "
               "(\"changed since job N\") unless --force. The job must be stopped (paused, "
               "cancelled or ended), and waits (--wait) for items still in flight. Undoing a "
               "paused job cancels its open items. An undo job can be undone in turn.")
    p.add_argument("job", type=job_arg, metavar="JOB")
    _settle_wait(p)
    p.add_argument("--dry-run", action="store_true",
                   help="read the resources' current tags and show what would change; "
                        "submit nothing")
    p.add_argument("--force", action="store_true",
                   help="restore resources another client changed since the job, too")
    _case_conflict(p)
    p.add_argument("--name", help="a name for the undo job (default: undo of job N)")
    p.add_argument("--priority", type=priority_arg, default=0,
                   help="higher runs first (default 0)")
    p.add_argument("--detach", action="store_true", help="only submit; print the job id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)

    p = sub.add_parser("run", help="work queued jobs to the end")
    p.add_argument("jobs", nargs="*", type=job_arg, metavar="JOB")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-wait", action="store_true",
                   help="when another live worker holds the jobs' leases, exit 5 naming it "
                        "instead of waiting for them")
    _export_on_finish(p)
    _common(p)

    p = sub.add_parser("status", help="state counts, rate, ETA and top errors")
    p.add_argument("job", nargs="?", type=job_arg, metavar="JOB")
    p.add_argument("--json", action="store_true")
    _read_only(p)  # harden

    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--json", action="store_true")
    _read_only(p)  # harden

    p = sub.add_parser(
        "report", help="one row per item of a job",
        epilog="-o DIR (an existing directory, or a path ending in /) or -o s3://bucket/prefix "
               "writes job-<id>/ with the rows file and manifest.json (counts, checksums). "
               "Exit 4 when the report cannot be written (bucket missing, access denied).")
    p.add_argument("job", type=job_arg, metavar="JOB")
    p.add_argument("--format", dest="report_format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("--failed-only", action="store_true", help="only failed and invalid items")
    p.add_argument("-o", "--output", metavar="FILE|DIR/|s3://BUCKET/PREFIX",
                   help="where to write (default stdout)")
    p.add_argument("--region", dest="s3_region", metavar="REGION",
                   help="region of the destination bucket (default: the configured region)")
    p.add_argument("--kms-key-arn", metavar="ARN",
                   help="S3: encrypt with SSE-KMS under this key (default SSE-S3, AES256)")
    _read_only(p, aws=True)  # harden

    p = sub.add_parser("inventory", help="snapshot the resources and tags discovery sees "
                       "(one JSON line per resource)")
    p.add_argument("-o", "--output", required=True,
                   help="a file, a directory (gets inventory-<time>.jsonl), or s3://bucket/prefix")
    p.add_argument("--regions", help="comma-separated regions (default: every enabled region)")
    _org_accounts(p)
    p.add_argument("--explorer", metavar="FILTER",
                   help="list through AWS Resource Explorer (never-tagged resources "
                        "included), with its filter syntax")
    p.add_argument("--explorer-region", metavar="REGION",
                   help="where the Resource Explorer view lives (default: the home region)")
    p.add_argument("--query", help="only resources matching this ResourceQuery")
    p.add_argument("--match-tag", action="append", default=[], metavar="KEY[=VALUE]")
    p.add_argument("--resource-type", action="append", default=[], metavar="SERVICE[:TYPE]")
    p.add_argument("--region", dest="bucket_region", help="the S3 bucket's region")
    p.add_argument("--kms-key-arn", help="SSE-KMS key for the S3 object (default SSE-S3)")
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser("verify", help="re-read the tags of a job's succeeded items; report drift")
    p.add_argument("job", type=job_arg, metavar="JOB")
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser("retry", help="put a job's failed items back to pending")
    p.add_argument("job", type=job_arg, metavar="JOB")
    p.add_argument("--code", help="only items that failed with this error code")
    p.add_argument("--role-name", help="keep this role with the job (assumed in every "
                   "account but the caller's) before requeueing")
    p.add_argument("--external-id", help="... with this external id")
    p.add_argument("--role-session-name", help="... and this session name")
    _settle_wait(p)
    p.add_argument("--json", action="store_true")
    _read_only(p)  # harden

    for name, text in (("cancel", "cancel a job: its open items end as cancelled"),
                       ("pause", "stop working on a job until resumed"),
                       ("resume", "resume a paused job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job", type=job_arg, metavar="JOB")
        p.add_argument("--json", action="store_true")
        _read_only(p)  # harden

    from bulktag.sim import add_sim_arguments

    p = sub.add_parser("sim", help="run the local Tagging API simulator")
    add_sim_arguments(p)

    p = sub.add_parser("demo", help="tag a few thousand synthetic resources on the simulator")
    p.add_argument("--per-region", type=int, default=750, help="resources per region")
    p.add_argument("--regions", default="us-east-1,us-west-2,eu-west-1,ap-southeast-2")
    p.add_argument("--latency-ms", default="50-150", help="simulated call latency range")
    p.add_argument("--json", action="store_true")
    _common(p)
    add_service_parsers(sub, _common)  # daemon, sync, priority, workers, store
    add_transform_parsers(sub, _job_submission, _common)  # transform, rename, fix-policy
    return parser


@contextlib.asynccontextmanager
async def _policy_check(args: argparse.Namespace, settings: Settings, options: Any
                        ) -> AsyncIterator[tuple[Any, Any]]:
    """A tag submission run here (credentials checked) is checked against the accounts' tag
    policies before anything is enqueued; detached ones, by the worker that sends them."""
    if args.detach or args.command != "tag" or options.allow_noncompliant:
        yield None, None
        return
    from bulktag.app.tag_policies import PolicyTally, policy_checker
    from bulktag.aws.clients import ClientPool
    from bulktag.aws.organizations import PolicyBook
    from bulktag.policy.access import via_of

    clients = ClientPool(settings)
    tally = PolicyTally()
    try:
        yield policy_checker(PolicyBook(clients), via_of(
            options.role_name, options.external_id, options.role_session_name), tally), tally
    finally:
        await clients.close()


def _source_keys_query(ops: tuple[Any, ...], args: argparse.Namespace) -> Any:
    """A transform without a source: the resources carrying its one source key (TagFilters),
    or with several keys or case variants, every tagged resource (the walk keeps those the
    operations change)."""
    from bulktag.engine.discovery import Query, query_from_flags
    from bulktag.policy.transforms import source_keys

    keys = source_keys(ops)
    if len(keys) == 1 and ops[0][0] != "key_case":
        return query_from_flags(keys, [])
    return Query()


def _query_from_args(args: argparse.Namespace) -> Any:
    from bulktag.engine.discovery import parse_resource_query, query_from_flags

    if args.query and (args.match_tag or args.resource_type):
        raise UsageError("--query and --match-tag/--resource-type do not combine")
    explorer = getattr(args, "explorer", None)
    if explorer is not None:
        if args.query or args.match_tag or args.resource_type:
            raise UsageError("--explorer takes its own filter string: it goes with no "
                             "--query, --match-tag or --resource-type (use service:, "
                             "resourcetype:, tag:key=value in it)")
        if args.arns:
            raise UsageError("give either --arns or --explorer, not both")
        from bulktag.engine.discovery import Query

        return Query(explorer=explorer.strip(), explorer_view=args.explorer_view)
    if getattr(args, "explorer_view", None) or getattr(args, "explorer_region", None):
        raise UsageError("--explorer-view and --explorer-region go with --explorer")
    if args.query:
        return parse_resource_query(args.query)
    if args.match_tag or args.resource_type:
        return query_from_flags(args.match_tag, args.resource_type)
    if (args.regions or args.accounts or args.ou or args.exclude_accounts) and (
            args.command not in TRANSFORMS or args.arns):
        raise UsageError("--regions and --accounts go with a query (--query, --match-tag, "
                         "--resource-type)")
    return None


TRANSFORMS = ("transform", "rename", "fix-policy")  #: commands that submit a transform job


async def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.runs import finish_run, submit_and_run
    from bulktag.app.submission import Submission, way_in
    from bulktag.app.submit import submit
    from bulktag.sources import SourceError
    tags: dict[str, str] = {}
    ops: tuple[Any, ...] = ()
    if args.command in TRANSFORMS:
        from bulktag.cli.transform import operations

        ops = operations(args)
    if args.command == "tag":
        try:
            tags = parse_tag_args(args.tag)
        except ValueError as exc:
            raise UsageError(f"--tag: {exc}") from None
    submission = Submission(
        "untag" if args.command == "untag" else "tag", tags=tags, transform=ops,
        on_conflict=getattr(args, "on_conflict", None),
        allow_noncompliant=args.allow_noncompliant,
        keys=tuple(args.key) if args.command == "untag" else (),
        skip_invalid=args.skip_invalid, failure_ratio=args.failure_ratio,
        failure_min_items=args.failure_min_items, skip_compliant=args.skip_compliant,
        if_absent=args.if_absent, before_images=args.before_images,
        case_conflict=args.case_conflict, route=settings.route,
        export_on_finish=args.export_on_finish, export_region=args.export_region,
        export_kms_key_arn=args.export_kms_key_arn, name=args.name, priority=args.priority,
        caller_account=getattr(args, "caller_account", ""))
    request, options = submission.request, submission.job_options().with_(**way_in(settings))
    query = _query_from_args(args)
    submission.check_targets(query=query is not None, sources=args.arns)
    if ops and query is None and not args.arns:
        query = _source_keys_query(ops, args)
    if args.command == "fix-policy" and query is not None and query.explorer is None:
        query = dataclasses.replace(query, noncompliant=True)  # AWS's own reading first
    if query is not None:
        accounts, skipped = await _accounts(args, settings)
        regions = await resolve_regions(settings, csv_list(args.regions, "regions"))
        query_json = query.to_json()
        if query.explorer is not None:  # one walk, over the view, where the view lives
            query_json["Explorer"]["Region"] = args.explorer_region or settings.region or \
                "us-east-1"
        options = submission.query_job_options(query_json, accounts, regions)
        options = options.with_(**way_in(settings))
        if args.dry_run:
            from bulktag.app.plan import plan_query

            plan = await plan_query(settings, request, query, accounts, regions, options,
                                    skipped=skipped)
            emit(args, plan.data, plan.human)
            return plan.exit_code
        if skipped:
            log.warning("accounts_skipped", accounts=len(skipped),
                        states=dict(sorted(Counter(skipped.values()).items())),
                        hint="only ACTIVE accounts are worked")
        async with await Store.open(settings.db) as store:
            job_id = await submit_query_job(store, request.operation, options,
                                            name=submission.name,
                                            priority=submission.priority)
            if args.detach:
                emit(args, {"job": job_id, "accounts": accounts, "regions": regions},
                     str(job_id))
                return EXIT_OK
            return print_run(args, await finish_run(store, settings, {job_id}))
    if args.dry_run:
        from bulktag.app.plan import dry_run

        async with _policy_check(args, settings, options) as (check, _tally):
            plan = await dry_run(request, settings, options, args.arns, args.source_format,
                                 policy_check=check)
        emit(args, plan.data, plan.human)
        return plan.exit_code
    async with await Store.open(settings.db) as store, \
            _policy_check(args, settings, options) as (check, tally):
        await store.reap_abandoned_submissions()
        await store.reap_interrupted_loads(settings.owner_stale_seconds)
        owner = new_owner_token()
        load = functools.partial(submit, store, args.arns, request, name=submission.name,
                                 priority=submission.priority, options=options, owner=owner,
                                 fmt=args.source_format, policy_check=check)
        run = None  # the run of a big file's job, worked while the rest was read
        try:
            if args.detach:
                result = await load()
            else:
                result, run = await submit_and_run(load, store, settings)
        except SourceError as exc:
            if exc.job_note is not None:  # streamed: what was read is in, and paused
                raise UsageError(f"nothing more was enqueued: {exc}\n{exc.job_note}") from None
            raise UsageError(f"nothing was enqueued: {exc}") from None
        except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C while reading sources
            # `submit` deleted its half-made job on the way out (and a submission killed
            # outright is reaped by the next one), or paused a job already running (the same
            # command continues it): nothing more of it runs.
            print("bulktag: interrupted; nothing more enqueued", file=sys.stderr)
            raise
        for reason, n in (tally.unenforced.items() if tally is not None else ()):
            log.warning("noncompliant_tags", resources=n, reason=reason,
                        hint="the tag policy does not enforce it on these types: AWS takes "
                             "the tags, the resources are noncompliant")
        log.info("job_submitted", job=result.job_id, rows=result.rows, added=result.added,
                 duplicates=result.duplicates, invalid=result.invalid,
                 while_running=run is not None)
        if run is not None:
            return print_run(args, run)
        if args.detach:
            emit(args, {"job": result.job_id, "rows": result.rows, "added": result.added,
                        "duplicates": result.duplicates, "invalid": result.invalid},
                 str(result.job_id))
            return EXIT_OK
        return print_run(args, await finish_run(store, settings, {result.job_id}))



async def _settle(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    """A stopped job's in-flight items land (or come back) before a command plans from it."""
    from bulktag.app.settle import settle_stopped

    wait = settings.lease_seconds if args.wait is None else args.wait
    if not math.isfinite(wait) or wait < 0:
        raise UsageError(f"--wait must be 0 or more seconds, not {wait}")
    await settle_stopped(store, args.job, command=args.command, wait_seconds=wait,
                         stale_seconds=settings.owner_stale_seconds)


async def cmd_undo(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.runs import finish_run
    from bulktag.app.undo import NothingToUndo, submit_undo, undo_by_shard, undo_options, undoable

    async with await Store.open(settings.db, create=False) as store:
        await _settle(store, args, settings)
        if args.dry_run:
            from bulktag.app.plan import plan_undo

            job = await undoable(store, args.job)
            per_shard = await undo_by_shard(store, job)
            if not per_shard:
                emit(args, {"undo_of": job.id, "resources": 0},
                     f"job {job.id} changed nothing that can be put back: nothing to undo")
                return EXIT_OK
            plan = await plan_undo(settings, per_shard, undo_options(
                job, force=args.force, case_conflict=args.case_conflict))
            emit(args, plan.data, plan.human)
            return plan.exit_code
        await store.reap_abandoned_submissions()
        try:
            submitted = await submit_undo(store, args.job, force=args.force,
                                          case_conflict=args.case_conflict, name=args.name,
                                          priority=args.priority, owner=new_owner_token())
        except NothingToUndo as exc:
            emit(args, {"undo_of": args.job, "job": None, "items": 0}, str(exc))
            return EXIT_OK
        if args.detach:
            emit(args, {"job": submitted.job_id, "undo_of": args.job,
                        "items": submitted.items}, str(submitted.job_id))
            return EXIT_OK
        return print_run(args, await finish_run(store, settings, {submitted.job_id}))


def _no_store_yet(db: str) -> bool:
    """A SQLite store that does not exist yet where one could be made (so: no queued work)."""
    if is_postgres_url(db) or os.path.exists(db):
        return False
    ancestors = [p for p in Path(db).resolve().parents if p.exists()]
    return bool(ancestors) and ancestors[0].is_dir()


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.runs import export_spec, finish_run
    export = export_spec(args.export_on_finish, args.export_region, args.export_kms_key_arn)
    if not args.jobs and _no_store_yet(settings.db):
        emit(args, {"interrupted": False, "jobs": []}, "no queued work")  # and no store yet
        return EXIT_OK
    # a worker may set up an empty PostgreSQL database (as a daemon does); a mistyped SQLite
    # path is not made a store
    async with await Store.open(settings.db, create=is_postgres_url(settings.db)) as store:
        for j in args.jobs:
            if await store.get_job(j) is None:
                raise UsageError(f"no job {j} in {settings.db}")
        return print_run(args, await finish_run(store, settings, set(args.jobs) or None,
                                                export=export,
                                                wait_for_leases=not args.no_wait))


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async with await Store.open(settings.db, create=False) as store:
        if args.job is not None:
            st = await job_status(store, args.job, settings)
            emit(args, st, render_status(st))
            return EXIT_OK
        return await _print_jobs(args, store, settings)


async def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    async with await Store.open(settings.db, create=False) as store:
        return await _print_jobs(args, store, settings)


async def _print_jobs(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    rows = await job_summaries(store, settings.owner_stale_seconds)
    line = "{:>6}  {:<9} {:<10} {:>8}  {:>13}  {:>7}  {:>9}  {:>9}  {}".format
    human = "\n".join(
        [line("job", "operation", "state", "priority", "done/total", "failed", "cancelled",
              "ARN/s", "name")] +
        [line(r["job"], r["operation"], r["state"], r["priority"], f"{r['done']}/{r['total']}",
              r["failed"], r["cancelled"], "-" if r["rate"] is None else f"{r['rate']:g}",
              r["name"] or "") for r in rows]
    ) if rows else "no jobs"
    emit(args, {"jobs": rows}, human)
    return EXIT_OK


async def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """Rows to stdout, to -o FILE, or job-<id>/ with manifest.json under -o DIR/ or s3://."""
    from bulktag.app.report import write_report
    out = args.output
    s3 = bool(out and out.startswith("s3://"))
    if (args.kms_key_arn or args.s3_region) and not s3:
        raise UsageError("--kms-key-arn and --region apply only to -o s3://BUCKET/PREFIX")
    async with await Store.open(settings.db, create=False) as store:
        job = await store.get_job(args.job)
        if job is None:
            raise UsageError(f"no job {args.job} in {settings.db}")
        if not out:
            await write_report(store, job.id, job.operation, sys.stdout,
                               fmt=args.report_format, failed_only=args.failed_only)
            return EXIT_OK
        from bulktag.app.export import (
            ExportError,
            export_report,
            is_directory_target,
            parse_destination,
            write_report_file,
        )

        try:
            if s3 or is_directory_target(out):
                try:
                    dest = parse_destination(out)
                except ValueError as exc:
                    raise UsageError(f"-o: {exc}") from None
                exported = await export_report(
                    store, job, dest, settings, fmt=args.report_format,
                    failed_only=args.failed_only, region=args.s3_region,
                    kms_key_arn=args.kms_key_arn)
                print(exported.manifest_location)
            else:
                written = await write_report_file(store, job, out, fmt=args.report_format,
                                                  failed_only=args.failed_only)
                log.info("report_written", job=job.id, rows=written.rows, path=out)
        except ExportError as exc:
            print(f"bulktag: error: {exc}", file=sys.stderr)
            return EXIT_EXPORT
        return EXIT_OK


async def cmd_control(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.steering import control_job
    async with await Store.open(settings.db, create=False) as store:
        if args.command == "retry":
            await _settle(store, args, settings)
            if getattr(args, "role_name", None):
                # the job's way in from now on (its failures were for want of it)
                await store.merge_job_options(args.job, {
                    "role_name": args.role_name, "external_id": args.external_id,
                    "role_session_name": args.role_session_name})
            elif args.external_id or args.role_session_name:
                raise UsageError("--external-id and --role-session-name go with --role-name")
        result = await control_job(store, args.job, args.command,
                                   code=getattr(args, "code", None))
    human = result.message
    if args.command in ("retry", "resume"):
        human += f"; `bulktag run {result.job}` works it"
    data = {"job": result.job, **result.details, "state": result.state}
    emit(args, data, human)
    return EXIT_OK


async def cmd_inventory(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.export import ExportError
    from bulktag.app.inventory import take_snapshot
    from bulktag.aws.clients import ClientPool
    from bulktag.engine.discovery import (
        Query,
        enabled_regions,
        parse_resource_query,
        query_from_flags,
    )

    if args.explorer is not None:
        if args.query or args.match_tag or args.resource_type:
            raise UsageError("--explorer takes its own filter string: it goes with no "
                             "--query, --match-tag or --resource-type")
        query: Query | None = Query(explorer=args.explorer.strip())
    elif args.query and (args.match_tag or args.resource_type):
        raise UsageError("--query and --match-tag/--resource-type do not combine")
    else:
        query = (parse_resource_query(args.query) if args.query else
                 query_from_flags(args.match_tag, args.resource_type)
                 if args.match_tag or args.resource_type else None)
    if query is None or (query.explorer is None and not query.tag_filters):
        from bulktag.app.plan import NEVER_TAGGED

        log.warning("never_tagged_not_listed", hint=NEVER_TAGGED)
    accounts, _skipped = await _accounts(args, settings)
    regions = csv_list(args.regions, "regions")
    if not regions:
        clients = ClientPool(settings)
        try:
            regions = await enabled_regions(clients, settings)
        except Exception as exc:
            raise UsageError(f"cannot list the enabled regions ({exc}); give --regions") from None
        finally:
            await clients.close()
    try:
        snap = await take_snapshot(settings, args.output, accounts, regions, query,
                                   region=args.bucket_region, kms_key_arn=args.kms_key_arn,
                                   explorer_region=args.explorer_region)
    except ExportError as exc:
        print(f"bulktag: error: {exc}", file=sys.stderr)
        return EXIT_EXPORT
    data = {"location": snap.location, "resources": snap.resources,
            "per_shard": dict(snap.per_shard), "errors": snap.errors}
    lines = [f"inventory: {snap.resources} resource(s) -> {snap.location}"]
    lines += [f"  {shard}: {n}" for shard, n in sorted(snap.per_shard.items())]
    lines += [f"  not read: {shard}: {why}" for shard, why in sorted(snap.errors.items())]
    emit(args, data, "\n".join(lines))
    return EXIT_FAILED if snap.errors else EXIT_OK


async def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.app.verify import verify_job

    async with await Store.open(settings.db, create=False) as store:
        if await store.get_job(args.job) is None:
            raise UsageError(f"no job {args.job} in {settings.db}")
        result = await verify_job(store, settings, args.job)
    data = {"job": args.job, "checked": result.checked, "drifted": result.drifted,
            "unreadable": result.unreadable, "errors": result.errors, "drift": result.rows}
    lines = [f"job {args.job}: verified {result.checked} succeeded item(s): "
             f"{result.drifted} drifted, {result.unreadable} unreadable"]
    lines += [f"  {r['arn']}: {r['drift']}" for r in result.rows[:50]]
    lines += [f"  tags not read in {shard}: {why}" for shard, why in result.errors.items()]
    emit(args, data, "\n".join(lines))
    return EXIT_FAILED if result.drifted or result.unreadable else EXIT_OK


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bulktag.cli.demo import run_demo

    regions = csv_list(args.regions, "regions")
    return await run_demo(settings, regions=regions, per_region=args.per_region,
                          latency_ms=args.latency_ms, db=args.db, as_json=args.json)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]] = {
    "tag": cmd_submit, "untag": cmd_submit, "transform": cmd_submit, "rename": cmd_submit,
    "fix-policy": cmd_submit,
    "run": cmd_run, "status": cmd_status,
    "jobs": cmd_jobs, "report": cmd_report, "retry": cmd_control, "cancel": cmd_control,
    "pause": cmd_control, "resume": cmd_control, "demo": cmd_demo, "verify": cmd_verify,
    "inventory": cmd_inventory, "undo": cmd_undo,
}
COMMANDS.update(SERVICE_COMMANDS)


CHECKED_FIRST = frozenset({"tag", "untag", "run", "daemon", "verify", "inventory", "sync",
                           "undo", "transform", "rename", "policy", "compliance",
                           "fix-policy"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sim":
        from bulktag.sim import config_from_args, seed_from_args, serve_forever

        config = config_from_args(args)
        try:
            asyncio.run(serve_forever(config, args.host, args.port, seed_from_args(args, config)))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        return EXIT_OK
    try:
        settings = settings_from(args)
        configure_logging(settings.log_format, settings.log_level)
        if args.command in CHECKED_FIRST:  # credentials before any work; --max-rate vs quota
            from bulktag.app.preflight import preflight  # botocore: only for commands that call AWS

            stop = preflight(args, settings)
            if stop is not None:
                return stop
        return asyncio.run(COMMANDS[args.command](args, settings))
    except BulktagError as exc:
        print(f"bulktag: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:  # from a task group: its leaves say what happened
        leaves = _leaves(group)
        if all(isinstance(e, BulktagError) for e in leaves):
            for message in dict.fromkeys(str(e) for e in leaves):
                print(f"bulktag: error: {message}", file=sys.stderr)
            return max(e.exit_code for e in leaves if isinstance(e, BulktagError))
        if all(isinstance(e, KeyboardInterrupt) for e in leaves):
            return EXIT_INTERRUPTED
        return _bug()
    except BrokenPipeError:
        # The reader went away (`bulktag report 1 | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception:  # a bug: say so, with the traceback, under its own exit code
        return _bug()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out += _leaves(e) if isinstance(e, BaseExceptionGroup) else [e]
    return out


def _bug() -> int:
    traceback.print_exc()
    print(f"bulktag: internal error (a bug in bulktag {__version__}; exit {EXIT_BUG}). "
          "Nothing accepted is lost: `bulktag run` carries on from the store. Please "
          "report the traceback above.", file=sys.stderr)
    return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
