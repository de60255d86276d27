"""The recorder: outcomes collected in memory and written in batched transactions.

A batch's outcomes wait here at most `interval` seconds (or until `size` of them are waiting),
so a run writes a few transactions a second instead of one per batch. Only the lease holder's
outcomes land (`Store.record` checks the lease), so writing a chunk twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio

from bulktag.store import Outcome, Store

RECORDER_INTERVAL = 0.1  # seconds outcomes may wait in memory before they are written
HURRY = 0.01  # seconds retries due now wait, so that one write carries several batches' retries


class Recorder:
    def __init__(self, store: Store, owner: str, *, interval: float = RECORDER_INTERVAL,
                 size: int = 2000, on_flush: Callable[[], None] | None = None) -> None:
        self.store = store
        self.owner = owner
        self.on_flush = on_flush
        self.interval = interval
        self.size = size
        self._pending: list[Outcome] = []
        self._wake = anyio.Event()
        self._hurry = False
        self._writing = anyio.Lock()
        self.written = 0

    @property
    def waiting(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> bool:
        """Outcomes waiting or being written."""
        return bool(self._pending) or self._writing.locked()

    def add(self, outcomes: Iterable[Outcome], *, hurry: bool = False) -> None:
        """Queue outcomes; `hurry` when some are retries due now: they are written (and their
        lane poked) within `HURRY` seconds rather than `interval`, so a job's last failures go
        out again at once."""
        self._pending.extend(outcomes)
        if hurry:
            self.hurry()
        elif len(self._pending) >= self.size:
            self._wake.set()

    def hurry(self) -> None:
        """Write what waits within `HURRY` seconds."""
        self._hurry = True
        self._wake.set()

    async def flush(self) -> None:
        """Write everything waiting; returns once it is written, including a chunk another
        flush took a moment ago (the run's idle check releases leases right after flushing:
        had it passed a write still under way, that write would find its leases gone)."""
        async with self._writing:
            while self._pending:
                chunk, self._pending = self._pending, []
                try:
                    self.written += await self.store.record(self.owner, chunk)
                except BaseException:
                    # Not written (rolled back, or cancelled): keep it for the next flush.
                    self._pending[:0] = chunk
                    raise
                if self.on_flush:
                    self.on_flush()

    async def run(self) -> None:
        """Flush every `interval` (sooner when `size` outcomes wait) until cancelled."""
        while True:
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            if self._hurry:
                self._hurry = False
                await anyio.sleep(HURRY)  # other batches' retries of the moment join this write
            self._wake = anyio.Event()
            await self.flush()
