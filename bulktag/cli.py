"""The `bulktag` command line.

Exit codes: 0 done, 2 bad input or usage, 3 some items failed (or the job failed or was
cancelled), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog

from . import __version__
from .config import ConfigError, Settings, ec2_rate_warning, load_settings
from .logs import configure_logging
from .progress import Progress, format_duration
from .report import write_report
from .sources import SourceError
from .store import (
    JOB_DONE,
    Counts,
    Job,
    JobOptions,
    JobState,
    Store,
    StoreError,
    new_owner_token,
)
from .submit import Request, SubmissionRefused, request_problem, submit
from .tags import parse_tag_args

EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130

log = structlog.get_logger("bulktag.cli")


class UsageError(Exception):
    """Bad input or usage: printed as `bulktag: error: ...`, exit 2."""


# -- argument parsing --------------------------------------------------------------------------


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
    g.add_argument("--on-access-error", choices=("fail", "pause"),
                   help="items of an account whose role is refused: fail (default) or pause")
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
    q.add_argument("--accounts", help="comma-separated accounts (default: the caller's)")
    p.add_argument("--route", choices=("auto", "tagging-api"),
                   help="auto (default): EC2 resources CreateTags takes go through EC2's API, "
                        "the rest through the Tagging API; tagging-api: all through it")
    p.add_argument("--skip-compliant", action=argparse.BooleanOptionalAction, default=None,
                   help="read current tags first and skip resources already right "
                        "(default: on for tag, off for untag)")
    p.add_argument("--if-absent", action="store_true",
                   help="only add keys a resource does not have yet (never overwrite a value)")
    p.add_argument("--format", dest="source_format", choices=("text", "csv", "jsonl"),
                   help="source format when the file name does not tell (stdin)")
    p.add_argument("--name", help="a name for the job")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
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

    p = sub.add_parser("run", help="work queued jobs to the end")
    p.add_argument("jobs", nargs="*", type=int, metavar="JOB")
    p.add_argument("--json", action="store_true")
    _export_on_finish(p)
    _common(p)

    p = sub.add_parser("status", help="state counts, rate, ETA and top errors")
    p.add_argument("job", nargs="?", type=int, metavar="JOB")
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser(
        "report", help="one row per item of a job",
        epilog="-o DIR (an existing directory, or a path ending in /) or -o s3://bucket/prefix "
               "writes job-<id>/ with the rows file and manifest.json (counts, checksums). "
               "Exit 4 when the report cannot be written (bucket missing, access denied).")
    p.add_argument("job", type=int, metavar="JOB")
    p.add_argument("--format", dest="report_format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("--failed-only", action="store_true", help="only failed and invalid items")
    p.add_argument("-o", "--output", metavar="FILE|DIR/|s3://BUCKET/PREFIX",
                   help="where to write (default stdout)")
    p.add_argument("--region", dest="s3_region", metavar="REGION",
                   help="region of the destination bucket (default: the configured region)")
    p.add_argument("--kms-key-arn", metavar="ARN",
                   help="S3: encrypt with SSE-KMS under this key (default SSE-S3, AES256)")
    _common(p)

    p = sub.add_parser("inventory", help="snapshot the resources and tags discovery sees "
                       "(one JSON line per resource)")
    p.add_argument("-o", "--output", required=True,
                   help="a file, a directory (gets inventory-<time>.jsonl), or s3://bucket/prefix")
    p.add_argument("--regions", help="comma-separated regions (default: every enabled region)")
    p.add_argument("--accounts", help="comma-separated accounts (default: the caller's)")
    p.add_argument("--query", help="only resources matching this ResourceQuery")
    p.add_argument("--match-tag", action="append", default=[], metavar="KEY[=VALUE]")
    p.add_argument("--resource-type", action="append", default=[], metavar="SERVICE[:TYPE]")
    p.add_argument("--region", dest="bucket_region", help="the S3 bucket's region")
    p.add_argument("--kms-key-arn", help="SSE-KMS key for the S3 object (default SSE-S3)")
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser("verify", help="re-read the tags of a job's succeeded items; report drift")
    p.add_argument("job", type=int, metavar="JOB")
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser("retry", help="put a job's failed items back to pending")
    p.add_argument("job", type=int, metavar="JOB")
    p.add_argument("--code", help="only items that failed with this error code")
    p.add_argument("--json", action="store_true")
    _common(p)

    for name, text in (("cancel", "cancel a job: its open items end as cancelled"),
                       ("pause", "stop working on a job until resumed"),
                       ("resume", "resume a paused job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job", type=int, metavar="JOB")
        p.add_argument("--json", action="store_true")
        _common(p)

    from .sim import add_sim_arguments

    p = sub.add_parser("sim", help="run the local Tagging API simulator")
    add_sim_arguments(p)

    p = sub.add_parser("demo", help="tag a few thousand synthetic resources on the simulator")
    p.add_argument("--per-region", type=int, default=750, help="resources per region")
    p.add_argument("--regions", default="us-east-1,us-west-2,eu-west-1,ap-southeast-2")
    p.add_argument("--latency-ms", default="50-150", help="simulated call latency range")
    p.add_argument("--json", action="store_true")
    _common(p)
    from .service_cli import add_parsers as add_service_parsers  # daemon, sync, priority

    add_service_parsers(sub, _common)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in ("db", "endpoint_url", "profile", "max_rate", "max_attempts", "log_format",
                     "log_level", "role_name", "external_id", "on_access_error", "route")
    }
    settings = load_settings(config_path=getattr(args, "config", None), overrides=overrides)
    warning = ec2_rate_warning(settings)
    if warning:
        log.warning("ec2_rate_without_headroom", problem=warning)
    return settings


# -- output ------------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: dict[str, Any], human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, default=str))
    else:
        print(human)


async def job_status(store: Store, job_id: int, settings: Settings | None = None
                     ) -> dict[str, Any]:
    """A job's state, counts, rate, per account and region table and top errors with advice.
    `settings` gives the quota the table compares against (default: the config and env)."""
    from .advice import advice_for
    from .report import quota_arns, shard_table

    job = await store.get_job(job_id)
    if job is None:
        raise UsageError(f"no job {job_id} in {store.path}")
    counts = await store.counts(job_id)
    errors = []
    for code, n in await store.error_counts(job_id, 5):
        example = await store.error_example(job_id, code)
        errors.append({"code": code, "count": n,
                       "example_arn": example[0] if example else None,
                       "example_message": example[2] if example else None,
                       "advice": advice_for(code, example[2] if example else None,
                                            example[1] if example else None)})
    elapsed = ((job.finished_at or time.time()) - job.started_at) if job.started_at else None
    if job.state == "active":
        rate = job.rate
    else:  # a finished or paused job: its average over the time it ran
        rate = counts.done / elapsed if elapsed else 0.0
    eta = counts.open / rate if rate > 0 and job.state == "active" else None
    settings = settings or load_settings()
    quota = quota_arns(settings.rate_for("TagResources" if job.operation == "tag"
                                         else "UntagResources"))
    return {
        "job": job.id, "name": job.name, "operation": job.operation, "state": job.state,
        "priority": job.priority, "reason": job.reason, "total": counts.total,
        "counts": {s: counts[s] for s in ("pending", "leased", "succeeded", "skipped", "failed",
                                          "invalid", "cancelled")},
        "rate": round(rate, 2), "eta_seconds": None if eta is None else round(eta, 1),
        "elapsed_seconds": None if elapsed is None else round(elapsed, 1),
        "shards": shard_table(await store.shard_counts(job_id), elapsed, quota),
        "top_errors": errors,
        "paused_accounts": [{"account": a, "reason": r}
                            for a, r in await store.paused_accounts(job_id)],
        "discovery": [{"account": d.account, "region": d.region, "state": d.state,
                       "pages": d.pages, "found": d.found, "restarts": d.restarts,
                       "error": d.error} for d in await store.job_discoveries(job_id)],
    }


def render_status(st: dict[str, Any]) -> str:
    from .report import render_shard_table

    c = st["counts"]
    lines = [
        f"job {st['job']}{' (' + st['name'] + ')' if st['name'] else ''}: {st['operation']} "
        f"{st['state']}{' - ' + st['reason'] if st['reason'] else ''}",
        f"  items {st['total']}: " + ", ".join(f"{k} {v}" for k, v in c.items() if v),
        f"  rate {st['rate']} ARN/s  ETA {format_duration(st['eta_seconds'])}  "
        f"elapsed {format_duration(st['elapsed_seconds'])}",
    ]
    lines += render_shard_table(st.get("shards") or [])
    walks = st.get("discovery") or []
    if walks:
        done = sum(1 for w in walks if w["state"] == "done")
        lines.append(f"  discovery: {done} of {len(walks)} account-region walks done, "
                     f"{sum(w['found'] for w in walks)} resources found")
        for w in walks:
            if w["state"] == "failed":
                lines.append(f"    FAILED {w['account'] or '(caller)'}/{w['region']}: "
                             f"{(w['error'] or '')[:160]}")
    for p in st.get("paused_accounts") or []:
        lines.append(f"  account {p['account']} PAUSED: {p['reason'][:160]}")
        lines.append(f"      -> fix its role, then `bulktag resume {st['job']}`")
    if st["top_errors"]:
        lines.append("  top errors:")
        for e in st["top_errors"]:
            lines.append(f"    {e['code']:<32} {e['count']:>8}  e.g. {e['example_arn']}: "
                         f"{(e['example_message'] or '')[:120]}")
            if e.get("advice"):
                lines.append(f"      -> {e['advice'].replace('JOB', str(st['job']))}")
    export = st.get("export")
    if export:
        lines.append(f"  report exported: {export['manifest']}" if export.get("manifest")
                     else f"  report export FAILED to {export['destination']}: {export['error']}")
    return "\n".join(lines)


def exit_code_for(counts: Counts, state: str) -> int:
    """3 when anything did not end well, or is left open (a paused account's items)."""
    if state in ("failed", "cancelled") or counts["failed"] or counts["invalid"] or \
            counts.open or \
            counts["cancelled"]:
        return EXIT_FAILED
    return EXIT_OK


# -- running -----------------------------------------------------------------------------------


async def run_engine(
    store: Store, settings: Settings, job_ids: set[int] | None, *, progress_job: int | None,
    clients: Any = None, seen: set[int] | None = None,
) -> bool:
    """Run jobs to the end with signal handling; True when finished, False when interrupted.
    `seen` collects the ids of the jobs this run worked on."""
    from .engine import Engine  # aiobotocore: ~0.2 s to import, which status/report never need

    engine = Engine(store, settings, owner=new_owner_token(), job_ids=job_ids, clients=clients)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    hits = 0

    def on_signal(signum: int) -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            log.warning("stopping", signal=signal.Signals(signum).name,
                        grace_seconds=settings.grace_seconds, hint="again to stop at once")
            engine.request_stop()
        elif hits == 2:
            log.warning("stopping_now", hint="in-flight calls cancelled; leases still released")
            engine.stop_now()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    progress = Progress(progress_job) if progress_job is not None else None

    async def show() -> None:
        assert progress is not None and progress_job is not None
        while True:
            progress.update(await store.counts(progress_job))
            await asyncio.sleep(0.5)

    shower = asyncio.create_task(show()) if progress else None
    try:
        try:
            finished = await engine.run()
        finally:
            if seen is not None:
                seen.update(engine.jobs_worked)
    except asyncio.CancelledError:
        finished = False
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if shower:
            shower.cancel()
            await asyncio.gather(shower, return_exceptions=True)
            if progress_job is not None and progress:
                progress.update(await store.counts(progress_job))
                progress.close()
    return finished and hits == 0


def _query_from_args(args: argparse.Namespace) -> Any:
    from .discovery import QueryError, parse_resource_query, query_from_flags

    try:
        if args.query and (args.match_tag or args.resource_type):
            raise UsageError("--query and --match-tag/--resource-type do not combine")
        if args.query:
            return parse_resource_query(args.query)
        if args.match_tag or args.resource_type:
            return query_from_flags(args.match_tag, args.resource_type)
    except QueryError as exc:
        raise UsageError(str(exc)) from None
    if args.regions or args.accounts:
        raise UsageError("--regions and --accounts go with a query (--query, --match-tag, "
                         "--resource-type)")
    return None


def _csv_list(text: str | None, what: str) -> list[str]:
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if text is not None and not items:
        raise UsageError(f"--{what}: empty list")
    return items


async def submit_query_job(
    args: argparse.Namespace, settings: Settings, request: Request, query: Any,
    options: JobOptions,
) -> int:
    """A job whose items discovery finds: one walk per (account, region), tagging as it goes."""
    from .clients import ClientPool
    from .discovery import enabled_regions

    if request.operation == "tag" and not request.tags:
        raise UsageError("--tag: give at least one tag to apply")
    if request.operation == "untag" and not request.keys:
        raise UsageError("--key: give at least one key to remove")
    accounts = _csv_list(args.accounts, "accounts") or [""]
    for account in accounts:
        if account and not (len(account) == 12 and account.isdigit()):
            raise UsageError(f"--accounts: {account!r} is not a 12-digit account id")
    regions = _csv_list(args.regions, "regions")
    if not regions:
        clients = ClientPool(settings)
        try:
            regions = await enabled_regions(clients, settings)
        except Exception as exc:  # noqa: BLE001 - any failure here is the user's to see
            raise UsageError(f"cannot list the enabled regions ({exc}); give --regions") from None
        finally:
            await clients.close()
    options = options.with_(query=query.to_json(), tags=request.tags, keys=list(request.keys),
                            accounts=accounts, regions=regions)
    if args.dry_run:
        from .plan import plan_query

        return await plan_query(args, settings, request, query, accounts, regions, options)
    async with await Store.open(settings.db) as store:
        job_id = await store.create_job(request.operation, options=options, name=args.name,
                                        priority=args.priority, owner=new_owner_token())
        await store.create_discoveries(job_id, [("aws", a, r) for a in accounts
                                                for r in regions])
        await store.set_job_state(job_id, JobState.READY)
        log.info("job_submitted", job=job_id, query=query.to_json(), accounts=accounts,
                 regions=regions)
        if args.detach:
            emit(args, {"job": job_id, "accounts": accounts, "regions": regions}, str(job_id))
            return EXIT_OK
        return await finish_run(args, store, settings, {job_id})


async def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "tag":
        try:
            tags = parse_tag_args(args.tag)
        except ValueError as exc:
            raise UsageError(f"--tag: {exc}") from None
        request = Request("tag", tags=tags, skip_invalid=args.skip_invalid)
    else:
        request = Request("untag", keys=tuple(args.key), skip_invalid=args.skip_invalid)
    problem = request_problem(request)
    if problem:
        raise UsageError(f"--{'tag' if args.command == 'tag' else 'key'}: {problem}")
    if args.failure_ratio is not None and not 0 < args.failure_ratio <= 1:
        raise UsageError(f"--failure-ratio must be in (0, 1], not {args.failure_ratio:g}")
    if args.failure_min_items is not None and args.failure_min_items < 0:
        raise UsageError(f"--failure-min-items must not be negative, "
                         f"not {args.failure_min_items}")
    skip_compliant = (args.command == "tag" if args.skip_compliant is None
                      else args.skip_compliant)
    if args.if_absent:
        if args.skip_compliant is False:
            raise UsageError("--if-absent reads current tags to keep existing values: it "
                             "cannot go with --no-skip-compliant")
        skip_compliant = True
    options = JobOptions(
        failure_ratio=args.failure_ratio, failure_min_items=args.failure_min_items,
        skip_compliant=skip_compliant, if_absent=args.if_absent, route=settings.route,
        # kept with the job, even with --detach
        export_on_finish=export_on_finish_options(args).get("export_on_finish"))
    if args.if_absent and args.command != "tag":
        raise UsageError("--if-absent applies to tag jobs only")
    query = _query_from_args(args)
    if query is not None and args.arns:
        raise UsageError("give either --arns or a query (--query, --match-tag, "
                         "--resource-type), not both")
    if query is None and not args.arns:
        raise UsageError("nothing to work on: give --arns SRC, or a query (--query, "
                         "--match-tag, --resource-type)")
    if query is not None:
        return await submit_query_job(args, settings, request, query, options)
    if args.dry_run:
        from .plan import dry_run

        return await dry_run(args, request, settings, options)
    async with await Store.open(settings.db) as store:
        await store.reap_abandoned_submissions()
        owner = new_owner_token()
        try:
            result = await submit(store, args.arns, request, name=args.name,
                                  priority=args.priority, options=options, owner=owner,
                                  fmt=args.source_format)
        except SubmissionRefused as exc:
            raise UsageError(str(exc)) from None
        except SourceError as exc:
            raise UsageError(f"nothing was enqueued: {exc}") from None
        log.info("job_submitted", job=result.job_id, rows=result.rows, added=result.added,
                 duplicates=result.duplicates, invalid=result.invalid)
        if args.detach:
            emit(args, {"job": result.job_id, "rows": result.rows, "added": result.added,
                        "duplicates": result.duplicates, "invalid": result.invalid},
                 str(result.job_id))
            return EXIT_OK
        return await finish_run(args, store, settings, {result.job_id})


async def finish_run(
    args: argparse.Namespace, store: Store, settings: Settings, job_ids: set[int] | None,
    clients: Any = None,
) -> int:
    await remember_export_on_finish(args, store, job_ids)
    progress_job = next(iter(job_ids)) if job_ids and len(job_ids) == 1 else None
    seen: set[int] = set()
    finished = await run_engine(store, settings, job_ids, progress_job=progress_job,
                                clients=clients, seen=seen)
    # `bulktag run` with no JOB answers for the jobs it worked, not the store's whole history.
    # ... and for finished jobs whose export is still due (their bucket was missing, say).
    ids = sorted(job_ids) if job_ids else sorted(
        seen | {j.id for j in await store.list_jobs() if export_due(j)})
    if not ids and not getattr(args, "json", False):
        print("no queued work")
    statuses = [await job_status(store, j, settings) for j in ids]
    export_failed = False
    if finished:  # after Ctrl-C, stop now: the next `bulktag run` exports what is due
        for st in statuses:
            st_export = await export_if_due(store, settings, st["job"])
            if st_export is not None:
                st["export"] = st_export
                export_failed = export_failed or "error" in st_export
    if getattr(args, "json", False):
        print(json.dumps({"interrupted": not finished, "jobs": statuses}))
    else:
        for st in statuses:
            print(render_status(st))
    if not finished:
        return EXIT_INTERRUPTED
    code = EXIT_OK
    for st in statuses:
        counts = Counts({k: v for k, v in st["counts"].items()})
        code = max(code, exit_code_for(counts, st["state"]))
        if any(w["state"] == "failed" for w in st.get("discovery") or []):
            code = max(code, EXIT_FAILED)  # part of the query was never read
    return max(code, EXIT_EXPORT) if export_failed else code


# -- exports when a job ends -------------------------------------------------------------------

EXIT_EXPORT = 4  # the report could not be written (bucket missing, access denied ...)


def export_on_finish_options(args: argparse.Namespace) -> dict[str, Any]:
    """Job options for --export-on-finish (empty without it); checked, else UsageError."""
    from .export import parse_destination

    dest = getattr(args, "export_on_finish", None)
    region = getattr(args, "export_region", None)
    kms = getattr(args, "export_kms_key_arn", None)
    if not dest:
        if region or kms:
            raise UsageError("--export-region and --export-kms-key-arn need --export-on-finish")
        return {}
    try:
        parsed = parse_destination(dest)
    except ValueError as exc:
        raise UsageError(f"--export-on-finish: {exc}") from None
    if parsed.bucket is None and (region or kms):
        raise UsageError("--export-region and --export-kms-key-arn apply only to s3:// "
                         "destinations")
    return {"export_on_finish": {"destination": dest, "region": region, "kms_key_arn": kms,
                                 "format": "csv"}}


async def remember_export_on_finish(args: argparse.Namespace, store: Store,
                                    job_ids: set[int] | None) -> None:
    """Keep --export-on-finish in the jobs' options before running them, so a run that
    crashes still exports from the next `bulktag run`. Without job ids: every unfinished job."""
    options = export_on_finish_options(args)
    if not options:
        return
    ids = job_ids or {j.id for j in await store.list_jobs() if j.state not in JOB_DONE}
    for j in sorted(ids):
        await store.merge_job_options(j, options)


def export_due(job: Job) -> bool:
    """A finished job with an export destination whose this end was not exported yet."""
    spec = job.options.export_on_finish
    if not spec or job.state not in (JobState.COMPLETED, JobState.FAILED):
        return False
    done = job.options.exported or {}
    return not (done.get("finished_at") == job.finished_at and done.get("spec") == spec)


async def export_if_due(store: Store, settings: Settings, job_id: int) -> dict[str, Any] | None:
    """Export a completed or failed job with an export destination, unless this end of it
    (same finished_at, same destination) was already exported. Returns what happened."""
    from .export import ExportError, export_report, parse_destination

    job = await store.get_job(job_id)
    if job is None or not export_due(job):
        return None
    spec = job.options.export_on_finish
    assert spec is not None
    try:
        exported = await export_report(
            store, job, parse_destination(spec["destination"]), settings,
            fmt=spec.get("format") or "csv", region=spec.get("region"),
            kms_key_arn=spec.get("kms_key_arn"))
    except ExportError as exc:
        print(f"bulktag: error: job {job.id}: {exc}", file=sys.stderr)
        log.error("export_failed", job=job.id, destination=spec["destination"], error=str(exc))
        return {"destination": spec["destination"], "error": str(exc)}
    await store.merge_job_options(job.id, {"exported": {
        "spec": spec, "finished_at": job.finished_at, "manifest": exported.manifest_location,
        "at": time.time()}})
    return {"destination": spec["destination"], "manifest": exported.manifest_location}


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    async with await Store.open(settings.db) as store:
        for j in args.jobs:
            if await store.get_job(j) is None:
                raise UsageError(f"no job {j} in {settings.db}")
        return await finish_run(args, store, settings, set(args.jobs) or None)


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async with await Store.open(settings.db) as store:
        if args.job is not None:
            st = await job_status(store, args.job, settings)
            emit(args, st, render_status(st))
            return EXIT_OK
        return await cmd_jobs(args, settings, store)


async def cmd_jobs(args: argparse.Namespace, settings: Settings, store: Store | None = None) -> int:
    own = store is None
    store = store or await Store.open(settings.db)
    try:
        rows = []
        for job in await store.list_jobs():
            counts = await store.counts(job.id)
            rows.append({"job": job.id, "name": job.name, "operation": job.operation,
                         "state": job.state, "priority": job.priority, "total": counts.total,
                         "done": counts.done, "failed": counts["failed"] + counts["invalid"]})
        human = "\n".join(
            f"{r['job']:>6}  {r['operation']:<6} {r['state']:<10} p{r['priority']:<3} "
            f"{r['done']}/{r['total']} failed {r['failed']}  {r['name'] or ''}" for r in rows
        ) or "no jobs"
        emit(args, {"jobs": rows}, human)
        return EXIT_OK
    finally:
        if own:
            await store.close()


async def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """Rows to stdout, to -o FILE, or job-<id>/ with manifest.json under -o DIR/ or s3://."""
    out = args.output
    s3 = bool(out and out.startswith("s3://"))
    if (args.kms_key_arn or args.s3_region) and not s3:
        raise UsageError("--kms-key-arn and --region apply only to -o s3://BUCKET/PREFIX")
    async with await Store.open(settings.db) as store:
        job = await store.get_job(args.job)
        if job is None:
            raise UsageError(f"no job {args.job} in {settings.db}")
        if not out:
            await write_report(store, job.id, job.operation, sys.stdout,
                               fmt=args.report_format, failed_only=args.failed_only)
            return EXIT_OK
        from .export import (
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
    async with await Store.open(settings.db) as store:
        job = await store.get_job(args.job)
        if job is None:
            raise UsageError(f"no job {args.job} in {settings.db}")
        data: dict[str, Any] = {"job": job.id}
        if args.command == "retry":
            n = await store.retry_failed(job.id, args.code)
            if n:
                await store.set_job_state(job.id, JobState.READY)
            data["requeued"] = n
            human = f"job {job.id}: {n} item(s) back to pending; `bulktag run {job.id}` works them"
        elif args.command == "cancel":
            if job.state in JOB_DONE:
                raise UsageError(f"job {job.id} is already {job.state}")
            n = await store.cancel_items(job.id, "cancelled by the operator")
            await store.set_job_state(job.id, JobState.CANCELLED,
                                      reason="cancelled by the operator")
            data["cancelled"] = n
            human = f"job {job.id} cancelled ({n} open item(s))"
        elif args.command == "pause":
            if job.state not in ("ready", "active"):
                raise UsageError(f"job {job.id} is {job.state}; only ready or active jobs pause")
            await store.set_job_state(job.id, JobState.PAUSED)
            human = f"job {job.id} paused"
        else:
            accounts = await store.clear_paused_accounts(job.id)
            if job.state != "paused" and not accounts:
                raise UsageError(f"job {job.id} is {job.state}, not paused")
            if job.state == JobState.PAUSED:
                await store.set_job_state(job.id, JobState.READY)
            data["accounts_resumed"] = accounts
            human = (f"job {job.id} resumed"
                     f"{f' ({accounts} paused account(s))' if accounts else ''}; "
                     f"`bulktag run {job.id}` works it")
        data["state"] = (await store.get_job(job.id)).state  # type: ignore[union-attr]
        emit(args, data, human)
        return EXIT_OK


async def cmd_inventory(args: argparse.Namespace, settings: Settings) -> int:
    from .clients import ClientPool
    from .discovery import QueryError, enabled_regions, parse_resource_query, query_from_flags
    from .export import ExportError
    from .inventory import take_snapshot

    try:
        if args.query and (args.match_tag or args.resource_type):
            raise UsageError("--query and --match-tag/--resource-type do not combine")
        query = (parse_resource_query(args.query) if args.query else
                 query_from_flags(args.match_tag, args.resource_type)
                 if args.match_tag or args.resource_type else None)
    except QueryError as exc:
        raise UsageError(str(exc)) from None
    accounts = _csv_list(args.accounts, "accounts") or [""]
    regions = _csv_list(args.regions, "regions")
    if not regions:
        clients = ClientPool(settings)
        try:
            regions = await enabled_regions(clients, settings)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"cannot list the enabled regions ({exc}); give --regions") from None
        finally:
            await clients.close()
    try:
        snap = await take_snapshot(settings, args.output, accounts, regions, query,
                                   region=args.bucket_region, kms_key_arn=args.kms_key_arn)
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
    from .verify import verify_job

    async with await Store.open(settings.db) as store:
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
    from .demo import run_demo

    return await run_demo(args, settings)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]] = {
    "tag": cmd_submit, "untag": cmd_submit, "run": cmd_run, "status": cmd_status,
    "jobs": cmd_jobs, "report": cmd_report, "retry": cmd_control, "cancel": cmd_control,
    "pause": cmd_control, "resume": cmd_control, "demo": cmd_demo, "verify": cmd_verify,
    "inventory": cmd_inventory,
}
from .service_cli import COMMANDS as SERVICE_COMMANDS  # noqa: E402 - daemon, sync, priority

COMMANDS.update(SERVICE_COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sim":
        from .sim import config_from_args, seed_from_args, serve_forever

        config = config_from_args(args)
        try:
            asyncio.run(serve_forever(config, args.host, args.port, seed_from_args(args, config)))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        return EXIT_OK
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"bulktag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format, settings.log_level)
    try:
        return asyncio.run(COMMANDS[args.command](args, settings))
    except (UsageError, ConfigError, StoreError) as exc:
        print(f"bulktag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`bulktag report 1 | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
