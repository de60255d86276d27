"""Submitting and describing jobs: a query job's discovery walks, a job's status (counts, rate,
ETA, the per account/region table, top errors with advice, paused accounts, discovery), and
the exit code a job's end maps to."""

from __future__ import annotations

import time
from typing import Any

import structlog

from bulktag.api_limits import EC2_OPERATIONS
from bulktag.arn import ROUTE_EC2, ROUTE_TAGGING, account_problem
from bulktag.config import Settings, load_settings
from bulktag.errors import EXIT_FAILED, EXIT_OK, UsageError
from bulktag.policy.access import describe_access, via_of
from bulktag.store import FLEET_RATE_FRESH, Counts, JobOptions, JobState, Store, new_owner_token

log = structlog.get_logger("bulktag.jobs")


async def job_status(store: Store, job_id: int, settings: Settings | None = None
                     ) -> dict[str, Any]:
    """A job's state, counts, rate, per account and region table and top errors with advice.
    `settings` gives the quota the table compares against (default: the config and env)."""
    from bulktag.app.report import quota_arns, shard_table
    from bulktag.policy.advice import advice_for

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
                                            example[1] if example else None,
                                            arn=example[0] if example else None)})
    elapsed = ((job.finished_at or time.time()) - job.started_at) if job.started_at else None
    settings = settings or load_settings()
    workers = None
    no_worker_since = None
    if job.state == "active":  # the fleet's: the sum over the live workers' recent rates
        fleet = await store.fleet_rate(job_id, fresh_seconds=FLEET_RATE_FRESH,
                                       stale_seconds=settings.owner_stale_seconds)
        rate, workers = fleet.rate, fleet.workers
        if not workers:
            no_worker_since = fleet.last_at or job.updated_at
    else:  # a finished or paused job: its average over the time it ran
        rate = counts.done / elapsed if elapsed else 0.0
    eta = counts.open / rate if rate > 0 and job.state == "active" and workers else None
    quotas = {  # ARNs/s per account-region, by route
        ROUTE_TAGGING: quota_arns(settings.rate_for("TagResources" if job.operation == "tag"
                                                    else "UntagResources")),
        ROUTE_EC2: quota_arns(settings.rate_for(EC2_OPERATIONS[job.operation]),
                              settings.ec2_batch_size)}
    shards = shard_table(await store.route_counts(job_id), elapsed, quotas)
    via = via_of(job.options.role_name, job.options.external_id, job.options.role_session_name)
    return {
        "job": job.id, "name": job.name, "operation": job.kind, "state": job.state,
        # how the job reaches its accounts: the role kept with it (never the external id),
        # and per account what a worker with these settings uses
        "role_name": job.options.role_name,
        "access": {a or "(caller)": describe_access(settings, a, via)
                   for a in sorted({r["account"] for r in shards if r["account"] is not None})},
        "priority": job.priority, "reason": job.reason, "total": counts.total,
        # its sources still being read (by that process), with how many rows are in so far
        "loading": None if job.loading is None else {"by": job.loading, "rows_in": job.loaded},
        "counts": {s: counts[s] for s in ("pending", "leased", "succeeded", "skipped", "failed",
                                          "invalid", "cancelled")},
        "rate": round(rate, 2), "eta_seconds": None if eta is None else round(eta, 1),
        # active jobs: how many live workers run it; when none has lately, since when
        "workers": workers, "no_worker_since": no_worker_since,
        "elapsed_seconds": None if elapsed is None else round(elapsed, 1),
        "shards": shards,
        "top_errors": errors,
        "paused_accounts": [{"account": a, "reason": r}
                            for a, r in await store.paused_accounts(job_id)],
        "discovery": [{"account": d.account, "region": d.region, "state": d.state,
                       "pages": d.pages, "found": d.found, "restarts": d.restarts,
                       "error": d.error} for d in await store.job_discoveries(job_id)],
    }




def exit_code_for(counts: Counts, state: str) -> int:
    """3 when anything did not end well, or is left open (a paused account's items)."""
    if state in ("failed", "cancelled") or counts["failed"] or counts["invalid"] or \
            counts.open or \
            counts["cancelled"]:
        return EXIT_FAILED
    return EXIT_OK


# -- running -----------------------------------------------------------------------------------



def check_accounts(accounts: list[str]) -> None:
    for account in accounts:
        problem = account_problem(account) if account else None
        if problem is not None:
            raise UsageError(f"--accounts: {problem}")


ORG = "org"  #: `--accounts org`: every active account of the organisation


async def resolve_accounts(settings: Settings, accounts: list[str], ous: list[str],
                           exclude: list[str]) -> tuple[list[str], dict[str, str]]:
    """Where a discovery walks: the accounts given (`[""]`: the caller's), every active
    account of the organisation (`["org"]`) or those under the OUs `ous` (recursively), less
    `exclude`. Returns them and the accounts skipped for their state (SUSPENDED, ...)."""
    check_accounts([a for a in accounts if a != ORG])
    check_accounts(exclude)
    for ou in ous:
        if not ou.startswith(("ou-", "r-")):
            raise UsageError(f"--ou: {ou!r} is not an OU id (ou-xxxx-xxxxxxxx, or a root "
                             "r-xxxx)")
    skipped: dict[str, str] = {}
    if ORG in accounts or ous:
        if ORG in accounts and (ous or len(accounts) > 1):
            raise UsageError("--accounts org takes every account: it goes with no other "
                             "account or --ou")
        from bulktag.aws.clients import ClientPool
        from bulktag.aws.organizations import OrganizationUnavailable, organization_accounts

        clients = ClientPool(settings)
        try:
            found = await organization_accounts(clients, ous or None)
        except OrganizationUnavailable as exc:
            what = "--ou" if ous else "--accounts org"
            raise UsageError(f"{what}: cannot list the organization's accounts: {exc}") \
                from None
        finally:
            await clients.close()
        accounts = [a for a in accounts if a != ORG] + [
            a for a in found.active if a not in accounts]
        skipped = found.skipped
    kept = [a for a in (accounts or [""]) if a not in exclude]
    if not kept:
        raise UsageError("no account left to work on (every account listed is excluded, "
                         "or not active)")
    return kept, skipped


async def resolve_regions(settings: Settings, regions: list[str]) -> list[str]:
    """The regions given, or every region enabled for the caller (EC2 DescribeRegions)."""
    if regions:
        return regions
    from bulktag.aws.clients import ClientPool
    from bulktag.engine.discovery import enabled_regions

    clients = ClientPool(settings)
    try:
        return await enabled_regions(clients, settings)
    except Exception as exc:  # any failure here is the user's to see, as a usage error
        raise UsageError(f"cannot list the enabled regions ({exc}); give --regions") from None
    finally:
        await clients.close()


async def submit_query_job(store: Store, operation: str, options: JobOptions, *,
                           name: str | None, priority: int) -> int:
    """A ready job whose items discovery finds: one walk per (account, region) of its options,
    tagging as it goes."""
    assert options.query is not None and options.accounts is not None
    assert options.regions is not None
    job_id = await store.create_job(operation, options=options, name=name, priority=priority,
                                    owner=new_owner_token())
    explorer = options.query.get("Explorer")
    if explorer is not None:  # Resource Explorer: one walk over the view, in its region
        await store.create_discoveries(job_id, [("aws", "", explorer["Region"])])
    else:
        await store.create_discoveries(job_id, [("aws", a, r) for a in options.accounts
                                                for r in options.regions])
    await store.set_job_state(job_id, JobState.READY)
    log.info("job_submitted", job=job_id, query=options.query, accounts=options.accounts,
             regions=options.regions)
    return job_id


async def job_summaries(store: Store, stale_seconds: float = 90.0) -> list[dict[str, Any]]:
    """One line per job for `bulktag jobs`; an active job's rate is the fleet's (None: no
    live worker runs it)."""
    rows = []
    for job in await store.list_jobs():
        counts = await store.counts(job.id)
        rate = None
        if job.state == JobState.ACTIVE:
            fleet = await store.fleet_rate(job.id, fresh_seconds=FLEET_RATE_FRESH,
                                           stale_seconds=stale_seconds)
            rate = round(fleet.rate, 2) if fleet.workers else None
        rows.append({"job": job.id, "name": job.name, "operation": job.kind,
                     "state": job.state, "priority": job.priority, "total": counts.total,
                     # done: items that ended by the job's work (not those cancelled)
                     "done": counts.done - counts["cancelled"],
                     "failed": counts["failed"] + counts["invalid"],
                     "cancelled": counts["cancelled"], "role_name": job.options.role_name,
                     "rate": rate})
    return rows
