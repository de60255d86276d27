"""aiobotocore clients, pooled per (account, region), never created per batch.

Every client is configured by `botoconfig.client_config` (botocore's retries off: every error
reaches the engine, which classifies it once; a fixed User-Agent; one SSL context per process).

With `fast_calls` on, a Tagging API client comes wrapped in `fastcall.FastTaggingClient`: its
three hot calls go out on one aiohttp session of the pool (created in the running loop, closed
with the pool), everything else through botocore. A client botocore would send through a proxy
stays unwrapped.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiobotocore._constants import DEFAULT_KEEPALIVE_TIMEOUT
from aiobotocore.session import AioSession

from bulktag.arn import Shard
from bulktag.aws.accounts import Accounts
from bulktag.aws.botoconfig import client_config
from bulktag.aws.fast_tagging import FastTaggingClient, proxied, ssl_context_of
from bulktag.config import Settings
from bulktag.policy.access import Via

TAGGING = "resourcegroupstaggingapi"
EC2 = "ec2"


class ClientPool:
    """Tagging API and EC2 clients keyed by (service, shard), each built from its account's session
    (so with that account's credentials); `invalidate` drops one so the next call builds a
    new client with freshly resolved credentials (expired tokens). Raises AccountAccessError
    when an account cannot be reached."""

    def __init__(self, settings: Settings, session: AioSession | None = None,
                 accounts: Accounts | None = None) -> None:
        self.settings = settings
        self.accounts = accounts or Accounts(settings, session)
        self._clients: dict[tuple[str, str, str, Via | None], tuple[Any, AsyncExitStack]] = {}
        self._locks: dict[tuple[str, str, str, Via | None], asyncio.Lock] = {}
        self._retired: list[AsyncExitStack] = []
        self._http: aiohttp.ClientSession | None = None  # the fast calls' (fast_calls on)
        # The hot calls per (account, region, via): a FastTaggingClient with the account's
        # credentials around a Tagging API client per (region, session kind) that every account
        # shares (`_shared`), so a shard costs a few small objects, not a botocore client.
        self._calls: dict[tuple[str, str, Via | None], FastTaggingClient] = {}
        self._shared: dict[tuple[str, str], Any] = {}  # (kind, region) -> botocore client
        self._shared_ssl: dict[tuple[str, str], ssl.SSLContext | None] = {}
        self._shared_stacks: dict[tuple[str, str], AsyncExitStack] = {}
        # monotonic time of the last hand-out, per key of `_clients`, `_calls` and `_shared`:
        # what `release_idle` closes
        self._used: dict[Any, float] = {}

    async def tagging(self, shard: Shard, via: Via | None = None) -> Any:
        """The shard's Tagging API client (with the credentials of the job's way in, `via`):
        a `FastTaggingClient` around botocore's when `fast_calls` is on."""
        return await self._client(TAGGING, shard, via)

    async def ec2(self, shard: Shard, via: Via | None = None) -> Any:
        """The shard's EC2 client (CreateTags / DeleteTags, the `ec2` route)."""
        return await self._client(EC2, shard, via)

    async def explorer(self, shard: Shard, via: Via | None = None) -> Any:
        """A Resource Explorer client in the shard's region (ListResources over a view)."""
        return await self._client("resource-explorer-2", shard, via)

    async def calls(self, shard: Shard, via: Via | None = None) -> Any:
        """The shard's three hot Tagging API calls (TagResources, UntagResources,
        GetResources), nothing else. With `fast_calls` on: a `FastTaggingClient` signing with
        the account's credentials, its endpoint that of a client of the region shared by every
        account reached the same way. Otherwise (or through a proxy) the shard's own client."""
        key = (shard.account, shard.region, via)
        self._used[key] = time.monotonic()
        found = self._calls.get(key)
        if found is not None:
            return found
        if not self.settings.fast_calls:
            return await self._client(TAGGING, shard, via)
        credentials, kind = await self.accounts.credentials(shard.account, shard.partition, via)
        shared = await self._shared_client(self.accounts.config_session(shard.account, via),
                                           kind, shard.region)
        if shared is None:  # proxied: botocore's pipeline, a client of the shard's own
            return await self._client(TAGGING, shard, via)
        found = self._calls.get(key)
        if found is None:
            found = self._calls[key] = FastTaggingClient(
                shared, self._http_session(), self._shared_ssl[(kind, shard.region)],
                self.settings.in_flight_per_shard + 4, credentials=credentials)
        return found

    async def _shared_client(self, session: AioSession, kind: str, region: str) -> Any:
        """The Tagging API client of a region and session kind whose endpoint, region and
        errors the hot calls of every such account use (None: botocore would go through a
        proxy, so no hot calls of our own)."""
        key = (kind, region)
        self._used[key] = time.monotonic()
        if key in self._shared:
            return self._shared[key]
        lock = self._locks.setdefault(("shared", kind, region, None), asyncio.Lock())
        async with lock:
            if key not in self._shared:
                stack = AsyncExitStack()
                client = await stack.enter_async_context(session.create_client(
                    TAGGING, region_name=region, endpoint_url=self.settings.endpoint_url,
                    config=client_config(self.settings, 1)))
                if proxied(client):
                    self._retired.append(stack)
                    self._shared[key] = None
                else:
                    self._shared_ssl[key] = await ssl_context_of(client)
                    self._shared[key] = client
                    self._shared_stacks[key] = stack
            return self._shared[key]

    async def _client(self, service: str, shard: Shard, via: Via | None = None) -> Any:
        key = (service, shard.account, shard.region, via)
        self._used[key] = time.monotonic()
        entry = self._clients.get(key)
        if entry is not None:
            return entry[0]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._clients.get(key)
            if entry is None:
                session = await self.accounts.session(shard.account, shard.partition, via)
                stack = AsyncExitStack()
                connections = self.settings.in_flight_per_shard + 4
                client = await stack.enter_async_context(
                    session.create_client(
                        service,
                        region_name=shard.region,
                        endpoint_url=self.settings.endpoint_url,
                        config=client_config(self.settings, connections),
                    )
                )
                if service == TAGGING and self.settings.fast_calls and not proxied(client):
                    client = FastTaggingClient(client, self._http_session(),
                                               await ssl_context_of(client), connections)
                entry = (client, stack)
                self._clients[key] = entry
            return entry[0]

    def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # No limit here: each FastTaggingClient keeps botocore's per-client bound.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=DEFAULT_KEEPALIVE_TIMEOUT)
            self._http = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(sock_connect=self.settings.connect_timeout,
                                              sock_read=self.settings.request_timeout),
            )
        return self._http

    async def invalidate(self, shard: Shard) -> None:
        # Calls still in flight hold the old client: retire it, close it with the pool.
        for key in [k for k in self._clients if (k[1], k[2]) == (shard.account, shard.region)]:
            self._retired.append(self._clients.pop(key)[1])
        for calls in [k for k in self._calls if (k[0], k[1]) == (shard.account, shard.region)]:
            del self._calls[calls]  # they hold the old credentials
        self.accounts.forget(shard.account)

    def holds(self) -> int:
        """Clients and hot-call objects held now (tests, the idle release's log)."""
        return len(self._clients) + len(self._calls) + len(self._shared)

    async def release_idle(self, idle_seconds: float, busy: set[tuple[str, str]]) -> int:
        """Close what no shard has asked for in `idle_seconds`, except the (account, region)
        pairs in `busy` (a lane or a walk on them: a call may be in flight); then forget the
        credentials of accounts left with nothing (a role is assumed again when needed), and
        close the shared clients of regions no shard uses any more. How many were released."""
        cutoff = time.monotonic() - idle_seconds
        used = self._used
        released = 0
        for key in [k for k in self._clients if (k[1], k[2]) not in busy
                    and used.get(k, 0.0) < cutoff]:
            await self._clients.pop(key)[1].aclose()
            used.pop(key, None)
            released += 1
        for calls in [k for k in self._calls if (k[0], k[1]) not in busy
                      and used.get(k, 0.0) < cutoff]:
            del self._calls[calls]
            used.pop(calls, None)
            released += 1
        left = {k[1] for k in self._clients} | {k[0] for k in self._calls}
        for account in self.accounts.accounts() - left:
            self.accounts.forget(account)
        regions = {k[2] for k in self._clients} | {k[1] for k in self._calls}
        for shared in [k for k in self._shared if k[1] not in regions
                       and used.get(k, 0.0) < cutoff]:
            del self._shared[shared]
            self._shared_ssl.pop(shared, None)
            used.pop(shared, None)
            stack = self._shared_stacks.pop(shared, None)
            if stack is not None:
                await stack.aclose()
            released += 1
        for key in [k for k in self._locks if not self._locks[k].locked()]:
            del self._locks[key]
        return released

    async def close(self) -> None:
        stacks = [stack for _, stack in self._clients.values()] + self._retired + \
            list(self._shared_stacks.values())
        self._clients, self._retired, self._shared_stacks = {}, [], {}
        self._calls, self._shared, self._shared_ssl, self._used = {}, {}, {}, {}
        for stack in stacks:
            await stack.aclose()
        if self._http is not None:
            await self._http.close()
            self._http = None
