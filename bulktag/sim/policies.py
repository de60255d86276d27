"""The simulator's own reading of AWS Organizations tag policies (it imports nothing of bulktag,
so it checks bulktag's reading rather than repeating it): which tags an enforced policy
refuses on a resource type, as TagResources does, and the noncompliant keys of a resource, as
GetResources' compliance details and GetComplianceSummary report them."""

from __future__ import annotations

import json
import re
from typing import Any


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        if "@@assign" in node:
            return node["@@assign"]
        return {k: _plain(v) for k, v in node.items() if not k.startswith("@@")}
    return node


def rules(policy_json: str | None) -> dict[str, dict[str, Any]]:
    """lowercase policy key -> {"key": required case, "values": [...] | None,
    "enforced": [...]}"""
    if not policy_json:
        return {}
    tags = _plain(json.loads(policy_json)).get("tags") or {}
    out = {}
    for name, spec in tags.items():
        spec = _plain(spec)
        out[name.lower()] = {"key": spec.get("tag_key") or name.lower(),
                             "values": spec.get("tag_value"),
                             "enforced": spec.get("enforced_for") or []}
    return out


def _value_ok(allowed: list[str] | None, value: str) -> bool:
    if allowed is None:
        return True
    for pattern in allowed:
        regex = "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$"
        if re.match(regex, value, re.DOTALL):
            return True
    return False


def _enforced_on(enforced: list[str], resource_type: str) -> bool:
    service = resource_type.split(":")[0]
    return any(e == resource_type or e in (f"{service}:*", f"{service}:ALL_SUPPORTED")
               for e in enforced)


def noncompliant(policy: dict[str, dict[str, Any]], tags: dict[str, str]) -> list[str]:
    """Keys of `tags` in another case than the policy's, or with a value it does not allow."""
    bad = []
    for key, value in tags.items():
        rule = policy.get(key.lower())
        if rule is not None and (key != rule["key"] or not _value_ok(rule["values"], value)):
            bad.append(key)
    return sorted(bad)


def refused(policy: dict[str, dict[str, Any]], resource_type: str,
            tags: dict[str, str]) -> list[str]:
    """The noncompliant keys of a TagResources call on a type their rule enforces."""
    return [k for k in noncompliant(policy, tags)
            if _enforced_on(policy[k.lower()]["enforced"], resource_type)]
