"""Minute-long outages mid-run (issue 12, "Done when"): connections reset — not refused — for 60 s
while the compliance reads are going on, the same while tagging, and the simulator stopped for
60 s and started again. Each run must complete with every item succeeded on its first attempt:
an outage is a pause, never a crash and never a spent attempt.

The three scenarios run at once in one test (each with its own simulator, proxy and store), so
the suite pays for one minute, not three. Resets come from a small TCP proxy in front of the
simulator that answers chosen requests (by `X-Amz-Target`) with a TCP RST, as a load balancer or
a firewall dropping state does; the stopped simulator is really closed (its port refuses) and
started again on the same port with the same tags.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from bulktag.app.submit import Request, submit
from bulktag.engine import Engine
from bulktag.sim import SimConfig, SimState, start_simulator
from bulktag.store import JobOptions, Store, new_owner_token
from tests.support.engine import ACCOUNT, TAGS, fast_settings, items
from tests.support.waits import wait_until_async

OUTAGE_SECONDS = 60.0
ARNS = 400  # one shard at 5 TagResources/s: ~4 s of tagging, so the outage lands mid-run

pytestmark = pytest.mark.slow


class ResettingProxy:
    """Forwards HTTP/1.1 to the simulator; requests whose operation is in `reset_ops` (or every
    request, with "*") get a TCP RST instead of an answer, and starting a reset also resets the
    connections open at that moment."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.reset_ops: frozenset[str] = frozenset()
        self.resets: dict[str, int] = {}
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> ResettingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            _rst(writer)
        # The connections' tasks see their end (each leaves `_open` as it does).
        await wait_until_async(lambda: not self._open, "the proxy's connections closed",
                               timeout=10)

    def reset(self, *ops: str) -> None:
        self.reset_ops = frozenset(ops)
        if ops:
            for writer in list(self._open):
                _rst(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        upstream: asyncio.StreamWriter | None = None
        pump: asyncio.Task[None] | None = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (
                    line.decode("latin-1").partition(":") for line in head.split(b"\r\n")[1:])}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                op = headers.get("x-amz-target", "").rpartition(".")[2] or "?"
                if "*" in self.reset_ops or op in self.reset_ops:
                    self.resets[op] = self.resets.get(op, 0) + 1
                    _rst(writer)
                    return
                if upstream is None:
                    up_reader, upstream = await asyncio.open_connection(
                        "127.0.0.1", self.upstream_port)
                    pump = asyncio.create_task(_copy(up_reader, writer))
                upstream.write(head + body)
                await upstream.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            writer.close()
        except asyncio.CancelledError:  # the test's loop ends: nothing left to serve
            writer.close()
        finally:
            self._open.discard(writer)
            if pump is not None:
                pump.cancel()
            if upstream is not None:
                upstream.close()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN: the client sees 'connection reset'."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    writer.close()


async def _start_job(tmp_path: Path, name: str, url: str) -> tuple[Store, int, Engine,
                                                                    asyncio.Task[bool]]:
    arns = [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-{name}{n:05d}" for n in range(ARNS)]
    source = tmp_path / f"{name}.txt"
    source.write_text("\n".join(arns) + "\n")
    # One batch in flight: claims of 20, each read just before it is sent, so reads go on all
    # through the run (a claim of 240 would read everything in the first second).
    settings = fast_settings(tmp_path / f"{name}.db", url, connect_timeout=2.0,
                             request_timeout=5.0, in_flight_per_shard=1)
    store = await Store.open(settings.db)
    # skip_compliant: every claim is read (GetResources) before it is tagged, as the CLI does
    job = await submit(store, [str(source)], Request("tag", tags=TAGS),
                       options=JobOptions(skip_compliant=True))
    engine = Engine(store, settings, owner=new_owner_token(), job_ids={job.job_id})
    return store, job.job_id, engine, asyncio.create_task(engine.run())


async def _through_resets(tmp_path: Path, name: str, ops: tuple[str, ...]) -> None:
    """A job whose connections are reset for a minute once it is under way."""
    async with await start_simulator(SimConfig(seed=5)) as sim:
        proxy = await ResettingProxy(sim.port).start()
        store, job, engine, running = await _start_job(tmp_path, name, proxy.url)

        async def under_way() -> bool:
            done = (await store.counts(job))["succeeded"]
            return 20 <= done < ARNS - 100

        await wait_until_async(under_way, "the job under way", timeout=30)
        proxy.reset(*ops)
        calls_before = sum(engine.stats.requests.values())
        await asyncio.sleep(OUTAGE_SECONDS)  # the scenario: the outage lasts this long
        calls = sum(engine.stats.requests.values()) - calls_before
        during = await store.counts(job)
        assert not running.done(), "the run ended during the outage"
        proxy.reset()
        assert await asyncio.wait_for(running, 120)
        await proxy.close()
        rows = await items(store, job)
        assert {r["status"] for r in rows.values()} == {"succeeded"}
        assert {r["attempts"] for r in rows.values()} == {1}  # the outage spent none
        assert all(sim.state.tags(a) == TAGS for a in rows)
        assert during["failed"] == 0 and during["succeeded"] < ARNS
        for op in ops:
            assert proxy.resets.get(op, 0) >= 2, proxy.resets  # reset, then probed and reset
        assert 2 <= calls <= 15, calls  # paused: one probe at growing intervals, no hammering
        assert not engine.snapshot().unreachable_shards  # it noticed the end by itself
        await store.close()


async def _through_a_stopped_simulator(tmp_path: Path) -> None:
    """A job whose simulator is stopped for a minute (its port refuses) and started again."""
    state = SimState()
    sim = await start_simulator(SimConfig(seed=6), state=state)
    port = sim.port
    store, job, engine, running = await _start_job(tmp_path, "stopped", sim.url)

    async def under_way() -> bool:
        done = (await store.counts(job))["succeeded"]
        return 20 <= done < ARNS - 100

    await wait_until_async(under_way, "the job under way", timeout=30)
    await sim.close()
    calls_before = sum(engine.stats.requests.values())
    await asyncio.sleep(OUTAGE_SECONDS)  # the scenario: the simulator is down this long
    calls = sum(engine.stats.requests.values()) - calls_before
    during = await store.counts(job)
    assert not running.done(), "the run ended during the outage"
    async with await start_simulator(SimConfig(seed=7), port=port, state=state) as sim:
        assert await asyncio.wait_for(running, 120)
        rows = await items(store, job)
        assert {r["status"] for r in rows.values()} == {"succeeded"}
        assert {r["attempts"] for r in rows.values()} == {1}  # the outage spent none
        untagged = [a for a in rows if sim.state.tags(a) != TAGS]
        assert not untagged, (len(untagged), untagged[:3], sim.state.tags(untagged[0]))
    assert during["failed"] == 0 and during["succeeded"] < ARNS
    assert 2 <= calls <= 15, calls  # paused: one probe at growing intervals, no hammering
    await store.close()


async def test_minute_long_outages_mid_run_pause_and_complete(tmp_path: Path) -> None:
    """Resets during the compliance reads (GetResources), resets during tagging (TagResources),
    and a stopped simulator: 60 s each, all at once; every job completes, nothing spent."""
    await asyncio.gather(
        _through_resets(tmp_path, "reads", ("GetResources",)),
        _through_resets(tmp_path, "tagging", ("TagResources",)),
        _through_a_stopped_simulator(tmp_path),
    )
