"""What an error means for the items it touched: pure functions, no I/O.

A throttle slows the shard and requeues without spending attempts. A transient error retries with
backoff up to the attempt budget. A permanent error ends the item at once. A whole-call
InvalidParameterException on a batch of several ARNs is split until the bad ARN fails alone.
Expired credentials are refreshed and the batch requeued.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# botocore's throttle codes (botocore.retries.standard.ThrottledRetryableChecker) and the
# Tagging API's own ThrottledException; a test keeps this a superset of botocore's list.
THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)

TRANSIENT_CODES = frozenset(
    {
        "InternalServiceException",
        "InternalServerErrorException",
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceException",
        # A resource busy with another change: retrying later succeeds.
        "InvalidReplicationGroupState",
        "InvalidCacheClusterState",
        "ConcurrentModificationException",
        "ResourceInUseException",
        "ResourceConflictException",
        "OperationAbortedException",
        "ConflictException",
        "IncorrectState",
    }
)

CREDENTIAL_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
)

WHOLE_CALL_SPLIT_CODES = frozenset({"InvalidParameterException"})

# The endpoint cannot be reached at all (refused, reset, DNS, timeouts): an outage of the shard,
# not a verdict on the items. botocore's and aiohttp's names, and the OS's.
UNREACHABLE_CODES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionError",
        "HTTPClientError",
        "ProxyConnectionError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "ConnectionResetError",
        "ConnectionRefusedError",
        "ConnectionAbortedError",
        "BrokenPipeError",
        "TimeoutError",
        "gaierror",
    }
)

# No usable credentials for the caller: a set-up problem (found before work starts), never a
# verdict on the items.
NO_CREDENTIALS_CODES = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "ProfileNotFound",
        "UnauthorizedSSOTokenError",
        "SSOTokenLoadError",
        "TokenRetrievalError",
        "CredentialRetrievalError",
        "InvalidConfigError",
    }
)


class Verdict(enum.Enum):
    UNREACHABLE = "unreachable"  #: the endpoint is away: pause the shard, spend no attempts
    THROTTLE = "throttle"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    SPLIT = "split"
    CREDENTIALS = "credentials"


@dataclass(frozen=True, slots=True)
class Failure:
    """An error as bulktag records it: code, HTTP status (None for network errors), message."""

    code: str
    status: int | None
    message: str


def classify_call_error(failure: Failure, batch_size: int) -> Verdict:
    """Classify an error that failed the whole TagResources/UntagResources call."""
    if failure.status is None and (failure.code in UNREACHABLE_CODES
                                   or failure.code in NO_CREDENTIALS_CODES):
        return Verdict.UNREACHABLE
    if failure.code in THROTTLE_CODES or failure.status == 429:
        return Verdict.THROTTLE
    if failure.code in CREDENTIAL_CODES:
        return Verdict.CREDENTIALS
    if failure.code in WHOLE_CALL_SPLIT_CODES:
        return Verdict.SPLIT if batch_size > 1 else Verdict.PERMANENT
    if failure.status is None or failure.status >= 500 or failure.code in TRANSIENT_CODES:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


def classify_resource_error(failure: Failure) -> Verdict:
    """Classify one FailedResourcesMap entry (any code of the service owning the resource)."""
    if failure.code in THROTTLE_CODES or failure.status == 429:
        return Verdict.THROTTLE
    if (failure.status is not None and failure.status >= 500) or failure.code in TRANSIENT_CODES:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay before attempt `attempt + 1` after `attempt` transient failures (attempt ≥ 1).

    Exponential with "equal jitter": half the step is fixed, half random, so delays grow
    reliably while retries of one failed batch spread out instead of returning together.
    """
    step = min(cap, base * 2.0 ** max(0, attempt - 1))
    jitter = float((rng or random).uniform(0, step / 2))
    return step / 2 + jitter


def split_batch(items: list[T]) -> tuple[list[T], list[T]]:
    """Halve a batch refused as a whole, so one bad ARN ends up failing alone."""
    mid = (len(items) + 1) // 2
    return items[:mid], items[mid:]
