"""The five Resource Groups Tagging API operations over a SimState.

Each operation takes the caller, the decoded JSON body and returns the JSON response, or raises
ApiError for a whole-call failure. Checks follow the AWS API reference: parameter constraints
fail the whole call; per-resource problems land in FailedResourcesMap.

Existence: an ARN containing the config's `missing_marker`, or of a resource deleted through
`SimState.delete`, does not exist (ResourceNotFoundException; not listed). Any other ARN is
created on first tagging. `ec2.py` uses the same rule for EC2 ids, except that EC2 creates nothing:
an id must already be in the store.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bulktag.sim import policies
from bulktag.sim.arns import matches_type, read_arn
from bulktag.sim.config import MARKUP_MESSAGE, SimConfig
from bulktag.sim.org import ORG_ID
from bulktag.sim.store import Resource, SimState

MAX_TAGS_PER_RESOURCE = 50
MAX_ARN_LENGTH = 1011
TAG_KEYS_PAGE_SIZE = 100  # GetTagKeys / GetTagValues take no page size; AWS picks one.


class ApiError(Exception):
    """A whole-call error, answered as `{"__type": code, "message": ...}` with `status`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def invalid(message: str) -> ApiError:
    return ApiError("InvalidParameterException", message, 400)


@dataclass(frozen=True, slots=True)
class Caller:
    account: str
    region: str


@dataclass(slots=True)
class Context:
    state: SimState
    config: SimConfig
    rng: random.Random
    clock: Callable[[], float]


# ---------------------------------------------------------------- parameter checks

_ASCII_TAG_TEXT = re.compile(r"[A-Za-z0-9 _.:/=+\-@]*")
_TAG_PUNCTUATION = frozenset("_.:/=+-@")


@lru_cache(maxsize=65536)
def valid_tag_text(text: str) -> bool:
    """`^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$`, which Python's `re` cannot spell."""
    if _ASCII_TAG_TEXT.fullmatch(text):
        return True
    return all(c in _TAG_PUNCTUATION or unicodedata.category(c)[0] in "LZN" for c in text)


def _check_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= 128:
        raise invalid(f"{what} must be a string of 1 to 128 characters")
    if not valid_tag_text(key):
        raise invalid(f"{what} {key!r} contains characters outside the allowed set")
    if key[:4].lower() == "aws:":
        raise invalid(f"{what} {key!r}: the aws: prefix is reserved for AWS use")
    return key


def _check_tags(tags: Any) -> dict[str, str]:
    if not isinstance(tags, dict) or not 1 <= len(tags) <= 50:
        raise invalid("Tags must be a map of 1 to 50 entries")
    for key, value in tags.items():
        _check_key(key, "tag key")
        if not isinstance(value, str) or len(value) > 256:
            raise invalid(f"tag value of {key!r} must be a string of at most 256 characters")
        if not valid_tag_text(value):
            raise invalid(f"tag value of {key!r} contains characters outside the allowed set")
    return tags


def _check_arn_list(body: dict[str, Any], most: int) -> list[str]:
    arns = body.get("ResourceARNList")
    if not isinstance(arns, list) or not 1 <= len(arns) <= most:
        raise invalid(f"ResourceARNList must hold 1 to {most} ARNs")
    for arn in arns:
        if not isinstance(arn, str) or not 1 <= len(arn) <= MAX_ARN_LENGTH:
            raise invalid(f"each ARN must be a string of 1 to {MAX_ARN_LENGTH} characters")
    return arns


def _optional_int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{name} must be an integer from {low} to {high}")
    return value


# ---------------------------------------------------------------- pagination tokens


def _issue_token(ctx: Context, caller: Caller, op: str, cursor: str) -> str:
    raw = json.dumps([op, caller.account, caller.region, cursor, ctx.clock()])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _read_token(ctx: Context, caller: Caller, op: str, token: Any) -> str | None:
    """The cursor a token carries; None for no token. Expired or foreign tokens are refused."""
    if token is None or token == "":
        return None
    try:
        t_op, account, region, cursor, issued = json.loads(base64.urlsafe_b64decode(token))
        if (t_op, account, region) != (op, caller.account, caller.region):
            raise ValueError
        issued = float(issued)
        cursor = str(cursor)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise invalid("PaginationToken is not valid for this request") from None
    if ctx.clock() - issued > ctx.config.pagination_token_ttl:
        raise ApiError(
            "PaginationTokenExpiredException",
            "A PaginationToken is valid for a maximum of 15 minutes.",
        )
    return cursor


# ---------------------------------------------------------------- TagResources / UntagResources


def _deleted(ctx: Context, arn: str) -> bool:
    resource = ctx.state.resource(arn)
    return resource is not None and resource.deleted


def _failure(code: str, message: str, status: int) -> dict[str, Any]:
    return {"ErrorCode": code, "ErrorMessage": message, "StatusCode": status}


def _change_tags(
    ctx: Context,
    caller: Caller,
    op: str,
    arns: list[str],
    apply: Callable[[Resource], dict[str, Any] | None],
) -> dict[str, Any]:
    """Run the per-ARN checks shared by Tag and Untag, then `apply` to each resource left.

    `apply` returns a failure entry to refuse the resource, or None after changing it.
    """
    config = ctx.config
    parsed_arns = []
    for arn in arns:
        parsed = read_arn(arn)
        if parsed is None:
            raise invalid(f"{arn} is not a valid ARN")
        unsupported = config.unsupported_types
        if parsed.resource_type in unsupported or parsed.service in unsupported:
            raise invalid(f"{arn}: resource type {parsed.resource_type} is not supported by {op}")
        parsed_arns.append(parsed)

    failed: dict[str, Any] = {}
    rng = ctx.rng
    for arn, parsed in zip(arns, parsed_arns, strict=True):
        if parsed.region != caller.region:
            failed[arn] = _failure(
                "InvalidParameterException",
                f"The resource is in region {parsed.region}, not {caller.region}",
                400,
            )
        elif parsed.account and parsed.account != caller.account:
            failed[arn] = _failure(
                "AccessDeniedException",
                f"Account {caller.account} is not authorized to change tags of {arn}",
                403,
            )
        elif config.denied_marker and config.denied_marker in arn:
            failed[arn] = _failure(
                "AccessDeniedException", f"You are not authorized to change tags of {arn}", 403
            )
        elif config.markup_marker and config.markup_marker in arn:
            failed[arn] = _failure("TagPolicyViolation", MARKUP_MESSAGE, 400)
        elif (config.missing_marker and config.missing_marker in arn) or _deleted(ctx, arn):
            failed[arn] = _failure("ResourceNotFoundException", f"{arn} does not exist", 404)
        elif config.resource_error_rate and rng.random() < config.resource_error_rate:
            failed[arn] = _failure("InternalServiceException", "Internal service error", 500)
        elif config.resource_throttle_rate and rng.random() < config.resource_throttle_rate:
            failed[arn] = _failure("ThrottlingException", "Rate exceeded", 400)
        else:
            failure = apply(ctx.state.ensure(arn, parsed, caller.account))
            if failure is not None:
                failed[arn] = failure
    return {"FailedResourcesMap": failed}


def tag_resources(ctx: Context, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    arns = _check_arn_list(body, 20)
    tags = _check_tags(body.get("Tags"))

    policy = policies.rules(ctx.config.tag_policies.get(caller.account))

    def apply(resource: Resource) -> dict[str, Any] | None:
        refused = policies.refused(policy, resource.resource_type, tags)
        if refused:  # an enforced tag policy: AWS refuses the resource, tags unchanged
            return _failure("TagPolicyViolation", "Tag policy violation: noncompliant "
                            f"key(s) {', '.join(refused)} on {resource.resource_type}", 400)
        current = resource.tags
        added = sum(1 for key in tags if key not in current)
        # Tags under the reserved aws: prefix (set by AWS) do not count against the limit.
        users = sum(1 for key in current if key[:4].lower() != "aws:")
        if users + added > MAX_TAGS_PER_RESOURCE:
            return _failure(
                "InvalidParameterException",
                f"Too many tags: a resource can have at most {MAX_TAGS_PER_RESOURCE} tags",
                400,
            )
        current.update(tags)
        resource.ever_tagged = True
        return None

    return _change_tags(ctx, caller, "TagResources", arns, apply)


def untag_resources(ctx: Context, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    arns = _check_arn_list(body, 20)
    keys = body.get("TagKeys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= 50:
        raise invalid("TagKeys must hold 1 to 50 keys")
    for key in keys:
        _check_key(key, "tag key")

    def apply(resource: Resource) -> None:
        for key in keys:
            resource.tags.pop(key, None)

    return _change_tags(ctx, caller, "UntagResources", arns, apply)


# ---------------------------------------------------------------- GetResources


def _tag_filter(body: dict[str, Any]) -> Callable[[dict[str, str]], bool] | None:
    """AND across filters, OR across one filter's values; no values means "has the key"."""
    filters = body.get("TagFilters")
    if filters is None or filters == []:
        return None
    if not isinstance(filters, list) or len(filters) > 50:
        raise invalid("TagFilters must hold at most 50 filters")
    wanted: list[tuple[str, frozenset[str] | None]] = []
    for f in filters:
        if not isinstance(f, dict) or not isinstance(f.get("Key"), str):
            raise invalid("each TagFilter needs a Key")
        key = f["Key"]
        if not 1 <= len(key) <= 128:
            raise invalid("TagFilter Key must have 1 to 128 characters")
        values = f.get("Values")
        if values is None or values == []:
            wanted.append((key, None))
            continue
        if not isinstance(values, list) or len(values) > 20:
            raise invalid("a TagFilter holds at most 20 values")
        if not all(isinstance(v, str) and len(v) <= 256 for v in values):
            raise invalid("TagFilter values must be strings of at most 256 characters")
        wanted.append((key, frozenset(values)))

    def match(tags: dict[str, str]) -> bool:
        for key, values in wanted:
            value = tags.get(key)
            if value is None or (values is not None and value not in values):
                return False
        return True

    return match


def _type_filter(body: dict[str, Any]) -> list[str] | None:
    types = body.get("ResourceTypeFilters")
    if types is None or types == []:
        return None
    if not isinstance(types, list) or len(types) > 100:
        raise invalid("ResourceTypeFilters must hold at most 100 types")
    if not all(isinstance(t, str) and len(t) <= 256 for t in types):
        raise invalid("each resource type filter must be a string of at most 256 characters")
    return types


def _mapping_of(resource: Resource,
                compliance: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ResourceARN": resource.arn,
        "Tags": [{"Key": k, "Value": v} for k, v in resource.tags.items()],
    }
    if compliance is not None:
        out["ComplianceDetails"] = compliance
    return out


def _compliance(ctx: Context, resource: Resource) -> dict[str, Any]:
    """GetResources' ComplianceDetails: keys in another case than the account's tag policy
    asks, keys whose value it does not allow."""
    policy = policies.rules(ctx.config.tag_policies.get(resource.account))
    bad = policies.noncompliant(policy, resource.tags)
    case = [k for k in bad if policy[k.lower()]["key"] != k]
    return {"NoncompliantKeys": case, "KeysWithNoncompliantValues": [k for k in bad
                                                                     if k not in case],
            "ComplianceStatus": not bad}


def get_resources(ctx: Context, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    tag_match = _tag_filter(body)
    types = _type_filter(body)
    details = body.get("IncludeComplianceDetails") is True
    exclude = body.get("ExcludeCompliantResources") is True
    if exclude and not details:
        raise invalid("ExcludeCompliantResources needs IncludeComplianceDetails")

    def wanted(resource: Resource) -> bool:
        if resource.deleted or not resource.ever_tagged:
            return False  # GetResources: only resources tagged now or before
        if types is not None and not matches_type(resource.resource_type, types):
            return False
        if exclude and _compliance(ctx, resource)["ComplianceStatus"]:
            return False
        return tag_match is None or tag_match(resource.tags)

    def _mapping(resource: Resource) -> dict[str, Any]:  # with its compliance details
        return _mapping_of(resource, _compliance(ctx, resource) if details else None)

    if body.get("ResourceARNList") is not None:
        paging = ("ResourcesPerPage", "TagsPerPage", "PaginationToken")
        if any(body.get(p) is not None for p in paging):
            raise invalid(
                "ResourceARNList cannot be combined with ResourcesPerPage, TagsPerPage "
                "or PaginationToken"
            )
        found = []
        for arn in _check_arn_list(body, 100):
            resource = ctx.state.resource(arn)
            if (
                resource is not None
                and resource.account == caller.account
                and resource.region == caller.region
                and wanted(resource)
            ):
                found.append(_mapping(resource))
        return {"PaginationToken": "", "ResourceTagMappingList": found}

    per_page = _optional_int(body, "ResourcesPerPage", 1, 100) or 50
    tags_per_page = _optional_int(body, "TagsPerPage", 100, 500)
    cursor = _read_token(ctx, caller, "GetResources", body.get("PaginationToken"))
    try:
        position = int(cursor) if cursor is not None else 0
    except ValueError:
        raise invalid("PaginationToken is not valid for this request") from None

    shard = ctx.state.shard(caller.account, caller.region)
    page: list[dict[str, Any]] = []
    tag_count = 0
    while position < len(shard) and len(page) < per_page:
        resource = shard[position]
        if wanted(resource):
            weight = max(1, len(resource.tags))
            if tags_per_page is not None and page and tag_count + weight > tags_per_page:
                break
            tag_count += weight
            page.append(_mapping(resource))
        position += 1
    # Skip trailing non-matches so that a page that ends the walk carries no token.
    while position < len(shard) and not wanted(shard[position]):
        position += 1
    token = ""
    if position < len(shard):
        token = _issue_token(ctx, caller, "GetResources", str(position))
    return {"PaginationToken": token, "ResourceTagMappingList": page}


# ---------------------------------------------------------------- GetTagKeys / GetTagValues


def _page_of_sorted(
    ctx: Context, caller: Caller, op: str, body: dict[str, Any], items: set[str]
) -> tuple[list[str], str]:
    after = _read_token(ctx, caller, op, body.get("PaginationToken"))
    ordered = sorted(items)
    if after is not None:
        ordered = [item for item in ordered if item > after]
    page = ordered[:TAG_KEYS_PAGE_SIZE]
    token = _issue_token(ctx, caller, op, page[-1]) if len(ordered) > len(page) else ""
    return page, token


def get_tag_keys(ctx: Context, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    shard = ctx.state.shard(caller.account, caller.region)
    keys = {key for r in shard if not r.deleted for key in r.tags}
    page, token = _page_of_sorted(ctx, caller, "GetTagKeys", body, keys)
    return {"PaginationToken": token, "TagKeys": page}


def get_tag_values(ctx: Context, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    key = body.get("Key")
    if not isinstance(key, str) or not 1 <= len(key) <= 128:
        raise invalid("Key is required: a string of 1 to 128 characters")
    values = {
        r.tags[key]
        for r in ctx.state.shard(caller.account, caller.region)
        if key in r.tags and not r.deleted
    }
    page, token = _page_of_sorted(ctx, caller, "GetTagValues", body, values)
    return {"PaginationToken": token, "TagValues": page}


def _management_only(ctx: Context, caller: Caller, op: str) -> None:
    management = ctx.config.management_account or ctx.config.default_account
    if caller.account != management or caller.region != "us-east-1":
        raise ApiError("ConstraintViolationException", f"{op} can be called only from the "
                       "organization's management account, in us-east-1", 400)


_BUCKET = re.compile(r"[a-z0-9.-]{3,63}")


def start_report_creation(ctx: Context, caller: Caller, body: dict[str, Any]
                          ) -> dict[str, Any]:
    """An organisation-wide compliance report into `S3Bucket`, made asynchronously: RUNNING
    for `report_seconds`, then SUCCEEDED (or FAILED for a bucket it cannot write to). The
    CSV is kept for `/_sim/report` (the simulator has no S3 of its own)."""
    _management_only(ctx, caller, "StartReportCreation")
    bucket = body.get("S3Bucket")
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket):
        raise invalid("S3Bucket must be 3 to 63 characters of [a-z0-9.-]")
    now = ctx.clock()
    running = ctx.state.report
    if running is not None and now - running["started"] < ctx.config.report_seconds:
        raise ApiError("ConcurrentModificationException", "a report is being created; try "
                       "again later", 400)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    lines = ["AccountId,Region,ResourceType,ResourceArn,NonCompliantKeys,"
             "KeysWithNonCompliantValues,ComplianceStatus"]
    for resource in ctx.state.every_resource():
        if resource.deleted or not resource.tags:
            continue
        found = _compliance(ctx, resource)
        lines.append(",".join([resource.account, resource.region, resource.resource_type,
                               resource.arn, " ".join(found["NoncompliantKeys"]),
                               " ".join(found["KeysWithNoncompliantValues"]),
                               "true" if found["ComplianceStatus"] else "false"]))
    ctx.state.report = {
        "bucket": bucket, "started": now,
        "location": f"s3://{bucket}/AwsTagPolicies/{ORG_ID}/{stamp}/report.csv",
        "denied": bucket in ctx.config.report_denied_buckets,
        "csv": "\n".join(lines) + "\n"}
    return {}


def describe_report_creation(ctx: Context, caller: Caller, body: dict[str, Any]
                             ) -> dict[str, Any]:
    _management_only(ctx, caller, "DescribeReportCreation")
    report = ctx.state.report
    if report is None:
        return {"Status": "NO REPORT"}
    if ctx.clock() - report["started"] < ctx.config.report_seconds:
        return {"Status": "RUNNING"}
    if report["denied"]:
        return {"Status": "FAILED", "ErrorMessage": f"Access Denied: the tag policies' "
                f"service principal cannot write to s3://{report['bucket']}"}
    return {"Status": "SUCCEEDED", "S3Location": report["location"]}


def get_compliance_summary(ctx: Context, caller: Caller, body: dict[str, Any]
                           ) -> dict[str, Any]:
    """Noncompliant resources across the organisation's accounts, grouped (GroupBy
    TARGET_ID, REGION, RESOURCE_TYPE); only the management account in us-east-1 may ask."""
    _management_only(ctx, caller, "GetComplianceSummary")
    group_by = body.get("GroupBy") or []
    if not isinstance(group_by, list) or not set(group_by) <= {"TARGET_ID", "REGION",
                                                               "RESOURCE_TYPE"}:
        raise invalid("GroupBy takes TARGET_ID, REGION and RESOURCE_TYPE")
    accounts = set(body.get("TargetIdFilters") or [])
    regions = set(body.get("RegionFilters") or [])
    types = body.get("ResourceTypeFilters") or None
    counts: dict[tuple[str, str, str], int] = {}
    for resource in ctx.state.every_resource():
        if resource.deleted or (accounts and resource.account not in accounts) or \
                (regions and resource.region not in regions) or \
                (types is not None and not matches_type(resource.resource_type, types)):
            continue
        if _compliance(ctx, resource)["ComplianceStatus"]:
            continue
        key = (resource.account if "TARGET_ID" in group_by else "",
               resource.region if "REGION" in group_by else "",
               resource.resource_type if "RESOURCE_TYPE" in group_by else "")
        counts[key] = counts.get(key, 0) + 1
    return {"PaginationToken": "", "SummaryList": [
        {"TargetId": a, "TargetIdType": "ACCOUNT", "Region": r, "ResourceType": t,
         "NonCompliantResources": n, "LastUpdated": "2026-12-04T00:00:00Z"}
        for (a, r, t), n in sorted(counts.items())]}


OPERATIONS: dict[str, Callable[[Context, Caller, dict[str, Any]], dict[str, Any]]] = {
    "GetComplianceSummary": get_compliance_summary,
    "StartReportCreation": start_report_creation,
    "DescribeReportCreation": describe_report_creation,
    "TagResources": tag_resources,
    "UntagResources": untag_resources,
    "GetResources": get_resources,
    "GetTagKeys": get_tag_keys,
    "GetTagValues": get_tag_values,
}
