"""FastTaggingClient against the simulator, next to the botocore client it wraps: the same
answers for tag, untag and GetResources (by ARN list and paginated), and the same exceptions,
`failure_of` records and verdicts for a 500, a throttle, an expired token and a refused
connection. Two ClientPools on one simulator, fast_calls on and off."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bulktag.arn import Shard
from bulktag.aws.clients import ClientPool
from bulktag.aws.fast_tagging import FastTaggingClient
from bulktag.aws.reads import failure_of, is_call_error
from bulktag.config import Settings
from bulktag.policy.classify import Failure, classify_call_error
from bulktag.sim import RunningSimulator, SimConfig, start_simulator

ACCOUNT = "123456789012"
SHARD = Shard("aws", ACCOUNT, "eu-west-1")


def arn(name: str) -> str:
    return f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{name}"


def data(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without its ResponseMetadata (request ids and dates differ per call)."""
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


class Pair:
    """The fast and the botocore Tagging API client of one shard, on one endpoint."""

    def __init__(self, fast: Any, boto: Any) -> None:
        self.fast, self.boto = fast, boto

    async def raised(self, call: Callable[[Any], Awaitable[Any]]) -> tuple[Exception, Exception]:
        """What each client raises for the same call (both must raise)."""
        out: list[Exception] = []
        for client in (self.fast, self.boto):
            with pytest.raises(Exception) as info:
                await call(client)
            assert isinstance(info.value, Exception)
            out.append(info.value)
        return out[0], out[1]


async def pools(endpoint: str, **settings: Any) -> tuple[ClientPool, ClientPool]:
    return (ClientPool(Settings(endpoint_url=endpoint, fast_calls=True, **settings)),
            ClientPool(Settings(endpoint_url=endpoint, fast_calls=False, **settings)))


@pytest.fixture
async def pair(sim: RunningSimulator) -> AsyncIterator[Pair]:
    fast_pool, boto_pool = await pools(sim.url)
    try:
        yield Pair(await fast_pool.tagging(SHARD), await boto_pool.tagging(SHARD))
    finally:
        await fast_pool.close()
        await boto_pool.close()


def same_failure(fast: Exception, boto: Exception) -> Failure:
    """Both exceptions of one class (botocore makes a ClientError subclass per code and per
    client: the same name and bases), and one record and verdict for both."""
    assert [c.__name__ for c in type(fast).__mro__] == [c.__name__ for c in type(boto).__mro__]
    assert is_call_error(fast) and is_call_error(boto)
    assert failure_of(fast) == failure_of(boto)
    assert str(fast) == str(boto)
    assert classify_call_error(failure_of(fast), 20) is classify_call_error(failure_of(boto), 20)
    return failure_of(fast)


async def test_the_pool_wraps_only_with_fast_calls_on(pair: Pair) -> None:
    assert isinstance(pair.fast, FastTaggingClient)
    assert not isinstance(pair.boto, FastTaggingClient)
    # Everything but the three hot calls is the botocore client's.
    assert pair.fast.meta.region_name == "eu-west-1"
    assert pair.fast.meta.endpoint_url == pair.boto.meta.endpoint_url
    assert pair.fast.exceptions.ThrottledException is pair.fast._client.exceptions.ThrottledException
    keys = await pair.fast.get_tag_keys()
    assert data(keys) == data(await pair.boto.get_tag_keys())
    assert pair.fast.get_paginator("get_resources").PAGE_ITERATOR_CLS is not None


async def test_tag_untag_and_get_answer_as_botocore(pair: Pair, sim: RunningSimulator) -> None:
    arns = [arn(f"i-{n}") for n in range(5)] + [arn("i-denied-1"), arn("i-missing-1")]
    tags = {"team": "data", "cost centre": "ünïcode é", "empty": ""}
    fast = await pair.fast.tag_resources(ResourceARNList=arns, Tags=tags)
    assert set(fast["FailedResourcesMap"]) == {arn("i-denied-1"), arn("i-missing-1")}
    assert fast["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert sim.state.tags(arn("i-0")) == tags
    # The botocore client sending the same call answers the same.
    assert data(await pair.boto.tag_resources(ResourceARNList=arns, Tags=tags)) == data(fast)

    by_list = {"ResourceARNList": arns}
    read = await pair.fast.get_resources(**by_list)
    assert data(read) == data(await pair.boto.get_resources(**by_list))
    assert {m["ResourceARN"] for m in read["ResourceTagMappingList"]} == set(arns[:5])

    fast = await pair.fast.untag_resources(ResourceARNList=arns[:3], TagKeys=["team", "empty"])
    assert fast["FailedResourcesMap"] == {}
    assert sim.state.tags(arn("i-0")) == {"cost centre": "ünïcode é"}
    assert data(await pair.boto.untag_resources(ResourceARNList=arns[:3],
                                                TagKeys=["team", "empty"])) == data(fast)
    assert data(await pair.fast.get_resources(**by_list)) == data(
        await pair.boto.get_resources(**by_list))


async def test_paginated_get_resources_walks_as_botocore(pair: Pair) -> None:
    arns = [arn(f"i-page-{n:02}") for n in range(7)]
    await pair.boto.tag_resources(ResourceARNList=arns, Tags={"walk": "yes"})

    async def walk(client: Any) -> list[list[str]]:
        pages, token = [], ""
        while True:
            params: dict[str, Any] = {"ResourcesPerPage": 3,
                                      "TagFilters": [{"Key": "walk", "Values": ["yes"]}]}
            if token:
                params["PaginationToken"] = token
            page = await client.get_resources(**params)
            pages.append([m["ResourceARN"] for m in page["ResourceTagMappingList"]])
            token = page.get("PaginationToken", "")
            if not token:
                return pages

    fast = await walk(pair.fast)
    assert [len(p) for p in fast] == [3, 3, 1]
    assert fast == await walk(pair.boto)


async def test_a_500_raises_what_botocore_raises(pair: Pair, sim: RunningSimulator) -> None:
    sim.reconfigure(whole_call_error_rate=1.0)
    fast, boto = await pair.raised(
        lambda c: c.tag_resources(ResourceARNList=[arn("i-1")], Tags={"k": "v"}))
    failure = same_failure(fast, boto)
    assert (failure.code, failure.status) == ("InternalServiceException", 500)
    assert type(fast).__name__ == "InternalServiceException"
    assert isinstance(fast, ClientError)


async def test_an_expired_token_raises_what_botocore_raises(
    pair: Pair, sim: RunningSimulator
) -> None:
    sim.reconfigure(expired_token_rate=1.0)
    fast, boto = await pair.raised(
        lambda c: c.untag_resources(ResourceARNList=[arn("i-1")], TagKeys=["k"]))
    assert same_failure(fast, boto).code == "ExpiredTokenException"


async def test_a_throttle_raises_what_botocore_raises() -> None:
    # One token for the shard's TagResources, refilled in 1,000 s: the first call spends it.
    config = SimConfig(seed=3, quotas={"TagResources": 0.001}, burst_seconds=1.0)
    async with await start_simulator(config) as sim:
        fast_pool, boto_pool = await pools(sim.url)
        try:
            pair = Pair(await fast_pool.tagging(SHARD), await boto_pool.tagging(SHARD))
            await pair.fast.tag_resources(ResourceARNList=[arn("i-1")], Tags={"k": "v"})
            fast, boto = await pair.raised(
                lambda c: c.tag_resources(ResourceARNList=[arn("i-2")], Tags={"k": "v"}))
        finally:
            await fast_pool.close()
            await boto_pool.close()
    failure = same_failure(fast, boto)
    assert (failure.code, failure.status) == ("ThrottledException", 400)
    assert type(fast).__name__ == "ThrottledException"


async def test_a_refused_connection_raises_what_botocore_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        fast_pool, boto_pool = await pools(f"http://127.0.0.1:{port}")
        try:
            pair = Pair(await fast_pool.tagging(SHARD), await boto_pool.tagging(SHARD))
            for call in (lambda c: c.get_resources(ResourceARNList=[arn("i-1")]),
                         lambda c: c.tag_resources(ResourceARNList=[arn("i-1")],
                                                   Tags={"k": "v"})):
                fast, boto = await pair.raised(call)
                failure = same_failure(fast, boto)
                assert (failure.code, failure.status) == ("EndpointConnectionError", None)
        finally:
            await fast_pool.close()
            await boto_pool.close()


@pytest.mark.parametrize(("behaviour", "code"), [
    ("hang up", "ConnectionClosedError"),  # the request read, the connection closed unanswered
    ("half answer", "ConnectionClosedError"),  # a Content-Length the body never reaches
    ("silence", "ReadTimeoutError"),  # the request read, nothing ever written back
])
async def test_a_dropped_or_silent_endpoint_raises_what_botocore_raises(
    behaviour: str, code: str
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if behaviour == "half answer":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                         b"Content-Type: application/x-amz-json-1.1\r\n\r\n{")
            await writer.drain()
        elif behaviour == "silence":
            await asyncio.sleep(5)  # the scenario: silent far past the client's 0.3 s timeout
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fast_pool, boto_pool = await pools(f"http://127.0.0.1:{port}", request_timeout=0.3)
    try:
        pair = Pair(await fast_pool.tagging(SHARD), await boto_pool.tagging(SHARD))
        fast, boto = await pair.raised(
            lambda c: c.tag_resources(ResourceARNList=[arn("i-1")], Tags={"k": "v"}))
        failure = same_failure(fast, boto)
        assert (failure.code, failure.status) == (code, None)
    finally:
        await fast_pool.close()
        await boto_pool.close()
        server.close()


async def test_invalidate_drops_the_wrapper_with_its_client(sim: RunningSimulator) -> None:
    pool = ClientPool(Settings(endpoint_url=sim.url))
    try:
        first = await pool.tagging(SHARD)
        assert await pool.tagging(SHARD) is first
        await pool.invalidate(SHARD)
        second = await pool.tagging(SHARD)
        assert isinstance(second, FastTaggingClient) and second is not first
        assert second._client is not first._client
        # The retired one still answers a call that was in flight when it was dropped.
        await first.tag_resources(ResourceARNList=[arn("i-1")], Tags={"k": "v"})
        await second.tag_resources(ResourceARNList=[arn("i-1")], Tags={"k": "w"})
        assert sim.state.tags(arn("i-1")) == {"k": "w"}
    finally:
        await pool.close()
