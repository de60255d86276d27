"""What to do about an error code: one line an operator can act on, shown beside the top errors
in `bulktag status` and at the end of a run. Pure: code (and message) in, advice out."""

from __future__ import annotations

import re

from bulktag.policy.classify import NO_CREDENTIALS_CODES, THROTTLE_CODES, TRANSIENT_CODES

ROLE_PERMISSION = ("the role lacks the owning service's tagging permission (e.g. ec2:CreateTags) "
                   "or tag:TagResources")
TRUST_POLICY = "check the role's trust policy and external id"
GONE = "the resource no longer exists; remove it from the source"
UNSUPPORTED = ("the ARN is malformed or its service does not support the Tagging API; tag it with "
               "the service's own API")
THROTTLED = "another tool is using the account's quota; lower --max-rate"
BAD_INPUT = "fix the source rows (see `bulktag report JOB --failed-only`)"
JOB_FAILED = ("the job passed its failure threshold and its open items were cancelled; fix the "
              "main error above, then `bulktag retry JOB`")
CANCELLED = "cancelled by the operator; submit these ARNs again to work them"
DEFAULT = "see the example message; `bulktag retry JOB --code {code}` once the cause is fixed"

NO_CREDENTIALS = ("no usable credentials for the account (missing profile or keys, expired SSO "
                  "session): fix them (`aws sso login`, --profile), then `bulktag retry JOB`")
OTHER_ACCOUNT = ("the resource belongs to account {account}, but the worker used the caller's "
                 "own credentials (account {caller}): the job names no role. `bulktag retry "
                 "JOB --role-name NAME` keeps the role with the job and requeues its failures "
                 "(or give the workers an [accounts.\"{account}\"] entry)")

_THROTTLES = THROTTLE_CODES
_TRANSIENT = TRANSIENT_CODES


def _sts(code: str, message: str) -> bool:
    """An error getting the account's credentials (the engine's AccountAccessError)."""
    return code.startswith("AssumeRole") or "cannot get credentials" in message \
        or "sts:AssumeRole" in message


def _other_account(arn: str | None, message: str) -> tuple[str, str] | None:
    """(resource account, caller account) when an access error names the caller's account
    and the resource is in another one: a cross-account ARN sent without a role."""
    if not arn:
        return None
    parts = arn.split(":", 5)
    account = parts[4] if len(parts) > 4 else ""
    if not account:
        return None
    named = [a for a in re.findall(r"(?<!\d)\d{12}(?!\d)", message.replace(arn, ""))
             if a != account]
    return (account, named[0]) if named else None


def advice_for(code: str, message: str | None = None, http_status: int | None = None,
               arn: str | None = None) -> str:
    """One line on what to do about items that ended with `code` (any service's code);
    `arn`, an example item, tells a cross-account ARN sent without a role."""
    message = message or ""
    if code in NO_CREDENTIALS_CODES or code == "NoCredentials":
        return NO_CREDENTIALS
    if _sts(code, message):
        return TRUST_POLICY
    if code in _THROTTLES:
        return THROTTLED
    if code.startswith("AccessDenied") or code in ("UnauthorizedOperation",
                                                  "UnauthorizedException", "Forbidden"):
        other = _other_account(arn, message)
        if other is not None:
            return OTHER_ACCOUNT.format(account=other[0], caller=other[1])
        return ROLE_PERMISSION
    if code.startswith("ResourceNotFound") or code.endswith(("NotFound", "NotFoundException",
                                                             "NotFoundFault")) \
            or code.startswith("NoSuch"):
        return GONE
    if code == "InvalidParameterException":
        return UNSUPPORTED
    if code in _TRANSIENT or (http_status is not None and 500 <= http_status < 600):
        return f"transient: `bulktag retry JOB --code {code}`"
    if code == "InvalidInput":
        return BAD_INPUT
    if code == "JobFailed":
        return JOB_FAILED
    if code == "Cancelled":
        return CANCELLED
    return DEFAULT.format(code=code)
