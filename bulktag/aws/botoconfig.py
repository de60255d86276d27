"""How every aiobotocore client of bulktag is configured (`client_config`).

botocore's own retries are switched off (total_max_attempts = 1): a retry inside botocore would
hide a throttle from the shard's limiter and stack its backoff on top of ours.

The User-Agent is a fixed string built once (bulktag, aiobotocore, botocore and Python versions,
the OS): botocore otherwise rebuilds and sanitizes its standard one character by character,
twice per request, which was about a tenth of a run's CPU (benchmarks/local_cost.py).

Every client's HTTP session builds its own SSL context, loading the whole CA bundle: ~50 ms of
CPU each, so a run over 64 regions spent its first two seconds on it (benchmarks/short_jobs.py),
and a run over 50 accounts through roles as long on the STS clients of its AssumeRole calls.
`SharedSSLSession` builds one per set of verify settings and hands the same one to every
client (an `ssl.SSLContext` is safe to share between connections).
"""

from __future__ import annotations

import platform
import threading
from typing import Any

from aiobotocore import __version__ as aiobotocore_version
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession

from bulktag import __version__
from bulktag.config import Settings

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


def shared_ssl_config() -> AioConfig:
    """botocore's defaults (its own retries included: AssumeRole is called once an hour per
    account, and a throttled one is retried there) on the shared SSL contexts."""
    return AioConfig(http_session_cls=SharedSSLSession, user_agent=USER_AGENT)
