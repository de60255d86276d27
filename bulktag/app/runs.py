"""Running jobs to the end: the engine under signal handling with a progress bar, then each
job's status, its export when it ended with a destination, and the exit code of it all."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bulktag.app.jobs import exit_code_for, job_status
from bulktag.app.submit import LoadStopped, Submitted
from bulktag.config import Settings
from bulktag.errors import (
    EXIT_BLOCKED,
    EXIT_EXPORT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
)
from bulktag.progress import Progress
from bulktag.store import JOB_DONE, Counts, Job, JobState, Store, new_owner_token

log = structlog.get_logger("bulktag.runs")


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """--export-on-finish: where a job's report goes when it ends."""

    destination: str
    region: str | None = None
    kms_key_arn: str | None = None
    format: str = "csv"

    def to_json(self) -> dict[str, Any]:
        return {"destination": self.destination, "region": self.region,
                "kms_key_arn": self.kms_key_arn, "format": self.format}


def export_spec(destination: str | None, region: str | None,
                kms_key_arn: str | None) -> ExportSpec | None:
    """The checked --export-on-finish spec (None without one); UsageError when wrong."""
    from bulktag.app.export import parse_destination

    if not destination:
        if region or kms_key_arn:
            raise UsageError("--export-region and --export-kms-key-arn need --export-on-finish")
        return None
    try:
        parsed = parse_destination(destination)
    except ValueError as exc:
        raise UsageError(f"--export-on-finish: {exc}") from None
    if parsed.bucket is None and (region or kms_key_arn):
        raise UsageError("--export-region and --export-kms-key-arn apply only to s3:// "
                         "destinations")
    return ExportSpec(destination, region, kms_key_arn)


@dataclass(frozen=True, slots=True)
class EngineRun:
    finished: bool  #: ran out of work (False: interrupted)
    blocked: Any = None  #: LeaseHolders when `wait_for_leases=False` stopped at others' leases


@dataclass
class RunResult:
    statuses: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    blocked: Any = None
    exit_code: int = EXIT_OK


async def run_engine(
    store: Store, settings: Settings, job_ids: set[int] | None, *, progress_job: int | None,
    clients: Any = None, seen: set[int] | None = None, wait_for_leases: bool = True,
) -> EngineRun:
    """Run jobs to the end with signal handling and, for one job, a progress bar. `seen`
    collects the ids of the jobs this run worked on."""
    from bulktag.engine import (  # aiobotocore: ~0.2 s to import, which status never needs
        Engine,
        settle_gc,
    )

    engine = Engine(store, settings, owner=new_owner_token(), job_ids=job_ids, clients=clients,
                    wait_for_leases=wait_for_leases)
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
            settle_gc()
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
    return EngineRun(finished and hits == 0, engine.blocked)



async def remember_export(store: Store, spec: ExportSpec | None,
                          job_ids: set[int] | None) -> None:
    """Keep --export-on-finish in the jobs' options before running them, so a run that
    crashes still exports from the next `bulktag run`. Without job ids: every unfinished job."""
    if spec is None:
        return
    ids = job_ids or {j.id for j in await store.list_jobs() if j.state not in JOB_DONE}
    for j in sorted(ids):
        await store.merge_job_options(j, {"export_on_finish": spec.to_json()})


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
    from bulktag.app.export import ExportError, export_report, parse_destination

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
        log.error("export_failed", job=job.id, destination=spec["destination"], error=str(exc))
        return {"destination": spec["destination"], "error": str(exc)}
    await store.merge_job_options(job.id, {"exported": {
        "spec": spec, "finished_at": job.finished_at, "manifest": exported.manifest_location,
        "at": time.time()}})
    return {"destination": spec["destination"], "manifest": exported.manifest_location}



async def finish_run(store: Store, settings: Settings, job_ids: set[int] | None, *,
                     export: ExportSpec | None = None, clients: Any = None,
                     wait_for_leases: bool = True) -> RunResult:
    """Run the jobs (every runnable one without ids) to the end, export those due, and say
    how it ended: each job's status and the exit code."""
    await remember_export(store, export, job_ids)
    progress_job = next(iter(job_ids)) if job_ids and len(job_ids) == 1 else None
    seen: set[int] = set()
    run = await run_engine(store, settings, job_ids, progress_job=progress_job,
                           clients=clients, seen=seen, wait_for_leases=wait_for_leases)
    # `bulktag run` with no JOB answers for the jobs it worked, not the store's whole history.
    # ... and for finished jobs whose export is still due (their bucket was missing, say).
    ids = sorted(job_ids) if job_ids else sorted(
        seen | {j.id for j in await store.list_jobs() if export_due(j)})
    result = RunResult([await job_status(store, j, settings) for j in ids],
                       interrupted=not run.finished, blocked=run.blocked)
    export_failed = False
    if run.finished:  # after Ctrl-C, stop now: the next `bulktag run` exports what is due
        for st in result.statuses:
            st_export = await export_if_due(store, settings, st["job"])
            if st_export is not None:
                st["export"] = st_export
                export_failed = export_failed or "error" in st_export
    if not run.finished:
        result.exit_code = EXIT_INTERRUPTED
        return result
    if run.blocked is not None:
        result.exit_code = EXIT_BLOCKED
        return result
    code = EXIT_OK
    for st in result.statuses:
        counts = Counts({k: v for k, v in st["counts"].items()})
        code = max(code, exit_code_for(counts, st["state"]))
        if any(w["state"] == "failed" for w in st.get("discovery") or []):
            code = max(code, EXIT_FAILED)  # part of the query was never read
    result.exit_code = max(code, EXIT_EXPORT) if export_failed else code
    return result


async def submit_and_run(
    load: Callable[..., Awaitable[Submitted]], store: Store, settings: Settings,
) -> tuple[Submitted, RunResult | None]:
    """Submit (`load(on_workable=...)`, a `submit` call) and run the job in this process. A
    source short enough to be all or nothing is read first (None: the caller runs it then);
    a longer one's job runs from the moment its first rows are in, while the rest is read.
    A refusal or interruption of the load raises once the run has stopped (the job is then
    paused, so the run ends with what was in flight)."""
    workable: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_workable(job_id: int) -> None:
        if not workable.done():
            workable.set_result(job_id)

    loading = asyncio.ensure_future(load(on_workable=on_workable))
    try:
        either: list[asyncio.Future[Any]] = [loading, workable]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not workable.done():
            return loading.result(), None  # read whole (or refused whole) before any run
        job_id = workable.result()
        run = await finish_run(store, settings, {job_id})
        if not loading.done():  # the run stopped first (a signal, a pause, a blocked run)
            loading.cancel()
        try:
            return await loading, run
        except LoadStopped as stopped:  # the job ended (failed, cancelled): its run says how
            return stopped.result, run
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this command is being cancelled
            # The load was stopped because the run ended first: the job is paused with what
            # it holds (the same command continues it); the run says how it stood.
            return Submitted(job_id), run
    finally:
        if not loading.done():
            loading.cancel()
            await asyncio.wait([loading])
        workable.cancel()
