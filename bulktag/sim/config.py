"""The simulator's knobs: quotas, latency and fault rates, changeable while it runs.

Two quota shapes, as AWS documents them: the Tagging API's `quotas` are requests/s (a bucket of
`rate * burst_seconds` tokens refilled at `rate`); EC2's `ec2_buckets` give each action's bucket
capacity and refill rate directly. Both are per (account, region, operation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Documented per-(account, region) request quotas of the Tagging API, requests per second.
DEFAULT_QUOTAS: dict[str, float] = {
    "TagResources": 5.0,
    "UntagResources": 5.0,
    "GetResources": 15.0,
    "GetTagKeys": 5.0,
    "GetTagValues": 5.0,
    "GetComplianceSummary": 5.0,  # the simulator's choice: AWS documents no figure here
    "StartReportCreation": 1.0,  # likewise
    "DescribeReportCreation": 5.0,  # likewise
    "ListResources": 10.0,  # Resource Explorer; likewise
}

# The per-resource error message of ARNs containing `markup_marker`.
MARKUP_MESSAGE = "Tag policy refused <img src=x onerror=alert(1)> & <b>bold</b> for this resource"

# EC2's request token buckets per (account, region, action): (capacity, refill tokens/s).
# CreateTags and DeleteTags are "mutating" actions with a bucket each; DescribeTags a "describe".
DEFAULT_EC2_BUCKETS: dict[str, tuple[float, float]] = {
    "CreateTags": (100.0, 10.0),
    "DeleteTags": (100.0, 10.0),
    "DescribeTags": (100.0, 20.0),
}


@dataclass
class SimConfig:
    """How the simulator behaves; every rate is a probability in [0, 1]."""

    quotas: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    burst_seconds: float = 1.0
    ec2_buckets: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_EC2_BUCKETS)
    )
    enforce_quotas: bool = True  # both the Tagging API quotas and the EC2 buckets
    latency_ms: tuple[float, float] = (0.0, 0.0)
    whole_call_error_rate: float = 0.0  # Tagging API: 500 InternalServiceException; EC2: 500
    # InternalError
    expired_token_rate: float = 0.0  # Tag/Untag calls answered 400 ExpiredTokenException
    resource_error_rate: float = 0.0
    resource_throttle_rate: float = 0.0
    denied_marker: str = "denied"
    missing_marker: str = "missing"
    # ARNs containing it fail with an error message carrying HTML markup (MARKUP_MESSAGE), as
    # any text can come back from AWS: a dashboard must show it as text.
    markup_marker: str = "markup"
    unsupported_types: frozenset[str] = frozenset({"iam:role"})
    pagination_token_ttl: float = 900.0
    default_account: str = "123456789012"
    refused_roles: frozenset[str] = frozenset()
    #: account -> effective tag policy (JSON, as DescribeEffectivePolicy answers it); an
    #: account without one has none (EffectivePolicyNotFoundException)
    tag_policies: dict[str, str] = field(default_factory=dict)
    #: the organisation's management account: the only caller of GetComplianceSummary (in
    #: us-east-1); None: the default account
    management_account: str | None = None
    #: the organisation's tree for ListRoots / ListAccounts / ...ForParent: {"root": "r-...",
    #: "ous": {OU: PARENT}, "accounts": {ACCOUNT: {"parent": P, "state": "ACTIVE" | ...}}};
    #: None: the caller is in no organisation
    organization: dict[str, Any] | None = None
    #: keep who sent each TagResources/UntagResources call, when (`/_sim/calls`)
    log_calls: bool = False
    #: where Resource Explorer's aggregator index and default view live
    explorer_region: str = "us-east-1"
    #: StartReportCreation: the report is RUNNING this long, then SUCCEEDED ...
    report_seconds: float = 0.5
    #: ... or FAILED for these buckets (the tag policies' principal cannot write to them)
    report_denied_buckets: frozenset[str] = frozenset()
    seed: int | None = None
    # What EC2 DescribeRegions answers: the account's enabled regions.
    enabled_regions: tuple[str, ...] = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1",
                                        "ap-southeast-2")

    def __post_init__(self) -> None:
        # A partial quota map means "override these"; operations left out keep their default.
        self.quotas = {**DEFAULT_QUOTAS, **self.quotas}
        self.ec2_buckets = {**DEFAULT_EC2_BUCKETS, **self.ec2_buckets}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_ms"] = list(self.latency_ms)
        data["ec2_buckets"] = {
            op: {"capacity": capacity, "refill": refill}
            for op, (capacity, refill) in self.ec2_buckets.items()
        }
        data["unsupported_types"] = sorted(self.unsupported_types)
        data["refused_roles"] = sorted(self.refused_roles)
        data["report_denied_buckets"] = sorted(self.report_denied_buckets)
        data["enabled_regions"] = list(self.enabled_regions)
        return data


_FLOAT_FIELDS = (
    "burst_seconds",
    "whole_call_error_rate",
    "expired_token_rate",
    "resource_error_rate",
    "resource_throttle_rate",
    "pagination_token_ttl",
    "report_seconds",
)
_STR_FIELDS = ("denied_marker", "missing_marker", "markup_marker", "default_account",
               "explorer_region")
_SET_FIELDS = ("unsupported_types", "refused_roles", "report_denied_buckets")


def apply_changes(config: SimConfig, changes: dict[str, Any]) -> None:
    """Update `config` in place from a JSON-shaped dict; `quotas` merges into the current map.

    Raise ValueError naming the first unknown or ill-typed field; nothing is changed then.
    """
    updates: dict[str, Any] = {}
    for name, value in changes.items():
        if name in _FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            updates[name] = float(value)
        elif name in _STR_FIELDS:
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            updates[name] = value
        elif name in _SET_FIELDS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a list of strings")
            updates[name] = frozenset(value)
        elif name == "organization":
            if value is not None and not (isinstance(value, dict) and isinstance(
                    value.get("root"), str) and isinstance(value.get("ous", {}), dict)
                    and isinstance(value.get("accounts", {}), dict)):
                raise ValueError("organization must be {root, ous: {ou: parent}, accounts: "
                                 "{id: {parent, state}}}")
            updates[name] = value
        elif name == "tag_policies":
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ValueError("tag_policies must map accounts to policy JSON text")
            updates[name] = dict(value)
        elif name in ("enforce_quotas", "log_calls"):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a boolean")
            updates[name] = value
        elif name == "latency_ms":
            lo, hi = _latency(value)
            updates[name] = (lo, hi)
        elif name == "quotas":
            if not isinstance(value, dict) or not all(
                k in DEFAULT_QUOTAS and isinstance(v, int | float) and v > 0
                for k, v in value.items()
            ):
                ops = sorted(DEFAULT_QUOTAS)
                raise ValueError(f"quotas must map operations {ops} to rates > 0")
            updates[name] = {**config.quotas, **{k: float(v) for k, v in value.items()}}
        elif name == "ec2_buckets":
            updates[name] = _ec2_buckets(config.ec2_buckets, value)
        elif name == "seed":
            if value is not None and not isinstance(value, int):
                raise ValueError("seed must be an integer or null")
            updates[name] = value
        else:
            raise ValueError(f"unknown config field {name!r}")
    for name, value in updates.items():
        setattr(config, name, value)


def _ec2_buckets(
    current: dict[str, tuple[float, float]], value: Any
) -> dict[str, tuple[float, float]]:
    """Merge `{action: {"capacity": C, "refill": R}}` (either field may be left out) into
    `current`."""
    problem = (f"ec2_buckets must map actions {sorted(DEFAULT_EC2_BUCKETS)} to "
               '{"capacity": number > 0, "refill": number > 0}')
    if not isinstance(value, dict):
        raise ValueError(problem)
    merged = dict(current)
    for op, bucket in value.items():
        if op not in DEFAULT_EC2_BUCKETS or not isinstance(bucket, dict) or \
                not bucket.keys() <= {"capacity", "refill"}:
            raise ValueError(problem)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0
                   for v in bucket.values()):
            raise ValueError(problem)
        capacity, refill = merged[op]
        merged[op] = (float(bucket.get("capacity", capacity)), float(bucket.get("refill", refill)))
    return merged


def parse_ec2_bucket(text: str) -> tuple[str, tuple[float, float]]:
    """`"CreateTags=100:10"` -> ("CreateTags", (100.0, 10.0)): ACTION=CAPACITY:REFILL."""
    op, sep, spec = text.partition("=")
    capacity, colon, refill = spec.partition(":")
    if not sep or not colon or op not in DEFAULT_EC2_BUCKETS:
        raise ValueError(
            f"{text}: expected ACTION=CAPACITY:REFILL, ACTION one of {sorted(DEFAULT_EC2_BUCKETS)}"
        )
    try:
        values = float(capacity), float(refill)
    except ValueError:
        raise ValueError(f"{text}: CAPACITY and REFILL must be numbers") from None
    if min(values) <= 0:
        raise ValueError(f"{text}: CAPACITY and REFILL must be positive")
    return op, values


def _latency(value: Any) -> tuple[float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), float(value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] <= value[1]
    ):
        return float(value[0]), float(value[1])
    raise ValueError("latency_ms must be a number or [low, high] with 0 <= low <= high")


def parse_latency(text: str) -> tuple[float, float]:
    """`"200-500"` -> (200.0, 500.0); `"50"` -> (50.0, 50.0)."""
    low, sep, high = text.partition("-")
    lo = float(low)
    hi = float(high) if sep else lo
    if lo < 0 or hi < lo:
        raise ValueError(f"latency range {text!r}: expected LOW-HIGH with 0 <= LOW <= HIGH")
    return lo, hi
