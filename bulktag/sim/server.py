"""The simulator's HTTP face: the Tagging API (JSON 1.1), STS and EC2 (both query protocol) on
one aiohttp port, plus plain-JSON `/_sim/...` endpoints for tests and demos.

Calls with an `X-Amz-Target` header go to the Tagging API; form-encoded calls go to EC2 when their
`Action` is one of `ec2.ACTIONS`, else to STS. Tagging API and EC2 tag calls share the same
order: count the call, spend a quota token (throttle: Tagging API ThrottledException 400, EC2
RequestLimitExceeded 503), count the ARNs sent, sleep the configured latency, maybe answer the
whole-call fault (InternalServiceException / EC2 InternalError, 500), then run the operation.

`/_sim/stats` counts calls and throttles per operation (EC2 under its action names: CreateTags,
DeleteTags, DescribeTags) and per "account/region"; `/_sim/delete` deletes resources.
"""

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
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web

from bulktag.sim import ec2, explorer, org, sts
from bulktag.sim.arns import ec2_arn
from bulktag.sim.config import DEFAULT_QUOTAS, SimConfig, apply_changes
from bulktag.sim.quota import TokenBuckets
from bulktag.sim.store import SimState
from bulktag.sim.tagging import OPERATIONS, ApiError, Caller, Context

TARGET_PREFIX = "ResourceGroupsTaggingAPI_20170126."
ORGANIZATIONS_PREFIX = "AWSOrganizationsV20161128."
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
    ec2_share: float = 0.0  # of each region's resources: EC2 snapshots, volumes and instances


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
        if {"quotas", "burst_seconds", "enforce_quotas", "ec2_buckets"} & changes.keys():
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
        if target is not None and target.startswith(ORGANIZATIONS_PREFIX):
            return await self.organizations(request, target)
        if target is not None:
            return await self.tagging(request, target)
        body = (await request.read()).decode("utf-8", errors="replace")
        params = dict(parse_qsl(body, keep_blank_values=True))
        if params.get("Action") in ec2.ACTIONS:
            return await self.ec2(request, params)
        return self.sts(request, params)

    async def organizations(self, request: web.Request, target: str) -> web.Response:
        """AWS Organizations: DescribeEffectivePolicy of the caller's account (the TAG_POLICY
        of the config's `tag_policies`), and the List calls of the organisation's tree
        (`org.py`)."""
        op = target[len(ORGANIZATIONS_PREFIX):]
        _, caller = self.caller(request)
        self.state.count_request(op, caller.account, caller.region)
        if op != "DescribeEffectivePolicy" and op not in org.LIST_OPERATIONS:
            return _aws_error("UnknownOperationException", f"Unknown operation {target}", 400)
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return _aws_error("SerializationException", "Request body is not JSON", 400)
        if op in org.LIST_OPERATIONS:
            try:
                return web.json_response(org.handle(self.config, caller.account, op, body),
                                         content_type=JSON_11)
            except org.OrgError as exc:
                return _aws_error(exc.code, exc.message, 400)
        if body.get("PolicyType") != "TAG_POLICY":
            return _aws_error("InvalidInputException", "PolicyType must be TAG_POLICY here", 400)
        account = body.get("TargetId") or caller.account
        content = self.config.tag_policies.get(account)
        if content is None:
            return _aws_error("EffectivePolicyNotFoundException",
                              f"No effective policy of type TAG_POLICY for {account}", 400)
        return web.json_response(
            {"EffectivePolicy": {"PolicyContent": content, "PolicyType": "TAG_POLICY",
                                 "TargetId": account, "LastUpdatedTimestamp": time.time()}},
            content_type=JSON_11)

    async def tagging(self, request: web.Request, target: str) -> web.Response:
        op = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        handler = OPERATIONS.get(op)
        if handler is None:
            return _aws_error("UnknownOperationException", f"Unknown operation {target}", 400)
        state, config = self.state, self.config
        key, caller = self.caller(request)
        state.count_request(op, caller.account, caller.region)
        started = time.time()
        raw = await request.read()

        if config.enforce_quotas:
            rate = config.quotas.get(op, DEFAULT_QUOTAS[op])
            if not self.buckets.take(
                (caller.account, caller.region, op), rate, rate * config.burst_seconds
            ):
                state.count_throttle(op, caller.account, caller.region)
                self._log_call(key, caller, op, started, throttled=True)
                return _aws_error("ThrottledException", "Rate exceeded", 400)
        if config.log_calls and op in CHANGE_OPERATIONS:
            try:
                return await self._answer(request, op, handler, caller, raw)
            finally:
                self._log_call(key, caller, op, started)
        return await self._answer(request, op, handler, caller, raw)

    def _log_call(self, key: str, caller: Caller, op: str, started: float,
                  throttled: bool = False) -> None:
        """`log_calls`: who sent each TagResources/UntagResources call to which shard, when
        it arrived and when it was answered (a fleet test's proof that no two workers drive
        one shard at once)."""
        if self.config.log_calls and op in CHANGE_OPERATIONS:
            self.state.call_log.append({
                "key": key, "account": caller.account, "region": caller.region,
                "operation": op, "start": started, "end": time.time(),
                "throttled": throttled})

    async def _answer(self, request: web.Request, op: str, handler: Any, caller: Caller,
                      raw: bytes) -> web.Response:
        state, config = self.state, self.config

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

        if await self.latency_then_fault():
            state.faults[op] += 1
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

    async def latency_then_fault(self) -> bool:
        """Sleep the configured latency; True if this call gets the whole-call fault."""
        config = self.config
        low, high = config.latency_ms
        if high > 0:
            await asyncio.sleep(self.ctx.rng.uniform(low, high) / 1000.0)
        return bool(config.whole_call_error_rate) and \
            self.ctx.rng.random() < config.whole_call_error_rate

    async def ec2(self, request: web.Request, params: dict[str, str]) -> web.Response:
        action = params["Action"]
        _, caller = self.caller(request)
        if action not in ec2.TAG_ACTIONS:  # DescribeRegions: not counted, throttled or faulted
            return _xml(*ec2.handle(self.ctx, caller, params))
        state, config = self.state, self.config
        state.count_request(action, caller.account, caller.region)
        if config.enforce_quotas:
            capacity, refill = config.ec2_buckets[action]
            if not self.buckets.take((caller.account, caller.region, action), refill, capacity):
                state.count_throttle(action, caller.account, caller.region)
                return _xml(503, ec2.error_xml("RequestLimitExceeded", "Request limit exceeded."))
        if action in ec2.CHANGE_ACTIONS:
            ids = ec2.resource_ids(params)
            state.arn_sends[action] += len(ids)
            for resource_id in ids:
                arn = ec2_arn(resource_id, caller.region, caller.account)
                if arn is not None:
                    state.sends[arn] += 1
        if await self.latency_then_fault():
            state.faults[action] += 1
            return _xml(500, ec2.error_xml("InternalError",
                                           "An internal error has occurred"))
        return _xml(*ec2.handle(self.ctx, caller, params))

    def sts(self, request: web.Request, params: dict[str, str]) -> web.Response:
        key, _ = self.caller(request)
        return _xml(*sts.handle(self.state, self.config, key, params))

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
                ec2_share=float(spec.get("ec2_share", 0.0)),
                cycle={str(k): [str(x) for x in v]
                       for k, v in dict(spec.get("cycle") or {}).items()},
                tag_sets=[{str(k): str(v) for k, v in dict(t).items()}
                          for t in list(spec.get("tag_sets") or [])],
                never_tagged_share=float(spec.get("never_tagged_share", 0.0)),
            )
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"bad seed request: {e}"}, status=400)
        return web.json_response({"added": added, "resources": len(self.state)})

    async def delete(self, request: web.Request) -> web.Response:
        """`{"arns": [...]}`: mark those resources deleted; answers how many were."""
        try:
            spec = await request.json()
            arns = spec["arns"]
            if not isinstance(arns, list) or not all(isinstance(a, str) for a in arns):
                raise TypeError("arns must be a list of strings")
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"bad delete request: {e}"}, status=400)
        deleted = sum(self.state.delete(arn) for arn in arns)
        return web.json_response({"deleted": deleted})

    async def list_resources(self, request: web.Request) -> web.Response:
        """Resource Explorer's ListResources over the organisation-wide view (every account
        and region the simulator holds, never-tagged resources included)."""
        _, caller = self.caller(request)
        self.state.count_request("ListResources", caller.account, caller.region)
        if self.config.enforce_quotas:
            rate = self.config.quotas.get("ListResources", DEFAULT_QUOTAS["ListResources"])
            if not self.buckets.take((caller.account, caller.region, "ListResources"), rate,
                                     rate * self.config.burst_seconds):
                self.state.count_throttle("ListResources", caller.account, caller.region)
                return _aws_error("ThrottlingException", "Rate exceeded", 429)
        try:
            body = json.loads(await request.read() or b"{}")
            return web.json_response(explorer.list_resources(
                self.state, self.config, caller.account, caller.region, body))
        except ValueError:
            return _aws_error("ValidationException", "Request body is not JSON", 400)
        except explorer.ExplorerError as exc:
            return _aws_error(exc.code, exc.message, exc.status)

    async def calls(self, request: web.Request) -> web.Response:
        """The call log (`log_calls`): one object per TagResources/UntagResources call."""
        return web.json_response({"calls": self.state.call_log})

    async def report(self, request: web.Request) -> web.Response:
        """The last compliance report's CSV (what StartReportCreation would have written to
        its bucket), 404 when none was made."""
        report = self.state.report
        if report is None:
            return web.json_response({"error": "no report"}, status=404)
        return web.Response(text=report["csv"], content_type="text/csv",
                            headers={"X-Report-Location": report["location"]})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/", self.root)
        app.router.add_get("/_sim/stats", self.stats)
        app.router.add_get("/_sim/tags", self.tags)
        app.router.add_get("/_sim/config", self.get_config)
        app.router.add_post("/_sim/config", self.set_config)
        app.router.add_post("/_sim/seed", self.seed)
        app.router.add_post("/_sim/delete", self.delete)
        app.router.add_get("/_sim/report", self.report)
        app.router.add_get("/_sim/calls", self.calls)
        app.router.add_post("/ListResources", self.list_resources)
        return app


def _xml(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/xml")


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

    async def __aenter__(self) -> Self:
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
    simulator = Simulator(config or SimConfig(), state if state is not None else SimState())
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
        state.seed(seed.accounts, seed.regions, seed.per_region, seed.tags,
                   ec2_share=seed.ec2_share)
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
