"""One settings object, from layers: defaults < config file < environment (BULKTAG_*) < CLI flags.

The config file is TOML: `--config PATH`, else `$XDG_CONFIG_HOME/bulktag/config.toml` when it
exists. Its keys are the field names below (`[quotas]` is a table of operation = requests/s).
Standard AWS settings (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, shared config and credential
files) are left to botocore, which reads them as every AWS tool does; `--endpoint-url` and
`--profile` override.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulktag.api_limits import EC2_BUCKET_REFILL, EC2_IDS_PER_CALL, QUOTAS
from bulktag.errors import BulktagError

DEFAULT_QUOTAS = dict(QUOTAS)


class ConfigError(BulktagError):
    """A setting that cannot be used: names where it came from and why."""


def _xdg(var: str, fallback: str, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(var) or Path.home() / fallback)


def default_db_path(environ: Mapping[str, str] | None = None) -> str:
    return str(_xdg("XDG_STATE_HOME", ".local/state", environ) / "bulktag" / "bulktag.db")


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config", environ) / "bulktag" / "config.toml"


@dataclass
class Settings:
    db: str = field(default_factory=default_db_path)
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None  # the caller's home region (STS, S3 buckets without one)
    quotas: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    max_rate: float | None = None  # requests/s per shard for Tag/UntagResources; None: quota
    max_attempts: int = 8  # attempts an item may spend on transient errors
    in_flight_per_shard: int = 12  # concurrent calls per shard: fills 5/s at ~2 s latency
    max_open_requests: int = 512  # across all shards
    # A shard without work for this long lets go of its client, rate limiter and (when its
    # account has no other busy shard) assumed credentials: memory follows the busy shards.
    idle_shard_seconds: float = 60.0
    lease_seconds: float = 300.0
    owner_stale_seconds: float = 90.0  # a lease owner silent this long is presumed dead
    backoff_base: float = 0.25  # first retry at once, second after 0.12-0.25 s, then doubling
    backoff_cap: float = 300.0
    throttle_retry_delay: float = 0.2  # a throttled batch waits at least this before resending
    request_timeout: float = 60.0
    connect_timeout: float = 10.0
    failure_min_items: int = 1000  # threshold applies after this many attempted items ...
    failure_ratio: float = 0.5  # ... when more than this share of them failed
    grace_seconds: float = 30.0  # Ctrl-C / SIGTERM: time to finish in-flight batches
    # Accounts: a resource is tagged with credentials of its own account. The caller's account
    # needs no role; others are reached through `accounts` (per-account role_arn or profile)
    # or the role_name template (arn:<partition>:iam::<account>:role/<role_name>).
    role_name: str | None = None
    role_session_name: str = "bulktag"
    external_id: str | None = None
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    sts_endpoint_url: str | None = None  # default: endpoint_url when set, else botocore's
    s3_endpoint_url: str | None = None  # report exports to s3://; default: botocore's
    on_access_error: str = "fail"  # fail | pause: items of an account whose role is refused
    log_format: str = "auto"  # auto | console | json
    log_level: str = "info"
    # The dashboard's actions (pause, resume, cancel, retry, priority) need this token in an
    # `Authorization: Bearer` header; unset, the dashboard is read-only. At least 16 printable
    # characters without spaces; keep it out of the config file's history (BULKTAG_UI_TOKEN).
    ui_token: str | None = None
    sample_seconds: float = 10.0  # the daemon's throughput samples for the dashboard's chart
    # Routes (README "Two routes"): `auto` sends EC2 resources CreateTags/DeleteTags takes
    # through EC2's API, the rest through the Tagging API; `tagging-api` sends all through it.
    route: str = "auto"
    ec2_batch_size: int = 500  # resource ids per CreateTags/DeleteTags call (1-1000)
    # CreateTags/DeleteTags calls/s per account-region, each. EC2 refills 10/s and the bucket is
    # shared with every other caller in the account: 8 leaves headroom.
    ec2_rate: float = 8.0
    # DescribeTags calls/s per account-region: the EC2 route's compliance read. A "describe"
    # action: EC2 refills its bucket 20/s, shared with the account's other describe callers.
    ec2_read_rate: float = 16.0
    # How the EC2 route reads current tags: `describe-tags` (DescribeTags by resource id,
    # narrowed to the job's keys: 5x GetResources' width, but the guardrails then see only those
    # keys) or `get-resources` (every tag, 100 ARNs a call, as the Tagging API route).
    ec2_read: str = "describe-tags"
    # TagResources, UntagResources and GetResources sent by bulktag's own signed POST instead
    # of botocore's request pipeline (README "Stack notes"): 0.5-1.1 ms less CPU a call.
    fast_calls: bool = True

    def rate_for(self, operation: str) -> float:
        """Requests/s per shard for an API operation."""
        if self.max_rate is not None and operation in ("TagResources", "UntagResources"):
            return self.max_rate
        if operation in ("CreateTags", "DeleteTags"):
            return self.ec2_rate
        if operation == "DescribeTags":
            return self.ec2_read_rate
        return self.quotas.get(operation, 5.0)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


_CHOICES = {"log_format": ("auto", "console", "json"),
            "log_level": ("debug", "info", "warning", "error"),
            "route": ("auto", "tagging-api"),
            "ec2_read": ("describe-tags", "get-resources")}
_POSITIVE = {"max_rate", "max_attempts", "in_flight_per_shard", "max_open_requests",
             "idle_shard_seconds",
             "lease_seconds", "owner_stale_seconds", "request_timeout", "connect_timeout",
             "sample_seconds", "ec2_batch_size", "ec2_rate", "ec2_read_rate"}


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _boolean(value: Any) -> bool:
    """A TOML boolean, or an env string such as true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise TypeError("expected true or false")


def _number(value: Any, whole: bool) -> float:
    """A finite number from TOML or an env string; booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("expected a number")
    if whole:
        if isinstance(value, float) or (isinstance(value, str) and not value.strip().isdigit()):
            raise ValueError("expected a whole number")
        return int(value)
    v = float(value)
    if not math.isfinite(v):
        raise ValueError("expected a finite number")
    return v


UI_TOKEN_MIN_LENGTH = 16
SECRET_SETTINGS = frozenset({"ui_token"})  # never echoed in messages


def _check_token(value: str) -> None:
    """A bearer token: long enough not to be guessed, and sendable in an HTTP header."""
    if len(value) < UI_TOKEN_MIN_LENGTH:
        raise ValueError(f"must be at least {UI_TOKEN_MIN_LENGTH} characters (e.g. the output "
                         "of `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    if not all("!" <= ch <= "~" for ch in value):
        raise ValueError("must be printable ASCII without spaces (it travels in an HTTP header)")


def _coerce(name: str, value: Any, where: str) -> Any:
    """Convert a raw value (TOML or env string) to the field's type and check its range, or
    raise ConfigError naming where the value came from and the setting."""
    kind = str(_FIELDS[name].type)
    try:
        if name == "accounts":
            if not isinstance(value, Mapping):
                raise TypeError('expected tables like [accounts."123456789012"]')
            out_accounts: dict[str, dict[str, str]] = {}
            for account, spec in value.items():
                if not (isinstance(account, str) and len(account) == 12 and account.isdigit()):
                    raise ValueError(f"account {account!r} is not 12 digits")
                if not isinstance(spec, Mapping) or not set(spec) <= {"role_arn", "profile",
                                                                     "external_id"}:
                    raise ValueError(f"account {account}: expected role_arn, profile or "
                                     "external_id")
                out_accounts[account] = {k: str(v) for k, v in spec.items()}
            return out_accounts
        if name == "quotas":
            if not isinstance(value, Mapping):
                raise TypeError("expected a table of OPERATION = requests per second")
            out = dict(DEFAULT_QUOTAS)
            for op, rate in value.items():
                if op not in DEFAULT_QUOTAS:
                    known = ", ".join(DEFAULT_QUOTAS)
                    raise ValueError(f"unknown operation {op!r} (known: {known})")
                out[op] = _number(rate, whole=False)
                if out[op] <= 0:
                    raise ValueError(f"rate for {op} must be positive")
            return out
        if value is None:
            return None
        if kind == "bool":
            return _boolean(value)
        if kind.startswith(("float", "int")):
            v = _number(value, whole=kind.startswith("int"))
            if name in _POSITIVE and v <= 0:
                raise ValueError("must be positive")
            if v < 0:
                raise ValueError("must not be negative")
            if name == "failure_ratio" and not 0 < v <= 1:
                raise ValueError("must be in (0, 1]")
            if name == "ec2_batch_size" and v > EC2_IDS_PER_CALL:
                raise ValueError(f"CreateTags takes at most {EC2_IDS_PER_CALL} resource ids")
            return v
        if kind.startswith("str"):
            if not isinstance(value, str):
                raise TypeError("expected a string")
            if name == "db" and not value.strip():
                # SQLite would open a private temporary database: the queue would vanish.
                raise ValueError("must not be empty")
            if name in _CHOICES and value not in _CHOICES[name]:
                raise ValueError(f"expected one of {', '.join(_CHOICES[name])}")
            if name == "ui_token":
                _check_token(value)
            return value
    except (TypeError, ValueError) as exc:
        shown = "<redacted>" if name in SECRET_SETTINGS else repr(value)
        raise ConfigError(f"{where}: setting {name!r} = {shown}: {exc}") from None
    return value


def load_settings(
    *,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from the layers. `overrides` holds CLI flags that were given (not None)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    path = Path(config_path) if config_path else default_config_path(environ)
    if config_path and not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[name] = _coerce(name, value, str(path))

    for name in _FIELDS:
        raw = environ.get(f"BULKTAG_{name.upper()}")
        if raw is None or name in ("quotas", "accounts"):
            continue
        values[name] = _coerce(name, raw, f"environment BULKTAG_{name.upper()}")
    if "db" not in values:
        values["db"] = default_db_path(environ)
    for op in DEFAULT_QUOTAS:
        raw = environ.get(f"BULKTAG_QUOTA_{op.upper()}")
        if raw is not None:
            quotas = dict(values.get("quotas", DEFAULT_QUOTAS))
            quotas[op] = _coerce("quotas", {op: raw}, f"environment BULKTAG_QUOTA_{op.upper()}")[op]
            values["quotas"] = quotas

    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, f"option --{name.replace('_', '-')}")

    return Settings(**values)


def ec2_rate_warning(settings: Settings) -> str | None:
    """A warning when ec2_rate leaves EC2's bucket no headroom (it refills 10 calls/s, shared
    with every other CreateTags caller of the account-region)."""
    if settings.ec2_rate > EC2_BUCKET_REFILL:
        return (f"ec2_rate {settings.ec2_rate:g}/s is above EC2's refill of "
                f"{EC2_BUCKET_REFILL:g}/s: it will be throttled and leaves nothing to other "
                "CreateTags callers in the account (consoles, IaC, tag-on-create)")
    return None
