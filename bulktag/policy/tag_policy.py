"""Tag policies (AWS Organizations, `TAG_POLICY`): what an account's effective policy allows,
with no I/O.

An effective tag policy (`DescribeEffectivePolicy`) is JSON with a `tags` map: per policy key
(case-insensitive), the key's required case (`tag_key`; lowercase policy key when absent), the
allowed values (`tag_value`; `*` is a wildcard; absent: any value) and the resource types on
which non-compliant tagging is refused (`enforced_for`: `service:type`, `service:*`,
`service:ALL_SUPPORTED`). `parse_policy` accepts the content resolved (as
DescribeEffectivePolicy answers) or with its inheritance operators (`@@assign`, `@@append`).

`violations` checks the tags a call would write on one resource type: a key in another case
than the policy's, or a value it does not allow. On a type the rule enforces, AWS refuses the
call for that resource; elsewhere the tag is only noncompliant (a warning).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

POLICY_CODE = "TagPolicyViolation"  #: an item refused by (or for) an enforced tag policy
POLICY_UNREAD_CODE = "TagPolicyUnread"  #: a fix-policy item whose account's policy was unread


class PolicyError(ValueError):
    """Content that is not a tag policy (says what is wrong)."""


@dataclass(frozen=True, slots=True)
class TagRule:
    policy_key: str  #: lowercase
    tag_key: str  #: the case a compliant key has
    values: tuple[str, ...] | None = None  #: allowed values (`*` wildcards); None: any
    enforced_for: tuple[str, ...] = ()  #: resource types where AWS refuses noncompliant tags

    def allows(self, value: str) -> bool:
        return self.values is None or any(_pattern(v).fullmatch(value) for v in self.values)

    def enforced(self, resource_type: str) -> bool:
        """Whether AWS refuses noncompliant tags on `resource_type` (`service:type`)."""
        service = resource_type.split(":", 1)[0]
        for spec in self.enforced_for:
            svc, _, kind = spec.partition(":")
            if svc == service and (kind in ("*", "ALL_SUPPORTED") or spec == resource_type):
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {"tag_key": self.tag_key, "values": list(self.values) if self.values else None,
                "enforced_for": list(self.enforced_for)}


@dataclass(frozen=True, slots=True)
class TagPolicy:
    rules: dict[str, TagRule] = field(default_factory=dict)  #: by lowercase policy key

    def rule_for(self, key: str) -> TagRule | None:
        return self.rules.get(key.lower())


@dataclass(frozen=True, slots=True)
class Violation:
    key: str
    rule: TagRule
    enforced: bool  #: AWS refuses the call for this resource
    reason: str


NO_POLICY = TagPolicy()


@lru_cache(maxsize=1024)
def _pattern(value: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in value.split("*")), re.DOTALL)


def _resolved(node: Any) -> Any:
    """A policy node's value: `@@assign` (and `@@append`) operators resolved."""
    if isinstance(node, Mapping):
        if "@@assign" in node or "@@append" in node:
            assigned = node.get("@@assign")
            appended = node.get("@@append")
            if isinstance(assigned, list) or isinstance(appended, list):
                return [*(assigned or []), *(appended or [])]
            return assigned if assigned is not None else appended
        return {k: _resolved(v) for k, v in node.items()
                if not k.startswith("@@")}
    return node


def parse_policy(content: str | Mapping[str, Any] | None) -> TagPolicy:
    """The rules of an effective tag policy (None or empty: no rules). Raises PolicyError."""
    if content is None or content == "":
        return NO_POLICY
    try:
        data = json.loads(content) if isinstance(content, str) else dict(content)
    except ValueError as exc:
        raise PolicyError(f"tag policy is not JSON: {exc}") from None
    tags = _resolved(data.get("tags") if isinstance(data, Mapping) else None)
    if tags is None:
        return NO_POLICY
    if not isinstance(tags, Mapping):
        raise PolicyError("tag policy: `tags` must be an object of policy keys")
    rules: dict[str, TagRule] = {}
    for policy_key, spec in tags.items():
        if not isinstance(spec, Mapping):
            raise PolicyError(f"tag policy key {policy_key!r}: expected an object")
        tag_key = spec.get("tag_key") or policy_key.lower()
        if not isinstance(tag_key, str) or tag_key.lower() != policy_key.lower():
            raise PolicyError(f"tag policy key {policy_key!r}: tag_key {tag_key!r} must be "
                              "the policy key in some case")
        values = spec.get("tag_value")
        enforced = spec.get("enforced_for") or []
        if values is not None and (not isinstance(values, list) or
                                   not all(isinstance(v, str) for v in values)):
            raise PolicyError(f"tag policy key {policy_key!r}: tag_value must be a list of "
                              "strings")
        if not isinstance(enforced, list) or not all(isinstance(v, str) for v in enforced):
            raise PolicyError(f"tag policy key {policy_key!r}: enforced_for must be a list")
        rules[policy_key.lower()] = TagRule(policy_key.lower(), tag_key,
                                            tuple(values) if values is not None else None,
                                            tuple(enforced))
    return TagPolicy(rules)


def violations(policy: TagPolicy, resource_type: str,
               tags: Mapping[str, str | None]) -> list[Violation]:
    """What of the tags a call writes (None: a removal, never a violation) the policy does not
    allow on `resource_type`."""
    out = []
    for key, value in tags.items():
        if value is None:
            continue
        rule = policy.rule_for(key)
        if rule is None:
            continue
        enforced = rule.enforced(resource_type)
        if key != rule.tag_key:
            out.append(Violation(key, rule, enforced,
                                 f"key {key!r} should be {rule.tag_key!r} (tag policy)"))
        elif not rule.allows(value):
            allowed = ", ".join(repr(v) for v in (rule.values or ()))
            out.append(Violation(key, rule, enforced,
                                 f"{key}={value!r} is not allowed by the tag policy "
                                 f"(allowed: {allowed})"))
    return out


def fix(policy: TagPolicy, tags: Mapping[str, str],
        maps: Mapping[str, Mapping[str, str]] | None = None) -> tuple[dict[str, str], list[str]]:
    """The tags as the policy wants them, where there is exactly one right answer: a key in
    another case renamed to the policy's case (value kept), a value matching exactly one
    allowed value but for case set to it. `maps` (by lowercase policy key: {from: to}) are the
    user's answers for the rest (`--map-value KEY:FROM=TO`), applied first. Returns the fixed
    tags and what still needs a decision (no single answer: left for the caller to refuse)."""
    out = dict(tags)
    undecided: list[str] = []
    for key in sorted(tags):
        rule = policy.rule_for(key)
        if rule is None or key not in out:
            continue
        value = out.pop(key)
        if key != rule.tag_key and rule.tag_key in out and out[rule.tag_key] != value:
            out[key] = value
            undecided.append(f"{key}={value!r} and {rule.tag_key}={out[rule.tag_key]!r} "
                             "both present")
            continue
        value = (maps or {}).get(rule.policy_key, {}).get(value, value)
        if not rule.allows(value):
            exact = [v for v in (rule.values or ()) if "*" not in v and v.lower() == value.lower()]
            if len(exact) == 1:
                value = exact[0]
            else:
                allowed = ", ".join(repr(v) for v in (rule.values or ()))
                undecided.append(f"{key}={value!r} is not an allowed value (allowed: "
                                 f"{allowed})")
        out[rule.tag_key] = value
    return out, undecided
