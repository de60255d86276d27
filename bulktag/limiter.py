"""Per-shard rate limiting that backs off on throttles and climbs back toward the quota.

`AdaptiveRate` is the pure policy (multiplicative decrease on a throttle, linear recovery over
`recover_seconds`), driven by an injectable clock so tests use a fake one. `ShardLimiter` applies
it to an aiolimiter leaky bucket sized for the ceiling: each request costs ceiling/rate units, so
a lowered rate spaces requests out without rebuilding the bucket or touching its internals.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter


class AdaptiveRate:
    """Requests/s allowed now, between `floor` and `ceiling`.

    Throttles that arrive within `cooldown` seconds of the last decrease are one event: the
    requests in flight when the quota was hit all come back throttled, and halving once per
    response would collapse the rate far below what the shard can take.
    """

    def __init__(
        self,
        ceiling: float,
        *,
        decrease: float = 0.7,
        floor_ratio: float = 0.2,
        recover_seconds: float = 20.0,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ceiling <= 0:
            raise ValueError("ceiling must be positive")
        self.ceiling = ceiling
        self.floor = ceiling * floor_ratio
        self.decrease = decrease
        self.recover_seconds = recover_seconds
        self.cooldown = cooldown
        self.clock = clock
        self._base = ceiling
        self._since = clock()
        self._last_decrease = float("-inf")
        self.throttles = 0

    @property
    def rate(self) -> float:
        elapsed = self.clock() - self._since
        return min(self.ceiling, self._base + self.ceiling * elapsed / self.recover_seconds)

    def on_throttle(self) -> bool:
        """Record a throttle; return True when it lowered the rate."""
        self.throttles += 1
        now = self.clock()
        if now - self._last_decrease < self.cooldown:
            return False
        self._base = max(self.floor, self.rate * self.decrease)
        self._since = now
        self._last_decrease = now
        return True


class ShardLimiter:
    """Waits until one more request of an operation may go to a shard."""

    def __init__(self, ceiling: float, *, burst_seconds: float = 1.0, **policy: float) -> None:
        self.policy = AdaptiveRate(ceiling, **policy)  # type: ignore[arg-type]
        # Capacity in units: enough for `burst_seconds` at the ceiling, and at least one request
        # at the floor rate (cost ceiling/floor).
        capacity = max(ceiling * burst_seconds, ceiling / self.policy.floor, 1.0)
        self._bucket = AsyncLimiter(capacity, capacity / ceiling)

    @property
    def rate(self) -> float:
        return self.policy.rate

    async def acquire(self) -> None:
        await self._bucket.acquire(self.policy.ceiling / self.policy.rate)

    def on_throttle(self) -> bool:
        return self.policy.on_throttle()
