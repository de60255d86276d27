"""aiobotocore clients, pooled per (account, region), never created per batch.

botocore's own retries are switched off (total_max_attempts = 1): a retry inside botocore would
hide a throttle from the shard's limiter and stack its backoff on top of ours. Every error
reaches the engine, which classifies it once.

The User-Agent is a fixed string built once (bulktag, aiobotocore, botocore and Python versions,
the OS): botocore otherwise rebuilds and sanitizes its standard one character by character,
twice per request, which was about a tenth of a run's CPU (benchmarks/local_cost.py).

Every client's HTTP session builds its own SSL context, loading the whole CA bundle: ~50 ms of
CPU each, so a run over 64 regions spent its first two seconds on it (benchmarks/short_jobs.py).
`SharedSSLSession` builds one per set of verify settings and hands the same one to every
client (an `ssl.SSLContext` is safe to share between connections).

With `fast_calls` on, a Tagging API client comes wrapped in `fastcall.FastTaggingClient`: its
three hot calls go out on one aiohttp session of the pool (created in the running loop, closed
with the pool), everything else through botocore. A client botocore would send through a proxy
stays unwrapped.
"""

from __future__ import annotations

import asyncio
import platform
import threading
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiobotocore import __version__ as aiobotocore_version
from aiobotocore._constants import DEFAULT_KEEPALIVE_TIMEOUT
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession

from bulktag import __version__
from bulktag.arn import Shard
from bulktag.aws.accounts import Accounts
from bulktag.aws.fast_tagging import FastTaggingClient, proxied, ssl_context_of
from bulktag.config import Settings
from bulktag.policy.access import Via

TAGGING = "resourcegroupstaggingapi"
EC2 = "ec2"


# aiobotocore's session appends "botocore/<version>" (its user_agent_extra) to this.
USER_AGENT = (f"bulktag/{__version__} aiobotocore/{aiobotocore_version} "
              f"Python/{platform.python_version()} {platform.system()}/{platform.release()}")


class SharedSSLSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's aiohttp session with its SSL contexts built once per process."""

    _contexts: dict[tuple[Any, ...], Any] = {}
    _lock = threading.Lock()  # aiobotocore builds them in worker threads, 64 at once

    def _build_ssl_contexts(self, proxy_url: Any) -> Any:
        key = (self._verify, self._cert_file, self._key_file, proxy_url)
        with SharedSSLSession._lock:
            found = SharedSSLSession._contexts.get(key)
            if found is None:
                found = SharedSSLSession._contexts[key] = super()._build_ssl_contexts(proxy_url)
        return found


def client_config(settings: Settings, pool: int) -> AioConfig:
    return AioConfig(
        http_session_cls=SharedSSLSession,
        user_agent=USER_AGENT,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=pool,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.request_timeout,
        tcp_keepalive=True,
    )


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

    async def _client(self, service: str, shard: Shard, via: Via | None = None) -> Any:
        key = (service, shard.account, shard.region, via)
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
        self.accounts.forget(shard.account)

    async def close(self) -> None:
        stacks = [stack for _, stack in self._clients.values()] + self._retired
        self._clients, self._retired = {}, []
        for stack in stacks:
            await stack.aclose()
        if self._http is not None:
            await self._http.close()
            self._http = None
