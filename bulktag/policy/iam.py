"""The least-privilege IAM policies bulktag needs, as documents (`bulktag iam-policy`), with no
I/O.

TagResources and UntagResources also need each service's own tagging permission for the
resources they change (the Tagging API calls the service on the caller's behalf), and its
read permission for GetResources' tags; the EC2 route calls CreateTags, DeleteTags and
DescribeTags itself. Discovery needs GetResources (and EC2 DescribeRegions when no region is
given), Resource Explorer discovery ListResources, Organizations accounts the List calls, tag
policies DescribeEffectivePolicy and the compliance calls, exports S3 (and KMS with a key).

`worker_policy` is the worker's own role; `member_policy` the role it assumes in each member
account (no STS, Organizations lists or Explorer: those are the worker account's calls).
`deploy/member-role.yaml` creates the member role with the same actions (a test keeps them the
same).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

VERSION = "2012-10-17"

#: service (the ARN's) -> its own tagging actions (tag, untag, list). What the Tagging API
#: needs besides `tag:*` to change that service's resources.
SERVICE_ACTIONS: dict[str, tuple[str, ...]] = {
    "acm": ("acm:AddTagsToCertificate", "acm:RemoveTagsFromCertificate",
            "acm:ListTagsForCertificate"),
    "apigateway": ("apigateway:PUT", "apigateway:DELETE", "apigateway:GET"),
    "cloudformation": ("cloudformation:TagResource", "cloudformation:UntagResource",
                       "cloudformation:DescribeStacks"),
    "cloudfront": ("cloudfront:TagResource", "cloudfront:UntagResource",
                   "cloudfront:ListTagsForResource"),
    "cloudwatch": ("cloudwatch:TagResource", "cloudwatch:UntagResource",
                   "cloudwatch:ListTagsForResource"),
    "dynamodb": ("dynamodb:TagResource", "dynamodb:UntagResource",
                 "dynamodb:ListTagsOfResource"),
    "ec2": ("ec2:CreateTags", "ec2:DeleteTags", "ec2:DescribeTags"),
    "ecr": ("ecr:TagResource", "ecr:UntagResource", "ecr:ListTagsForResource"),
    "ecs": ("ecs:TagResource", "ecs:UntagResource", "ecs:ListTagsForResource"),
    "eks": ("eks:TagResource", "eks:UntagResource", "eks:ListTagsForResource"),
    "elasticache": ("elasticache:AddTagsToResource", "elasticache:RemoveTagsFromResource",
                    "elasticache:ListTagsForResource"),
    "elasticfilesystem": ("elasticfilesystem:TagResource", "elasticfilesystem:UntagResource",
                          "elasticfilesystem:ListTagsForResource"),
    "elasticloadbalancing": ("elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
                             "elasticloadbalancing:DescribeTags"),
    "es": ("es:AddTags", "es:RemoveTags", "es:ListTags"),
    "events": ("events:TagResource", "events:UntagResource", "events:ListTagsForResource"),
    "firehose": ("firehose:TagDeliveryStream", "firehose:UntagDeliveryStream",
                 "firehose:ListTagsForDeliveryStream"),
    "iam": ("iam:TagRole", "iam:UntagRole", "iam:ListRoleTags", "iam:TagUser",
            "iam:UntagUser", "iam:ListUserTags", "iam:TagPolicy", "iam:UntagPolicy",
            "iam:ListPolicyTags"),
    "kinesis": ("kinesis:AddTagsToStream", "kinesis:RemoveTagsFromStream",
                "kinesis:ListTagsForStream"),
    "kms": ("kms:TagResource", "kms:UntagResource", "kms:ListResourceTags"),
    "lambda": ("lambda:TagResource", "lambda:UntagResource", "lambda:ListTags"),
    "logs": ("logs:TagResource", "logs:UntagResource", "logs:ListTagsForResource",
             "logs:TagLogGroup", "logs:UntagLogGroup", "logs:ListTagsLogGroup"),
    "rds": ("rds:AddTagsToResource", "rds:RemoveTagsFromResource", "rds:ListTagsForResource"),
    "redshift": ("redshift:CreateTags", "redshift:DeleteTags", "redshift:DescribeTags"),
    "route53": ("route53:ChangeTagsForResource", "route53:ListTagsForResource"),
    "s3": ("s3:GetBucketTagging", "s3:PutBucketTagging"),
    "secretsmanager": ("secretsmanager:TagResource", "secretsmanager:UntagResource",
                       "secretsmanager:DescribeSecret"),
    "sns": ("sns:TagResource", "sns:UntagResource", "sns:ListTagsForResource"),
    "sqs": ("sqs:TagQueue", "sqs:UntagQueue", "sqs:ListQueueTags"),
    "ssm": ("ssm:AddTagsToResource", "ssm:RemoveTagsFromResource", "ssm:ListTagsForResource"),
    "states": ("states:TagResource", "states:UntagResource", "states:ListTagsForResource"),
}
#: --features: what beyond tagging the worker does
FEATURES = ("discovery", "explorer", "org", "policy", "export")
DEFAULT_FEATURES = ("discovery",)
TAGGING = ("tag:TagResources", "tag:UntagResources", "tag:GetResources")


class IamError(ValueError):
    """A resource type or feature bulktag has no actions for (names it)."""


def _services(resource_types: Iterable[str]) -> list[str]:
    services = sorted({t.split(":", 1)[0].strip().lower() for t in resource_types if t.strip()})
    unknown = [s for s in services if s not in SERVICE_ACTIONS]
    if unknown:
        raise IamError(f"no tagging actions known for {', '.join(unknown)}: known services are "
                       f"{', '.join(SERVICE_ACTIONS)}")
    return services or list(SERVICE_ACTIONS)


def _statement(sid: str, actions: Iterable[str], resource: str | list[str] = "*"
               ) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)),
            "Resource": resource}


def _tagging(services: list[str], route: str) -> list[dict[str, Any]]:
    # The EC2 route calls CreateTags / DeleteTags itself and reads by DescribeTags; through
    # the Tagging API, it calls CreateTags / DeleteTags for the caller, reads by GetResources.
    actions = [a for s in services for a in SERVICE_ACTIONS[s]
               if not (route == "tagging-api" and a == "ec2:DescribeTags")]
    return [_statement("TaggingApi", TAGGING),
            _statement("ServiceTagging", actions)]


def member_policy(resource_types: Iterable[str] = (), features: Iterable[str] = (),
                  route: str = "auto") -> dict[str, Any]:
    """The role assumed in each member account: tagging, reading tags, and (with the policy
    feature) the account's effective tag policy."""
    features = _features(features)
    if route not in ("auto", "tagging-api"):
        raise IamError(f"unknown route {route!r}: expected auto or tagging-api")
    statements = _tagging(_services(resource_types), route)
    if "discovery" in features:
        statements.append(_statement("Regions", ["ec2:DescribeRegions"]))
    if "policy" in features:
        statements.append(_statement("TagPolicy", ["organizations:DescribeEffectivePolicy"]))
    return {"Version": VERSION, "Statement": statements}


def worker_policy(resource_types: Iterable[str] = (), features: Iterable[str] = (),
                  route: str = "auto", role_name: str | None = None,
                  bucket: str | None = None, kms_key_arn: str | None = None) -> dict[str, Any]:
    """The worker's own role: everything of `member_policy` for its own account, plus
    AssumeRole into the member role, and the features' reads."""
    features = _features(features)
    doc = member_policy(resource_types, features, route)
    statements: list[dict[str, Any]] = doc["Statement"]
    if role_name:
        statements.append(_statement("AssumeMemberRole", ["sts:AssumeRole"],
                                     f"arn:aws:iam::*:role/{role_name}"))
    if "explorer" in features:
        statements.append(_statement("ResourceExplorer", ["resource-explorer-2:ListResources",
                                                          "resource-explorer-2:GetView",
                                                          "resource-explorer-2:GetDefaultView"]))
    if "org" in features:
        statements.append(_statement("OrganizationAccounts", [
            "organizations:ListAccounts", "organizations:ListAccountsForParent",
            "organizations:ListOrganizationalUnitsForParent", "organizations:ListRoots"]))
    if "policy" in features:
        statements.append(_statement("Compliance", [
            "tag:GetComplianceSummary", "tag:StartReportCreation",
            "tag:DescribeReportCreation"]))
    if "export" in features:
        target = f"arn:aws:s3:::{bucket}/*" if bucket else "arn:aws:s3:::*/*"
        statements.append(_statement("Export", ["s3:PutObject", "s3:AbortMultipartUpload"],
                                     target))
        if kms_key_arn:
            statements.append(_statement("ExportKey", ["kms:GenerateDataKey", "kms:Decrypt"],
                                         kms_key_arn))
    return doc


def _features(features: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in features if f.strip())) or \
        DEFAULT_FEATURES
    unknown = [f for f in chosen if f not in FEATURES]
    if unknown:
        raise IamError(f"unknown feature(s) {', '.join(unknown)}: expected "
                       f"{', '.join(FEATURES)}")
    return chosen


def to_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2)
