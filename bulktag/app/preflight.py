"""Checks made before any work starts: are there usable credentials, is `--max-rate` sane.

`check_credentials` makes one STS GetCallerIdentity with the caller's credentials: no
credentials, an unknown profile, an expired SSO session or keys STS refuses raise
`CredentialsError` with what to do, so the command exits 2 at once with nothing enqueued —
instead of every item spending its attempts on the same set-up problem. An STS endpoint that
cannot be reached is not a credentials problem: the run goes on (the engine pauses unreachable
shards by itself) after a warning.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

import structlog

from bulktag.api_limits import QUOTAS
from bulktag.config import Settings
from bulktag.policy.classify import NO_CREDENTIALS_CODES, UNREACHABLE_CODES

if TYPE_CHECKING:
    from bulktag.aws.reads import AwsError

log = structlog.get_logger("bulktag.app.preflight")

#: GetCallerIdentity gets this long; past it (a black-holed endpoint) the run goes on unchecked
CHECK_SECONDS = 5.0

#: commands (and `sync` actions) that call AWS and so need credentials first
WORK_COMMANDS = frozenset({"tag", "untag", "run", "daemon", "verify", "inventory", "transform",
                           "rename", "policy", "compliance", "fix-policy"})
SUBMIT_COMMANDS = ("tag", "untag", "transform", "rename", "fix-policy")

#: STS codes that say the credentials themselves are bad
REFUSED_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                           "ExpiredTokenException", "UnrecognizedClientException",
                           "AccessDenied", "InvalidAccessKeyId", "AuthFailure"})


class CredentialsError(Exception):
    """The caller has no usable AWS credentials; the message says what to do."""


def _profile_hint(settings: Settings) -> str:
    return f" --profile {settings.profile}" if settings.profile else ""


def explain(error: AwsError, settings: Settings) -> str | None:
    """What a credentials failure means and what to do; None when it is not one (network)."""
    name = error.name
    if name == "ProfileNotFound":
        profile = error.profile or settings.profile or "?"
        return (f"AWS profile {profile!r} not found in the AWS config files "
                f"(AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE): check --profile / "
                f"AWS_PROFILE; `aws configure list-profiles` lists the known ones")
    if name in ("UnauthorizedSSOTokenError", "SSOTokenLoadError", "TokenRetrievalError") or \
            "sso" in name.lower():
        return (f"the AWS SSO session has expired or was never started ({error.text}): run "
                f"`aws sso login{_profile_hint(settings)}` and try again")
    if name in NO_CREDENTIALS_CODES:
        return (f"no usable AWS credentials ({error.text}): set AWS_PROFILE or --profile, run "
                f"`aws configure` (or `aws sso login`), or export AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY")
    code = error.code or ""
    if code in REFUSED_CODES:
        what = ("have expired" if "Expired" in code else "were refused")
        return (f"the AWS credentials {what} (STS GetCallerIdentity: {code}: "
                f"{error.message or error.text}): refresh them (`aws sso login"
                f"{_profile_hint(settings)}`, new keys or session token) and try again")
    return None


async def check_credentials(settings: Settings) -> str:
    """The caller's account (one STS GetCallerIdentity). Raises CredentialsError when there
    are no usable credentials; returns "" when STS could not be reached (not checked)."""
    from bulktag.aws.identity import caller_account
    from bulktag.aws.reads import aws_error_of

    try:
        return await asyncio.wait_for(caller_account(settings, CHECK_SECONDS), CHECK_SECONDS)
    except TimeoutError:
        log.warning("credentials_not_checked", reason=f"STS did not answer in {CHECK_SECONDS:g} s")
        return ""
    except Exception as exc:
        error = aws_error_of(exc)
        if error is None and not isinstance(exc, OSError):
            raise
        message = explain(error, settings) if error is not None else None
        if message is not None:
            raise CredentialsError(message) from None
        if isinstance(exc, OSError) or (error is not None and error.name in UNREACHABLE_CODES):
            # Not a credentials verdict; the engine pauses and warns about unreachable shards.
            log.debug("credentials_not_checked", reason=f"STS unreachable: {exc}")
            return ""
        if error is not None and error.code is not None:  # another STS refusal: say it
            raise CredentialsError(f"STS GetCallerIdentity failed: {exc}") from None
        log.warning("credentials_not_checked", reason=f"{type(exc).__name__}: {exc}")
        return ""


def needs_credentials(args: argparse.Namespace) -> bool:
    """Does this command call AWS (so must have credentials before it starts)?

    `tag`/`untag --detach` of a file calls nothing: the worker that runs the job (`run`, a
    daemon, perhaps on another host with other credentials) checks its own before it starts.
    Checking the submitter's would refuse a good submission and cost the import of botocore
    and a client (~0.35 s of CPU) for nothing. A detached query still checks: listing the
    enabled regions calls EC2."""
    command = getattr(args, "command", None)
    if command == "sync":
        return getattr(args, "sync_command", None) == "run"
    if command in SUBMIT_COMMANDS and getattr(args, "detach", False) and \
            getattr(args, "arns", None):
        return False
    return command in WORK_COMMANDS


def rate_warning(settings: Settings) -> str | None:
    """A warning when --max-rate is above the documented (or configured) Tag/Untag quota."""
    if settings.max_rate is None:
        return None
    quota = settings.quotas.get("TagResources", QUOTAS["TagResources"])
    if settings.max_rate <= quota:
        return None
    return (f"--max-rate {settings.max_rate:g} is above the TagResources/UntagResources quota "
            f"of {quota:g} requests/s per account and region (limits.QUOTAS / [quotas]): "
            f"expect throttles unless AWS raised this account's quota")


def preflight(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run the checks for a command; an exit code (2) to stop with, or None to go on."""
    warning = rate_warning(settings)
    if warning is not None and getattr(args, "command", None) in (
            *SUBMIT_COMMANDS, "run", "daemon", "sync"):
        log.warning("max_rate_above_quota", max_rate=settings.max_rate,
                    quota=settings.quotas.get("TagResources", QUOTAS["TagResources"]),
                    message=warning)
    if not needs_credentials(args):
        return None
    try:
        account = asyncio.run(check_credentials(settings))
    except CredentialsError as exc:
        print(f"bulktag: error: {exc}; nothing was started", file=sys.stderr)
        return 2
    if account:
        log.debug("credentials_checked", account=account)
        # ARNs that carry no account (S3 buckets, EC2 snapshots) are this account's: the
        # submission shards them with its other resources (one account-region, one quota).
        args.caller_account = account
    return None
