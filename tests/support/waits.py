"""Waiting for something to happen by polling it, never by sleeping a guessed time.

A test that needs "the run has made progress" or "the daemon answers" asks that question again
every `interval` seconds until it holds or `timeout` passes, then fails saying what it waited
for. The predicate may assert (e.g. that the process it waits on is still alive) to fail early."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 60.0,
               interval: float = 0.05) -> None:
    """Return as soon as `predicate()` is truthy; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Awaitable[object] | object], what: str,
                           timeout: float = 60.0, interval: float = 0.02) -> None:
    """`wait_until` on the event loop: the predicate may be a coroutine function, and the loop
    keeps serving (the in-test simulator, the engine) between checks."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(interval)
