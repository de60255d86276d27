"""Per-shard rate limiting that backs off on throttles and climbs back toward the quota.

`AdaptiveRate` is the pure policy (multiplicative decrease on a throttle, linear recovery over
`recover_seconds`), driven by an injectable clock so tests use a fake one. `ShardLimiter` applies
it to an aiolimiter leaky bucket sized for the ceiling plus a pacer for lowered rates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

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
    """Waits until one more request of an operation may go to a shard.

    An aiolimiter leaky bucket holds requests to the ceiling. Its burst is a little smaller than
    the one second of quota that AWS (and the simulator) allow, so that requests whose arrival
    jitters by tens of milliseconds still find a token. While the adaptive rate is below the
    ceiling, a pacer also spaces requests 1/rate apart.
    """

    def __init__(self, ceiling: float, *, burst_seconds: float = 0.8, **policy: Any) -> None:
        self.policy = AdaptiveRate(ceiling, **policy)
        capacity = max(1.0, ceiling * burst_seconds)
        self._bucket = AsyncLimiter(capacity, capacity / ceiling)
        self._pace = asyncio.Lock()
        self._next = 0.0
        self._burst_seconds = burst_seconds
        self._warm_until: float | None = None  # loop time the start-up pacing ends
        self.last_used = time.monotonic()  # the last acquire (an idle shard's is released)

    @property
    def rate(self) -> float:
        return self.policy.rate

    def idle_for(self, seconds: float) -> bool:
        """Unused for `seconds` and back at its ceiling: a new limiter would do the same (its
        bucket full again, no throttle to remember), so this one may be let go."""
        return time.monotonic() - self.last_used >= seconds and \
            self.policy.rate >= self.policy.ceiling

    async def acquire(self) -> None:
        self.last_used = time.monotonic()
        await self._bucket.acquire()
        rate = self.policy.rate
        loop = asyncio.get_running_loop()
        if self._warm_until is None:
            self._warm_until = loop.time() + self._burst_seconds
        if rate >= self.policy.ceiling and loop.time() >= self._warm_until:
            return
        async with self._pace:
            now = loop.time()
            wait = self._next - now
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = max(now, self._next) + 1.0 / rate

    def on_throttle(self) -> bool:
        return self.policy.on_throttle()
