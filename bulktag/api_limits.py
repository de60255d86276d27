"""The Resource Groups Tagging API's limits, in one place (DESIGN.md, the API reference).

Everything that sizes a call, a page or a tag map reads them from here.
"""

from __future__ import annotations

ARNS_PER_TAG_CALL = 20  #: TagResources / UntagResources take 1-20 ARNs
ARNS_PER_READ = 100  #: GetResources: ResourceARNList of at most 100
PAGE_SIZE = 100  #: GetResources: ResourcesPerPage of at most 100
TAGS_PER_CALL = 50  #: TagResources: 1-50 tags; UntagResources: 1-50 keys
TAGS_PER_RESOURCE = 50  #: user tags a resource may carry
KEY_MAX = 128  #: characters in a tag key
VALUE_MAX = 256  #: characters in a tag value
RESOURCE_TYPE_FILTERS_MAX = 100
RESERVED_PREFIX = "aws:"  #: in any letter case
PAGINATION_TOKEN_SECONDS = 15 * 60  #: a GetResources pagination token lives this long

#: documented requests per second per account and region
QUOTAS = {"TagResources": 5.0, "UntagResources": 5.0, "GetResources": 15.0,
          "GetTagKeys": 5.0, "GetTagValues": 5.0}

# EC2's CreateTags / DeleteTags (the "ec2" route; EC2 API reference and developer guide,
# "Request throttling for the Amazon EC2 API": each is an uncategorized action with a bucket
# of its own per account-region).
EC2_IDS_PER_CALL = 1000  #: CreateTags / DeleteTags take up to 1,000 resource ids
EC2_BUCKET_CAPACITY = 100.0  #: tokens of each action's bucket
EC2_BUCKET_REFILL = 10.0  #: tokens per second refilled: the sustained ceiling
EC2_OPERATIONS = {"tag": "CreateTags", "untag": "DeleteTags"}
#: DescribeTags, the EC2 route's read: MaxResults 5-1000 rows (one per tag) a page; a "describe"
#: action with a bucket of 100 refilled 20/s per account-region. The ids per call are ours: the
#: API documents no limit on a filter's values, so a call stays well inside a page.
EC2_TAGS_PER_PAGE = 1000
#: the API operations of the `ec2` route; every other operation is the Tagging API's
EC2_ROUTE_OPERATIONS = frozenset({"CreateTags", "DeleteTags", "DescribeTags"})


def route_of_operation(operation: str) -> str:
    """`ec2` or `tagging-api`: the route an API operation belongs to (/metrics' label)."""
    return "ec2" if operation in EC2_ROUTE_OPERATIONS else "tagging-api"
EC2_IDS_PER_READ = 500
