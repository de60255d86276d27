"""The simulator, driven through real aiobotocore clients over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from bulktag.sim import RunningSimulator, SimConfig, start_simulator, synthetic_arns

ACCOUNT = "123456789012"
OTHER = "210987654321"
REGION = "us-east-1"


def arn(name: str, *, region: str = REGION, account: str = ACCOUNT, kind: str = "instance") -> str:
    return f"arn:aws:ec2:{region}:{account}:{kind}/{name}"


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with await start_simulator(SimConfig(enforce_quotas=False, seed=1)) as running:
        yield running


ClientFactory = Callable[..., Any]


@pytest.fixture
async def make_client(sim: RunningSimulator) -> AsyncIterator[ClientFactory]:
    async with AsyncExitStack() as stack:

        async def make(
            region: str = REGION,
            key: str = "testing",
            validate: bool = True,
            service: str = "resourcegroupstaggingapi",
            **creds: str,
        ) -> Any:
            return await stack.enter_async_context(
                get_session().create_client(
                    service,
                    region_name=region,
                    endpoint_url=sim.url,
                    aws_access_key_id=key,
                    aws_secret_access_key="testing",
                    config=AioConfig(
                        retries={"total_max_attempts": 1}, parameter_validation=validate
                    ),
                    **creds,
                )
            )

        yield make


@pytest.fixture
async def client(make_client: ClientFactory) -> Any:
    return await make_client()


async def error_code(call: Any) -> str:
    with pytest.raises(ClientError) as info:
        await call
    return str(info.value.response["Error"]["Code"])


async def all_resources(client: Any, **kwargs: Any) -> list[dict[str, Any]]:
    found = []
    async for page in client.get_paginator("get_resources").paginate(**kwargs):
        found.extend(page["ResourceTagMappingList"])
    return found


def as_dict(mapping: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in mapping["Tags"]}


# ---------------------------------------------------------------- tag / untag


async def test_tag_then_untag_round_trips_through_get_resources(
    client: Any, sim: RunningSimulator
) -> None:
    arns = [arn(f"i-{n}") for n in range(3)]
    out = await client.tag_resources(ResourceARNList=arns, Tags={"team": "blue", "env": "prod"})
    assert out["FailedResourcesMap"] == {}
    got = await client.get_resources(ResourceARNList=arns)
    assert {m["ResourceARN"]: as_dict(m) for m in got["ResourceTagMappingList"]} == {
        a: {"team": "blue", "env": "prod"} for a in arns
    }

    out = await client.untag_resources(ResourceARNList=arns[:2], TagKeys=["team", "absent"])
    assert out["FailedResourcesMap"] == {}
    assert sim.state.tags(arns[0]) == {"env": "prod"}
    assert sim.state.tags(arns[2]) == {"team": "blue", "env": "prod"}
    assert sim.state.sends[arns[0]] == 2 and sim.state.sends[arns[2]] == 1


async def test_unicode_and_empty_values_are_accepted(client: Any, sim: RunningSimulator) -> None:
    a = arn("i-unicode")
    tags = {"Kostenstelle": "Größe 42", "名前": "値", "a_b.c:d/e=f+g-h@i": ""}
    out = await client.tag_resources(ResourceARNList=[a], Tags=tags)
    assert out["FailedResourcesMap"] == {}
    assert sim.state.tags(a) == tags


@pytest.mark.parametrize(
    "params",
    [
        {"ResourceARNList": [], "Tags": {"k": "v"}},
        {"ResourceARNList": [arn(f"i-{n}") for n in range(21)], "Tags": {"k": "v"}},
        {"ResourceARNList": ["arn:aws:ec2:us-east-1:123456789012:instance/" + "x" * 1000],
         "Tags": {"k": "v"}},
        {"ResourceARNList": [arn("i-1")], "Tags": {}},
        {"ResourceARNList": [arn("i-1")], "Tags": {f"k{n}": "v" for n in range(51)}},
        {"ResourceARNList": [arn("i-1")], "Tags": {"": "v"}},
        {"ResourceARNList": [arn("i-1")], "Tags": {"k" * 129: "v"}},
        {"ResourceARNList": [arn("i-1")], "Tags": {"k": "v" * 257}},
        {"ResourceARNList": [arn("i-1")], "Tags": {"bad*key": "v"}},
        {"ResourceARNList": [arn("i-1")], "Tags": {"k": "tab\tvalue"}},
        {"ResourceARNList": [arn("i-1")], "Tags": {"aws:reserved": "v"}},
        {"ResourceARNList": [arn("i-1")], "Tags": {"AWS:Reserved": "v"}},
        {"ResourceARNList": ["not-an-arn"], "Tags": {"k": "v"}},
    ],
    ids=[
        "no-arns", "21-arns", "arn-too-long", "no-tags", "51-tags", "empty-key", "long-key",
        "long-value", "bad-key-char", "bad-value-char", "aws-prefix", "aws-prefix-any-case",
        "malformed-arn",
    ],
)
async def test_tag_parameter_checks_fail_the_whole_call(
    make_client: ClientFactory, sim: RunningSimulator, params: dict[str, Any]
) -> None:
    client = await make_client(validate=False)
    assert await error_code(client.tag_resources(**params)) == "InvalidParameterException"
    assert sim.state.stats["resources"] == 0


@pytest.mark.parametrize(
    "keys", [[], [f"k{n}" for n in range(51)], [""], ["k" * 129], ["aws:x"], ["bad*key"]]
)
async def test_untag_parameter_checks_fail_the_whole_call(
    make_client: ClientFactory, keys: list[str]
) -> None:
    client = await make_client(validate=False)
    code = await error_code(client.untag_resources(ResourceARNList=[arn("i-1")], TagKeys=keys))
    assert code == "InvalidParameterException"


async def test_unsupported_resource_type_fails_the_whole_call(
    client: Any, sim: RunningSimulator
) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/admin"
    call = client.tag_resources(ResourceARNList=[arn("i-ok"), role], Tags={"k": "v"})
    assert await error_code(call) == "InvalidParameterException"
    assert sim.state.tags(arn("i-ok")) is None  # nothing of the call was applied


async def test_markers_and_mismatches_fail_per_resource(
    make_client: ClientFactory, sim: RunningSimulator
) -> None:
    client = await make_client(region="eu-west-1")
    ok = arn("i-ok", region="eu-west-1")
    wrong_region = arn("i-wr", region="us-west-2")
    wrong_account = arn("i-wa", region="eu-west-1", account=OTHER)
    denied = arn("i-denied", region="eu-west-1")
    missing = arn("i-missing", region="eu-west-1")
    out = await client.tag_resources(
        ResourceARNList=[ok, wrong_region, wrong_account, denied, missing], Tags={"k": "v"}
    )
    failed = {a: (f["ErrorCode"], f["StatusCode"]) for a, f in out["FailedResourcesMap"].items()}
    assert failed == {
        wrong_region: ("InvalidParameterException", 400),
        wrong_account: ("AccessDeniedException", 403),
        denied: ("AccessDeniedException", 403),
        missing: ("ResourceNotFoundException", 404),
    }
    assert all(f["ErrorMessage"] for f in out["FailedResourcesMap"].values())
    assert sim.state.tags(ok) == {"k": "v"}
    assert all(sim.state.tags(a) is None for a in failed)


async def test_global_resources_are_tagged_through_us_east_1(
    make_client: ClientFactory, sim: RunningSimulator
) -> None:
    dist = f"arn:aws:cloudfront::{ACCOUNT}:distribution/E1"
    east = await make_client(region="us-east-1")
    west = await make_client(region="us-west-2")
    out = await west.tag_resources(ResourceARNList=[dist], Tags={"k": "v"})
    assert out["FailedResourcesMap"][dist]["ErrorCode"] == "InvalidParameterException"
    out = await east.tag_resources(ResourceARNList=[dist], Tags={"k": "v"})
    assert out["FailedResourcesMap"] == {}
    assert sim.state.tags(dist) == {"k": "v"}


async def test_sim_access_key_selects_the_callers_account(
    make_client: ClientFactory, sim: RunningSimulator
) -> None:
    other = await make_client(key=f"sim-{OTHER}")
    mine, theirs = arn("i-mine"), arn("i-theirs", account=OTHER)
    out = await other.tag_resources(ResourceARNList=[mine, theirs], Tags={"k": "v"})
    assert set(out["FailedResourcesMap"]) == {mine}
    assert out["FailedResourcesMap"][mine]["ErrorCode"] == "AccessDeniedException"
    # An account-less ARN (S3) belongs to whoever tags it.
    bucket = "arn:aws:s3:::my-bucket"
    await other.tag_resources(ResourceARNList=[bucket], Tags={"k": "v"})
    assert [m["ResourceARN"] for m in await all_resources(other)] == [theirs, bucket]


async def test_at_most_50_tags_per_resource(client: Any, sim: RunningSimulator) -> None:
    a = arn("i-full")
    await client.tag_resources(ResourceARNList=[a], Tags={f"k{n}": "v" for n in range(40)})
    out = await client.tag_resources(ResourceARNList=[a], Tags={f"x{n}": "v" for n in range(11)})
    assert out["FailedResourcesMap"][a]["ErrorCode"] == "InvalidParameterException"
    # Overwriting existing keys does not add to the count.
    out = await client.tag_resources(
        ResourceARNList=[a],
        Tags={**{f"k{n}": "w" for n in range(40)}, **{f"x{n}": "v" for n in range(10)}},
    )
    assert out["FailedResourcesMap"] == {}
    assert len(sim.state.tags(a) or {}) == 50


async def test_resource_fault_rates_fill_failed_resources_map(
    client: Any, sim: RunningSimulator
) -> None:
    arns = [arn(f"i-{n}") for n in range(20)]
    sim.reconfigure(resource_error_rate=1.0)
    out = await client.tag_resources(ResourceARNList=arns, Tags={"k": "v"})
    assert {(f["ErrorCode"], f["StatusCode"]) for f in out["FailedResourcesMap"].values()} == {
        ("InternalServiceException", 500)
    }
    assert len(out["FailedResourcesMap"]) == 20
    sim.reconfigure(resource_error_rate=0.0, resource_throttle_rate=0.5)
    out = await client.tag_resources(ResourceARNList=arns, Tags={"k": "v"})
    codes = {(f["ErrorCode"], f["StatusCode"]) for f in out["FailedResourcesMap"].values()}
    assert codes == {("ThrottlingException", 400)}
    assert 0 < len(out["FailedResourcesMap"]) < 20
    tagged = [a for a in arns if sim.state.tags(a) == {"k": "v"}]
    assert len(tagged) == 20 - len(out["FailedResourcesMap"])


async def test_whole_call_fault_answers_500(client: Any, sim: RunningSimulator) -> None:
    sim.reconfigure(whole_call_error_rate=1.0)
    with pytest.raises(ClientError) as info:
        await client.tag_resources(ResourceARNList=[arn("i-1")], Tags={"k": "v"})
    assert info.value.response["Error"]["Code"] == "InternalServiceException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert sim.state.tags(arn("i-1")) is None
    assert sim.state.sends[arn("i-1")] == 1  # it was sent, though not applied


# ---------------------------------------------------------------- quotas


async def test_quota_throttles_a_burst_and_counts_it() -> None:
    config = SimConfig(quotas={"TagResources": 2.0}, burst_seconds=2.0)
    async with await start_simulator(config) as sim, get_session().create_client(
        "resourcegroupstaggingapi",
        region_name=REGION,
        endpoint_url=sim.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(retries={"total_max_attempts": 1}),
    ) as client:
        outcomes = await asyncio.gather(
            *(
                client.tag_resources(ResourceARNList=[arn(f"i-{n}")], Tags={"k": "v"})
                for n in range(10)
            ),
            return_exceptions=True,
        )
        throttled = [o for o in outcomes if isinstance(o, ClientError)]
        assert all(o.response["Error"]["Code"] == "ThrottledException" for o in throttled)
        assert all(
            o.response["ResponseMetadata"]["HTTPStatusCode"] == 400 for o in throttled
        )
        # Capacity is 4 tokens; a refill of 2/s can add at most a couple during the burst.
        assert 4 <= 10 - len(throttled) <= 6
        # Another region of the same account has its own bucket.
        west = arn("i-w", region="us-west-2")
        async with get_session().create_client(
            "resourcegroupstaggingapi", region_name="us-west-2", endpoint_url=sim.url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=AioConfig(retries={"total_max_attempts": 1}),
        ) as west_client:
            await west_client.tag_resources(ResourceARNList=[west], Tags={"k": "v"})

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sim.url}/_sim/stats") as resp:
                stats = await resp.json()
        assert stats["requests"]["TagResources"] == 11
        assert stats["throttled"]["TagResources"] == len(throttled)
        assert stats["arn_sends"]["TagResources"] == 11 - len(throttled)
        assert stats["resources"] == 11 - len(throttled)


# ---------------------------------------------------------------- GetResources


async def seed_mixed(client: Any) -> dict[str, dict[str, str]]:
    """Resources of three types with overlapping tags; returns arn -> tags."""
    world = {
        arn("i-1"): {"env": "prod", "team": "blue"},
        arn("i-2"): {"env": "dev", "team": "red"},
        arn("vol-1", kind="volume"): {"env": "prod"},
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f1": {"env": "test", "team": "blue"},
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f2": {"team": ""},
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t1": {"other": "x"},
    }
    for a, tags in world.items():
        await client.tag_resources(ResourceARNList=[a], Tags=tags)
    return world


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {"i-1", "i-2", "vol-1", "f1", "f2", "t1"}),
        ({"TagFilters": [{"Key": "env", "Values": ["prod"]}]}, {"i-1", "vol-1"}),
        ({"TagFilters": [{"Key": "env", "Values": ["prod", "test"]}]}, {"i-1", "vol-1", "f1"}),
        ({"TagFilters": [{"Key": "team"}]}, {"i-1", "i-2", "f1", "f2"}),
        ({"TagFilters": [{"Key": "team", "Values": [""]}]}, {"f2"}),
        (
            {"TagFilters": [{"Key": "env", "Values": ["prod", "test"]}, {"Key": "team"}]},
            {"i-1", "f1"},
        ),
        ({"TagFilters": [{"Key": "nope"}]}, set()),
        ({"ResourceTypeFilters": ["ec2"]}, {"i-1", "i-2", "vol-1"}),
        ({"ResourceTypeFilters": ["ec2:instance"]}, {"i-1", "i-2"}),
        ({"ResourceTypeFilters": ["ec2:volume", "lambda:function"]}, {"vol-1", "f1", "f2"}),
        (
            {"ResourceTypeFilters": ["ec2"], "TagFilters": [{"Key": "env", "Values": ["prod"]}]},
            {"i-1", "vol-1"},
        ),
    ],
)
async def test_get_resources_filters_follow_the_reference(
    client: Any, kwargs: dict[str, Any], expected: set[str]
) -> None:
    world = await seed_mixed(client)
    found = await all_resources(client, ResourcesPerPage=2, **kwargs)
    names = {m["ResourceARN"].rsplit("/", 1)[-1].rsplit(":", 1)[-1] for m in found}
    assert names == expected
    assert len(found) == len(expected)  # no duplicates across pages
    assert all(as_dict(m) == world[m["ResourceARN"]] for m in found)


async def test_untagged_resources_are_listed_only_without_tag_filters(
    client: Any,
) -> None:
    a = arn("i-bare")
    await client.tag_resources(ResourceARNList=[a], Tags={"k": "v"})
    await client.untag_resources(ResourceARNList=[a], TagKeys=["k"])
    assert [(m["ResourceARN"], m["Tags"]) for m in await all_resources(client)] == [(a, [])]
    assert await all_resources(client, TagFilters=[{"Key": "k"}]) == []


async def test_pagination_is_stable_and_complete(
    make_client: ClientFactory, sim: RunningSimulator
) -> None:
    sim.state.seed([ACCOUNT, OTHER], [REGION, "eu-west-1"], 120, {"seeded": "yes"})
    client = await make_client()
    first = await client.get_resources()
    assert len(first["ResourceTagMappingList"]) == 50 and first["PaginationToken"]
    found = await all_resources(client, ResourcesPerPage=7)
    expected = list(synthetic_arns([ACCOUNT], [REGION], 120))
    assert [m["ResourceARN"] for m in found] == expected
    assert await all_resources(client, ResourcesPerPage=7) == found


async def test_get_resources_by_arn_list(client: Any, make_client: ClientFactory) -> None:
    world = await seed_mixed(client)
    asked = [*list(world)[:3], arn("i-unknown"), arn("i-other", account=OTHER)]
    got = await client.get_resources(ResourceARNList=asked)
    assert [m["ResourceARN"] for m in got["ResourceTagMappingList"]] == asked[:3]
    raw = await make_client(validate=False)
    bad: dict[str, Any]
    for bad in (
        {"ResourceARNList": asked, "ResourcesPerPage": 10},
        {"ResourceARNList": asked, "PaginationToken": "x"},
        {"ResourceARNList": asked, "TagsPerPage": 100},
        {"ResourceARNList": [arn(f"i-{n}") for n in range(101)]},
        {"ResourceARNList": []},
    ):
        assert await error_code(raw.get_resources(**bad)) == "InvalidParameterException", bad


@pytest.mark.parametrize(
    "params",
    [
        {"ResourcesPerPage": 0},
        {"ResourcesPerPage": 101},
        {"TagsPerPage": 99},
        {"PaginationToken": "garbage"},
        {"TagFilters": [{"Key": "k", "Values": [str(n) for n in range(21)]}]},
        {"TagFilters": [{"Key": f"k{n}"} for n in range(51)]},
        {"ResourceTypeFilters": ["ec2"] * 101},
    ],
)
async def test_get_resources_parameter_checks(
    make_client: ClientFactory, params: dict[str, Any]
) -> None:
    client = await make_client(validate=False)
    assert await error_code(client.get_resources(**params)) == "InvalidParameterException"


async def test_expired_pagination_token_is_refused(client: Any, sim: RunningSimulator) -> None:
    sim.state.seed([ACCOUNT], [REGION], 5)
    page = await client.get_resources(ResourcesPerPage=2)
    sim.reconfigure(pagination_token_ttl=0.05)
    await asyncio.sleep(0.1)  # the scenario: the token outlives its TTL (the sim's own clock)
    code = await error_code(client.get_resources(PaginationToken=page["PaginationToken"]))
    assert code == "PaginationTokenExpiredException"


async def test_tokens_do_not_cross_regions(
    make_client: ClientFactory, sim: RunningSimulator
) -> None:
    sim.state.seed([ACCOUNT], [REGION], 5)
    page = await (await make_client()).get_resources(ResourcesPerPage=2)
    west = await make_client(region="us-west-2")
    code = await error_code(west.get_resources(PaginationToken=page["PaginationToken"]))
    assert code == "InvalidParameterException"


# ---------------------------------------------------------------- GetTagKeys / GetTagValues


async def test_get_tag_keys_and_values_paginate_over_the_callers_shard(
    make_client: ClientFactory, client: Any
) -> None:
    for n in range(3):
        await client.tag_resources(
            ResourceARNList=[arn(f"i-{n}")], Tags={f"key{n}-{k:02d}": f"v{n}" for k in range(50)}
        )
    await client.tag_resources(ResourceARNList=[arn("i-x")], Tags={"key0-00": "other"})
    west = await make_client(region="us-west-2")
    west_arn = arn("i-w", region="us-west-2")
    await west.tag_resources(ResourceARNList=[west_arn], Tags={"westkey": "w"})

    keys: list[str] = []
    pages = 0
    async for page in client.get_paginator("get_tag_keys").paginate():
        keys.extend(page["TagKeys"])
        pages += 1
    assert pages == 2
    assert keys == sorted(f"key{n}-{k:02d}" for n in range(3) for k in range(50))

    values = await client.get_tag_values(Key="key0-00")
    assert values["TagValues"] == ["other", "v0"] and values["PaginationToken"] == ""
    assert (await west.get_tag_keys())["TagKeys"] == ["westkey"]
    raw = await make_client(validate=False)
    assert await error_code(raw.get_tag_values()) == "InvalidParameterException"


# ---------------------------------------------------------------- /_sim endpoints


async def test_sim_endpoints_seed_show_tags_and_reconfigure(sim: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sim.url}/_sim/seed",
            json={"accounts": [ACCOUNT], "regions": [REGION], "per_region": 4, "tags": {"a": "b"}},
        ) as resp:
            assert (await resp.json())["added"] == 4
        first = next(synthetic_arns([ACCOUNT], [REGION], 1))
        async with http.get(f"{sim.url}/_sim/tags", params={"arn": first}) as resp:
            assert resp.status == 200 and await resp.json() == {"a": "b"}
        async with http.get(f"{sim.url}/_sim/tags", params={"arn": arn("nope")}) as resp:
            assert resp.status == 404
        async with http.post(
            f"{sim.url}/_sim/config",
            json={
                "latency_ms": [1, 2],
                "quotas": {"TagResources": 50},
                "resource_error_rate": 0.25,
            },
        ) as resp:
            assert resp.status == 200
        async with http.post(f"{sim.url}/_sim/config", json={"bogus": 1}) as resp:
            assert resp.status == 400
    assert sim.config.latency_ms == (1.0, 2.0)
    assert sim.config.quotas["TagResources"] == 50.0 and sim.config.quotas["GetResources"] == 15.0
    assert sim.config.resource_error_rate == 0.25
