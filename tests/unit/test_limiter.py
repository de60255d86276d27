"""The shard limiter's response to throttling, on a fake clock; and its pacing on a real loop."""

from __future__ import annotations

import asyncio

import pytest

from bulktag.aws.rate_limiter import AdaptiveRate, ShardLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_throttle_lowers_the_rate_multiplicatively() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(5.0, decrease=0.5, clock=clock)
    assert rate.rate == 5.0
    assert rate.on_throttle()
    assert rate.rate == pytest.approx(2.5)


def test_throttles_within_the_cooldown_count_once() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(5.0, decrease=0.5, cooldown=1.0, recover_seconds=1e9, clock=clock)
    rate.on_throttle()
    clock.now += 0.3
    assert not rate.on_throttle()  # the rest of the same burst's in-flight calls
    assert rate.rate == pytest.approx(2.5)
    clock.now += 1.0
    assert rate.on_throttle()
    assert rate.rate == pytest.approx(1.25)
    assert rate.throttles == 3


def test_rate_never_falls_below_the_floor() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(5.0, decrease=0.5, floor_ratio=0.2, cooldown=0, recover_seconds=1e9,
                        clock=clock)
    for _ in range(20):
        clock.now += 0.01
        rate.on_throttle()
    assert rate.rate == pytest.approx(1.0)


def test_rate_climbs_back_linearly_to_the_ceiling() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(10.0, decrease=0.5, recover_seconds=20.0, clock=clock)
    rate.on_throttle()
    assert rate.rate == pytest.approx(5.0)
    clock.now += 5.0
    assert rate.rate == pytest.approx(7.5)  # ceiling * 5 s / 20 s
    clock.now += 100.0
    assert rate.rate == 10.0


async def test_limiter_holds_requests_to_the_ceiling() -> None:
    limiter = ShardLimiter(20.0, burst_seconds=0.25)  # burst of 5, then 20/s
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(15):
        await limiter.acquire()
    elapsed = loop.time() - start
    # 5 at once, 10 more at 20/s: at least ~0.5 s. An upper bound would test the machine.
    assert elapsed >= 0.45


async def test_lowered_rate_spaces_requests_out() -> None:
    limiter = ShardLimiter(100.0, decrease=0.1, floor_ratio=0.05, recover_seconds=1e9)
    limiter.on_throttle()  # 100/s -> 10/s
    loop = asyncio.get_running_loop()
    await limiter.acquire()
    start = loop.time()
    for _ in range(4):
        await limiter.acquire()
    assert loop.time() - start >= 0.35  # 4 more at 10/s


async def test_a_new_limiter_paces_its_first_requests_instead_of_bursting() -> None:
    # Whoever drove the shard just before (a killed worker, a handover) may have emptied AWS's
    # bucket: a fresh limiter spaces its first second of requests 1/ceiling apart.
    limiter = ShardLimiter(10.0, burst_seconds=0.5)  # a burst of 5 that it must not spend
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):
        await limiter.acquire()
    assert loop.time() - start >= 0.35  # 4 gaps of 0.1 s, not 5 at once
