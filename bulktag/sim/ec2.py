"""EC2 on the simulator's port, in EC2's query protocol: CreateTags, DeleteTags, DescribeTags, and
DescribeRegions (which discovery asks for the enabled regions).

Requests are form-encoded (`Action=CreateTags&ResourceId.1=snap-...&Tag.1.Key=k&Tag.1.Value=v`);
answers are XML in the `NAMESPACE`, errors `<Response><Errors><Error><Code/><Message/></Error>
</Errors><RequestID/></Response>`. `handle` answers one call; the server has already counted it,
spent a token of the action's bucket (`SimConfig.ec2_buckets`, RequestLimitExceeded 503 when
empty) and injected latency and faults.

The store is the Tagging API's: an id maps to its ARN in the caller's region and account
(`arns.ec2_arn`), so both APIs see the same tags. Unlike TagResources, EC2 creates nothing: an id
exists when its ARN is in the store (seeded, put, or tagged through the Tagging API), belongs to
the caller's account, is not deleted and does not contain the config's `missing_marker`.

CreateTags and DeleteTags change all resources of a call or none. Checks, in order: parameters
(1 to `MAX_RESOURCE_IDS` ids, tag keys 1-128 characters not starting with `aws:`, values at most
256) -> InvalidParameterValue / MissingParameter; ids of no known prefix -> InvalidID; ids with
the `denied_marker` -> UnauthorizedOperation 403; missing ids -> the first missing kind's NotFound
code (`arns.EC2_KINDS`) with `NOT_FOUND_MESSAGE` naming every missing id of that kind in request
order, e.g. "The snapshot 'snap-1, snap-2' does not exist."; more than 50 tags on a resource ->
TagLimitExceeded.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape

from bulktag.sim.arns import Ec2Kind, ec2_arn, ec2_kind, ec2_resource_id
from bulktag.sim.config import SimConfig
from bulktag.sim.store import Resource
from bulktag.sim.tagging import Caller, Context

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
TAG_ACTIONS = frozenset({"CreateTags", "DeleteTags", "DescribeTags"})
CHANGE_ACTIONS = frozenset({"CreateTags", "DeleteTags"})
ACTIONS = TAG_ACTIONS | {"DescribeRegions"}
MAX_RESOURCE_IDS = 1000
MAX_TAGS_PER_RESOURCE = 50
DESCRIBE_TAGS_DEFAULT_PAGE = 1000  # MaxResults left out: pages of this many
NOT_FOUND_MESSAGE = "The {noun} '{ids}' does not exist."  # ids joined by ", "
DESCRIBE_TAGS_FILTERS = frozenset({"resource-id", "resource-type", "key", "value"})


class Ec2Error(Exception):
    """A whole-call error, answered in EC2's error shape with `status`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def invalid(message: str) -> Ec2Error:
    return Ec2Error("InvalidParameterValue", message)


def error_xml(code: str, message: str) -> str:
    return (
        f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    )


def _response(action: str, body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{NAMESPACE}">'
        f"<requestId>{uuid.uuid4()}</requestId>{body}</{action}Response>"
    )


def handle(ctx: Context, caller: Caller, params: dict[str, str]) -> tuple[int, str]:
    """Answer one EC2 query-protocol call: (HTTP status, XML body)."""
    action = params.get("Action", "")
    handler = _HANDLERS.get(action)
    try:
        if handler is None:
            raise Ec2Error("InvalidAction", f"The action {action or '(none)'} is not valid "
                           "for this web service.")
        return 200, handler(ctx, caller, params)
    except Ec2Error as e:
        return e.status, error_xml(e.code, e.message)


def resource_ids(params: dict[str, str]) -> list[str]:
    """The `ResourceId.N` values of a request, in N order (duplicates kept)."""
    return [value for _, value in _numbered(params, "ResourceId.", "")]


# ---------------------------------------------------------------- parameter reading

_INDEX = re.compile(r"[1-9][0-9]{0,5}")


def _numbered(params: dict[str, str], prefix: str, suffix: str) -> list[tuple[int, str]]:
    """(N, value) of every `{prefix}N{suffix}` parameter, sorted by N."""
    found = []
    for name, value in params.items():
        if name.startswith(prefix) and name.endswith(suffix):
            index = name[len(prefix) : len(name) - len(suffix)]
            if _INDEX.fullmatch(index):
                found.append((int(index), value))
    return sorted(found)


def _dry_run(params: dict[str, str]) -> None:
    if params.get("DryRun", "").lower() == "true":
        raise Ec2Error("DryRunOperation",
                       "Request would have succeeded, but DryRun flag is set.", 412)


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= 128:
        raise invalid(f"Value ( {key} ) for parameter key is invalid. "
                      "Tag keys must be between 1 and 128 characters")
    if key[:4].lower() == "aws:":
        raise invalid(f"Value ( {key} ) for parameter key is invalid. "
                      "Tag keys starting with 'aws:' are reserved for internal use")


def _tags(params: dict[str, str], *, values_required: bool) -> list[tuple[str, str | None]]:
    """(key, value or None) of `Tag.N.Key` / `Tag.N.Value`; CreateTags reads no Value as ""."""
    keys = dict(_numbered(params, "Tag.", ".Key"))
    values = dict(_numbered(params, "Tag.", ".Value"))
    if set(values) - set(keys):
        raise Ec2Error("MissingParameter", "The request must contain the parameter Tag.N.Key")
    tags: list[tuple[str, str | None]] = []
    for n in sorted(keys):
        _check_key(keys[n])
        value = values.get(n)
        if value is None and values_required:
            value = ""
        if value is not None and len(value) > 256:
            raise invalid(f"Value ( {value} ) for parameter value is invalid. "
                          "Tag values must be at most 256 characters")
        tags.append((keys[n], value))
    return tags


@dataclass(frozen=True, slots=True)
class _Target:
    resource_id: str
    kind: Ec2Kind
    arn: str


def _resolve(ctx: Context, caller: Caller, params: dict[str, str]) -> list[Resource]:
    """The resources a CreateTags/DeleteTags call names, or the whole-call error AWS answers."""
    ids = list(dict.fromkeys(resource_ids(params)))  # duplicates count once
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter resourceIdSet")
    if len(ids) > MAX_RESOURCE_IDS:
        raise invalid(f"The request may name at most {MAX_RESOURCE_IDS} resource ids, "
                      f"got {len(ids)}")
    targets = []
    for resource_id in ids:
        kind = ec2_kind(resource_id)
        if kind is None:
            raise Ec2Error("InvalidID", f"The ID '{resource_id}' is not valid")
        arn = ec2_arn(resource_id, caller.region, caller.account)
        assert arn is not None
        targets.append(_Target(resource_id, kind, arn))

    config = ctx.config
    if config.denied_marker and any(config.denied_marker in t.resource_id for t in targets):
        raise Ec2Error("UnauthorizedOperation",
                       "You are not authorized to perform this operation.", 403)
    found: list[Resource] = []
    missing: list[_Target] = []
    for target in targets:
        resource = _existing(ctx, caller, target.arn, config)
        if resource is None:
            missing.append(target)
        else:
            found.append(resource)
    if missing:
        kind = missing[0].kind
        names = ", ".join(t.resource_id for t in missing if t.kind is kind)
        raise Ec2Error(kind.not_found, NOT_FOUND_MESSAGE.format(noun=kind.noun, ids=names))
    return found


def _existing(ctx: Context, caller: Caller, arn: str, config: SimConfig) -> Resource | None:
    if config.missing_marker and config.missing_marker in arn:
        return None
    resource = ctx.state.resource(arn)
    if resource is None or resource.deleted or resource.account != caller.account:
        return None
    return resource


# ---------------------------------------------------------------- CreateTags / DeleteTags


def create_tags(ctx: Context, caller: Caller, params: dict[str, str]) -> str:
    tags = _tags(params, values_required=True)
    if not tags:
        raise Ec2Error("MissingParameter", "The request must contain the parameter Tag")
    resources = _resolve(ctx, caller, params)
    new = {key: value or "" for key, value in tags}
    for resource in resources:
        # aws: tags (set by AWS, e.g. aws:cloudformation:*) do not count against the limit.
        if sum(1 for k in resource.tags.keys() | new.keys()
               if k[:4].lower() != "aws:") > MAX_TAGS_PER_RESOURCE:
            raise Ec2Error("TagLimitExceeded",
                           "The maximum number of Tags for a resource has been reached.")
    _dry_run(params)
    for resource in resources:
        resource.tags.update(new)
    return _response("CreateTags", "<return>true</return>")


def delete_tags(ctx: Context, caller: Caller, params: dict[str, str]) -> str:
    """No Tag.N: delete every tag. Tag.N.Key alone: delete the key. With Tag.N.Value (even
    empty): delete the key only if it has that value."""
    tags = _tags(params, values_required=False)
    resources = _resolve(ctx, caller, params)
    _dry_run(params)
    for resource in resources:
        if not tags:
            resource.tags.clear()
        for key, value in tags:
            if value is None or resource.tags.get(key) == value:
                resource.tags.pop(key, None)
    return _response("DeleteTags", "<return>true</return>")


# ---------------------------------------------------------------- DescribeTags


def _filters(params: dict[str, str]) -> list[tuple[str, list[str]]]:
    names = _numbered(params, "Filter.", ".Name")
    filters = []
    for n, name in names:
        if name not in DESCRIBE_TAGS_FILTERS:
            raise invalid(f"The filter '{name}' is invalid")
        values = [v for _, v in _numbered(params, f"Filter.{n}.Value.", "")]
        if not values:
            raise invalid(f"The filter '{name}' needs at least one value")
        filters.append((name, values))
    return filters


def _wildcards(values: list[str]) -> Callable[[str], bool]:
    """EC2 filter values: `*` any run, `?` one character; everything else literal."""
    if not any("*" in v or "?" in v for v in values):
        exact = frozenset(values)
        return exact.__contains__
    parts = []
    for v in values:
        pattern = "".join(
            ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in v
        )
        parts.append(f"(?:{pattern})")
    regex = re.compile("|".join(parts), re.DOTALL)
    return lambda text: regex.fullmatch(text) is not None


def _read_next_token(caller: Caller, token: str | None) -> tuple[int, str] | None:
    if not token:
        return None
    try:
        op, account, region, position, key = json.loads(base64.urlsafe_b64decode(token))
        if (op, account, region) != ("DescribeTags", caller.account, caller.region):
            raise ValueError
        return int(position), str(key)
    except (ValueError, TypeError):
        raise invalid("Invalid value for NextToken") from None


def _issue_next_token(caller: Caller, position: int, key: str) -> str:
    raw = json.dumps(["DescribeTags", caller.account, caller.region, position, key])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def describe_tags(ctx: Context, caller: Caller, params: dict[str, str]) -> str:
    """One (resource, tag) item per tag of the caller's EC2 resources in its region, in store
    order and then key order; a token is (shard position, last key), stable across changes."""
    filters = _filters(params)
    raw_max = params.get("MaxResults")
    if raw_max is None:
        max_results = DESCRIBE_TAGS_DEFAULT_PAGE
    else:
        try:
            max_results = int(raw_max)
        except ValueError:
            max_results = 0
        if not 5 <= max_results <= 1000:
            raise invalid(f"Value ( {raw_max} ) for parameter maxResults is invalid. "
                          "Expecting a value between 5 and 1000.")
    start = _read_next_token(caller, params.get("NextToken"))

    # Filters AND together, a filter's values OR; resource ids and types match exactly.
    by_name: dict[str, list[Callable[[str], bool]]] = {name: [] for name in DESCRIBE_TAGS_FILTERS}
    for name, values in filters:
        exact = name in ("resource-id", "resource-type")
        by_name[name].append(frozenset(values).__contains__ if exact else _wildcards(values))
    id_filters, type_filters = by_name["resource-id"], by_name["resource-type"]
    key_filters, value_filters = by_name["key"], by_name["value"]

    shard = ctx.state.shard(caller.account, caller.region)
    position, after = start if start is not None else (0, None)
    positions: Iterable[int] = range(position, len(shard))
    if id_filters:
        # Named resources only (AWS answers by index, not by a scan of the account): the
        # positions of the ids of the narrowest resource-id filter, in shard order.
        named_ids = min((values for name, values in filters if name == "resource-id"), key=len)
        found = set()
        for resource_id in named_ids:
            arn = ec2_arn(resource_id, caller.region, caller.account)
            at = ctx.state.position(arn) if arn is not None else None
            if at is not None and at >= position and at < len(shard) and shard[at].arn == arn:
                found.add(at)
        positions = sorted(found)

    def items() -> Iterator[tuple[int, str, str]]:
        """(position, key, item XML) from the token on."""
        for pos in positions:
            resource = shard[pos]
            if resource.deleted or not resource.tags:
                continue
            named = ec2_resource_id(resource.arn)
            if named is None:
                continue
            resource_id, rtype = named
            if not all(f(resource_id) for f in id_filters):
                continue
            if not all(f(rtype) for f in type_filters):
                continue
            if ctx.config.missing_marker and ctx.config.missing_marker in resource.arn:
                continue
            for key in sorted(resource.tags):
                if pos == position and after is not None and key <= after:
                    continue
                value = resource.tags[key]
                if all(f(key) for f in key_filters) and all(f(value) for f in value_filters):
                    yield pos, key, (
                        f"<item><resourceId>{escape(resource_id)}</resourceId>"
                        f"<resourceType>{rtype}</resourceType><key>{escape(key)}</key>"
                        f"<value>{escape(value)}</value></item>"
                    )

    page: list[str] = []
    token = ""
    last: tuple[int, str] | None = None
    for pos, key, item in items():
        if len(page) == max_results:
            assert last is not None
            token = _issue_next_token(caller, *last)
            break
        page.append(item)
        last = (pos, key)
    body = f"<tagSet>{''.join(page)}</tagSet>"
    if token:
        body += f"<nextToken>{token}</nextToken>"
    return _response("DescribeTags", body)


# ---------------------------------------------------------------- DescribeRegions


def describe_regions(ctx: Context, caller: Caller, params: dict[str, str]) -> str:
    """Every region the config enables (filters and AllRegions are not read)."""
    items = "".join(
        f"<item><regionName>{escape(r)}</regionName>"
        f"<regionEndpoint>ec2.{escape(r)}.amazonaws.com</regionEndpoint>"
        "<optInStatus>opt-in-not-required</optInStatus></item>"
        for r in ctx.config.enabled_regions
    )
    return _response("DescribeRegions", f"<regionInfo>{items}</regionInfo>")


_HANDLERS: dict[str, Callable[[Context, Caller, dict[str, str]], str]] = {
    "CreateTags": create_tags,
    "DeleteTags": delete_tags,
    "DescribeTags": describe_tags,
    "DescribeRegions": describe_regions,
}
