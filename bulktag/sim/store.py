"""The simulator's in-memory world: resources and their tags, STS sessions, and counters.

One store of truth for every API: resources are keyed by ARN, and EC2 resource ids are mapped to
their ARN (`arns.ec2_arn`) before they reach it, so tags written by EC2 CreateTags are the tags
GetResources lists and the other way round. A deleted resource keeps its record (and shard
position) but no longer exists for any API.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bulktag.sim.arns import SimArn, read_arn, synthetic_resources


@dataclass(slots=True)
class Resource:
    arn: str
    account: str
    region: str
    resource_type: str
    tags: dict[str, str] = field(default_factory=dict)
    deleted: bool = False  # deleted resources exist for no API; the record stays for the cursor
    #: tagged now or before: only such resources are listed by GetResources (Resource
    #: Explorer lists every resource)
    ever_tagged: bool = True


@dataclass(frozen=True, slots=True)
class StsSession:
    account: str
    role_arn: str
    session_name: str


class SimState:
    """Resources by ARN, plus each (account, region)'s resources in creation order.

    Resources are never removed ("ever had a tag" is still listed by GetResources), so a position
    in a shard's list is a stable pagination cursor; `delete` only marks them deleted.
    """

    def __init__(self) -> None:
        self._resources: dict[str, Resource] = {}
        self._shards: dict[tuple[str, str], list[Resource]] = {}
        self._positions: dict[str, int] = {}  # ARN -> its position in its shard's list
        self.sts_sessions: dict[str, StsSession] = {}
        self.requests: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()  # injected whole-call 500s, per operation
        self.arn_sends: Counter[str] = Counter()  # per operation
        self.sends: Counter[str] = Counter()  # per ARN, over non-throttled Tag/Untag calls
        # (account, region, operation) -> calls; and throttled calls
        self.shard_requests: Counter[tuple[str, str, str]] = Counter()
        self.shard_throttled: Counter[tuple[str, str, str]] = Counter()
        #: the last StartReportCreation: bucket, start time, location, CSV text
        self.report: dict[str, Any] | None = None
        self.call_log: list[dict[str, Any]] = []  #: `log_calls`: every change call

    def __len__(self) -> int:
        return len(self._resources)

    def tags(self, arn: str) -> dict[str, str] | None:
        """A copy of the resource's tags, or None if the simulator has never seen it."""
        resource = self._resources.get(arn)
        return None if resource is None else dict(resource.tags)

    def resource(self, arn: str) -> Resource | None:
        return self._resources.get(arn)

    def delete(self, arn: str) -> bool:
        """Mark the resource deleted (tags kept for inspection); False if it never existed or
        was deleted already. Every API then answers for it as for a missing resource."""
        resource = self._resources.get(arn)
        if resource is None or resource.deleted:
            return False
        resource.deleted = True
        return True

    def count_request(self, op: str, account: str, region: str) -> None:
        self.requests[op] += 1
        self.shard_requests[account, region, op] += 1

    def count_throttle(self, op: str, account: str, region: str) -> None:
        self.throttled[op] += 1
        self.shard_throttled[account, region, op] += 1

    def every_resource(self) -> list[Resource]:
        return list(self._resources.values())

    def shard(self, account: str, region: str) -> list[Resource]:
        return self._shards.get((account, region), [])

    def position(self, arn: str) -> int | None:
        """The resource's position in its shard's list (a stable cursor), or None."""
        return self._positions.get(arn)

    def ensure(self, arn: str, parsed: SimArn, caller_account: str) -> Resource:
        """The resource at `arn`, created untagged if new; account-less ARNs join the caller's."""
        resource = self._resources.get(arn)
        if resource is None:
            account = parsed.account or caller_account
            resource = Resource(arn, account, parsed.region, parsed.resource_type)
            self._resources[arn] = resource
            shard = self._shards.setdefault((account, parsed.region), [])
            self._positions[arn] = len(shard)
            shard.append(resource)
        return resource

    def put(self, arn: str, tags: dict[str, str], *, account: str = "") -> Resource:
        """Create or overwrite a resource's tags directly (seeding, tests); ARN must be valid."""
        parsed = read_arn(arn)
        if parsed is None:
            raise ValueError(f"not a well-formed ARN: {arn!r}")
        resource = self.ensure(arn, parsed, account or parsed.account)
        resource.tags = dict(tags)
        return resource

    def seed(
        self,
        accounts: list[str],
        regions: list[str],
        per_region: int,
        tags: dict[str, str] | None = None,
        *,
        ec2_share: float = 0.0,
        cycle: dict[str, list[str]] | None = None,
        tag_sets: list[dict[str, str]] | None = None,
        never_tagged_share: float = 0.0,
    ) -> int:
        """Create the synthetic resources of `synthetic_resources` (`ec2_share` of them EC2
        snapshots, volumes and instances); return how many were added. `cycle`: keys whose
        value goes round a list, resource by resource (varied values for transforms);
        `tag_sets`: whole tag maps that go round alike (varied keys); `never_tagged_share`:
        that share of the resources (chosen by ARN) exist with no tag, never tagged
        (GetResources does not list them; Resource Explorer does)."""
        before = len(self._resources)
        for n, (account, arn) in enumerate(synthetic_resources(accounts, regions, per_region,
                                                               ec2_share=ec2_share)):
            if arn not in self._resources:
                varied = {k: v[n % len(v)] for k, v in (cycle or {}).items() if v}
                if tag_sets:
                    varied.update(tag_sets[n % len(tag_sets)])
                never = bool(never_tagged_share) and \
                    random.Random(arn).random() < never_tagged_share  # the same every time
                resource = self.put(arn, {} if never else {**(tags or {}), **varied},
                                    account=account)
                resource.ever_tagged = not never
        return len(self._resources) - before

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "throttled": dict(self.throttled),
            "arn_sends": dict(self.arn_sends),
            "faults": dict(self.faults),
            "resources": len(self._resources),
            # "account/region" -> {"requests": {op: n}, "throttled": {op: n}}
            "by_account_region": self._by_account_region(),
        }

    def _by_account_region(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        for name, counter in (("requests", self.shard_requests),
                              ("throttled", self.shard_throttled)):
            for (account, region, op), n in sorted(counter.items()):
                shard = out.setdefault(f"{account}/{region}", {"requests": {}, "throttled": {}})
                shard[name][op] = n
        return out
