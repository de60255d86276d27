"""The simulator's HTTP face: the Tagging API (JSON 1.1) and STS (query) on one aiohttp port,
plus plain-JSON `/_sim/...` endpoints for tests and demos."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bulktag.sim import sts
from bulktag.sim.config import DEFAULT_QUOTAS, SimConfig, apply_changes
from bulktag.sim.quota import TokenBuckets
from bulktag.sim.store import SimState
from bulktag.sim.tagging import OPERATIONS, ApiError, Caller, Context

TARGET_PREFIX = "ResourceGroupsTaggingAPI_20170126."
JSON_11 = "application/x-amz-json-1.1"
DEFAULT_REGION = "us-east-1"
CHANGE_OPERATIONS = frozenset({"TagResources", "UntagResources"})


@dataclass
class SeedSpec:
    """Synthetic resources to create at start: `per_region` for every (account, region)."""

    accounts: list[str]
    regions: list[str]
    per_region: int
    tags: dict[str, str] = field(default_factory=dict)


def credentials_of(authorization: str | None) -> tuple[str, str]:
    """(access key id, region) from a SigV4 Authorization header; the signature is not checked."""
    if not authorization:
        return "", DEFAULT_REGION
    start = authorization.find("Credential=")
    if start < 0:
        return "", DEFAULT_REGION
    end = authorization.find(",", start)
    scope = authorization[start + 11 : end if end >= 0 else None].strip().split("/")
    key = scope[0]
    region = scope[2] if len(scope) >= 3 and scope[2] else DEFAULT_REGION
    return key, region


class Simulator:
    """Request handling around one SimState and one (mutable) SimConfig."""

    def __init__(self, config: SimConfig, state: SimState) -> None:
        self.config = config
        self.state = state
        self.buckets = TokenBuckets()
        self.ctx = Context(state, config, random.Random(config.seed), time.monotonic)

    def reconfigure(self, changes: dict[str, Any]) -> None:
        """Apply JSON-shaped config changes; quota changes refill every bucket."""
        apply_changes(self.config, changes)
        if {"quotas", "burst_seconds", "enforce_quotas"} & changes.keys():
            self.buckets.reset()
        if "seed" in changes:
            self.ctx.rng.seed(self.config.seed)

    def caller(self, request: web.Request) -> tuple[str, Caller]:
        key, region = credentials_of(request.headers.get("Authorization"))
        session = self.state.sts_sessions.get(key)
        account = (
            session.account if session else sts.account_of_key(key, self.config.default_account)
        )
        return key, Caller(account, region)

    async def root(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target")
        if target is None:
            return await self.sts(request)
        return await self.tagging(request, target)

    async def tagging(self, request: web.Request, target: str) -> web.Response:
        op = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        handler = OPERATIONS.get(op)
        if handler is None:
            return _aws_error("UnknownOperationException", f"Unknown operation {target}", 400)
        state, config = self.state, self.config
        _, caller = self.caller(request)
        state.requests[op] += 1
        raw = await request.read()

        if config.enforce_quotas:
            rate = config.quotas.get(op, DEFAULT_QUOTAS[op])
            if not self.buckets.take(
                (caller.account, caller.region, op), rate, rate * config.burst_seconds
            ):
                state.throttled[op] += 1
                return _aws_error("ThrottledException", "Rate exceeded", 400)

        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return _aws_error("SerializationException", "Request body is not a JSON object", 400)

        if op in CHANGE_OPERATIONS:
            arns = body.get("ResourceARNList")
            if isinstance(arns, list):
                state.arn_sends[op] += len(arns)
                for arn in arns:
                    if isinstance(arn, str):
                        state.sends[arn] += 1

        low, high = config.latency_ms
        if high > 0:
            await asyncio.sleep(self.ctx.rng.uniform(low, high) / 1000.0)
        if config.whole_call_error_rate and self.ctx.rng.random() < config.whole_call_error_rate:
            return _aws_error("InternalServiceException", "Internal service error", 500)
        if config.expired_token_rate and op in ("TagResources", "UntagResources") and \
                self.ctx.rng.random() < config.expired_token_rate:
            return _aws_error("ExpiredTokenException",
                              "The security token included in the request is expired", 400)
        try:
            result = handler(self.ctx, caller, body)
        except ApiError as e:
            return _aws_error(e.code, e.message, e.status)
        return web.Response(
            body=json.dumps(result).encode(),
            headers={"Content-Type": JSON_11, "x-amzn-RequestId": str(uuid.uuid4())},
        )

    async def sts(self, request: web.Request) -> web.Response:
        key, _ = self.caller(request)
        params = dict(parse_qsl((await request.read()).decode(), keep_blank_values=True))
        status, xml = sts.handle(self.state, self.config, key, params)
        return web.Response(status=status, text=xml, content_type="text/xml")

    # ------------------------------------------------------------ /_sim endpoints

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats)

    async def tags(self, request: web.Request) -> web.Response:
        tags = self.state.tags(request.query.get("arn", ""))
        if tags is None:
            return web.json_response({"error": "no such resource"}, status=404)
        return web.json_response(tags)

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.to_json())

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            self.reconfigure(changes)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(self.config.to_json())

    async def seed(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            added = self.state.seed(
                list(spec["accounts"]),
                list(spec["regions"]),
                int(spec["per_region"]),
                dict(spec.get("tags") or {}),
            )
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"bad seed request: {e}"}, status=400)
        return web.json_response({"added": added, "resources": len(self.state)})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/", self.root)
        app.router.add_get("/_sim/stats", self.stats)
        app.router.add_get("/_sim/tags", self.tags)
        app.router.add_get("/_sim/config", self.get_config)
        app.router.add_post("/_sim/config", self.set_config)
        app.router.add_post("/_sim/seed", self.seed)
        return app


def _aws_error(code: str, message: str, status: int) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"__type": code, "message": message}).encode(),
        headers={
            "Content-Type": JSON_11,
            "x-amzn-RequestId": str(uuid.uuid4()),
            "x-amzn-ErrorType": code,
        },
    )


class RunningSimulator:
    """A simulator listening on `url`; close it, or use it as `async with`."""

    def __init__(self, runner: web.AppRunner, simulator: Simulator, host: str, port: int) -> None:
        self._runner = runner
        self._simulator = simulator
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    @property
    def state(self) -> SimState:
        return self._simulator.state

    @property
    def config(self) -> SimConfig:
        return self._simulator.config

    def reconfigure(self, **changes: Any) -> None:
        """Change the running config, as POST /_sim/config does (JSON-shaped values)."""
        self._simulator.reconfigure(changes)

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_simulator(
    config: SimConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    state: SimState | None = None,
) -> RunningSimulator:
    """Start listening on host:port (0 picks a free port) and return at once."""
    simulator = Simulator(config or SimConfig(), state or SimState())
    runner = web.AppRunner(simulator.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    return RunningSimulator(runner, simulator, host, bound)


async def serve_forever(
    config: SimConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: SeedSpec | None = None,
) -> None:
    """Seed, listen, print `bulktag-sim listening on URL`, then run until SIGTERM/SIGINT or
    cancellation."""
    state = SimState()
    if seed is not None:
        state.seed(seed.accounts, seed.regions, seed.per_region, seed.tags)
    sim = await start_simulator(config, host, port, state=state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        print(f"bulktag-sim listening on {sim.url}", flush=True)
        sys.stdout.flush()
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await sim.close()
