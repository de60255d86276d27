"""`bulktag iam-policy` and `deploy/member-role.yaml` (issue 24): the documents are valid IAM
JSON (their shape checked here, and moto's IAM, which validates policy documents, takes them),
the template passes cfn-lint, and its policy is exactly `iam-policy --member-role`'s."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import yaml  # type: ignore[import-untyped]

from bulktag.policy.iam import SERVICE_ACTIONS, member_policy
from tests.support.cli import CliRunner

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "member-role.yaml"
ACTION = re.compile(r"[a-z0-9-]+:[A-Za-z0-9*]+")


def check_shape(doc: dict[str, Any]) -> None:
    assert doc["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in doc["Statement"]]
    assert len(sids) == len(set(sids)) and all(re.fullmatch(r"[A-Za-z0-9]+", s) for s in sids)
    for statement in doc["Statement"]:
        assert set(statement) == {"Sid", "Effect", "Action", "Resource"}
        assert statement["Effect"] == "Allow" and statement["Action"]
        assert all(ACTION.fullmatch(a) for a in statement["Action"]), statement
        resources = statement["Resource"]
        assert resources == "*" or str(resources).startswith("arn:aws:"), statement


def test_worker_and_member_policies_are_valid_iam_json(
        run_cli: CliRunner, moto_url: str) -> None:
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    cases = [
        ["--resource-type", "lambda,dynamodb:table", "--features",
         "discovery,explorer,org,policy,export", "--role-name", "Tagger", "--bucket", "exports",
         "--kms-key-arn", "arn:aws:kms:us-east-1:123456789012:key/abc"],
        ["--member-role", "--features", "policy", "--resource-type", "ec2:instance"],
        [],
    ]
    for n, args in enumerate(cases):
        done = run_cli("iam-policy", *args)
        assert done.returncode == 0, done.stderr[-2000:]
        doc = json.loads(done.stdout)
        check_shape(doc)
        iam.create_policy(PolicyName=f"bulktag-{n}", PolicyDocument=done.stdout)
        actions = {a for s in doc["Statement"] for a in s["Action"]}
        assert {"tag:TagResources", "tag:UntagResources", "tag:GetResources"} <= actions
        if n == 0:
            assert "lambda:TagResource" in actions and "dynamodb:TagResource" in actions
            assert "sqs:TagQueue" not in actions  # only the services asked for
            assert {"sts:AssumeRole", "resource-explorer-2:ListResources",
                    "organizations:ListAccountsForParent", "tag:GetComplianceSummary",
                    "s3:PutObject", "kms:GenerateDataKey"} <= actions
        if n == 1:
            assert "sts:AssumeRole" not in actions and "ec2:CreateTags" in actions
            assert "organizations:DescribeEffectivePolicy" in actions
    for bad, words in ((["--resource-type", "nosuchservice"], "no tagging actions known"),
                       (["--features", "everything"], "unknown feature")):
        refused = run_cli("iam-policy", *bad)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """CloudFormation's short tags (!Ref, !If, ...) read as plain values."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_the_member_role_template_passes_cfn_lint_and_matches_the_policy() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")  # installed with the test extras
    linted = subprocess.run([str(cfn_lint), str(TEMPLATE)],
                            capture_output=True, text=True, timeout=300)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    template = yaml.load(TEMPLATE.read_text(), Loader=_Loader)
    role = template["Resources"]["MemberRole"]["Properties"]
    (policy,) = role["Policies"]
    wanted = member_policy(features=("discovery", "policy"))
    assert policy["PolicyDocument"] == wanted
    assert set(SERVICE_ACTIONS["ec2"]) <= {a for s in wanted["Statement"] for a in s["Action"]}
