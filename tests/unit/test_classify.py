"""Error classification and backoff: pure functions, no event loop."""

from __future__ import annotations

import random

import pytest
from botocore.retries.standard import ThrottledRetryableChecker
from hypothesis import given
from hypothesis import strategies as st

from bulktag.policy.classify import (
    THROTTLE_CODES,
    Failure,
    Verdict,
    backoff_delay,
    classify_call_error,
    classify_resource_error,
    split_batch,
)


def test_throttle_codes_cover_botocores_own_list() -> None:
    assert set(ThrottledRetryableChecker._THROTTLED_ERROR_CODES) <= THROTTLE_CODES
    assert "ThrottledException" in THROTTLE_CODES  # the Tagging API's spelling


@pytest.mark.parametrize(
    ("code", "status", "size", "verdict"),
    [
        ("ThrottledException", 400, 20, Verdict.THROTTLE),
        ("ThrottlingException", 400, 20, Verdict.THROTTLE),
        ("Whatever", 429, 20, Verdict.THROTTLE),
        ("InternalServiceException", 500, 20, Verdict.TRANSIENT),
        ("ServiceUnavailable", 503, 20, Verdict.TRANSIENT),
        # the endpoint away (refused, reset, timeouts): an outage, not a verdict on the items
        ("EndpointConnectionError", None, 20, Verdict.UNREACHABLE),
        ("NoCredentialsError", None, 20, Verdict.UNREACHABLE),
        ("SomethingElseOffTheWire", None, 1, Verdict.TRANSIENT),
        ("ReadTimeoutError", None, 1, Verdict.UNREACHABLE),
        ("InvalidParameterException", 400, 20, Verdict.SPLIT),
        ("InvalidParameterException", 400, 1, Verdict.PERMANENT),
        ("AccessDeniedException", 403, 20, Verdict.PERMANENT),
        ("ExpiredTokenException", 400, 20, Verdict.CREDENTIALS),
        ("ExpiredToken", 403, 5, Verdict.CREDENTIALS),
        ("UnrecognizedClientException", 400, 20, Verdict.PERMANENT),
    ],
)
def test_whole_call_errors_are_classified(
    code: str, status: int | None, size: int, verdict: Verdict
) -> None:
    assert classify_call_error(Failure(code, status, "m"), size) is verdict


@pytest.mark.parametrize(
    ("code", "status", "verdict"),
    [
        ("ThrottlingException", 400, Verdict.THROTTLE),  # another service's throttle
        ("InternalServiceException", 500, Verdict.TRANSIENT),
        ("SomeServiceInternalError", 503, Verdict.TRANSIENT),  # any 5xx
        ("InvalidReplicationGroupState", 400, Verdict.TRANSIENT),  # busy resource
        ("ConcurrentModificationException", 409, Verdict.TRANSIENT),
        ("AccessDeniedException", 403, Verdict.PERMANENT),
        ("InvalidParameterException", 400, Verdict.PERMANENT),
        ("ResourceNotFoundException", 404, Verdict.PERMANENT),
    ],
)
def test_per_resource_errors_are_classified(code: str, status: int, verdict: Verdict) -> None:
    assert classify_resource_error(Failure(code, status, "m")) is verdict


def test_backoff_grows_and_stays_under_the_cap() -> None:
    rng = random.Random(3)
    lows = [backoff_delay(a, base=1.0, cap=60.0, rng=rng) for a in range(1, 12)]
    assert lows[0] <= 1.0
    assert lows[5] >= 16.0  # step 32: at least half of it
    assert all(d <= 60.0 for d in lows)


@given(st.integers(1, 60), st.floats(0.01, 10), st.floats(1, 600))
def test_backoff_is_between_half_step_and_step(attempt: int, base: float, cap: float) -> None:
    step = min(cap, base * 2 ** (attempt - 1))
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(attempt))
    assert step / 2 <= delay <= step


@given(st.lists(st.integers(), min_size=2, max_size=20))
def test_split_batch_halves_without_losing_items(items: list[int]) -> None:
    left, right = split_batch(items)
    assert left and right
    assert left + right == items
    assert abs(len(left) - len(right)) <= 1
