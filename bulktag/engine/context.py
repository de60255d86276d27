"""What a lane (and its reader) needs from the engine that runs it, as a `Protocol`.

A lane is handed this small context rather than the whole engine (procrastinate's `JobContext`
is the model): it shows the contract between the dispatcher and its lanes in one place, and
`lane.py` needs no import of `dispatcher.py`, not even for types, so the two are no import
circle. `dispatcher.Engine` satisfies it structurally; a test can hand a lane a stand-in.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from anyio import Semaphore

from bulktag.arn import Shard
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.config import Settings
from bulktag.engine.metrics import EngineMetrics
from bulktag.engine.recorder import Recorder
from bulktag.engine.sender import EngineStats, Sender
from bulktag.policy.access import Via
from bulktag.policy.tag_policy import TagPolicy
from bulktag.store import Claimed, JobOptions, Runnable, Store


class LaneContext(Protocol):
    """The engine as its lanes see it."""

    @property
    def settings(self) -> Settings: ...
    @property
    def store(self) -> Store: ...
    @property
    def owner(self) -> str: ...  # whose leases the lane's claims are
    @property
    def log(self) -> Any: ...  # the engine's bound logger (a lane binds its shard to it)
    @property
    def clients(self) -> ClientPool: ...
    @property
    def sender(self) -> Sender: ...
    @property
    def recorder(self) -> Recorder: ...
    @property
    def stats(self) -> EngineStats: ...
    @property
    def metrics(self) -> EngineMetrics: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def open_slots(self) -> Semaphore: ...  # requests open at once, every lane's
    @property
    def stopping(self) -> bool: ...

    def work_of(self, shard_id: int) -> list[Runnable]:
        """The shard's (job, route) pairs with pending work, as the dispatcher last saw them."""
        ...

    def work_is_current(self) -> bool:
        """Whether `work_of` reflects every outcome written."""
        ...

    async def options(self, job_id: int) -> JobOptions: ...

    async def tagset(self, tagset_id: int) -> Any: ...

    async def tag_policy(self, shard: Shard, via: Via | None) -> TagPolicy:
        """The account's effective tag policy, read once per run (no rules when unreadable)."""
        ...

    def tag_policy_problem(self, shard: Shard) -> str | None:
        """Why the account's tag policy could not be read (None: it was, or it has none)."""
        ...

    def limiter(self, shard: Shard, operation: str) -> ShardLimiter:
        """The shard's limiter for an operation, shared by every job and discovery on it."""
        ...

    def requeue(self, items: Iterable[Claimed]) -> None:
        """Leased items back to pending at once, attempts untouched."""
        ...

    def start_batch(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a batch in the engine's batch task group (it outlives the lane's cancel)."""
        ...

    def wake(self) -> None:
        """The dispatcher looks at the store now."""
        ...
