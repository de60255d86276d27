"""How the simulator reads ARNs, maps EC2 resource ids to ARNs, and the synthetic ARNs it seeds
and benchmarks use.

EC2 ids (`snap-0123...`) and ARNs name the same resource, so the Tagging API and EC2's CreateTags /
DeleteTags / DescribeTags share one store keyed by ARN: `ec2_arn` maps an id to its ARN in the
caller's region and account (snapshots and AMIs carry no account in their ARN), `ec2_resource_id`
maps back. `EC2_KINDS` is the prefix -> type table, with each type's NotFound error code.

Deliberately independent of `bulktag.arn`: the simulator is the yardstick for the client's own
parser, so it must not share its bugs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Global resources (empty region) are tagged through their partition's home region.
HOME_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}

_ARN = re.compile(
    r"arn:(?P<partition>aws(?:-[a-z]+)*):(?P<service>[a-z0-9][a-z0-9-]*):"
    r"(?P<region>(?:[a-z]{2}(?:-[a-z]+)+-\d+)?):(?P<account>(?:\d{12})?):(?P<resource>.+)",
    re.DOTALL,
)
_TYPE_SPLIT = re.compile(r"[:/]")


@dataclass(frozen=True, slots=True)
class SimArn:
    partition: str
    service: str
    region: str  # the region it is tagged through: never empty
    account: str  # may be empty (S3 buckets)
    resource_type: str  # `service:type` or just `service`, as ResourceTypeFilters spell it


def read_arn(text: str) -> SimArn | None:
    """Parse a well-formed ARN, or return None."""
    m = _ARN.fullmatch(text)
    if m is None:
        return None
    partition, service, region, account, resource = m.groups()
    head = _TYPE_SPLIT.split(resource, maxsplit=1)
    rtype = service if len(head) == 1 or service == "s3" else f"{service}:{head[0]}"
    region = region or HOME_REGIONS.get(partition, "us-east-1")
    return SimArn(partition, service, region, account, rtype)


def matches_type(resource_type: str, filters: list[str]) -> bool:
    """ResourceTypeFilters: `service` matches every type of it, `service:type` only that type."""
    service = resource_type.partition(":")[0]
    return any(f == resource_type or f == service for f in filters)


@dataclass(frozen=True, slots=True)
class Ec2Kind:
    prefix: str  # of the id: `snap` in `snap-0123...`
    resource_type: str  # as the ARN and DescribeTags' resourceType spell it: `snapshot`
    not_found: str  # the error code of a missing id of this kind
    noun: str  # how the NotFound message names the kind: "The snapshot 'snap-1' does not exist."
    has_account: bool  # False: the ARN carries no account (`arn:aws:ec2:R::snapshot/snap-1`)


EC2_KINDS: tuple[Ec2Kind, ...] = (
    Ec2Kind("i", "instance", "InvalidInstanceID.NotFound", "instance ID", True),
    Ec2Kind("vol", "volume", "InvalidVolume.NotFound", "volume", True),
    Ec2Kind("snap", "snapshot", "InvalidSnapshot.NotFound", "snapshot", False),
    Ec2Kind("ami", "image", "InvalidAMIID.NotFound", "image id", False),
    Ec2Kind("eni", "network-interface", "InvalidNetworkInterfaceID.NotFound",
            "network interface", True),
    Ec2Kind("sg", "security-group", "InvalidGroup.NotFound", "security group", True),
    Ec2Kind("subnet", "subnet", "InvalidSubnetID.NotFound", "subnet ID", True),
    Ec2Kind("vpc", "vpc", "InvalidVpcID.NotFound", "vpc ID", True),
    Ec2Kind("igw", "internet-gateway", "InvalidInternetGatewayID.NotFound",
            "internet gateway ID", True),
    Ec2Kind("rtb", "route-table", "InvalidRouteTableID.NotFound", "route table ID", True),
    Ec2Kind("lt", "launch-template", "InvalidLaunchTemplateId.NotFound",
            "launch template ID", True),
    Ec2Kind("nat", "natgateway", "NatGatewayNotFound", "nat gateway ID", True),
    Ec2Kind("acl", "network-acl", "InvalidNetworkAclID.NotFound", "network ACL ID", True),
    Ec2Kind("eipalloc", "elastic-ip", "InvalidAllocationID.NotFound", "allocation ID", True),
    Ec2Kind("dopt", "dhcp-options", "InvalidDhcpOptionID.NotFound", "DHCP options ID", True),
    Ec2Kind("pcx", "vpc-peering-connection", "InvalidVpcPeeringConnectionID.NotFound",
            "vpc peering connection ID", True),
    Ec2Kind("vgw", "vpn-gateway", "InvalidVpnGatewayID.NotFound", "vpn gateway ID", True),
    Ec2Kind("cgw", "customer-gateway", "InvalidCustomerGatewayID.NotFound",
            "customer gateway ID", True),
    Ec2Kind("vpce", "vpc-endpoint", "InvalidVpcEndpointId.NotFound", "vpc endpoint ID", True),
    Ec2Kind("key", "key-pair", "InvalidKeyPair.NotFound", "key pair ID", True),
)
_EC2_BY_PREFIX = {kind.prefix: kind for kind in EC2_KINDS}
_EC2_BY_TYPE = {kind.resource_type: kind for kind in EC2_KINDS}
_EC2_ID = re.compile(r"(?P<prefix>[a-z]+)-(?P<rest>[A-Za-z0-9][A-Za-z0-9-]{0,63})")


def ec2_kind(resource_id: str) -> Ec2Kind | None:
    """The kind of an EC2 resource id by its prefix, or None (unknown prefix, malformed id)."""
    m = _EC2_ID.fullmatch(resource_id)
    return None if m is None else _EC2_BY_PREFIX.get(m.group("prefix"))


def ec2_arn(resource_id: str, region: str, account: str, *, partition: str = "aws") -> str | None:
    """The ARN of EC2 resource `resource_id` in `region` of `account`, or None if the id is not
    of a known kind. Snapshots and AMIs drop the account: `arn:aws:ec2:R::snapshot/snap-1`."""
    kind = ec2_kind(resource_id)
    if kind is None:
        return None
    owner = account if kind.has_account else ""
    return f"arn:{partition}:ec2:{region}:{owner}:{kind.resource_type}/{resource_id}"


def ec2_resource_id(arn: str) -> tuple[str, str] | None:
    """(resource id, resource type) of an EC2 ARN of a known kind, else None; the inverse of
    `ec2_arn`."""
    parsed = read_arn(arn)
    if parsed is None or parsed.service != "ec2":
        return None
    rtype, sep, resource_id = arn.split(":", 5)[5].partition("/")
    kind = _EC2_BY_TYPE.get(rtype)
    if not sep or kind is None or ec2_kind(resource_id) is not kind:
        return None
    return resource_id, rtype


# (service, ARN resource template); `{n}` is the running number, `{h}` a hex id derived from it.
_KINDS = (
    ("ec2", "instance/i-{h}"),
    ("lambda", "function:fn-{n}"),
    ("dynamodb", "table/table-{n}"),
    ("logs", "log-group:/app/group-{n}"),
    ("sqs", "queue-{n}"),
    ("sns", "topic-{n}"),
    ("ec2", "volume/vol-{h}"),
    ("rds", "db:db-{n}"),
)


# The EC2 share of a seed cycles through these, by id prefix.
_EC2_SEED_PREFIXES = ("snap", "vol", "i")


def _hex_id(account: str, region: str, n: int) -> str:
    return hashlib.blake2b(f"{account}/{region}/{n}".encode(), digest_size=9).hexdigest()[:17]


def synthetic_resources(
    accounts: list[str],
    regions: list[str],
    per_region: int,
    *,
    partition: str = "aws",
    ec2_share: float = 0.0,
) -> Iterator[tuple[str, str]]:
    """Yield (account, ARN) for `per_region` resources of mixed services in every (account,
    region), deterministically: the same arguments yield the same ARNs in the same order, account
    by account, region by region. The account is yielded because snapshot ARNs do not carry it.

    `ec2_share` (0 to 1) of each region's resources, spread evenly, are EC2 snapshots, volumes and
    instances in turn with realistic 17-hex-digit ids (`ec2_resource_id` reads them back); the rest
    follow the usual mix, so `ec2_share=0` yields exactly what it always did.
    """
    if not 0.0 <= ec2_share <= 1.0:
        raise ValueError("ec2_share must be between 0 and 1")
    for account in accounts:
        for region in regions:
            ec2_count = 0
            for n in range(per_region):
                if int((n + 1) * ec2_share) > int(n * ec2_share):
                    prefix = _EC2_SEED_PREFIXES[ec2_count % len(_EC2_SEED_PREFIXES)]
                    ec2_count += 1
                    arn = ec2_arn(f"{prefix}-{_hex_id(account, region, n)}", region, account,
                                  partition=partition)
                    assert arn is not None
                    yield account, arn
                    continue
                service, template = _KINDS[(n - ec2_count) % len(_KINDS)]
                h = _hex_id(account, region, n) if "{h}" in template else ""
                resource = template.format(n=f"{n:07d}", h=h)
                yield account, f"arn:{partition}:{service}:{region}:{account}:{resource}"


def synthetic_arns(
    accounts: list[str],
    regions: list[str],
    per_region: int,
    *,
    partition: str = "aws",
    ec2_share: float = 0.0,
) -> Iterator[str]:
    """The ARNs of `synthetic_resources`, in its order."""
    for _, arn in synthetic_resources(
        accounts, regions, per_region, partition=partition, ec2_share=ec2_share
    ):
        yield arn
