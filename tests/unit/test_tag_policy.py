"""Tag policies read as rules (`policy/tag_policy.py`): both forms of the content, the key's
case, values with wildcards, what `enforced_for` covers, and refusals of content that is not a
tag policy."""

from __future__ import annotations

import json

import pytest

from bulktag.policy.tag_policy import NO_POLICY, PolicyError, parse_policy, violations

RESOLVED = {"tags": {"costcenter": {"tag_key": "CostCenter", "tag_value": ["100", "300*"],
                                    "enforced_for": ["dynamodb:table", "ec2:*"]},
                     "Owner": {}, "env": {"tag_value": ["prod"],
                                          "enforced_for": ["s3:ALL_SUPPORTED"]}}}
OPERATORS = {"tags": {"costcenter": {"tag_key": {"@@assign": "CostCenter"},
                                     "tag_value": {"@@assign": ["100", "300*"]},
                                     "enforced_for": {"@@assign": ["dynamodb:table",
                                                                   "ec2:*"]}},
                      "Owner": {"tag_key": {"@@assign": "owner"}},
                      "env": {"tag_value": {"@@assign": ["prod"]},
                              "enforced_for": {"@@assign": ["s3:ALL_SUPPORTED"]}}}}


@pytest.mark.parametrize("content", [RESOLVED, OPERATORS, json.dumps(OPERATORS)])
def test_both_forms_read_alike(content: object) -> None:
    policy = parse_policy(content)  # type: ignore[arg-type]
    rule = policy.rule_for("COSTCENTER")
    assert rule is not None and rule.tag_key == "CostCenter"
    assert rule.allows("100") and rule.allows("300") and rule.allows("300-x")
    assert not rule.allows("200") and not rule.allows("x300")
    assert rule.enforced("dynamodb:table") and rule.enforced("ec2:instance")
    assert not rule.enforced("dynamodb:backup") and not rule.enforced("lambda:function")
    env = policy.rule_for("env")
    assert env is not None and env.tag_key == "env" and env.enforced("s3")
    owner = policy.rule_for("owner")
    assert owner is not None and owner.tag_key == "owner" and owner.allows("anything")


def test_violations_name_the_rule_and_say_where_it_is_enforced() -> None:
    policy = parse_policy(RESOLVED)
    found = violations(policy, "dynamodb:table", {"costcenter": "100", "CostCenter": "555",
                                                  "Other": "x", "env": None})
    assert [(v.key, v.enforced) for v in found] == [("costcenter", True), ("CostCenter", True)]
    assert "should be 'CostCenter'" in found[0].reason
    assert "'555' is not allowed" in found[1].reason
    assert [v.enforced for v in violations(policy, "lambda:function",
                                           {"CostCenter": "555"})] == [False]
    assert violations(NO_POLICY, "dynamodb:table", {"CostCenter": "555"}) == []


@pytest.mark.parametrize(("content", "words"), [
    ("{not json", "not JSON"),
    ({"tags": []}, "must be an object"),
    ({"tags": {"cc": {"tag_key": "Other"}}}, "must be the policy key"),
    ({"tags": {"cc": {"tag_value": "x"}}}, "tag_value must be a list"),
])
def test_content_that_is_not_a_tag_policy_is_refused(content: object, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        parse_policy(content)  # type: ignore[arg-type]


def test_no_policy_has_no_rules() -> None:
    assert parse_policy(None) is NO_POLICY and parse_policy({"other": 1}).rules == {}
