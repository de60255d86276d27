"""The simulator's STS, driven through real aiobotocore clients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from bulktag.sim import SimConfig, start_simulator

ROLE = "arn:aws:iam::210987654321:role/bulktag-tagger"
REFUSED = "arn:aws:iam::333333333333:role/locked"
NO_RETRY = AioConfig(retries={"total_max_attempts": 1})


def client(service: str, url: str, key: str = "testing", **kwargs: str) -> Any:
    return get_session().create_client(
        service,
        region_name="eu-west-1",
        endpoint_url=url,
        aws_access_key_id=key,
        aws_secret_access_key="testing",
        config=NO_RETRY,
        **kwargs,
    )


async def test_assume_role_gives_credentials_of_the_roles_account() -> None:
    async with await start_simulator(SimConfig(enforce_quotas=False)) as sim:
        async with client("sts", sim.url) as sts:
            me = await sts.get_caller_identity()
            assert me["Account"] == "123456789012"
            assumed = await sts.assume_role(
                RoleArn=ROLE,
                RoleSessionName="bulktag-run",
                ExternalId="ext-id",
                DurationSeconds=900,
            )
        creds = assumed["Credentials"]
        assert creds["AccessKeyId"].startswith("sim-210987654321-")
        assert creds["SecretAccessKey"] and creds["SessionToken"]
        assert creds["Expiration"] > datetime.now(UTC)
        assert assumed["AssumedRoleUser"]["Arn"] == (
            "arn:aws:sts::210987654321:assumed-role/bulktag-tagger/bulktag-run"
        )

        role_creds = {
            "key": creds["AccessKeyId"],
            "aws_session_token": creds["SessionToken"],
        }
        async with client("sts", sim.url, **role_creds) as sts:
            who = await sts.get_caller_identity()
        assert who["Account"] == "210987654321"
        assert who["Arn"] == "arn:aws:sts::210987654321:assumed-role/bulktag-tagger/bulktag-run"

        # The tagging side sees the same account: the role's own resources can be tagged.
        theirs = "arn:aws:ec2:eu-west-1:210987654321:instance/i-1"
        mine = "arn:aws:ec2:eu-west-1:123456789012:instance/i-1"
        async with client("resourcegroupstaggingapi", sim.url, **role_creds) as tagging:
            out = await tagging.tag_resources(ResourceARNList=[theirs, mine], Tags={"k": "v"})
        assert list(out["FailedResourcesMap"]) == [mine]
        assert sim.state.tags(theirs) == {"k": "v"}


async def test_refused_role_is_access_denied() -> None:
    config = SimConfig(refused_roles=frozenset({REFUSED}))
    async with await start_simulator(config) as sim, client("sts", sim.url) as sts:
        with pytest.raises(ClientError) as info:
            await sts.assume_role(RoleArn=REFUSED, RoleSessionName="s1")
        assert info.value.response["Error"]["Code"] == "AccessDenied"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as info:
            await sts.assume_role(RoleArn="arn:aws:iam::123:user/x", RoleSessionName="s1")
        assert info.value.response["Error"]["Code"] == "ValidationError"
