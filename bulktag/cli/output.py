"""What every command of the CLI shares: settings from the flags, `--json` or human output,
comma lists, and the rendering of a job's status and of a run's end. Printing lives here and
in the `cmd_*` functions, never below them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import structlog

from bulktag.app.steering import check_job_id, check_priority
from bulktag.arn import account_problem, region_problem
from bulktag.config import Settings, ec2_rate_warning, load_settings
from bulktag.errors import UsageError
from bulktag.progress import format_duration

if TYPE_CHECKING:  # the runs module is only imported by the commands that run
    from bulktag.app.runs import RunResult


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in ("db", "endpoint_url", "profile", "max_rate", "max_attempts", "log_format",
                     "log_level", "role_name", "external_id", "role_session_name",
                     "on_access_error", "route")
    }
    settings = load_settings(config_path=getattr(args, "config", None), overrides=overrides)
    warning = ec2_rate_warning(settings)
    if warning:
        structlog.get_logger("bulktag.cli.main").warning("ec2_rate_without_headroom",
                                                    problem=warning)
    return settings


# -- output ------------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: dict[str, Any], human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, default=str))
    else:
        print(human)


def render_status(st: dict[str, Any]) -> str:
    from bulktag.app.report import render_shard_table

    c = st["counts"]
    lines = [
        f"job {st['job']}{' (' + st['name'] + ')' if st['name'] else ''}: {st['operation']} "
        f"{st['state']}{' - ' + st['reason'] if st['reason'] else ''}",
        f"  items {st['total']}: " + ", ".join(f"{k} {v}" for k, v in c.items() if v),
        f"  rate {st['rate']} ARN/s  ETA {format_duration(st['eta_seconds'])}  "
        f"elapsed {format_duration(st['elapsed_seconds'])}" + (
            f"  ({st['workers']} worker{'s' if st['workers'] != 1 else ''})"
            if st.get("workers") else ""),
    ]
    loading = st.get("loading")
    if loading and st.get("state") in ("ready", "active"):
        lines.insert(1, f"  its file is still being read ({loading['rows_in']:,} rows in so "
                        f"far, by {loading['by']}): more items are coming")
    if st.get("state") == "active" and not st.get("workers"):
        since = st.get("no_worker_since")
        lines.insert(1, "  no worker is running this job" + (
            f" (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))})"
            if since else "") + ": start one with bulktag run or bulktag daemon")
    lines += render_shard_table(st.get("shards") or [])
    for account, how in (st.get("access") or {}).items():
        if account != "(caller)":
            lines.append(f"  account {account}: {how}")
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


def csv_list(text: str | None, what: str) -> list[str]:
    """A comma-separated option's items; regions and accounts checked (`arn.py`'s rules)."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if text is not None and not items:
        raise UsageError(f"--{what}: empty list")
    check = {"regions": region_problem, "accounts": account_problem}.get(what)
    if check is not None:
        for item in items:
            problem = check(item)
            if problem is not None:
                raise UsageError(f"--{what}: {problem}")
    return items


def print_run(args: argparse.Namespace, result: RunResult) -> int:
    """The end of a run: each job's status (or JSON), the blocking leases; its exit code."""
    if not result.statuses and not getattr(args, "json", False):
        print("no queued work")
    if getattr(args, "json", False):
        data: dict[str, Any] = {"interrupted": result.interrupted, "jobs": result.statuses}
        if result.blocked is not None:
            data["blocked_by"] = {"items": result.blocked.items,
                                  "owners": list(result.blocked.owners)}
        print(json.dumps(data, default=str))
    else:
        for st in result.statuses:
            print(render_status(st))
    if result.blocked is not None:
        from bulktag.cli.lease_holders import describe_blocked

        print(f"bulktag: {describe_blocked(result.blocked)}", file=sys.stderr)
    return result.exit_code


def job_arg(text: str) -> int:
    """argparse type of a JOB: a whole number a store can hold (else a usage error, exit 2)."""
    try:
        return check_job_id(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def priority_arg(text: str) -> int:
    """argparse type of a priority: a whole number a store can hold."""
    try:
        return check_priority(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"priority must be a whole number, not {text!r}") \
            from None
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
