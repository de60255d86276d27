"""AWS Resource Explorer's `ListResources` over one organisation-wide view: every resource the
simulator holds, in every account and region, tagged or never tagged (unlike GetResources),
filtered by Resource Explorer's filter syntax and paged by NextToken.

Filters (`Filters.FilterString`): space-separated `prefix:value` terms; terms with the same
prefix are ORed, different prefixes ANDed, a leading `-` excludes. Prefixes: `service:`,
`resourcetype:` (service:type), `region:`, `accountid:`, `tag:none` (no user tag), `tag:all`,
`tag:KEY=VALUE`, `tag.key:KEY`; a bare word matches the ARN's text. `*` in a value is a
wildcard. The view is the default one of `explorer_region`, or `ViewArn` naming a view there.
"""

from __future__ import annotations

import fnmatch
import shlex
from typing import Any

from bulktag.sim.config import SimConfig
from bulktag.sim.store import Resource, SimState

MAX_RESULTS = 1000
PREFIXES = ("service", "resourcetype", "region", "accountid", "tag", "tag.key")


class ExplorerError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _terms(text: str) -> list[tuple[bool, str, str]]:
    """(negated, prefix, value) per term; prefix "" for a bare word."""
    out = []
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ExplorerError("ValidationException", f"bad filter string: {exc}") from None
    for word in words:
        negated = word.startswith("-")
        word = word[1:] if negated else word
        prefix, sep, value = word.partition(":")
        if not sep:
            prefix, value = "", word
        elif prefix not in PREFIXES:
            raise ExplorerError("ValidationException", f"unknown filter prefix {prefix!r}")
        out.append((negated, prefix, value))
    return out


def _user_tags(resource: Resource) -> dict[str, str]:
    return {k: v for k, v in resource.tags.items() if not k.lower().startswith("aws:")}


def _matches(resource: Resource, prefix: str, value: str) -> bool:
    def like(text: str) -> bool:
        return fnmatch.fnmatchcase(text, value)

    service = resource.resource_type.split(":", 1)[0]
    if prefix == "service":
        return like(service)
    if prefix == "resourcetype":
        return like(resource.resource_type)
    if prefix == "region":
        return like(resource.region)
    if prefix == "accountid":
        return like(resource.account)
    if prefix == "tag.key":
        return any(fnmatch.fnmatchcase(k, value) for k in _user_tags(resource))
    if prefix == "tag":
        tags = _user_tags(resource)
        if value == "none":
            return not tags
        if value == "all":
            return bool(tags)
        key, sep, wanted = value.partition("=")
        return any(fnmatch.fnmatchcase(k, key) and (not sep or fnmatch.fnmatchcase(v, wanted))
                   for k, v in tags.items())
    return value.lower() in resource.arn.lower()


def matches(resource: Resource, terms: list[tuple[bool, str, str]]) -> bool:
    groups: dict[str, list[bool]] = {}
    for negated, prefix, value in terms:
        hit = _matches(resource, prefix, value)
        if negated:
            if hit:
                return False
            continue
        groups.setdefault(prefix, []).append(hit)
    return all(any(hits) for hits in groups.values())


def list_resources(state: SimState, config: SimConfig, caller_account: str, region: str,
                   body: dict[str, Any]) -> dict[str, Any]:
    view = body.get("ViewArn")
    if region != config.explorer_region:
        raise ExplorerError("ResourceNotFoundException", f"no Resource Explorer view in "
                            f"{region}: the aggregator index is in {config.explorer_region}",
                            404)
    if view is not None and (not isinstance(view, str) or
                             f":resource-explorer-2:{region}:" not in view):
        raise ExplorerError("ResourceNotFoundException", f"no view {view!r} in {region}", 404)
    filters = body.get("Filters") or {}
    terms = _terms(str(filters.get("FilterString") or ""))
    size = body.get("MaxResults") or 100
    if not isinstance(size, int) or not 1 <= size <= MAX_RESULTS:
        raise ExplorerError("ValidationException", "MaxResults must be 1 to 1000")
    try:
        start = int(body.get("NextToken") or 0)
    except ValueError:
        raise ExplorerError("ValidationException", "bad NextToken") from None
    found = [r for r in state.every_resource() if not r.deleted and matches(r, terms)]
    page = found[start:start + size]
    out: dict[str, Any] = {
        "Resources": [{
            "Arn": r.arn, "OwningAccountId": r.account, "Region": r.region or "global",
            "ResourceType": r.resource_type, "Service": r.resource_type.split(":", 1)[0],
            "LastReportedAt": "2026-12-04T00:00:00Z",
            "Properties": [{"Name": "tags", "LastReportedAt": "2026-12-04T00:00:00Z",
                            "Data": [{"Key": k, "Value": v} for k, v in r.tags.items()]}]}
            for r in page],
        "ViewArn": view or f"arn:aws:resource-explorer-2:{region}:{caller_account}:view/"
                           "default/00000000-0000-0000-0000-000000000000"}
    if start + size < len(found):
        out["NextToken"] = str(start + size)
    return out
