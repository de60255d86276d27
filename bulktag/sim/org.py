"""AWS Organizations' List calls over the simulator's configured tree (`organization`):
ListRoots, ListAccounts, ListAccountsForParent and ListOrganizationalUnitsForParent, answered
only to the management account, as AWS answers them (a member gets AccessDeniedException; with
no organisation, AWSOrganizationsNotInUseException). Pages of `MaxResults` (default 20) with a
NextToken."""

from __future__ import annotations

from typing import Any

from bulktag.sim.config import SimConfig

LIST_OPERATIONS = frozenset({"ListRoots", "ListAccounts", "ListAccountsForParent",
                             "ListOrganizationalUnitsForParent"})
ORG_ID = "o-simulated01"


class OrgError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _account(account_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    state = str(spec.get("state", "ACTIVE"))
    return {"Id": account_id, "Arn": f"arn:aws:organizations::{account_id}:account/{ORG_ID}/"
            f"{account_id}", "Email": f"{account_id}@example.com",
            "Name": str(spec.get("name", account_id)),
            # Status is the older field (ACTIVE, SUSPENDED, PENDING_CLOSURE); State the newer
            "Status": state if state != "CLOSED" else "SUSPENDED", "State": state,
            "JoinedMethod": "CREATED", "JoinedTimestamp": 1700000000.0}


def _page(items: list[dict[str, Any]], body: dict[str, Any], key: str) -> dict[str, Any]:
    size = body.get("MaxResults") or 20
    start = int(body.get("NextToken") or 0)
    out: dict[str, Any] = {key: items[start:start + size]}
    if start + size < len(items):
        out["NextToken"] = str(start + size)
    return out


def handle(config: SimConfig, caller_account: str, op: str, body: dict[str, Any]
           ) -> dict[str, Any]:
    tree = config.organization
    if tree is None:
        raise OrgError("AWSOrganizationsNotInUseException",
                       "Your account is not a member of an organization.")
    management = config.management_account or config.default_account
    if caller_account != management:
        raise OrgError("AccessDeniedException", "You don't have permissions to access this "
                       "resource.")
    root = tree["root"]
    ous: dict[str, str] = dict(tree.get("ous") or {})
    accounts: dict[str, dict[str, Any]] = dict(tree.get("accounts") or {})
    if op == "ListRoots":
        return {"Roots": [{"Id": root, "Arn": f"arn:aws:organizations::{management}:root/"
                           f"{ORG_ID}/{root}", "Name": "Root", "PolicyTypes": []}]}
    if op == "ListAccounts":
        return _page([_account(a, s) for a, s in sorted(accounts.items())], body, "Accounts")
    parent = body.get("ParentId")
    if parent != root and parent not in ous:
        raise OrgError("ParentNotFoundException", f"We can't find a root or OU with the "
                       f"ParentId that you specified: {parent}")
    if op == "ListAccountsForParent":
        return _page([_account(a, s) for a, s in sorted(accounts.items())
                      if s.get("parent", root) == parent], body, "Accounts")
    return _page([{"Id": ou, "Name": ou, "Arn": f"arn:aws:organizations::{management}:ou/"
                   f"{ORG_ID}/{ou}"} for ou, p in sorted(ous.items()) if p == parent],
                 body, "OrganizationalUnits")
