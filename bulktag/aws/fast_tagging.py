"""TagResources, UntagResources and GetResources without botocore's request pipeline.

A run over 64 regions was CPU-bound in the event loop at ~168 µs per ARN (budget: 100), and
half of it was aiobotocore's `_make_api_call` for these three calls: ~1.5 ms of CPU each, in
hook emission, SigV4 (the signing key derived and the canonical request rebuilt every time),
endpoint rules, parameter validation, serialization and response parsing. These calls are
one fixed shape each: a JSON 1.1 POST to the client's endpoint. `FastTaggingClient` sends that
POST itself, signs it with a key derived once per (secret, date, region), and hands back the
JSON answer as botocore would.

What stays botocore's: the client (endpoint, region, credentials with their refresh and
assumed roles, every other operation, through `__getattr__`). Errors are raised as botocore
raises them (the client's own ClientError subclasses, error body parsed as botocore's JSON
parser does; aiohttp's errors mapped as aiobotocore's http session maps them), so
`aws.failure_of` and `classify.py` see no difference. `fast_calls = false` switches it off.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import socket
import ssl
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

SERVICE = "tagging"  # the Tagging API's SigV4 signing name
TARGET = "ResourceGroupsTaggingAPI_20170126"
JSON_11 = "application/x-amz-json-1.1"
ALGORITHM = "AWS4-HMAC-SHA256"
# Seconds a call reuses the previous call's frozen credentials. botocore refreshes assumed
# credentials 15 minutes (at the latest 10) before they expire: a few seconds never cross that.
FROZEN_SECONDS = 5.0


@lru_cache(maxsize=256)
def signing_key(secret_key: str, date: str, region: str) -> bytes:
    """SigV4's derived key: four HMACs, the same for a day of one region and secret."""
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, SERVICE, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def authorization(*, access_key: str, secret_key: str, region: str, amz_date: str,
                  path: str, headers: Mapping[str, str], body: bytes) -> str:
    """The SigV4 Authorization header of a POST without a query string, signing every header
    given (names lowercased; values trimmed and inner whitespace folded, as botocore does)."""
    signed = sorted((name.lower(), " ".join(value.split())) for name, value in headers.items())
    names = ";".join(name for name, _ in signed)
    canonical = "\n".join((
        "POST", quote(path, safe="/~"), "",
        *(f"{name}:{value}" for name, value in signed), "",
        names, hashlib.sha256(body).hexdigest(),
    ))
    date = amz_date[:8]
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    to_sign = "\n".join((ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()))
    signature = hmac.new(signing_key(secret_key, date, region), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    return f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={names}, " \
           f"Signature={signature}"


def request_headers(*, operation: str, host: str, path: str, region: str, user_agent: str,
                    body: bytes, access_key: str, secret_key: str, token: str | None,
                    amz_date: str) -> dict[str, str]:
    """Every header of one call, signed as botocore signs them (not User-Agent, which
    botocore leaves out of the signature, nor Accept-Encoding, which it adds after)."""
    headers = {"Content-Type": JSON_11, "Host": host, "X-Amz-Date": amz_date,
               "X-Amz-Target": f"{TARGET}.{operation}"}
    if token:
        headers["X-Amz-Security-Token"] = token
    headers["Authorization"] = authorization(
        access_key=access_key, secret_key=secret_key, region=region, amz_date=amz_date,
        path=path, headers=headers, body=body)
    headers["User-Agent"] = user_agent
    headers["Accept-Encoding"] = "identity"  # as botocore: no CPU spent on inflating
    return headers


def host_of(url: str) -> str:
    """The Host header botocore signs: lowercase, without userinfo or the scheme's own port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _json_body(body: bytes) -> dict[str, Any]:
    """botocore's reading of a JSON body: empty is {}, unparsable text becomes the message."""
    if not body:
        return {}
    text = body.decode("utf-8")
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"message": text}
    return parsed if isinstance(parsed, dict) else {"message": text}


def _metadata(status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    """botocore's ResponseMetadata for one attempt of a client with total_max_attempts = 1
    (its retry handler marks every answer MaxAttemptsReached; ClientError's text says so)."""
    return {"HTTPStatusCode": status, "HTTPHeaders": dict(headers), "MaxAttemptsReached": True,
            "RetryAttempts": 0}


def error_response(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """What botocore's JSON parser makes of an error answer (`headers` lowercased): a bare 5xx
    (empty or HTML) is code = the status; otherwise `__type` (after `#`, before `:`) or the
    status, and `message` or `Message`."""
    stripped = body.strip()
    if status >= 500 and (not stripped or stripped.startswith(b"<html>")):
        error = {"Code": str(status), "Message": http.client.responses.get(status, "")}
        meta: dict[str, Any] = {}
    else:
        parsed = _json_body(body)
        code = str(parsed.get("__type", str(status)))
        code = code.split(":", 1)[0].rsplit("#", 1)[-1]
        error = {"Message": parsed.get("message", parsed.get("Message", "")), "Code": code}
        meta = {"RequestId": headers["x-amzn-requestid"]} if "x-amzn-requestid" in headers else {}
    meta.update(_metadata(status, headers))
    return {"Error": error, "ResponseMetadata": meta}


def success_response(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The answer's JSON with botocore's ResponseMetadata; a body that is not a JSON object
    is {}, as botocore's parser makes of it."""
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    meta = _metadata(status, headers)
    if "x-amzn-requestid" in headers:
        meta["RequestId"] = headers["x-amzn-requestid"]
    parsed["ResponseMetadata"] = meta
    return parsed


def proxied(client: Any) -> bool:
    """Whether botocore would send this client's calls through a proxy (the fast path sends
    none: such a client keeps botocore's pipeline)."""
    proxy_config = client._endpoint.http_session._proxy_config
    return proxy_config.proxy_url_for(client.meta.endpoint_url) is not None


async def ssl_context_of(client: Any) -> ssl.SSLContext | None:
    """The SSL context botocore's session would use for the client's endpoint (None for
    http://): `botoconfig.SharedSSLSession` builds it once per process, off the loop."""
    if urlsplit(client.meta.endpoint_url).scheme != "https":
        return None
    contexts = await asyncio.to_thread(client._endpoint.http_session._build_ssl_contexts, None)
    context: ssl.SSLContext = contexts[0]
    return context


class FastTaggingClient:
    """A botocore Tagging API client whose three hot calls go straight over aiohttp; any other
    attribute is the wrapped client's. At most `connections` calls at once, as botocore's
    connection pool allows per client (the shared aiohttp session has no per-host limit: all
    shards behind one endpoint_url, or several accounts in one region, share a host)."""

    def __init__(self, client: Any, session: aiohttp.ClientSession,
                 ssl_context: ssl.SSLContext | None, connections: int,
                 credentials: Any = None) -> None:
        self._client = client
        # Given: the account's credentials, and `client` only a client of the same region and
        # configuration (endpoint, errors) shared by every account: then the hot calls are all
        # there is, since any other call through `client` would sign as another account.
        self._credentials = credentials
        # The frozen keys of the last call and until when (monotonic) they are used as they
        # are: refreshable credentials otherwise read the local time zone twice a call
        # (botocore's `_local_now`), and refresh minutes before expiry, not seconds.
        self._frozen: Any = None
        self._frozen_until = 0.0
        self._session = session
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._slots = asyncio.Semaphore(connections)
        endpoint = client.meta.endpoint_url
        parts = urlsplit(endpoint)
        self._path = parts.path or "/"
        self._url = parts._replace(path=self._path).geturl()
        self._host = host_of(endpoint)
        self._region: str = client.meta.region_name
        # botoconfig.USER_AGENT as botocore sends it (with its own version appended)
        self._user_agent: str = client.meta.config.user_agent

    def __getattr__(self, name: str) -> Any:
        if self.__dict__.get("_credentials") is not None:
            raise AttributeError(f"{name}: only TagResources, UntagResources and GetResources "
                                 "go through a shard's hot calls (ClientPool.calls)")
        return getattr(self._client, name)

    async def tag_resources(self, **params: Any) -> dict[str, Any]:
        return await self._call("TagResources", params)

    async def untag_resources(self, **params: Any) -> dict[str, Any]:
        return await self._call("UntagResources", params)

    async def get_resources(self, **params: Any) -> dict[str, Any]:
        return await self._call("GetResources", params)

    async def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        frozen = self._frozen
        if frozen is None or time.monotonic() >= self._frozen_until:
            credentials = self._credentials
            if credentials is None:
                credentials = self._client._request_signer._credentials
            if credentials is None:
                raise NoCredentialsError()
            frozen = await credentials.get_frozen_credentials()
            self._frozen, self._frozen_until = frozen, time.monotonic() + FROZEN_SECONDS
        if frozen.access_key is None or frozen.secret_key is None:
            raise NoCredentialsError()
        body = json.dumps(params, separators=(",", ":")).encode()
        headers = request_headers(
            operation=operation, host=self._host, path=self._path, region=self._region,
            user_agent=self._user_agent, body=body, access_key=frozen.access_key,
            secret_key=frozen.secret_key, token=frozen.token,
            amz_date=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        status, response_headers, answer = await self._send(headers, body)
        if status >= 300:
            error = error_response(status, response_headers, answer)
            raise self._client.exceptions.from_code(error["Error"]["Code"])(error, operation)
        return success_response(status, response_headers, answer)

    async def _send(self, headers: dict[str, str],
                    body: bytes) -> tuple[int, dict[str, str], bytes]:
        """POST and read the whole answer; aiohttp's errors as aiobotocore's session maps them
        (`aiobotocore.httpsession.AIOHTTPSession.send`)."""
        url = self._url
        try:
            async with self._slots, self._session.post(url, data=body, headers=headers,
                                                       ssl=self._ssl,
                                                       allow_redirects=False) as response:
                answer = await response.read()
                lowered = {k.decode().lower(): v.decode() for k, v in response.raw_headers}
                return response.status, lowered, answer
        except aiohttp.ClientSSLError as exc:
            raise SSLError(endpoint_url=url, error=exc) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                aiohttp.http_exceptions.BadStatusLine) as exc:
            raise ConnectionClosedError(endpoint_url=url, error=exc) from exc
        except aiohttp.ServerTimeoutError as exc:
            if str(exc).lower().startswith("connect"):
                raise ConnectTimeoutError(endpoint_url=url, error=exc) from exc
            raise ReadTimeoutError(endpoint_url=url, error=exc) from exc
        except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionError,
                socket.gaierror) as exc:
            raise EndpointConnectionError(endpoint_url=url, error=exc) from exc
        except TimeoutError as exc:
            raise ReadTimeoutError(endpoint_url=url, error=exc) from exc
        except Exception as exc:
            raise HTTPClientError(error=exc) from exc
