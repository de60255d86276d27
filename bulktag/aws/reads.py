"""The one path for reading tags from AWS, and the one mapping from an exception to a Failure.

Every GetResources call — the compliance read before a batch, discovery walks, tag-sync
evaluations, the plan, verify and inventory — goes through `get_resources_page`: a throttle
slows the shard's limiter and is retried without spending attempts, a transient error backs off
on the attempt budget, and what still fails is raised as `Unreadable` with its `Failure`.
`failure_of` turns whatever a call raised (botocore's ClientError with or without a response,
a dropped connection, an aiohttp error, a timeout, a refused role) into the code, status and
message bulktag records, and `aws_error_of` what botocore raised into the words a user-facing
message needs (S3 exports, the credentials check); nothing else in bulktag reads an exception's
attributes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from bulktag.api_limits import ARNS_PER_READ, EC2_TAGS_PER_PAGE
from bulktag.arn import Shard
from bulktag.aws.accounts import AccountAccessError
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.config import Settings
from bulktag.policy.access import Via
from bulktag.policy.classify import Failure, Verdict, backoff_delay, classify_call_error

#: what a call to AWS can raise that is about the call, not a bug of ours: botocore's errors,
#: aiohttp's (aiobotocore's transport lets some through unwrapped), the OS's, timeouts
CALL_ERRORS: tuple[type[BaseException], ...] = (
    ClientError, BotoCoreError, AccountAccessError, aiohttp.ClientError, OSError, TimeoutError,
)


def is_call_error(exc: BaseException) -> bool:
    """An error of the call (network, protocol, AWS) rather than a bug in bulktag."""
    return isinstance(exc, CALL_ERRORS)


def failure_of(exc: BaseException) -> Failure:
    """What a failed call means as a record: code, HTTP status (None off the wire), message."""
    if isinstance(exc, AccountAccessError):
        return Failure(exc.code, exc.status, str(exc))
    if isinstance(exc, ClientError):
        response: Mapping[str, Any] = getattr(exc, "response", None) or {}
        err = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        return Failure(str(err.get("Code") or "Unknown"), meta.get("HTTPStatusCode"),
                       str(err.get("Message") or exc))
    return Failure(type(exc).__name__, None, str(exc) or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class AwsError:
    """What botocore raised, in the words a message to the user needs."""

    name: str  #: the exception's class name (ProfileNotFound, NoCredentialsError, ClientError, ...)
    text: str  #: the exception as botocore words it
    code: str | None = None  #: the service's error code when it answered ("Unknown": none given)
    message: str = ""  #: the service's own message ("" when it gave none)
    profile: str | None = None  #: the profile botocore could not find (ProfileNotFound)


def aws_error_of(exc: BaseException) -> AwsError | None:
    """`exc` read as botocore's error (the service's answer, or botocore failing before one:
    no credentials, an unknown profile, an endpoint not reached); None for anything else."""
    if isinstance(exc, ClientError):
        response: Mapping[str, Any] = getattr(exc, "response", None) or {}
        err = response.get("Error") or {}
        return AwsError(type(exc).__name__, str(exc), str(err.get("Code") or "Unknown"),
                        str(err.get("Message") or ""))
    if isinstance(exc, BotoCoreError):
        profile = getattr(exc, "kwargs", {}).get("profile")
        return AwsError(type(exc).__name__, str(exc), profile=profile)
    return None


def tags_of(mapping: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in mapping.get("Tags", [])}


class TokenExpired(Exception):
    """The pagination token expired (15 minutes): the walk must start again."""


class Unreadable(Exception):
    """GetResources kept failing (or failed for good): `reason` is code and message."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        self.reason = f"{failure.code}: {failure.message}"
        super().__init__(self.reason)


async def get_resources_page(
    clients: ClientPool, shard: Shard, limiter: ShardLimiter, params: dict[str, Any],
    settings: Settings, rng: random.Random | None = None, *, via: Via | None = None,
    **retry: Any,
) -> dict[str, Any]:
    """One GetResources answer (a page of a query, or up to 100 ARNs), retried as the engine
    retries a batch, with the job's way in (`via`). Raises TokenExpired or Unreadable;
    `errors` counts the codes seen."""

    async def call() -> dict[str, Any]:
        client = await clients.calls(shard, via)
        return await client.get_resources(**params)  # type: ignore[no-any-return]

    return await _retrying(call, clients, shard, limiter, settings, rng, **retry)


async def list_resources_page(
    clients: ClientPool, shard: Shard, limiter: ShardLimiter, params: dict[str, Any],
    settings: Settings, rng: random.Random | None = None, *, via: Via | None = None,
    **retry: Any,
) -> dict[str, Any]:
    """One Resource Explorer ListResources page (a view's resources, tagged or never tagged,
    in every account and region the view covers), rate limited and retried as GetResources.
    Its answer as GetResources' shape: `ResourceTagMappingList` (with each resource's
    `OwningAccountId` and `Region`) and `PaginationToken`."""

    async def call() -> dict[str, Any]:
        client = await clients.explorer(shard, via)
        resp = await client.list_resources(**params)
        mappings = []
        for r in resp.get("Resources", []):
            tags: list[dict[str, str]] = []
            for prop in r.get("Properties") or []:
                if prop.get("Name") == "tags" and isinstance(prop.get("Data"), list):
                    tags = [t for t in prop["Data"] if isinstance(t, dict) and "Key" in t]
            mappings.append({"ResourceARN": r["Arn"], "Tags": tags,
                             "OwningAccountId": r.get("OwningAccountId") or "",
                             "Region": r.get("Region") or ""})
        return {"ResourceTagMappingList": mappings,
                "PaginationToken": resp.get("NextToken") or ""}

    return await _retrying(call, clients, shard, limiter, settings, rng, **retry)


async def _retrying(
    call: Callable[[], Awaitable[dict[str, Any]]], clients: ClientPool, shard: Shard,
    limiter: ShardLimiter, settings: Settings, rng: random.Random | None = None, *,
    errors: dict[str, int] | None = None, max_throttles: int | None = None,
    max_attempts: int | None = None, on_call: Callable[[], None] | None = None,
    on_throttle: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One read call retried as the engine retries a batch: a throttle slows the limiter
    (no attempt spent, at most `max_throttles`), a transient error backs off on the budget."""
    attempts = throttles = 0
    budget = settings.max_attempts if max_attempts is None else max_attempts
    while True:
        await limiter.acquire()
        if on_call is not None:
            on_call()
        try:
            return await call()
        except Exception as exc:
            if not is_call_error(exc):
                raise
            failure = failure_of(exc)
        if errors is not None:
            errors[failure.code] = errors.get(failure.code, 0) + 1
        if failure.code == "PaginationTokenExpiredException":
            raise TokenExpired
        verdict = classify_call_error(failure, 1)
        if verdict is Verdict.THROTTLE and (max_throttles is None or throttles < max_throttles):
            throttles += 1
            limiter.on_throttle()
            if on_throttle is not None:
                on_throttle()
            continue
        if verdict is Verdict.CREDENTIALS:
            await clients.invalidate(shard)
        attempts += 1
        if verdict in (Verdict.TRANSIENT, Verdict.CREDENTIALS) and attempts < budget:
            await asyncio.sleep(backoff_delay(attempts, base=settings.backoff_base,
                                              cap=settings.backoff_cap, rng=rng))
            continue
        raise Unreadable(failure)


async def read_tags(
    clients: ClientPool, shard: Shard, limiter: ShardLimiter, arns: Sequence[str],
    settings: Settings, *, via: Via | None = None, **retry: Any,
) -> dict[str, dict[str, str]]:
    """Current tags of up to 100 ARNs of one shard (absent ARNs: not in the answer)."""
    if len(arns) > ARNS_PER_READ:
        raise ValueError(f"GetResources reads at most {ARNS_PER_READ} ARNs a call")
    resp = await get_resources_page(clients, shard, limiter,
                                    {"ResourceARNList": list(arns)}, settings, via=via,
                                    **retry)
    return {m["ResourceARN"]: tags_of(m) for m in resp.get("ResourceTagMappingList", [])}


async def read_ec2_tags(
    clients: ClientPool, shard: Shard, limiter: ShardLimiter, ids: Sequence[str],
    keys: Sequence[str] | None, settings: Settings, rng: random.Random | None = None,
    *, via: Via | None = None, **retry: Any,
) -> dict[str, dict[str, str]]:
    """Current tags of EC2 resources by id, through DescribeTags with a `resource-id` filter
    (the EC2 route's read, README "Two routes"): one row per tag, 1,000 a page, so the
    answer is narrowed to `keys` when given (the keys a job sets or removes; keys with EC2's
    filter wildcards `*`, `?` or a backslash read every tag instead). An untagged resource,
    or one without any of the keys, is absent from the answer."""
    if len(ids) > EC2_TAGS_PER_PAGE:
        raise ValueError(f"DescribeTags reads at most {EC2_TAGS_PER_PAGE} ids a call here")
    filters: list[dict[str, Any]] = [{"Name": "resource-id", "Values": list(ids)}]
    if keys and not any(c in key for key in keys for c in "*?\\"):
        filters.append({"Name": "key", "Values": sorted(set(keys))})
    found: dict[str, dict[str, str]] = {}
    token: str | None = None
    while True:
        params: dict[str, Any] = {"Filters": filters, "MaxResults": EC2_TAGS_PER_PAGE}
        if token:
            params["NextToken"] = token

        async def call(params: dict[str, Any] = params) -> dict[str, Any]:
            client = await clients.ec2(shard, via)
            return await client.describe_tags(**params)  # type: ignore[no-any-return]

        resp = await _retrying(call, clients, shard, limiter, settings, rng, **retry)
        for row in resp.get("Tags", []):
            found.setdefault(row["ResourceId"], {})[row["Key"]] = row.get("Value", "")
        token = resp.get("NextToken") or None
        if not token:
            return found
