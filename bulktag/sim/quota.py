"""Token buckets enforcing per-(account, region, operation) request quotas: the Tagging API's
(`SimConfig.quotas`, a rate and `burst_seconds` of it) and EC2's (`SimConfig.ec2_buckets`, a
capacity and a refill rate each)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class TokenBuckets:
    """One bucket per key, created full; `take` spends a token or reports a throttle.

    A bucket refills at `rate` tokens/s up to `capacity`. Capacity is at least one token, or a
    quota below 1/s would throttle every call.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[Hashable, list[float]] = {}

    def take(self, key: Hashable, rate: float, capacity: float) -> bool:
        now = self._clock()
        capacity = max(capacity, 1.0)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [capacity, now]
        else:
            bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def reset(self) -> None:
        """Forget every bucket: after a quota change each starts full at its new size."""
        self._buckets.clear()
