"""How a job reaches an account, with no I/O: the caller's own credentials, a profile, or a role
to assume (`access_for`). The worker's `[accounts."ID"]` entries win; then the job's own way in
(`Via`: the role given at submission and kept with the job); then the worker's role_name.
`aws/accounts.py` builds the sessions; `status` says per account which way is used.
"""

from __future__ import annotations

from dataclasses import dataclass

from bulktag.config import Settings


@dataclass(frozen=True)
class Access:
    """How an account is reached: the base session, a profile, or a role to assume."""

    kind: str  # "caller" | "profile" | "role"
    target: str = ""  # profile name or role ARN
    external_id: str | None = None
    session_name: str | None = None  # the job's; None: the settings' role_session_name

    def __str__(self) -> str:
        return {"caller": "the caller's own credentials"}.get(self.kind,
                                                               f"{self.kind} {self.target}")


@dataclass(frozen=True, slots=True)
class Via:
    """A job's own way into its accounts (stored with it at submission): the role to assume in
    every account but the caller's, its external id and session name. None of a job: the
    worker's settings decide."""

    role_name: str
    external_id: str | None = None
    session_name: str | None = None


def access_for(settings: Settings, account: str, caller: str, partition: str = "aws",
               via: Via | None = None) -> Access:
    """Pure: decide how to reach `account` (an empty account means the caller's). The worker's
    `[accounts."ID"]` entry wins; then the job's way in (`via`); then the worker's role_name."""
    spec = settings.accounts.get(account, {})
    if "profile" in spec:
        return Access("profile", spec["profile"])
    if "role_arn" in spec:
        return Access("role", spec["role_arn"], spec.get("external_id", settings.external_id))
    role_name = via.role_name if via is not None else settings.role_name
    if not account or account == caller or not role_name:
        return Access("caller")
    role = f"arn:{partition}:iam::{account}:role/{role_name}"
    external = via.external_id if via is not None else settings.external_id
    return Access("role", role, spec.get("external_id", external),
                  via.session_name if via is not None else None)


def via_of(role_name: str | None, external_id: str | None = None,
           session_name: str | None = None) -> Via | None:
    """A job's way in from its stored options (None without a role: the worker decides)."""
    return Via(role_name, external_id, session_name) if role_name else None


def describe_access(settings: Settings, account: str, via: Via | None,
                    partition: str = "aws") -> str:
    """How a worker with these settings reaches `account` for a job (`status`): the caller's
    own account always goes with the caller's credentials, whatever the role says."""
    if not account:
        return "the caller's own credentials"
    access = access_for(settings, account, "", partition, via)
    if access.kind != "role":
        return str(access)
    whose = ("config [accounts]" if account in settings.accounts else
             "the job's" if via is not None else "this worker's settings")
    return f"role {access.target} ({whose}; the caller's own account needs none)"
