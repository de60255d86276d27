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
"""

from __future__ import annotations

import asyncio
import platform
import threading
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore import __version__ as aiobotocore_version
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession

from . import __version__
from .accounts import Accounts
from .arn import Shard
from .config import Settings

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
        self._clients: dict[tuple[str, str, str], tuple[Any, AsyncExitStack]] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._retired: list[AsyncExitStack] = []

    async def tagging(self, shard: Shard) -> Any:
        return await self._client(TAGGING, shard)

    async def ec2(self, shard: Shard) -> Any:
        """The shard's EC2 client (CreateTags / DeleteTags, the `ec2` route)."""
        return await self._client(EC2, shard)

    async def _client(self, service: str, shard: Shard) -> Any:
        key = (service, shard.account, shard.region)
        entry = self._clients.get(key)
        if entry is not None:
            return entry[0]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._clients.get(key)
            if entry is None:
                session = await self.accounts.session(shard.account, shard.partition)
                stack = AsyncExitStack()
                client = await stack.enter_async_context(
                    session.create_client(
                        service,
                        region_name=shard.region,
                        endpoint_url=self.settings.endpoint_url,
                        config=client_config(self.settings, self.settings.in_flight_per_shard + 4),
                    )
                )
                entry = (client, stack)
                self._clients[key] = entry
            return entry[0]

    async def invalidate(self, shard: Shard) -> None:
        # Calls still in flight hold the old client: retire it, close it with the pool.
        for service in (TAGGING, EC2):
            entry = self._clients.pop((service, shard.account, shard.region), None)
            if entry is not None:
                self._retired.append(entry[1])
        self.accounts.forget(shard.account)

    async def close(self) -> None:
        stacks = [stack for _, stack in self._clients.values()] + self._retired
        self._clients, self._retired = {}, []
        for stack in stacks:
            await stack.aclose()
