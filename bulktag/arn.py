"""ARN parsing and the shard an ARN belongs to.

A shard is (partition, account, region): the unit of credentials, rate limiting and concurrency.
Global resources (IAM, CloudFront, Route 53 ...) carry no region in their ARN and are tagged
through the home region of their partition (us-east-1 for `aws`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The region a partition's global services are reached through.
HOME_REGIONS = {
    "aws": "us-east-1",
    "aws-cn": "cn-north-1",
    "aws-us-gov": "us-gov-west-1",
    "aws-iso": "us-iso-east-1",
    "aws-iso-b": "us-isob-east-1",
    "aws-iso-e": "eu-isoe-west-1",
    "aws-iso-f": "us-isof-south-1",
    "aws-eusc": "eusc-de-east-1",
}

MAX_ARN_LENGTH = 1011  # ResourceARNList member length constraint in the Tagging API.

_PARTITION = re.compile(r"aws(-[a-z]+)*", re.ASCII)
_SERVICE = re.compile(r"[a-z0-9][a-z0-9-]*", re.ASCII)
_REGION = re.compile(r"([a-z]{2}(-[a-z]+)+-[0-9]+)?", re.ASCII)
_ACCOUNT = re.compile(r"([0-9]{12}|aws)?", re.ASCII)
# The whole grammar above in one pattern (resource: no control characters), for the common case
# of a well-formed ARN; a mismatch falls back to the part-by-part checks that name the fault.
_WHOLE = re.compile(
    r"arn:(aws(?:-[a-z]+)*):([a-z0-9][a-z0-9-]*):((?:[a-z]{2}(?:-[a-z]+)+-[0-9]+)?)"
    r":((?:[0-9]{12}|aws)?):([^\x00-\x1f\x7f]+)",
    re.ASCII | re.DOTALL,
)


def region_problem(region: str) -> str | None:
    """Why `region` is no AWS region name (us-east-1, us-gov-west-1, cn-north-1 are), or None."""
    if region and _REGION.fullmatch(region):
        return None
    return (f"{region!r} is not a region name (e.g. us-east-1, eu-central-2, "
            "us-gov-west-1)")


def account_problem(account: str) -> str | None:
    """Why `account` is no AWS account id (12 digits), or None."""
    if len(account) == 12 and account.isascii() and account.isdigit():
        return None
    return f"{account!r} is not a 12-digit account id"


class ArnError(ValueError):
    """An ARN that cannot be tagged: the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class Shard:
    partition: str
    account: str
    region: str

    def __str__(self) -> str:
        return f"{self.partition}/{self.account or '-'}/{self.region}"


@dataclass(frozen=True, slots=True)
class Arn:
    text: str
    partition: str
    service: str
    region: str
    account: str
    resource: str

    @property
    def is_global(self) -> bool:
        return self.region == ""

    @property
    def shard(self) -> Shard:
        """Where the resource is tagged: its own region, or its partition's home region."""
        region = self.region or HOME_REGIONS.get(self.partition, "us-east-1")
        return Shard(self.partition, self.account, region)

    @property
    def resource_type(self) -> str:
        """`service:type` as ResourceTypeFilters spell it (`ec2:instance`, `s3`)."""
        head = re.split(r"[:/]", self.resource, maxsplit=1)
        if self.service == "s3" or len(head) == 1:
            return self.service
        return f"{self.service}:{head[0]}"


def arn_parts(text: str) -> tuple[str, str, str, str, str] | None:
    """(partition, service, region, account, resource) of a well-formed ARN, without making an
    `Arn` (a submission's hot path, a million times a second); None: ask `parse_arn`, which
    says what is wrong or takes the rare shape the one pattern does not."""
    if len(text) > MAX_ARN_LENGTH or text[-1:].isspace():
        return None
    m = _WHOLE.fullmatch(text)
    return None if m is None else m.groups()  # type: ignore[return-value]


def parse_arn(text: str) -> Arn:
    """Parse `arn:partition:service:region:account:resource`; raise ArnError naming the fault.

    The resource part may itself contain colons. An empty account is accepted (S3 buckets carry
    none; they are tagged with the caller's own account).
    """
    if len(text) > MAX_ARN_LENGTH:
        raise ArnError(f"ARN is {len(text)} characters long; the API accepts at most 1011")
    if text != text.strip():
        raise ArnError("ARN has leading or trailing white space")
    m = _WHOLE.fullmatch(text)
    if m is not None:
        return Arn(text, *m.groups())
    parts = text.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        raise ArnError("not an ARN: expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE")
    _, partition, service, region, account, resource = parts
    if not _PARTITION.fullmatch(partition):
        raise ArnError(f"unknown partition {partition!r}")
    if not _SERVICE.fullmatch(service):
        raise ArnError(f"malformed service {service!r}")
    if not _REGION.fullmatch(region):
        raise ArnError(f"malformed region {region!r}")
    if not _ACCOUNT.fullmatch(account):
        raise ArnError(f"malformed account {account!r}: expected 12 digits")
    if not resource:
        raise ArnError("empty resource part")
    if any(ord(c) < 32 or ord(c) == 127 for c in resource):
        raise ArnError("resource part has a control character")
    return Arn(text, partition, service, region, account, resource)


# EC2 resource types CreateTags / DeleteTags take, as the ARN spells them, with the prefix of
# their ids. Snapshots and AMIs carry no account in their ARN (`arn:aws:ec2:R::snapshot/snap-1`):
# like S3 buckets they belong to the shard of the caller's own account (account "").
EC2_ID_PREFIXES = {
    "instance": "i", "volume": "vol", "snapshot": "snap", "image": "ami",
    "network-interface": "eni", "security-group": "sg", "subnet": "subnet", "vpc": "vpc",
    "internet-gateway": "igw", "route-table": "rtb", "launch-template": "lt",
    "natgateway": "nat", "network-acl": "acl", "elastic-ip": "eipalloc",
    "dhcp-options": "dopt", "vpc-peering-connection": "pcx", "vpn-gateway": "vgw",
    "customer-gateway": "cgw", "vpc-endpoint": "vpce", "key-pair": "key",
}
_EC2_RESOURCE = re.compile(r"([a-z-]+)/(([a-z]+)-[0-9a-zA-Z]{1,64})", re.ASCII)

ROUTE_TAGGING = "tagging-api"
ROUTE_EC2 = "ec2"
ROUTES = (ROUTE_TAGGING, ROUTE_EC2)


def ec2_route(text: str) -> str | None:
    """The EC2 resource id CreateTags takes for this ARN, or None when the ARN is not an EC2
    resource of a type CreateTags tags (or not an ARN): then it goes by the Tagging API."""
    if not text.startswith("arn:") or ":ec2:" not in text:
        return None
    parts = text.split(":", 5)
    if len(parts) < 6 or parts[2] != "ec2":
        return None
    m = _EC2_RESOURCE.fullmatch(parts[5])
    if m is None or EC2_ID_PREFIXES.get(m.group(1)) != m.group(3):
        return None
    return m.group(2)


def route_of(text: str, choice: str | None) -> str:
    """The route of one item: `choice` is the job's (`auto` or None: by the ARN)."""
    if choice == ROUTE_TAGGING:
        return ROUTE_TAGGING
    return ROUTE_EC2 if ec2_route(text) is not None else ROUTE_TAGGING


def resource_type_of(text: str) -> str:
    """`service:type` of an ARN (`Arn.resource_type`), "" when it is not one."""
    try:
        return parse_arn(text).resource_type
    except ArnError:
        return ""
