"""FastTaggingClient against moto's server, a Tagging API we did not write: tags it sends land
on real moto resources (read back through each service's own API), answers equal the botocore
client's, and with moto's IAM authentication switched on (`/moto-api/reset-auth`), moto checks
our SigV4 signatures against the request as it arrived and accepts them, while a wrong secret is
refused by both clients alike."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bulktag.arn import Shard
from bulktag.aws.accounts import new_session
from bulktag.aws.clients import ClientPool
from bulktag.aws.fast_tagging import FastTaggingClient
from bulktag.aws.reads import failure_of
from bulktag.config import Settings
from tests.support.moto import ACCOUNT, UNSUPPORTED_ARN, Moto

pytestmark = pytest.mark.slow

SHARD = Shard("aws", ACCOUNT, "us-east-1")


def data(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


async def tagging(moto: Moto, fast: bool, key: tuple[str, str] | None = None) -> tuple[
        ClientPool, Any]:
    session = new_session()
    if key is not None:
        session.set_credentials(*key)
    pool = ClientPool(Settings(endpoint_url=moto.url, fast_calls=fast), session=session)
    return pool, await pool.tagging(SHARD)


@pytest.fixture
async def clients(moto: Moto) -> AsyncIterator[tuple[Any, Any]]:
    fast_pool, fast = await tagging(moto, True)
    boto_pool, boto = await tagging(moto, False)
    assert isinstance(fast, FastTaggingClient) and not isinstance(boto, FastTaggingClient)
    try:
        yield fast, boto
    finally:
        await fast_pool.close()
        await boto_pool.close()


async def test_tags_sent_fast_land_on_moto_resources(moto: Moto,
                                                     clients: tuple[Any, Any]) -> None:
    fast, boto = clients
    names = ["fn-plain-us-east-1", "tbl-plain-us-east-1", "/bulktag/lg-plain-us-east-1"]
    arns = [moto.arns[n] for n in names]
    out = await fast.tag_resources(ResourceARNList=arns, Tags={"fast": "yes", "owner": "x"})
    assert out["FailedResourcesMap"] == {}
    for a in arns:
        assert moto.tags(a) == {"fast": "yes", "owner": "x"}
    read = await fast.get_resources(ResourceARNList=arns)
    assert data(read) == data(await boto.get_resources(ResourceARNList=arns))
    assert len(read["ResourceTagMappingList"]) == 3

    out = await fast.untag_resources(ResourceARNList=arns, TagKeys=["owner"])
    assert out["FailedResourcesMap"] == {}
    for a in arns:
        assert moto.tags(a) == {"fast": "yes"}
    page = {"TagFilters": [{"Key": "fast", "Values": ["yes"]}], "ResourcesPerPage": 2}
    first, again = await fast.get_resources(**page), await boto.get_resources(**page)
    assert first["ResourceTagMappingList"] == again["ResourceTagMappingList"]
    assert first["PaginationToken"] and again["PaginationToken"]  # moto's: one per call

    # A resource moto does not support: the same FailedResourcesMap through both.
    bad = {"ResourceARNList": [UNSUPPORTED_ARN], "Tags": {"k": "v"}}
    assert data(await fast.tag_resources(**bad)) == data(await boto.tag_resources(**bad))
    assert (await fast.tag_resources(**bad))["FailedResourcesMap"][UNSUPPORTED_ARN][
        "ErrorCode"] == "InternalServiceException"


async def test_moto_checks_and_accepts_our_signatures(moto: Moto) -> None:
    iam = moto.client("iam", "us-east-1")
    iam.create_user(UserName="bulktag-fast")
    iam.put_user_policy(UserName="bulktag-fast", PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    made = iam.create_access_key(UserName="bulktag-fast")["AccessKey"]
    key = (made["AccessKeyId"], made["SecretAccessKey"])
    secret = made["SecretAccessKey"]
    # Change the last character to one it is not: a secret that already ends in the
    # replacement would make "wrong" the right key (CI met that once, 1 run in ~60).
    wrong = (made["AccessKeyId"], secret[:-1] + ("y" if secret.endswith("x") else "x"))
    assert wrong[1] != secret
    arn = moto.arns["fn-dev-us-east-1"]
    pools = [await tagging(moto, fast, k) for fast in (True, False) for k in (key, wrong)]
    (_, fast), (_, fast_wrong), (_, boto), (_, boto_wrong) = pools
    _reset_auth(moto, "0")  # from now on every request is authenticated
    try:
        out = await fast.tag_resources(ResourceARNList=[arn], Tags={"signed": "fast"})
        assert out["FailedResourcesMap"] == {}
        read = await fast.get_resources(ResourceARNList=[arn])
        assert data(read) == data(await boto.get_resources(ResourceARNList=[arn]))

        refused = []
        for client in (fast_wrong, boto_wrong):
            with pytest.raises(Exception) as info:
                await client.get_resources(ResourceARNList=[arn])
            refused.append(failure_of(info.value))
        assert refused[0] == refused[1]
        # moto answers in XML, which botocore's JSON parser keeps as the message.
        assert refused[0].status == 403
        assert "SignatureDoesNotMatch" in refused[0].message
    finally:
        _reset_auth(moto, "inf")
        for pool, _ in pools:
            await pool.close()
    assert moto.tags(arn)["signed"] == "fast"


def _reset_auth(moto: Moto, count: str) -> None:
    """moto's INITIAL_NO_AUTH_ACTION_COUNT: 0 authenticates every request, inf none."""
    req = urllib.request.Request(f"{moto.url}/moto-api/reset-auth", method="POST",
                                 data=count.encode(), headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
