"""How the simulator reads ARNs, and the synthetic ARNs it seeds and benchmarks use.

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


def synthetic_arns(
    accounts: list[str], regions: list[str], per_region: int, *, partition: str = "aws"
) -> Iterator[str]:
    """Yield `per_region` ARNs of mixed services for every (account, region), deterministically.

    The same arguments always yield the same ARNs in the same order, account by account, region
    by region.
    """
    for account in accounts:
        for region in regions:
            for n in range(per_region):
                service, template = _KINDS[n % len(_KINDS)]
                h = ""
                if "{h}" in template:
                    key = f"{account}/{region}/{n}".encode()
                    h = hashlib.blake2b(key, digest_size=9).hexdigest()[:17]
                resource = template.format(n=f"{n:07d}", h=h)
                yield f"arn:{partition}:{service}:{region}:{account}:{resource}"
