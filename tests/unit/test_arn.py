"""ARN parsing on real shapes, its error messages, and a round-trip property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulktag.arn import ArnError, Shard, arn_parts, parse_arn


def test_ec2_instance() -> None:
    arn = parse_arn("arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc123def4567890")
    assert (arn.partition, arn.service, arn.region, arn.account) == (
        "aws",
        "ec2",
        "eu-west-1",
        "123456789012",
    )
    assert arn.resource == "instance/i-0abc123def4567890"
    assert arn.resource_type == "ec2:instance"
    assert not arn.is_global
    assert arn.shard == Shard("aws", "123456789012", "eu-west-1")
    assert str(arn.shard) == "aws/123456789012/eu-west-1"


def test_s3_bucket_has_no_region_or_account() -> None:
    arn = parse_arn("arn:aws:s3:::my-bucket")
    assert (arn.region, arn.account, arn.resource) == ("", "", "my-bucket")
    assert arn.is_global
    assert arn.resource_type == "s3"
    assert arn.shard == Shard("aws", "", "us-east-1")
    assert str(arn.shard) == "aws/-/us-east-1"


def test_iam_role_is_tagged_through_us_east_1() -> None:
    arn = parse_arn("arn:aws:iam::123456789012:role/service-role/MyRole")
    assert arn.is_global
    assert arn.resource_type == "iam:role"
    assert arn.shard == Shard("aws", "123456789012", "us-east-1")


def test_china_global_resource_is_tagged_through_cn_north_1() -> None:
    arn = parse_arn("arn:aws-cn:iam::123456789012:role/MyRole")
    assert arn.shard == Shard("aws-cn", "123456789012", "cn-north-1")


def test_govcloud_regional_resource_keeps_its_region() -> None:
    arn = parse_arn("arn:aws-us-gov:ec2:us-gov-east-1:123456789012:volume/vol-1")
    assert arn.shard == Shard("aws-us-gov", "123456789012", "us-gov-east-1")


def test_lambda_function_resource_keeps_its_colons() -> None:
    arn = parse_arn("arn:aws:lambda:us-west-2:123456789012:function:my-fn:PROD")
    assert arn.resource == "function:my-fn:PROD"
    assert arn.resource_type == "lambda:function"


def test_log_group_with_slashes_colons_and_star() -> None:
    text = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/x:*"
    arn = parse_arn(text)
    assert arn.text == text
    assert arn.resource == "log-group:/aws/lambda/x:*"
    assert arn.resource_type == "logs:log-group"


def test_aws_managed_account() -> None:
    arn = parse_arn("arn:aws:iam::aws:policy/AdministratorAccess")
    assert arn.account == "aws"


def test_resource_type_of_s3_object_is_s3() -> None:
    assert parse_arn("arn:aws:s3:::bucket/key/path").resource_type == "s3"


def test_resource_type_without_separator_is_the_service() -> None:
    assert parse_arn("arn:aws:sns:us-east-1:123456789012:my-topic").resource_type == "sns"


NOT_AN_ARN = "not an ARN: expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arn:aws:s3:::" + "b" * 1000, "ARN is 1013 characters long; the API accepts at most 1011"),
        (" arn:aws:s3:::b", "ARN has leading or trailing white space"),
        ("arn:aws:s3:::b\n", "ARN has leading or trailing white space"),
        ("i-0abc", NOT_AN_ARN),
        ("arn:aws:s3::bucket", NOT_AN_ARN),
        ("ARN:aws:s3:::b", NOT_AN_ARN),
        ("arn:amazon:s3:::b", "unknown partition 'amazon'"),
        ("arn:aws:EC2:us-east-1:123456789012:instance/i-1", "malformed service 'EC2'"),
        ("arn:aws:ec2:useast1:123456789012:instance/i-1", "malformed region 'useast1'"),
        ("arn:aws:ec2:us-east-1:1234:instance/i-1", "malformed account '1234': expected 12 digits"),
        ("arn:aws:ec2:us-east-1:123456789012:", "empty resource part"),
        ("arn:aws:ec2:us-east-1:123456789012:instance/i-1\x00", "resource part has a control character"),
    ],
)
def test_malformed_arns_name_their_fault(text: str, message: str) -> None:
    with pytest.raises(ArnError) as info:
        parse_arn(text)
    assert str(info.value) == message


def test_arn_error_is_a_value_error() -> None:
    assert issubclass(ArnError, ValueError)


def test_newline_inside_region_is_refused() -> None:
    with pytest.raises(ArnError):
        parse_arn("arn:aws:ec2:us-east-1\n:123456789012:instance/i-1")


def test_non_ascii_digits_in_account_are_refused() -> None:
    with pytest.raises(ArnError):
        parse_arn("arn:aws:ec2:us-east-1:١٢٣٤٥٦٧٨٩٠١٢:instance/i-1")


partitions = st.from_regex(r"\Aaws(-[a-z]{1,6}){0,2}\Z")
services = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,20}\Z")
regions = st.one_of(st.just(""), st.from_regex(r"\A[a-z]{2}(-[a-z]{1,8}){1,2}-[0-9]{1,2}\Z"))
accounts = st.one_of(st.just(""), st.just("aws"), st.from_regex(r"\A[0-9]{12}\Z"))
resources = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=300
).filter(lambda r: r.rstrip() == r and r != "")


@given(partitions, services, regions, accounts, resources)
def test_valid_parts_round_trip(
    partition: str, service: str, region: str, account: str, resource: str
) -> None:
    text = f"arn:{partition}:{service}:{region}:{account}:{resource}"
    arn = parse_arn(text)
    assert arn.text == text
    assert (arn.partition, arn.service, arn.region, arn.account, arn.resource) == (
        partition,
        service,
        region,
        account,
        resource,
    )
    assert arn.shard.region == (region or arn.shard.region)
    assert arn.shard.region != ""
    assert arn.resource_type.split(":")[0] == service


def test_an_arn_without_an_account_is_sharded_with_the_callers_account() -> None:
    from bulktag.app.submit import shard_of

    caller = "123456789012"
    bucket, snapshot = parse_arn("arn:aws:s3:::b"), parse_arn("arn:aws:ec2:eu-west-1::snapshot/s")
    assert shard_of(bucket, caller) == Shard("aws", caller, "us-east-1")
    assert shard_of(snapshot, caller) == Shard("aws", caller, "eu-west-1")
    assert shard_of(bucket, caller) == shard_of(
        parse_arn(f"arn:aws:lambda:us-east-1:{caller}:function:f"), caller)
    # caller unknown (a detached submission): the shard stays account-less; the worker that
    # runs it puts it on the caller's limiter (Engine.real_shard)
    assert shard_of(bucket, "") == Shard("aws", "", "us-east-1")
    other = parse_arn("arn:aws:lambda:us-east-1:210987654321:function:f")
    assert shard_of(other, caller) == other.shard


ARNISH = st.one_of(
    st.text(max_size=80),
    st.builds(lambda p, s, r, a, res, tail: f"arn:{p}:{s}:{r}:{a}:{res}{tail}",
              st.sampled_from(["aws", "aws-cn", "aws-us-gov", "AWS", ""]),
              st.sampled_from(["lambda", "ec2", "s3", "", "-x"]),
              st.sampled_from(["us-east-1", "", "eu-west-2", "useast1"]),
              st.sampled_from(["123456789012", "", "aws", "12345"]),
              st.text(max_size=30),
              st.sampled_from(["", " ", "\t", "\u00a0", "\u2003", "\n"])),
)


@given(ARNISH)
def test_the_fast_path_agrees_with_parse_arn(text: str) -> None:
    """arn_parts (a submission's hot path) accepts only what parse_arn accepts, with the same
    fields; it may decline (None) and leave the verdict to parse_arn."""
    parts = arn_parts(text)
    if parts is None:
        return
    arn = parse_arn(text)  # raises if the fast path accepted something parse_arn refuses
    assert parts == (arn.partition, arn.service, arn.region, arn.account, arn.resource)


def test_the_fast_path_declines_what_is_not_an_arn() -> None:
    assert arn_parts("arn:aws:lambda:us-east-1:123456789012:function:f") == (
        "aws", "lambda", "us-east-1", "123456789012", "function:f")
    assert arn_parts("arn:aws:lambda:us-east-1:123456789012:function:f ") is None
    assert arn_parts("arn:aws:s3:::" + "b" * 1_100) is None  # too long for the API
    assert arn_parts("") is None
