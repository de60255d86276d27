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


# -- fix-policy: the fix as a transform operation, its images and its undo --------------------

def test_fix_renames_case_sets_single_case_matches_and_leaves_decisions() -> None:
    from bulktag.policy.tag_policy import fix

    policy = parse_policy(RESOLVED)
    fixed, undecided = fix(policy, {"COSTCENTER": "100", "Env": "PROD", "x": "y"})
    assert fixed == {"CostCenter": "100", "env": "prod", "x": "y"} and undecided == []
    _, undecided = fix(policy, {"costcenter": "999"})
    assert undecided == ["costcenter='999' is not an allowed value (allowed: '100', '300*')"]
    _, undecided = fix(policy, {"costcenter": "100", "CostCenter": "300"})
    assert undecided and "both present" in undecided[0]
    fixed, undecided = fix(policy, {"costcenter": "999"}, {"costcenter": {"999": "300-a"}})
    assert fixed == {"CostCenter": "300-a"} and undecided == []
    _, undecided = fix(policy, {"costcenter": "999"}, {"costcenter": {"999": "400"}})
    assert undecided, "a mapped value the policy does not allow still needs a decision"


def test_a_fix_needing_a_decision_leaves_the_resource_alone_with_its_code() -> None:
    from bulktag.policy.changes import Rules, decide
    from bulktag.policy.transforms import NEEDS_DECISION_CODE, TransformError, apply, fix_policy

    policy = parse_policy(RESOLVED)
    body = [list(fix_policy())]
    d = decide(Rules(kind="transform"), body, {"costcenter": "999", "env": "Prod"},
               policy=policy)
    assert not d.send and d.code == NEEDS_DECISION_CODE and "'999'" in (d.reason or "")
    with pytest.raises(TransformError):
        apply([fix_policy()], {"costcenter": "1"})  # no policy given: a bug, said loudly


def test_a_fixs_image_keeps_what_it_set_so_undo_needs_no_policy() -> None:
    from bulktag.policy.changes import Rules, after_of, decide, encode, prior_of, undo_body
    from bulktag.policy.transforms import fix_policy

    body = [list(fix_policy())]
    current = {"costcenter": "100", "env": "PROD", "x": "me"}
    d = decide(Rules(kind="transform"), body, current, policy=parse_policy(RESOLVED))
    assert d.send and d.override == {"CostCenter": "100", "costcenter": None, "env": "prod"}
    image = d.image()
    assert image == {"CostCenter": [None, "100"], "costcenter": ["100", None],
                     "env": ["PROD", "prod"]}
    assert prior_of(image) == {"CostCenter": None, "costcenter": "100", "env": "PROD"}
    assert after_of("transform", body, image) == {"CostCenter": "100", "costcenter": None,
                                                  "env": "prod"}
    undo = json.loads(undo_body("transform", json.dumps(body), encode(image)) or "{}")
    assert undo == {"CostCenter": [None, "100"], "costcenter": ["100", None],
                    "env": ["PROD", "prod"]}


def test_a_noncompliant_query_asks_aws_for_compliance_details() -> None:
    from bulktag.engine.discovery import Query

    query = Query(noncompliant=True)
    assert query.params() == {"IncludeComplianceDetails": True,
                              "ExcludeCompliantResources": True}
    assert Query.from_json(query.to_json()) == query
