"""The simulator's EC2 CreateTags / DeleteTags / DescribeTags, driven through real boto3 clients
over HTTP (in a worker thread, so the simulator's event loop keeps serving)."""

from __future__ import annotations

import argparse
import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bulktag.sim import (
    RunningSimulator,
    SimConfig,
    add_sim_arguments,
    config_from_args,
    ec2_arn,
    ec2_resource_id,
    seed_from_args,
    start_simulator,
    synthetic_arns,
)

ACCOUNT = "123456789012"
OTHER = "210987654321"
REGION = "us-east-1"
WEST = "us-west-2"


def snap(n: int | str) -> str:
    return f"snap-{n}"


def arn_of(resource_id: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    arn = ec2_arn(resource_id, region, account)
    assert arn is not None
    return arn


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with await start_simulator(SimConfig(enforce_quotas=False, seed=1)) as running:
        yield running


ClientFactory = Callable[..., Any]


@pytest.fixture
def make_client(sim: RunningSimulator) -> ClientFactory:
    def make(service: str = "ec2", region: str = REGION, key: str = "testing",
             validate: bool = True) -> Any:
        return boto3.client(
            service, endpoint_url=sim.url, region_name=region, aws_access_key_id=key,
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}, parameter_validation=validate),
        )

    return make


@pytest.fixture
def ec2(make_client: ClientFactory) -> Any:
    return make_client()


async def call(method: Callable[..., Any], **kwargs: Any) -> Any:
    """Run a blocking boto3 call off the event loop the simulator serves on."""
    return await asyncio.to_thread(functools.partial(method, **kwargs))


async def client_error(method: Callable[..., Any], **kwargs: Any) -> tuple[str, str, int]:
    """(Error.Code, Error.Message, HTTP status) of a call that must fail."""
    with pytest.raises(ClientError) as info:
        await call(method, **kwargs)
    response = info.value.response
    return (str(response["Error"]["Code"]), str(response["Error"]["Message"]),
            int(response["ResponseMetadata"]["HTTPStatusCode"]))


def put(sim: RunningSimulator, *ids: str, tags: dict[str, str] | None = None,
        region: str = REGION, account: str = ACCOUNT) -> None:
    """Make EC2 resources exist (EC2 CreateTags creates nothing)."""
    for resource_id in ids:
        sim.state.put(arn_of(resource_id, region=region, account=account), tags or {},
                      account=account)


async def describe(ec2: Any, **kwargs: Any) -> list[dict[str, str]]:
    def walk() -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        for page in ec2.get_paginator("describe_tags").paginate(**kwargs):
            found.extend(page["Tags"])
        return found

    return await asyncio.to_thread(walk)


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


async def sim_json(sim: RunningSimulator, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as http:
        if body is None:
            async with http.get(f"{sim.url}{path}") as resp:
                assert resp.status == 200
                return await resp.json()
        async with http.post(f"{sim.url}{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


# ---------------------------------------------------------------- round trip


async def test_create_describe_delete_round_trip(ec2: Any, sim: RunningSimulator) -> None:
    ids = [snap(1), "vol-1", "i-1"]
    put(sim, *ids)
    out = await call(ec2.create_tags, Resources=ids,
                     Tags=tag_list({"team": "blue", "env": "prod", "empty": ""}))
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
    tags = await describe(ec2, Filters=[{"Name": "resource-id", "Values": ids}])
    assert sorted((t["ResourceId"], t["ResourceType"], t["Key"], t["Value"]) for t in tags) == \
        sorted((i, rtype, k, v) for i, rtype in zip(ids, ["snapshot", "volume", "instance"],
                                                     strict=True)
               for k, v in {"team": "blue", "env": "prod", "empty": ""}.items())

    # Key only: deleted whatever the value. Key with Value: only if the value matches, and an
    # empty Value matches only an empty value.
    await call(ec2.delete_tags, Resources=[snap(1)],
               Tags=[{"Key": "team"}, {"Key": "env", "Value": "dev"}, {"Key": "empty", "Value": ""}])
    assert sim.state.tags(arn_of(snap(1))) == {"env": "prod"}
    await call(ec2.delete_tags, Resources=["vol-1"],
               Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": ""}])
    assert sim.state.tags(arn_of("vol-1")) == {"team": "blue", "empty": ""}
    # DryRun answers 412 DryRunOperation and changes nothing.
    code, _, status = await client_error(ec2.delete_tags, Resources=["i-1"], DryRun=True)
    assert (code, status) == ("DryRunOperation", 412)
    assert len(sim.state.tags(arn_of("i-1")) or {}) == 3
    # No tags at all: every tag of the resource goes.
    await call(ec2.delete_tags, Resources=["i-1"])
    assert sim.state.tags(arn_of("i-1")) == {}
    # Untagged resources have no DescribeTags items.
    assert {t["ResourceId"] for t in await describe(ec2)} == {snap(1), "vol-1"}


async def test_describe_tags_filters(ec2: Any, sim: RunningSimulator) -> None:
    put(sim, snap(1), tags={"env": "prod", "team": "blue"})
    put(sim, "vol-1", tags={"env": "production"})
    put(sim, "i-1", tags={"Env": "prod"})
    sim.state.put(f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f", {"env": "prod"})

    async def items(*filters: tuple[str, list[str]]) -> set[tuple[str, str]]:
        found = await describe(ec2, Filters=[{"Name": n, "Values": v} for n, v in filters])
        return {(t["ResourceId"], t["Key"]) for t in found}

    assert await items() == {(snap(1), "env"), (snap(1), "team"), ("vol-1", "env"), ("i-1", "Env")}
    assert await items(("key", ["env"])) == {(snap(1), "env"), ("vol-1", "env")}
    assert await items(("value", ["prod*"])) == {(snap(1), "env"), ("vol-1", "env"),
                                                 ("i-1", "Env")}
    assert await items(("value", ["pro?"])) == {(snap(1), "env"), ("i-1", "Env")}
    assert await items(("resource-type", ["snapshot", "instance"]), ("key", ["env", "Env"])) == \
        {(snap(1), "env"), ("i-1", "Env")}
    code, message, status = await client_error(
        ec2.describe_tags, Filters=[{"Name": "bogus", "Values": ["x"]}])
    assert (code, status) == ("InvalidParameterValue", 400) and "bogus" in message


@pytest.mark.parametrize("max_results", [4, 1001])
async def test_describe_tags_max_results_bounds(
    make_client: ClientFactory, max_results: int
) -> None:
    ec2 = make_client(validate=False)
    code, _, status = await client_error(ec2.describe_tags, MaxResults=max_results)
    assert (code, status) == ("InvalidParameterValue", 400)


# ---------------------------------------------------------------- one store for both APIs


async def test_tagging_api_writes_are_seen_by_describe_tags(
    make_client: ClientFactory, ec2: Any
) -> None:
    tagging = make_client("resourcegroupstaggingapi")
    snapshot_arn = f"arn:aws:ec2:{REGION}::snapshot/snap-0abc"  # no account in the ARN
    instance_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0abc"
    out = await call(tagging.tag_resources, ResourceARNList=[snapshot_arn, instance_arn],
                     Tags={"owner": "ops"})
    assert out["FailedResourcesMap"] == {}
    found = await describe(ec2, Filters=[{"Name": "key", "Values": ["owner"]}])
    assert sorted((t["ResourceId"], t["ResourceType"], t["Value"]) for t in found) == [
        ("i-0abc", "instance", "ops"), ("snap-0abc", "snapshot", "ops")]
    # ...and the resources TagResources created exist for EC2 from now on.
    await call(ec2.create_tags, Resources=["snap-0abc", "i-0abc"], Tags=tag_list({"b": "2"}))
    got = await call(tagging.get_resources, ResourceARNList=[snapshot_arn, instance_arn])
    assert [{t["Key"]: t["Value"] for t in m["Tags"]} for m in got["ResourceTagMappingList"]] == \
        [{"owner": "ops", "b": "2"}] * 2


async def test_create_tags_writes_are_seen_by_get_resources(
    make_client: ClientFactory, ec2: Any, sim: RunningSimulator
) -> None:
    put(sim, "snap-0def", "i-0def")
    await call(ec2.create_tags, Resources=["snap-0def", "i-0def"], Tags=tag_list({"cc": "42"}))
    tagging = make_client("resourcegroupstaggingapi")
    pages = await call(tagging.get_resources, TagFilters=[{"Key": "cc", "Values": ["42"]}])
    assert sorted(m["ResourceARN"] for m in pages["ResourceTagMappingList"]) == [
        f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0def",
        f"arn:aws:ec2:{REGION}::snapshot/snap-0def",
    ]
    snaps = await call(tagging.get_resources, ResourceTypeFilters=["ec2:snapshot"])
    assert [m["ResourceARN"] for m in snaps["ResourceTagMappingList"]] == [
        f"arn:aws:ec2:{REGION}::snapshot/snap-0def"]


async def test_seeded_ec2_share_is_visible_to_both_apis(
    make_client: ClientFactory, ec2: Any, sim: RunningSimulator
) -> None:
    added = await sim_json(sim, "/_sim/seed", {"accounts": [ACCOUNT], "regions": [REGION],
                                               "per_region": 30, "tags": {"s": "1"},
                                               "ec2_share": 0.5})
    assert added["added"] == 30
    seeded = list(synthetic_arns([ACCOUNT], [REGION], 30, ec2_share=0.5))
    named = [ec2_resource_id(a) for a in seeded]
    # The existing mix already holds EC2 instances and volumes; the share adds snapshots.
    assert sum(1 for n in named if n is not None and n[1] == "snapshot") == 5
    expected = {n[0] for n in named if n is not None}
    found = await describe(ec2)
    assert {t["ResourceId"] for t in found} == expected
    await call(ec2.create_tags, Resources=sorted(expected), Tags=tag_list({"t": "2"}))
    tagging = make_client("resourcegroupstaggingapi")
    got = await call(tagging.get_resources, TagFilters=[{"Key": "t"}])
    assert len(got["ResourceTagMappingList"]) == len(expected)
    # The default seed is unchanged by the option.
    assert list(synthetic_arns([ACCOUNT], [REGION], 30, ec2_share=0.0)) == \
        list(synthetic_arns([ACCOUNT], [REGION], 30))


# ---------------------------------------------------------------- existence


async def test_missing_ids_fail_the_whole_call_and_change_nothing(
    ec2: Any, sim: RunningSimulator
) -> None:
    put(sim, snap("ok"), "vol-ok", tags={"k": "old"})
    code, message, status = await client_error(
        ec2.create_tags, Resources=[snap("ok"), snap("1a"), "vol-ok", "vol-2b", snap("3c")],
        Tags=tag_list({"k": "new"}))
    # The first missing kind is reported, naming all its missing ids in request order.
    assert (code, status) == ("InvalidSnapshot.NotFound", 400)
    assert message == "The snapshot 'snap-1a, snap-3c' does not exist."
    assert sim.state.tags(arn_of(snap("ok"))) == {"k": "old"}
    assert sim.state.tags(arn_of("vol-ok")) == {"k": "old"}

    code, message, _ = await client_error(ec2.delete_tags, Resources=["vol-ok", "vol-2b"])
    assert (code, message) == ("InvalidVolume.NotFound", "The volume 'vol-2b' does not exist.")
    assert sim.state.tags(arn_of("vol-ok")) == {"k": "old"}


@pytest.mark.parametrize(
    ("resource_id", "code", "message"),
    [
        ("i-0123", "InvalidInstanceID.NotFound", "The instance ID 'i-0123' does not exist."),
        ("ami-1", "InvalidAMIID.NotFound", "The image id 'ami-1' does not exist."),
        ("sg-1", "InvalidGroup.NotFound", "The security group 'sg-1' does not exist."),
        ("snap-missing1", "InvalidSnapshot.NotFound",
         "The snapshot 'snap-missing1' does not exist."),  # in the store, but marked missing
        ("foo-123", "InvalidID", "The ID 'foo-123' is not valid"),
        ("snapshot", "InvalidID", "The ID 'snapshot' is not valid"),
    ],
)
async def test_not_found_codes_by_kind(
    ec2: Any, sim: RunningSimulator, resource_id: str, code: str, message: str
) -> None:
    put(sim, snap("missing1"))
    got = await client_error(ec2.create_tags, Resources=[resource_id], Tags=tag_list({"k": "v"}))
    assert got == (code, message, 400)


async def test_existence_is_per_region_and_account(
    make_client: ClientFactory, sim: RunningSimulator
) -> None:
    put(sim, snap("west"), region=WEST)
    put(sim, snap("theirs"), "i-theirs", account=OTHER)
    east, other = make_client(), make_client(key=f"sim-{OTHER}")
    code, _, _ = await client_error(east.create_tags, Resources=[snap("west")],
                                    Tags=tag_list({"k": "v"}))
    assert code == "InvalidSnapshot.NotFound"
    for resource_id, expected in ((snap("theirs"), "InvalidSnapshot.NotFound"),
                                  ("i-theirs", "InvalidInstanceID.NotFound")):
        code, _, _ = await client_error(east.create_tags, Resources=[resource_id],
                                        Tags=tag_list({"k": "v"}))
        assert code == expected
    await call(other.create_tags, Resources=[snap("theirs"), "i-theirs"],
               Tags=tag_list({"k": "v"}))
    assert sim.state.tags(arn_of("i-theirs", account=OTHER)) == {"k": "v"}
    assert {t["ResourceId"] for t in await describe(other)} == {snap("theirs"), "i-theirs"}
    assert await describe(east) == []


async def test_deleted_resources_exist_for_neither_api(
    make_client: ClientFactory, ec2: Any, sim: RunningSimulator
) -> None:
    put(sim, "vol-gone", "vol-kept", tags={"k": "v"})
    gone = arn_of("vol-gone")
    assert await sim_json(sim, "/_sim/delete", {"arns": [gone, arn_of("vol-never")]}) == \
        {"deleted": 1}
    code, message, _ = await client_error(ec2.create_tags, Resources=["vol-kept", "vol-gone"],
                                          Tags=tag_list({"x": "y"}))
    assert (code, message) == ("InvalidVolume.NotFound", "The volume 'vol-gone' does not exist.")
    assert {t["ResourceId"] for t in await describe(ec2)} == {"vol-kept"}
    tagging = make_client("resourcegroupstaggingapi")
    out = await call(tagging.tag_resources, ResourceARNList=[gone], Tags={"x": "y"})
    assert out["FailedResourcesMap"][gone]["ErrorCode"] == "ResourceNotFoundException"
    listed = await call(tagging.get_resources)
    assert [m["ResourceARN"] for m in listed["ResourceTagMappingList"]] == [arn_of("vol-kept")]
    assert sim.state.tags(gone) == {"k": "v"}  # the record stays, unchanged


# ---------------------------------------------------------------- limits


async def test_more_than_50_tags_fails_the_whole_call(ec2: Any, sim: RunningSimulator) -> None:
    put(sim, "vol-full", tags={f"k{n}": "v" for n in range(45)})
    put(sim, "vol-empty")
    code, message, status = await client_error(
        ec2.create_tags, Resources=["vol-empty", "vol-full"],
        Tags=tag_list({f"x{n}": "v" for n in range(6)}))
    assert (code, status) == ("TagLimitExceeded", 400) and message
    assert sim.state.tags(arn_of("vol-empty")) == {}
    assert len(sim.state.tags(arn_of("vol-full")) or {}) == 45
    # Overwriting existing keys does not add to the count.
    await call(ec2.create_tags, Resources=["vol-empty", "vol-full"],
               Tags=tag_list({**{f"k{n}": "w" for n in range(45)},
                              **{f"x{n}": "v" for n in range(5)}}))
    assert len(sim.state.tags(arn_of("vol-full")) or {}) == 50
    code, _, _ = await client_error(ec2.create_tags, Resources=["vol-empty"],
                                    Tags=tag_list({f"y{n}": "v" for n in range(51)}))
    assert code == "TagLimitExceeded"


async def test_at_most_1000_resource_ids_per_call(ec2: Any, sim: RunningSimulator) -> None:
    ids = [snap(f"{n:04d}") for n in range(1001)]
    put(sim, *ids)
    for method in (ec2.create_tags, ec2.delete_tags):
        code, _, status = await client_error(method, Resources=ids, Tags=tag_list({"k": "v"}))
        assert (code, status) == ("InvalidParameterValue", 400)
    assert all(sim.state.tags(arn_of(i)) == {} for i in ids)
    await call(ec2.create_tags, Resources=ids[:1000], Tags=tag_list({"k": "v"}))
    assert sim.state.tags(arn_of(ids[999])) == {"k": "v"}


@pytest.mark.parametrize("key", ["aws:cloudformation:stack-name", "AWS:x"])
async def test_aws_prefixed_keys_are_refused(ec2: Any, sim: RunningSimulator, key: str) -> None:
    put(sim, "i-1", tags={"k": "v"})
    for method in (ec2.create_tags, ec2.delete_tags):
        code, _, status = await client_error(method, Resources=["i-1"],
                                             Tags=[{"Key": key, "Value": "v"}])
        assert (code, status) == ("InvalidParameterValue", 400)
    assert sim.state.tags(arn_of("i-1")) == {"k": "v"}


# ---------------------------------------------------------------- quotas, faults, stats


async def test_request_limit_exceeded_once_the_bucket_is_empty() -> None:
    # Refill is slow enough that no token comes back during the test.
    config = SimConfig(ec2_buckets={"CreateTags": (3.0, 0.001), "DescribeTags": (2.0, 0.001)})
    async with await start_simulator(config) as sim:
        put(sim, "i-1")
        put(sim, "i-w", region=WEST)

        def client(region: str = REGION) -> Any:
            return boto3.client("ec2", endpoint_url=sim.url, region_name=region,
                                aws_access_key_id="testing", aws_secret_access_key="testing",
                                config=Config(retries={"total_max_attempts": 1}))

        east = client()
        for _ in range(3):
            await call(east.create_tags, Resources=["i-1"], Tags=tag_list({"k": "v"}))
        code, message, status = await client_error(east.create_tags, Resources=["i-1"],
                                                   Tags=tag_list({"k": "v"}))
        assert (code, status) == ("RequestLimitExceeded", 503) and message
        # DeleteTags has its own bucket, and so does every other region.
        await call(east.delete_tags, Resources=["i-1"], Tags=[{"Key": "k"}])
        await call(client(WEST).create_tags, Resources=["i-w"], Tags=tag_list({"k": "v"}))
        await call(east.describe_tags)
        await call(east.describe_tags)
        code, _, status = await client_error(east.describe_tags)
        assert (code, status) == ("RequestLimitExceeded", 503)

        stats = await sim_json(sim, "/_sim/stats")
        assert stats["requests"] == {"CreateTags": 5, "DeleteTags": 1, "DescribeTags": 3}
        assert stats["throttled"] == {"CreateTags": 1, "DescribeTags": 1}
        assert stats["arn_sends"] == {"CreateTags": 4, "DeleteTags": 1}  # throttled: not sent
        assert stats["by_account_region"] == {
            f"{ACCOUNT}/{REGION}": {
                "requests": {"CreateTags": 4, "DeleteTags": 1, "DescribeTags": 3},
                "throttled": {"CreateTags": 1, "DescribeTags": 1},
            },
            f"{ACCOUNT}/{WEST}": {"requests": {"CreateTags": 1}, "throttled": {}},
        }
        # A bucket change through /_sim/config refills every bucket at its new size.
        await sim_json(sim, "/_sim/config", {"ec2_buckets": {"CreateTags": {"capacity": 1}}})
        assert sim.config.ec2_buckets["CreateTags"] == (1.0, 0.001)
        await call(east.create_tags, Resources=["i-1"], Tags=tag_list({"k": "v"}))
        code, _, _ = await client_error(east.create_tags, Resources=["i-1"],
                                        Tags=tag_list({"k": "v"}))
        assert code == "RequestLimitExceeded"


async def test_whole_call_fault_and_latency_apply_to_ec2(ec2: Any, sim: RunningSimulator) -> None:
    put(sim, "vol-1")
    sim.reconfigure(whole_call_error_rate=1.0, latency_ms=[1, 2])
    code, _, status = await client_error(ec2.create_tags, Resources=["vol-1"],
                                         Tags=tag_list({"k": "v"}))
    assert (code, status) == ("InternalError", 500)
    assert sim.state.tags(arn_of("vol-1")) == {}
    assert sim.state.sends[arn_of("vol-1")] == 1  # sent, though not applied
    code, _, _ = await client_error(ec2.describe_tags)
    assert code == "InternalError"
    sim.reconfigure(whole_call_error_rate=0.0)
    await call(ec2.create_tags, Resources=["vol-1"], Tags=tag_list({"k": "v"}))
    assert sim.state.stats["requests"] == {"CreateTags": 2, "DescribeTags": 1}


async def test_describe_tags_paginates_1500_resources_by_resource_id(
    ec2: Any, sim: RunningSimulator
) -> None:
    ids = [f"snap-{n:017x}" for n in range(1500)]
    put(sim, *ids)
    put(sim, "vol-other", tags={"a": "1"})  # not asked for
    await call(ec2.create_tags, Resources=ids[:1000], Tags=tag_list({"a": "1", "b": "2"}))
    await call(ec2.create_tags, Resources=ids[1000:], Tags=tag_list({"a": "1", "b": "2"}))

    def walk(**kwargs: Any) -> list[tuple[list[dict[str, str]], bool]]:
        pages = ec2.get_paginator("describe_tags").paginate(
            Filters=[{"Name": "resource-id", "Values": ids}], **kwargs)
        return [(page["Tags"], bool(page.get("NextToken"))) for page in pages]

    pages = await asyncio.to_thread(walk, PaginationConfig={"PageSize": 700})
    assert [len(tags) for tags, _ in pages] == [700, 700, 700, 700, 200]
    assert [more for _, more in pages] == [True, True, True, True, False]
    items = [(t["ResourceId"], t["Key"]) for tags, _ in pages for t in tags]
    assert items == [(i, k) for i in ids for k in ("a", "b")]  # store order, then key order

    # Without MaxResults pages hold 1,000 items; a page that ends the walk carries no token.
    assert [len(tags) for tags, _ in await asyncio.to_thread(walk)] == [1000, 1000, 1000]
    # A token stays valid while tags change under it: the walk resumes after its last item.
    first = await call(ec2.describe_tags, Filters=[{"Name": "resource-id", "Values": ids}],
                       MaxResults=5)
    assert [t["Key"] for t in first["Tags"]] == ["a", "b", "a", "b", "a"]
    await call(ec2.delete_tags, Resources=ids[:3], Tags=[{"Key": "b"}])
    rest = await call(ec2.describe_tags, Filters=[{"Name": "resource-id", "Values": ids}],
                      MaxResults=5, NextToken=first["NextToken"])
    assert [(t["ResourceId"], t["Key"]) for t in rest["Tags"]] == [
        (ids[3], "a"), (ids[3], "b"), (ids[4], "a"), (ids[4], "b"), (ids[5], "a")]
    code, _, _ = await client_error(ec2.describe_tags, NextToken="garbage")
    assert code == "InvalidParameterValue"


async def test_describe_regions_is_still_answered(ec2: Any, sim: RunningSimulator) -> None:
    regions = await call(ec2.describe_regions)
    assert [r["RegionName"] for r in regions["Regions"]] == list(sim.config.enabled_regions)
    assert sim.state.stats["requests"] == {}  # not a tag call: not counted or throttled


def test_command_line_sets_ec2_buckets_and_seed_share() -> None:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    args = parser.parse_args(["--ec2-bucket", "CreateTags=5:0.5", "--seed-resources", "9",
                              "--seed-ec2-share", "0.25"])
    config = config_from_args(args)
    assert config.ec2_buckets["CreateTags"] == (5.0, 0.5)
    assert config.ec2_buckets["DescribeTags"] == (100.0, 20.0)
    seed = seed_from_args(args, config)
    assert seed is not None and seed.ec2_share == 0.25
    for bad in (["--ec2-bucket", "Nope=1:1"], ["--ec2-bucket", "CreateTags=5"],
                ["--ec2-bucket", "CreateTags=0:1"], ["--seed-ec2-share", "2"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
