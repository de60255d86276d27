"""Tag policies at submission and in `bulktag policy show`: the accounts' effective policies
(read once each, `aws/organizations.PolicyBook`) against the tags a job would write.

A submission's rows whose tags the policy enforces against on their resource type are refused
before anything is enqueued (exit 2, the rule and the rows named); `--allow-noncompliant` sends
them anyway. Tags the policy does not allow on a type it does not enforce are only counted, and
said in a warning: AWS takes them, the resources are noncompliant. The engine applies the same
rule per resource when it sends (`engine/lane.py`), for jobs submitted without this check
(detached, discovery, transforms: their tags are known only when read).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bulktag.app.submit import PolicyCheck, Problem
from bulktag.arn import resource_type_of
from bulktag.aws.organizations import PolicyBook
from bulktag.policy.access import Via
from bulktag.policy.tag_policy import violations
from bulktag.sources import source_name
from bulktag.store import NewItem


@dataclass
class PolicyTally:
    """What a check saw beside its refusals: noncompliant tags AWS will take."""

    unenforced: Counter[str] = field(default_factory=Counter)  # reason -> resources


def policy_checker(book: PolicyBook, via: Via | None,
                   tally: PolicyTally | None = None) -> PolicyCheck:
    """The submission's check (`submit(..., policy_check=...)`)."""
    bodies: dict[str, Any] = {}

    async def check(spec: str, items: list[NewItem]) -> list[Problem]:
        problems: list[Problem] = []
        for it in items:
            if it.problem is not None or it.shard is None or it.tagset is None:
                continue
            policy = await book.get(it.shard.account, it.shard.partition, via)
            if not policy.rules:
                continue
            body = bodies.get(it.tagset)
            if body is None:
                body = bodies[it.tagset] = json.loads(it.tagset)
            if not isinstance(body, dict):
                continue  # a transform's operations: checked per resource when sent
            kind = resource_type_of(it.arn)
            found = violations(policy, kind, body)
            refused = [v.reason for v in found if v.enforced]
            if refused:
                problems.append(Problem(source_name(spec), it.line or 0,
                                        f"{it.arn} ({kind}): {'; '.join(refused)}"))
            elif found and tally is not None:
                for v in found:
                    tally.unenforced[v.reason] += 1
        return problems

    return check
