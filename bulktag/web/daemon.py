"""`bulktag daemon`: the engine over every job until stopped, tag-sync rules on their interval,
and /healthz and /metrics on --listen.

- Jobs: Engine(follow=True) over the whole store, so jobs other processes submit (`bulktag tag
  --detach`, `bulktag submit`) start on the next dispatcher tick, best priority first, fairly
  among equals; `bulktag priority` takes effect on the next tick too.
- Several daemons may share one store: each item is leased by one owner at a time, and a rule's
  evaluation is claimed by moving its next_run_at forward in one UPDATE, so work is split,
  never done twice. A daemon that dies has its leases returned by the others.
- SIGTERM / SIGINT: stop claiming, let in-flight batches finish within grace_seconds, release
  every other lease, exit 0 (a requested stop is a clean exit; a second signal stops at once).
  An engine that fails exits 1 (systemd's Restart=on-failure restarts it).
- SIGHUP: re-read the config file and environment and apply what can change live (RELOADABLE).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bulktag.api_limits import route_of_operation
from bulktag.app.sync_rules import evaluate
from bulktag.arn import Shard
from bulktag.config import ConfigError, Settings
from bulktag.engine import Engine, settle_gc
from bulktag.engine.metrics import BulktagCollector, DaemonFigures, Scrape
from bulktag.errors import BulktagError
from bulktag.logs import configure_logging
from bulktag.store import Store, SyncRule, new_owner_token

log = structlog.get_logger("bulktag.web.daemon")

EXIT_OK, EXIT_ENGINE_FAILED = 0, 1
# Settings a SIGHUP applies to the running daemon. Rates reach new limiters: the current ones
# are dropped, so every shard picks up the new ceiling on its next claim. Everything else (db,
# endpoints, accounts, roles, concurrency) needs a restart.
RELOADABLE = ("max_rate", "quotas", "log_level", "log_format", "grace_seconds", "max_attempts",
              "failure_ratio", "failure_min_items", "backoff_base", "backoff_cap")
RATE_SETTINGS = ("max_rate", "quotas")
HEALTH_TICK_SECONDS = 30.0  # the dispatcher ticks every 0.25 s; this long silent is stuck
SYNC_POLL_SECONDS = 1.0
SYNC_CONCURRENCY = 4


class ListenError(BulktagError, ValueError):
    pass


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host, int(port)


class Daemon:
    def __init__(self, store: Store, settings: Settings, *,
                 reload_settings: Callable[[], Settings] | None = None,
                 listen: tuple[str, int] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.reload_settings = reload_settings
        self.listen = listen
        self.owner = new_owner_token()
        self.engine = Engine(store, settings, owner=self.owner, follow=True)
        self.started = time.time()
        self.reloads = 0
        self.sync_evaluations: dict[str, int] = {"ACTIVE": 0, "ERROR": 0}
        self.sync_requests = 0
        self.url: str | None = None
        self._stop = asyncio.Event()
        self._engine_task: asyncio.Task[bool] | None = None
        self._evaluations: dict[str, asyncio.Task[None]] = {}
        self._collector = BulktagCollector()
        self.registry = CollectorRegistry()  # this daemon's own: never the process-wide default
        self.registry.register(self._collector)
        self.log = log.bind(owner=self.owner)

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()
        self.engine.request_stop()
        for task in self._evaluations.values():
            task.cancel()  # an evaluation only reads until its end: redone next interval

    def reload(self) -> dict[str, Any]:
        """Apply RELOADABLE settings from a fresh read of the config; the rest is ignored."""
        if self.reload_settings is None:
            return {}
        try:
            fresh = self.reload_settings()
        except ConfigError as exc:
            self.log.error("config_reload_failed", error=str(exc), hint="kept the old settings")
            return {}
        changed = {}
        for name in RELOADABLE:
            new = getattr(fresh, name)
            if new != getattr(self.settings, name):
                setattr(self.settings, name, new)
                changed[name] = new
        if any(name in changed for name in RATE_SETTINGS):
            self.engine.limiters.clear()
        if "log_level" in changed or "log_format" in changed:
            configure_logging(self.settings.log_format, self.settings.log_level)
        ignored = sorted(name for name in ("db", "endpoint_url", "profile", "role_name",
                                           "accounts", "in_flight_per_shard",
                                           "max_open_requests")
                         if getattr(fresh, name) != getattr(self.settings, name))
        self.reloads += 1
        self.log.info("config_reloaded", changed=changed,
                      needs_restart=ignored or None)
        return changed

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        hits = 0

        def on_stop(signum: int) -> None:
            nonlocal hits
            hits += 1
            if hits == 1:
                self.log.warning("stopping", signal=signal.Signals(signum).name,
                                 grace_seconds=self.settings.grace_seconds,
                                 hint="again to stop at once")
                self.request_stop()
            else:  # in-flight calls cancelled; outcomes still written, leases released
                self.engine.stop_now()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        others = [w.owner for w in await self.store.workers()]
        runner = await self._serve() if self.listen else None
        self.log.info("daemon_started", db=self.store.path, url=self.url, pid=os.getpid(),
                      sharing_with=others or None)
        settle_gc()
        self._engine_task = asyncio.create_task(self.engine.run(), name="engine")
        syncer = asyncio.create_task(self._sync_loop(), name="sync")
        sampler = asyncio.create_task(self._sample_loop(), name="samples")
        code = EXIT_OK
        try:
            await self._engine_task
            if not self._stop.is_set():  # follow=True returns only when asked to stop
                code = EXIT_ENGINE_FAILED
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
        except Exception:  # logged with its traceback; systemd restarts us
            self.log.exception("engine_failed")
            code = EXIT_ENGINE_FAILED
        finally:
            self._stop.set()
            syncer.cancel()
            sampler.cancel()
            await asyncio.gather(syncer, sampler, *self._evaluations.values(),
                                 return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        self.log.info("daemon_stopped", exit_code=code)
        return code

    async def _sync_loop(self) -> None:
        while not self._stop.is_set():
            try:
                for name in await self.store.due_sync_rules(time.time()):
                    if name in self._evaluations or len(self._evaluations) >= SYNC_CONCURRENCY:
                        continue
                    rule = await self.store.claim_sync_rule(name)
                    if rule is None:
                        continue  # another daemon took it
                    task = asyncio.create_task(self._evaluate(rule), name=f"sync-{name}")
                    self._evaluations[name] = task
                    task.add_done_callback(functools.partial(self._evaluation_done, name))
            except Exception:  # a store hiccup: try again next poll
                self.log.exception("sync_poll_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SYNC_POLL_SECONDS)

    def _evaluation_done(self, name: str, _task: asyncio.Task[None]) -> None:
        self._evaluations.pop(name, None)

    async def _evaluate(self, rule: SyncRule) -> None:
        try:
            ev = await evaluate(self.store, self.settings, self.engine.clients, rule,
                                lambda shard: self.engine.limiter(shard, "GetResources"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the rule shows it; the daemon goes on
            self.log.exception("sync_rule_crashed", rule=rule.name)
            await self.store.finish_sync_rule(rule, "ERROR", f"evaluation failed: {exc!r}",
                                               0, 0, [])
            self.sync_evaluations["ERROR"] += 1
            return
        self.sync_requests += ev.requests
        self.sync_evaluations[ev.status] += 1
        self.engine.wake()  # new jobs: look now, not at the next tick

    # -- dashboard ---------------------------------------------------------------------------

    async def _sample_loop(self) -> None:
        """Throughput samples of live jobs for the dashboard's chart, from the counters."""
        from bulktag.web.dashboard import sample_jobs

        live: set[int] = set()
        while not self._stop.is_set():
            interval = self.settings.sample_seconds
            try:
                live = await sample_jobs(self.store, live, interval=interval)
            except Exception:  # a store hiccup: a gap in the chart, no more
                self.log.exception("sampling_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def _throttles_by_shard(self) -> dict[tuple[Shard, str], int]:
        """Throttles this daemon met per (shard, route)."""
        by_shard: dict[tuple[Shard, str], int] = {}
        for (operation, shard), n in self.engine.metrics.throttles.items():
            key = (shard, route_of_operation(operation))
            by_shard[key] = by_shard.get(key, 0) + n
        return by_shard

    # -- HTTP --------------------------------------------------------------------------------

    async def _serve(self) -> web.AppRunner:
        assert self.listen is not None
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        from bulktag.web.dashboard import Dashboard

        Dashboard(self.store, self.settings, throttles=self._throttles_by_shard).register(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.listen[0], self.listen[1])
        await site.start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return runner

    async def health(self) -> tuple[bool, dict[str, Any]]:
        problems = []
        try:
            await asyncio.wait_for(self.store.ping(), 5)
        except Exception as exc:
            problems.append(f"store does not answer: {exc!r}")
        engine = self.engine.snapshot()
        age = time.monotonic() - engine.last_tick
        if age > HEALTH_TICK_SECONDS:
            problems.append(f"engine loop silent for {age:.0f} s")
        if self._engine_task is None or self._engine_task.done():
            problems.append("engine not running")
        if self._stop.is_set():
            problems.append("stopping")
        return not problems, {
            "status": "ok" if not problems else "unhealthy", "problems": problems,
            "owner": self.owner, "pid": os.getpid(), "db": self.store.path,
            "uptime_seconds": round(time.time() - self.started, 1),
            "engine_tick_age_seconds": round(age, 3), "in_flight": engine.in_flight,
            "sync_evaluations_running": len(self._evaluations),
        }

    async def healthz(self, request: web.Request) -> web.Response:
        ok, body = await self.health()
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        figures = DaemonFigures(
            up=(await self.health())[0], start_time=self.started, reloads=self.reloads,
            sync_evaluations=dict(self.sync_evaluations), sync_requests=self.sync_requests)
        scrape = Scrape(await self.store.totals(), self.engine.snapshot(), self.engine.metrics,
                        figures)
        # No await from here on: the collector reads exactly this scrape.
        self._collector.load(scrape)
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


async def run_daemon(settings: Settings, *, listen: str | None,
                     reload_settings: Callable[[], Settings] | None = None) -> int:
    address = parse_listen(listen) if listen else None
    if address and address[0] not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening_beyond_localhost", host=address[0],
                    hint="/metrics, /healthz and the dashboard pages have no authentication")
    async with await Store.open(settings.db) as store:
        daemon = Daemon(store, settings, reload_settings=reload_settings, listen=address)
        return await daemon.run()
