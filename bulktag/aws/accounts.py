"""Credentials per account: a resource is tagged with credentials of its own account.

The caller's own account (GetCallerIdentity) uses the base session. Any other account is
reached by a profile or a role given for it in the config, or by the role-name template
(`arn:<partition>:iam::<account>:role/<role_name>`). Assumed credentials are cached per account
and refreshed by botocore's refreshable credentials before they expire, so a run that lasts days
never signs with a stale token. An account whose role cannot be assumed raises AccountAccessError,
remembered for a short while so a refused account does not hammer STS.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from bulktag.aws.botoconfig import shared_ssl_config
from bulktag.config import Settings
from bulktag.errors import BulktagError
from bulktag.policy.access import Access, Via, access_for

REFUSAL_MEMORY_SECONDS = 60.0
ROLE_SECONDS = 3600

_loader: Any = None  # botocore's data loader, shared by every session of the process


def new_session() -> AioSession:
    """A botocore session sharing the process's data loader, so the service models and endpoint
    rules are parsed once per process rather than once per session (the pre-flight's session,
    the run's, one per account reached by profile or role): about 0.04 s of CPU each."""
    global _loader
    session = get_session()
    if _loader is None:
        _loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _loader)
    return session


def static_session(access_key: str, secret_key: str) -> AioSession:
    """A session signing with these fixed keys (the demo's simulator takes any), whatever the
    environment and the AWS config files say."""
    session = new_session()
    session.set_credentials(access_key, secret_key)
    return session


class AccountAccessError(BulktagError):
    """Credentials for an account could not be had: names the account, role and reason."""

    def __init__(self, account: str, via: str, reason: str, code: str = "AssumeRoleFailed",
                 status: int | None = 403):
        self.account = account
        self.via = via
        self.reason = reason
        self.code = code
        self.status = status  # None for network errors: those are transient
        super().__init__(f"account {account}: cannot get credentials via {via}: {reason}")


class Accounts:
    """Sessions per account, built once and shared by every client of that account."""

    def __init__(self, settings: Settings, base: AioSession | None = None) -> None:
        self.settings = settings
        self.base = base or new_session()
        if settings.profile:
            self.base.set_config_variable("profile", settings.profile)
        self._caller: str | None = None
        self._sessions: dict[tuple[str, Via | None], AioSession] = {}
        # Each account's credentials and session kind (`credentials`); a role's session is
        # made from them only when a client of its own is needed (`session`).
        self._creds: dict[tuple[str, Via | None], tuple[Any, str]] = {}
        self._role_config: AioSession | None = None
        self._refused: dict[tuple[str, Via | None], tuple[float, AccountAccessError]] = {}
        self._lock = asyncio.Lock()

    @property
    def sts_endpoint(self) -> str | None:
        return self.settings.sts_endpoint_url or self.settings.endpoint_url

    async def caller_account(self) -> str:
        """The account of the base credentials (GetCallerIdentity), looked up once."""
        if self._caller is None:
            async with self.base.create_client(
                "sts", region_name=self.settings.region or "us-east-1",
                endpoint_url=self.sts_endpoint, config=shared_ssl_config(),
            ) as sts:
                self._caller = str((await sts.get_caller_identity())["Account"])
        return self._caller

    async def credentials(self, account: str, partition: str = "aws",
                          via: Via | None = None) -> tuple[Any, str]:
        """The credentials of `account` (reached the job's way, `via`, when it has one) and
        the kind of its session: "caller", "role" or "profile:NAME" (sessions of one kind
        resolve the same endpoints and make the same clients, but for the keys they sign
        with). A role's credentials need no botocore session. Raises AccountAccessError."""
        key = (account, via)
        found = self._creds.get(key)
        if found is not None:
            return found
        refused = self._refused.get(key)
        if refused and time.monotonic() - refused[0] < REFUSAL_MEMORY_SECONDS:
            raise refused[1]
        async with self._lock:
            found = self._creds.get(key)
            if found is None:
                try:
                    session, creds, kind = await self._build(account, partition, via)
                except AccountAccessError as exc:
                    if exc.status is not None and exc.status < 500:
                        self._refused[key] = (time.monotonic(), exc)
                    raise
                if session is not None:
                    self._sessions[key] = session
                found = self._creds[key] = (creds, kind)
        return found

    async def session(self, account: str, partition: str = "aws",
                      via: Via | None = None) -> AioSession:
        """The session whose credentials belong to `account` (reached the job's way, `via`,
        when it has one); raises AccountAccessError."""
        key = (account, via)
        session = self._sessions.get(key)
        if session is not None:
            return session
        creds, _ = await self.credentials(account, partition, via)
        session = self._sessions.get(key)
        if session is None:
            # A role's: a session around its credentials, made once a client needs one. The
            # session hands them to every client it creates; botocore refreshes them ahead of
            # expiry (advisory 15 min, mandatory 10 min before).
            session = self._sessions[key] = new_session()
            session._credentials = creds
        return session

    def config_session(self, account: str, via: Via | None = None) -> AioSession:
        """A session configured as the account's (its credentials found first): for clients
        whose endpoint, region and errors are used, never their keys. The caller's or the
        profile's own; for a role, one session shared by every role, signing with no one's
        keys (placeholders: its clients must not sign at all)."""
        key = (account, via)
        if self._creds[key][1] != "role":
            return self._sessions[key]
        if self._role_config is None:
            self._role_config = new_session()
            self._role_config.set_credentials("bulktag-no-keys", "bulktag-no-keys")
        return self._role_config

    def needs_caller(self, account: str, via: Via | None = None) -> bool:
        """Only a role-name template needs to know whether an account is the caller's own."""
        return bool(account) and account not in self.settings.accounts and bool(
            via.role_name if via is not None else self.settings.role_name)

    async def access(self, account: str, partition: str = "aws",
                     via: Via | None = None) -> Access:
        """How `account` is reached (asks STS for the caller's account when it matters)."""
        try:
            caller = await self.caller_account() if self.needs_caller(account, via) else ""
        except (ClientError, BotoCoreError) as exc:
            raise AccountAccessError(account, "the caller's credentials", str(exc),
                                     *_code(exc)) from None
        return access_for(self.settings, account, caller, partition, via)

    async def _build(self, account: str, partition: str,
                     via: Via | None) -> tuple[AioSession | None, Any, str]:
        """The account's session (None for a role: its credentials are enough until a client
        needs one), its credentials, checked, and its kind."""
        access = await self.access(account, partition, via)
        session: AioSession | None = None
        if access.kind == "caller":
            session, kind = self.base, "caller"
        elif access.kind == "profile":
            session, kind = new_session(), f"profile:{access.target}"
            session.set_config_variable("profile", access.target)
        else:
            kind = "role"
            # botocore refreshes these ahead of expiry (advisory 15 min, mandatory 10 min
            # before), for every client that signs with them.
            role_creds = AioDeferredRefreshableCredentials(
                refresh_using=self._assume(access), method="assume-role"
            )
        try:
            creds = await session.get_credentials() if session is not None else role_creds
            if creds is None:
                # No status: a set-up problem, never a verdict on the items (no attempts).
                raise AccountAccessError(account, str(access), "no credentials found",
                                         "NoCredentialsError", None)
            await creds.get_frozen_credentials()
        except AccountAccessError:
            raise
        except (ClientError, BotoCoreError) as exc:
            raise AccountAccessError(account, str(access), str(exc), *_code(exc)) from None
        return session, creds, kind

    def _assume(self, access: Access) -> Any:
        async def fetch() -> dict[str, Any]:
            params: dict[str, Any] = {
                "RoleArn": access.target,
                "RoleSessionName": access.session_name or self.settings.role_session_name,
                "DurationSeconds": ROLE_SECONDS,
            }
            if access.external_id:
                params["ExternalId"] = access.external_id
            async with self.base.create_client(
                "sts", region_name=self.settings.region or "us-east-1",
                endpoint_url=self.sts_endpoint, config=shared_ssl_config(),
            ) as sts:
                creds = (await sts.assume_role(**params))["Credentials"]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": creds["Expiration"].isoformat(),
            }

        return fetch

    def accounts(self) -> set[str]:
        """The accounts whose credentials are held now."""
        return {account for account, _ in self._creds}

    def forget(self, account: str) -> None:
        """Drop an account's sessions (after ExpiredToken): the next use assumes afresh."""
        for key in [k for k in self._creds if k[0] == account]:
            del self._creds[key]
            self._sessions.pop(key, None)


def _code(exc: Exception) -> tuple[str, int | None]:
    """Error code and HTTP status of an STS failure (no status: a network error)."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code") or "AssumeRoleFailed")
        return code, exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 403)
    return type(exc).__name__, None
