"""The dashboard's routes: pages, the JSON API behind them, downloads and actions.

Server-rendered Jinja2 templates shipped in this package (autoescape on for every template,
so an ARN, a tag, a job name or an AWS error message is text, whatever it holds), plus one
small inline script that polls the JSON API to update the page without a reload and posts
actions with the token. Nothing is fetched from the internet; there is no build step.

Every read goes through the store's contract and reads counters, samples and indexes, never a
scan of a job's items: a job's status is `app.jobs.job_status` (the dict `bulktag status --json`
prints, with its per account and region table and top errors with advice), the chart reads
`samples`, the latest failures read `last_failures`. Only the report downloads stream items,
a page at a time, as `bulktag report` does. Actions go through `control.control_job`, the
function the CLI shares; `security.py` decides who may call them.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import jinja2
import structlog
from aiohttp import web

from bulktag.app.report import build_manifest, manifest_bytes, report_chunks, rows_file_name
from bulktag.app.steering import (
    ACTIONS,
    ControlError,
    JobNotFound,
    check_job_id,
    check_priority,
    control_job,
    why_not,
)
from bulktag.arn import Shard
from bulktag.config import Settings
from bulktag.errors import JobBusy, UsageError
from bulktag.store import JOB_DONE, Job, Store, StoreError
from bulktag.web.dashboard import chart as charts
from bulktag.web.dashboard.security import check_action, new_nonce, security_headers

RECENT_FINISHED = 30  # finished jobs listed on / after every unfinished one
LAST_FAILURES = 20
POLL_MS = 2000
REPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ThrottleSource = Callable[[], Mapping[tuple[Shard, str], int]]  # (shard, route) -> throttles

log = structlog.get_logger("bulktag.dashboard")

#: `?failed_only=` values (absent or empty: all rows)
FLAGS = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True,
         "yes": True}
STORE_AWAY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>bulktag: the store does not answer</title></head>
<body><h1>The store does not answer</h1><p>{reason}</p><p>The workers wait for it and carry
on by themselves; this page tries again every 5 seconds.</p></body></html>
"""
NOT_FOUND_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bulktag: no such job</title></head>
<body><h1>No such job</h1><p>There is no job with this number. <a href="/">All jobs</a></p>
</body></html>
"""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bulktag.web.dashboard", "templates"),
        autoescape=True,  # every template, .svg included: no value reaches a page unescaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["duration"] = _duration
    env.filters["clock"] = _clock
    env.filters["number"] = lambda n: f"{n:,}" if isinstance(n, int) else n
    return env


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _clock(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def progress(counts: Mapping[str, int], total: int) -> list[dict[str, Any]]:
    """The stacked progress bar's segments in percent: succeeded, skipped, failed (with
    invalid), cancelled, open (pending + leased)."""
    parts = [("succeeded", counts.get("succeeded", 0)), ("skipped", counts.get("skipped", 0)),
             ("failed", counts.get("failed", 0) + counts.get("invalid", 0)),
             ("cancelled", counts.get("cancelled", 0)),
             ("open", counts.get("pending", 0) + counts.get("leased", 0))]
    out, x = [], 0.0
    for name, n in parts:
        width = 100.0 * n / total if total else 0.0
        out.append({"name": name, "count": n, "x": round(x, 3), "width": round(width, 3)})
        x += width
    return out


class Dashboard:
    """The dashboard over one store. `throttles` (optional) gives this process's throttle
    counts per shard (the daemon's engine metrics); `settings` is read on every request, so a
    SIGHUP that changes it is seen at once."""

    def __init__(self, store: Store, settings: Settings, *,
                 throttles: ThrottleSource | None = None) -> None:
        self.store = store
        self.settings = settings
        self.throttles = throttles
        self.templates = _environment()

    def register(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._headers)
        app.middlewares.append(self._store_away)
        add = app.router.add_get
        add("/", self.index)
        add("/jobs/{job:\\d+}", self.job_page)
        add("/jobs/{job:\\d+}/chart.svg", self.chart_svg)
        add("/jobs/{job:\\d+}/report.{fmt:csv|jsonl}", self.download_report)
        add("/jobs/{job:\\d+}/manifest.json", self.download_manifest)
        add("/api/jobs", self.api_jobs)
        add("/api/jobs/{job:\\d+}", self.api_job)
        add("/api/workers", self.api_workers)
        add("/api/sync-rules", self.api_sync_rules)
        app.router.add_post("/api/jobs/{job:\\d+}/{action}", self.api_action)

    # -- shared ----------------------------------------------------------------------------

    @web.middleware
    async def _store_away(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        """A store that does not answer (a database restarting) is a 503 saying so, as
        `/healthz` is degraded meanwhile: never a 500 with a traceback in the log."""
        try:
            return await handler(request)
        except StoreError as exc:
            log.warning("dashboard_store_unreachable", path=request.path, error=str(exc))
            if request.path.startswith("/api/"):
                return web.json_response({"error": f"the store does not answer: {exc}"},
                                         status=503)
            return web.Response(text=STORE_AWAY_PAGE.format(reason=html.escape(str(exc))),
                                content_type="text/html", status=503)

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        # Pages set their own (with their script nonce) first; everything else gets these.
        for name, value in security_headers(None).items():
            response.headers.setdefault(name, value)

    def _page(self, request: web.Request, template: str, **context: Any) -> web.Response:
        nonce = new_nonce()
        body = self.templates.get_template(template).render(
            nonce=nonce, poll_ms=POLL_MS, actions_enabled=bool(self.settings.ui_token),
            **context)
        return web.Response(text=body, content_type="text/html", charset="utf-8",
                            headers=security_headers(nonce))

    async def _job(self, request: web.Request, *, page: bool = False) -> Job:
        """The job of the URL; 404 (an HTML page for a browser's page, else JSON) when there
        is none, or the number is one no store can hold."""
        try:
            job_id = check_job_id(request.match_info["job"])
        except UsageError:
            job = None
        else:
            job = await self.store.get_job(job_id)
        if job is None:
            if page:
                raise web.HTTPNotFound(text=NOT_FOUND_PAGE, content_type="text/html",
                                       headers=security_headers(None))
            raise web.HTTPNotFound(text=json.dumps({"error": "no such job"}),
                                   content_type="application/json")
        return job

    # -- data ------------------------------------------------------------------------------

    async def job_summary(self, job_id: int) -> dict[str, Any]:
        """`bulktag status --json` for the job, plus the progress bar's segments."""
        from bulktag.app.jobs import job_status  # the CLI's status dict: one definition of "status"

        status = await job_status(self.store, job_id, self.settings)
        status["progress"] = progress(status["counts"], status["total"])
        status["failures"] = status["counts"]["failed"] + status["counts"]["invalid"]
        return status

    async def jobs(self) -> list[dict[str, Any]]:
        """Every unfinished job, then the RECENT_FINISHED latest finished ones, newest first."""
        listed = sorted(await self.store.list_jobs(), key=lambda j: -j.id)
        shown = [j for j in listed if j.state not in JOB_DONE]
        shown += [j for j in listed if j.state in JOB_DONE][:RECENT_FINISHED]
        shown.sort(key=lambda j: -j.id)
        return [await self.job_summary(j.id) for j in shown if j.state != "preparing"]

    async def job_detail(self, job: Job) -> dict[str, Any]:
        detail = await self.job_summary(job.id)
        thrown = dict(self.throttles()) if self.throttles else None
        for row in detail["shards"]:
            shard = (Shard(row["partition"], row["account"], row["region"])
                     if row["account"] is not None else None)
            row["throttles"] = (thrown.get((shard, row["route"]), 0)
                                if thrown is not None and shard else None)
        detail["throttles_known"] = thrown is not None
        samples = await self.store.samples(job.id)
        detail["throughput"] = [{"at": at, "rate": round(rate, 2)}
                                for at, rate in charts.throughput(samples)]
        detail["samples"] = len(samples)
        detail["samples_since"] = samples[0][0] if samples else None
        detail["sample_seconds"] = self.settings.sample_seconds
        detail["last_failures"] = [
            {"arn": r.arn, "account": r.account, "region": r.region, "state": r.state,
             "attempts": r.attempts, "error_code": r.error_code, "http_status": r.http_status,
             "message": r.message, "finished_at": r.finished_at}
            for r in await self.store.last_failures(job.id, LAST_FAILURES)]
        read_only = None if self.settings.ui_token else \
            "read-only: actions need ui_token set for the daemon"
        # every action's reason not to apply now (None: it does), for the buttons
        detail["actions"] = {a: read_only or why_not(a, job.state, detail["failures"])
                             for a in ACTIONS}
        detail["tags"] = job.options.tags
        detail["untag_keys"] = job.options.keys
        detail["created_at"] = job.created_at
        detail["started_at"] = job.started_at
        detail["finished_at"] = job.finished_at
        base = f"/jobs/{job.id}"
        detail["links"] = {"report_csv": f"{base}/report.csv",
                           "report_jsonl": f"{base}/report.jsonl",
                           "failed_csv": f"{base}/report.csv?failed_only=1",
                           "manifest": f"{base}/manifest.json",
                           "chart": f"{base}/chart.svg", "page": base}
        return detail

    async def workers(self) -> list[dict[str, Any]]:
        now = time.time()
        holders = await self.store.shard_holders()
        shards: dict[str, int] = {}
        for owner, _expiry in holders.values():
            shards[owner] = shards.get(owner, 0) + 1
        stale = self.settings.owner_stale_seconds
        return [{"owner": w.owner, "host": w.host, "pid": w.pid, "started_at": w.started_at,
                 "heartbeat_at": w.heartbeat_at,
                 "heartbeat_age_seconds": round(max(0.0, now - w.heartbeat_at), 1),
                 "alive": now - w.heartbeat_at <= stale, "shards": shards.get(w.owner, 0)}
                for w in await self.store.workers()]

    async def sync_rules(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in await self.store.list_sync_rules()]

    def chart(self, throughput: list[dict[str, Any]], since: float | None) -> str:
        built = charts.build_chart([(p["at"], p["rate"]) for p in throughput], since=since)
        return self.templates.get_template("chart.svg").render(
            chart=built, sample_seconds=self.settings.sample_seconds)

    # -- pages -----------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return self._page(request, "index.html", jobs=await self.jobs(),
                          workers=await self.workers(), rules=await self.sync_rules(),
                          now=time.time())

    async def job_page(self, request: web.Request) -> web.Response:
        job = await self._job(request, page=True)
        detail = await self.job_detail(job)
        return self._page(request, "job.html", job=detail,
                          chart=self.chart(detail["throughput"], detail["samples_since"]))

    async def chart_svg(self, request: web.Request) -> web.Response:
        job = await self._job(request)
        samples = await self.store.samples(job.id)
        points = charts.throughput(samples)
        since = samples[0][0] if samples else None
        return web.Response(text=self.chart([{"at": at, "rate": r} for at, r in points], since),
                            content_type="image/svg+xml", charset="utf-8")

    # -- JSON API --------------------------------------------------------------------------

    async def api_jobs(self, request: web.Request) -> web.Response:
        return web.json_response({"jobs": await self.jobs(),
                                  "actions_enabled": bool(self.settings.ui_token)})

    async def api_job(self, request: web.Request) -> web.Response:
        return web.json_response(await self.job_detail(await self._job(request)))

    async def api_workers(self, request: web.Request) -> web.Response:
        return web.json_response({"workers": await self.workers()})

    async def api_sync_rules(self, request: web.Request) -> web.Response:
        return web.json_response({"sync_rules": await self.sync_rules()})

    async def api_action(self, request: web.Request) -> web.Response:
        refusal = check_action(request.headers, scheme=request.scheme, host=request.host,
                               token=self.settings.ui_token)
        if refusal is not None:
            return web.json_response({"error": refusal.message}, status=refusal.status)
        action = request.match_info["action"]
        if action not in ACTIONS:
            return web.json_response({"error": f"no action {action!r}; the actions are "
                                      f"{', '.join(ACTIONS)}"}, status=404)
        try:
            job_id = check_job_id(request.match_info["job"])
        except UsageError:
            return web.json_response({"error": "no such job"}, status=404)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        priority = body.get("priority")
        code = body.get("code")
        if priority is not None:
            try:
                priority = check_priority(priority)
            except UsageError as exc:
                return web.json_response({"error": str(exc)}, status=400)
        if code is not None and not isinstance(code, str):
            return web.json_response({"error": "code must be a string"}, status=400)
        try:
            result = await control_job(self.store, job_id, action, code=code or None,
                                       priority=priority)
        except JobNotFound as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except (ControlError, JobBusy) as exc:  # not now: the message says why, and when
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(result.to_json())

    # -- downloads -------------------------------------------------------------------------

    async def download_report(self, request: web.Request) -> web.StreamResponse:
        job = await self._job(request)
        fmt = request.match_info["fmt"]
        flag = request.query.get("failed_only", "").lower()
        if flag not in FLAGS:
            raise web.HTTPBadRequest(text=json.dumps({
                "error": f"failed_only must be one of {', '.join(sorted(f for f in FLAGS if f))}"
                f", not {flag!r}"}), content_type="application/json")
        failed_only = FLAGS[flag]
        name = f"job-{job.id}-{rows_file_name(fmt, failed_only)}"
        response = web.StreamResponse(headers={
            "Content-Type": REPORT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="{name}"'})
        await response.prepare(request)
        async for chunk, _rows in report_chunks(self.store, job.id, job.operation, fmt=fmt,
                                                failed_only=failed_only):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def download_manifest(self, request: web.Request) -> web.Response:
        """The report manifest (job, tags, times, counts overall, per account and region, per
        error code). Its `files` is empty: a download is streamed on its own request; exports
        (`bulktag report -o`) list their files with row counts and SHA-256."""
        job = await self._job(request)
        manifest = await build_manifest(self.store, job, [], fmt="csv", failed_only=False,
                                        destination=str(request.url.with_path(
                                            f"/jobs/{job.id}/report.csv").with_query(None)))
        return web.Response(body=manifest_bytes(manifest), headers={
            "Content-Type": "application/json; charset=utf-8",
            "Content-Disposition": f'attachment; filename="job-{job.id}-manifest.json"'})
