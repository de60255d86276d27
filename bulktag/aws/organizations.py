"""AWS Organizations: an account's effective tag policy (`DescribeEffectivePolicy`,
`PolicyType=TAG_POLICY`), asked with that account's own credentials (the job's role, as for
its tagging calls), read once per account for a run (`PolicyBook`).

No policy (`EffectivePolicyNotFoundException`) means no rules. When the policy cannot be read
(no `organizations:DescribeEffectivePolicy` permission, an account outside an organisation,
an endpoint that is down) the account is checked against no rules and `PolicyBook.problems`
says why, once: AWS still refuses what its policy enforces, item by item.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from bulktag.aws.accounts import AccountAccessError
from bulktag.aws.botoconfig import client_config
from bulktag.aws.clients import ClientPool
from bulktag.policy.access import Via
from bulktag.policy.tag_policy import NO_POLICY, PolicyError, TagPolicy, parse_policy

log = structlog.get_logger("bulktag.aws.organizations")

ORGANIZATIONS_REGION = "us-east-1"  # Organizations' endpoint for the aws partition


class PolicyUnreadable(Exception):
    """The effective policy could not be read (the message says why)."""


async def effective_tag_policy(clients: ClientPool, account: str, *, partition: str = "aws",
                               via: Via | None = None) -> TagPolicy:
    """The account's effective tag policy ("" : the caller's). Raises PolicyUnreadable."""
    settings = clients.settings
    try:
        creds, kind = await clients.accounts.credentials(account, partition, via)
        keys: dict[str, Any] = {}
        if kind == "role":
            # One call: the role's keys as they are now, on the session shared by every role
            # rather than a botocore session of the account's own (kept for the whole run).
            frozen = await creds.get_frozen_credentials()
            keys = {"aws_access_key_id": frozen.access_key,
                    "aws_secret_access_key": frozen.secret_key,
                    "aws_session_token": frozen.token}
        session = clients.accounts.config_session(account, via)
        async with session.create_client(
                "organizations", region_name=ORGANIZATIONS_REGION,
                endpoint_url=settings.endpoint_url, config=client_config(settings, 2),
                **keys) as org:
            # TargetId names the account: credentials of another one (no role for it) get
            # its policy only from the management account, else an error, never the wrong one
            params = {"PolicyType": "TAG_POLICY", **({"TargetId": account} if account else {})}
            resp: dict[str, Any] = await org.describe_effective_policy(**params)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code") or "")
        if code == "EffectivePolicyNotFoundException":
            return NO_POLICY
        raise PolicyUnreadable(f"{code}: {exc.response.get('Error', {}).get('Message', '')} "
                               "(allow organizations:DescribeEffectivePolicy)") from None
    except (BotoCoreError, AccountAccessError, OSError) as exc:
        raise PolicyUnreadable(str(exc)) from None
    try:
        return parse_policy(resp.get("EffectivePolicy", {}).get("PolicyContent"))
    except PolicyError as exc:
        raise PolicyUnreadable(str(exc)) from None


class PolicyBook:
    """Effective tag policies per (account, way in), each read once."""

    def __init__(self, clients: ClientPool) -> None:
        self.clients = clients
        self._policies: dict[tuple[str, Via | None], TagPolicy] = {}
        self._locks: dict[tuple[str, Via | None], asyncio.Lock] = {}
        self.problems: dict[str, str] = {}  #: account -> why its policy was not read

    def problem(self, account: str) -> str | None:
        """Why the account's policy could not be read (None: it was, or it has none)."""
        return self.problems.get(account or "(caller)")

    async def get(self, account: str, partition: str = "aws",
                  via: Via | None = None) -> TagPolicy:
        key = (account, via)
        found = self._policies.get(key)
        if found is not None:
            return found
        async with self._locks.setdefault(key, asyncio.Lock()):
            found = self._policies.get(key)
            if found is None:
                try:
                    found = await effective_tag_policy(self.clients, account,
                                                       partition=partition, via=via)
                except PolicyUnreadable as exc:
                    found = NO_POLICY
                    self.problems[account or "(caller)"] = str(exc)
                    log.warning("tag_policy_unread", account=account or "(caller)",
                                error=str(exc), hint="its tags are checked by AWS alone")
                self._policies[key] = found
        return found


GROUP_BY = {"account": "TARGET_ID", "region": "REGION", "resource-type": "RESOURCE_TYPE"}


class ComplianceUnavailable(Exception):
    """GetComplianceSummary refused or failed (the message says why and what to do)."""


def _unavailable(exc: ClientError) -> ComplianceUnavailable:
    code = str(exc.response.get("Error", {}).get("Code") or "")
    message = exc.response.get("Error", {}).get("Message", "")
    hint = (" — the Tagging API's compliance calls answer only the organization's management "
            "account, in us-east-1: run it with the management account's credentials"
            if code in ("ConstraintViolationException", "AccessDeniedException") else
            " — a report is being created already: follow it with --report-status"
            if code == "ConcurrentModificationException" else "")
    return ComplianceUnavailable(f"{code}: {message}{hint}")


async def start_report(clients: ClientPool, bucket: str) -> None:
    """StartReportCreation: an organisation-wide compliance report into `bucket` (made
    asynchronously; `report_status` follows it)."""
    from bulktag.arn import Shard

    try:
        client = await clients.tagging(Shard("aws", "", ORGANIZATIONS_REGION))
        await client.start_report_creation(S3Bucket=bucket)
    except ClientError as exc:
        raise _unavailable(exc) from None
    except (BotoCoreError, AccountAccessError, OSError) as exc:
        raise ComplianceUnavailable(str(exc)) from None


async def report_status(clients: ClientPool) -> dict[str, Any]:
    """DescribeReportCreation: {"status": RUNNING | SUCCEEDED | FAILED | NO REPORT,
    "location": s3://... or None, "error": text or None}."""
    from bulktag.arn import Shard

    try:
        client = await clients.tagging(Shard("aws", "", ORGANIZATIONS_REGION))
        resp = await client.describe_report_creation()
    except ClientError as exc:
        raise _unavailable(exc) from None
    except (BotoCoreError, AccountAccessError, OSError) as exc:
        raise ComplianceUnavailable(str(exc)) from None
    return {"status": resp.get("Status") or "NO REPORT",
            "location": resp.get("S3Location") or None,
            "error": resp.get("ErrorMessage") or None}


async def compliance_summary(clients: ClientPool, group_by: list[str], accounts: list[str],
                             regions: list[str]) -> list[dict[str, Any]]:
    """Noncompliant resources per group (`account`, `region`, `resource-type`), through the
    Tagging API's GetComplianceSummary: callable only from the organisation's management
    account, in us-east-1. One dict per group: account, region, resource_type, noncompliant."""
    from bulktag.arn import Shard

    params: dict[str, Any] = {"GroupBy": [GROUP_BY[g] for g in group_by], "MaxResults": 100}
    if accounts:
        params["TargetIdFilters"] = accounts
    if regions:
        params["RegionFilters"] = regions
    out: list[dict[str, Any]] = []
    token = None
    try:
        client = await clients.tagging(Shard("aws", "", ORGANIZATIONS_REGION))
        while True:
            resp = await client.get_compliance_summary(
                **params, **({"PaginationToken": token} if token else {}))
            for row in resp.get("SummaryList", []):
                out.append({"account": row.get("TargetId") or None,
                            "region": row.get("Region") or None,
                            "resource_type": row.get("ResourceType") or None,
                            "noncompliant": int(row.get("NonCompliantResources", 0))})
            token = resp.get("PaginationToken")
            if not token:
                return out
    except ClientError as exc:
        raise _unavailable(exc) from None
    except (BotoCoreError, AccountAccessError, OSError) as exc:
        raise ComplianceUnavailable(str(exc)) from None


# -- the organisation's accounts ------------------------------------------------------------


class OrganizationUnavailable(Exception):
    """The organisation's accounts could not be listed (the message says why and what to do)."""


@dataclass
class OrgAccounts:
    """Accounts of the organisation (or of some OUs): the active ones, in the order listed,
    and the others with their state (SUSPENDED, PENDING_CLOSURE, CLOSED), skipped."""

    active: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, account: dict[str, Any]) -> None:
        account_id = str(account.get("Id") or "")
        state = str(account.get("State") or account.get("Status") or "ACTIVE")
        if not account_id or account_id in self.active or account_id in self.skipped:
            return
        if state == "ACTIVE":
            self.active.append(account_id)
        else:
            self.skipped[account_id] = state


async def organization_accounts(clients: ClientPool, ous: list[str] | None = None
                                ) -> OrgAccounts:
    """Every account of the caller's organisation (ListAccounts), or those under `ous`,
    recursively (ListAccountsForParent, ListOrganizationalUnitsForParent). The caller must be
    the management account or a delegated administrator."""
    settings = clients.settings
    found = OrgAccounts()
    try:
        async with clients.accounts.base.create_client(
                "organizations", region_name=ORGANIZATIONS_REGION,
                endpoint_url=settings.endpoint_url, config=client_config(settings, 2)) as org:
            if not ous:
                async for page in org.get_paginator("list_accounts").paginate():
                    for account in page.get("Accounts", []):
                        found.add(account)
                return found
            todo = list(ous)
            seen: set[str] = set()
            while todo:
                parent = todo.pop(0)
                if parent in seen:
                    continue
                seen.add(parent)
                async for page in org.get_paginator("list_accounts_for_parent").paginate(
                        ParentId=parent):
                    for account in page.get("Accounts", []):
                        found.add(account)
                async for page in org.get_paginator(
                        "list_organizational_units_for_parent").paginate(ParentId=parent):
                    todo.extend(str(ou["Id"]) for ou in page.get("OrganizationalUnits", []))
            return found
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code") or "")
        message = exc.response.get("Error", {}).get("Message", "")
        hint = {
            "AWSOrganizationsNotInUseException": " — the caller's account is in no "
            "organization: give --accounts",
            "AccessDeniedException": " — list the accounts from the organization's management "
            "account or a delegated administrator, with organizations:ListAccounts, "
            "ListAccountsForParent and ListOrganizationalUnitsForParent",
            "ParentNotFoundException": " — check the OU ids (ou-xxxx-xxxxxxxx or r-xxxx)",
        }.get(code, "")
        raise OrganizationUnavailable(f"{code}: {message}{hint}") from None
    except (BotoCoreError, OSError) as exc:
        raise OrganizationUnavailable(str(exc)) from None
