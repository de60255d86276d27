"""The source store of the `bulktag store copy` tests: jobs in every kind of state, a discovery
job with walks, a paused account, sync rules with members, a job still being submitted, and
leases of a worker that died (`build_source`); the shards and ARNs it uses, and a job's status
without what depends on the moment it is read (`timeless`). The copy in-process:
tests/integration/test_storecopy.py; through the CLI: tests/e2e/test_storecopy_cli.py."""

from __future__ import annotations

import socket
import time
from typing import Any

from bulktag.arn import Shard
from bulktag.store import (
    ItemState,
    JobOptions,
    JobState,
    NewItem,
    NewSyncRule,
    Outcome,
    Store,
    new_owner_token,
    tagset_body,
)
from tests.support.owners import dead_pid

ACCOUNT = "123456789012"


OTHER = "210987654321"


EAST = Shard("aws", ACCOUNT, "us-east-1")


WEST = Shard("aws", ACCOUNT, "us-west-2")


FAR = Shard("aws", OTHER, "eu-west-1")


TAGS_A = tagset_body({"Owner": "a"}, None)


TAGS_B = tagset_body({"Owner": "b", "Env": "prod"}, None)


KEYS = tagset_body(None, ["Old", "Stale"])


def arn(n: int, shard: Shard = EAST) -> str:
    return f"arn:aws:ec2:{shard.region}:{shard.account}:instance/i-{n:08d}"


def items(ns: range, shard: Shard = EAST, tagset: str = TAGS_A) -> list[NewItem]:
    return [NewItem(arn(n, shard), shard, tagset, line=n) for n in ns]


async def shard_ids(store: Store, job: int) -> dict[Shard, int]:
    return {await store.shard(r.shard_id): r.shard_id
            for r in await store.runnable() if r.job_id == job}


async def build_source(store: Store) -> dict[str, Any]:
    """Jobs in every kind of state, a discovery job with walks, a paused account, sync rules
    with members, a job still being submitted, and leases of a worker that died."""
    me = new_owner_token()
    dead = f"{socket.gethostname()}:{dead_pid()}:deadbeef"
    await store.register_owner(me)
    await store.register_owner(dead)
    now = time.time()

    # 1: completed with successes, failures of two codes, a skip, an invalid row and drift
    j1 = await store.create_job(
        "tag", name="first", priority=3,
        options=JobOptions(tags={"Owner": "a"}, sources=["a.txt"], failure_ratio=0.5,
                           skip_compliant=True, extra={"future": {"x": [1, 2]}}))
    await store.add_items(j1, items(range(8)) + items(range(8, 12), WEST, TAGS_B)
                          + [NewItem("not-an-arn", None, None, line=99, problem="not an ARN")])
    await store.set_job_state(j1, JobState.READY)
    await store.set_job_state(j1, JobState.ACTIVE)
    for shard, sid in (await shard_ids(store, j1)).items():
        claimed = await store.claim(me, j1, sid, 100, lease_seconds=600)
        outcomes = []
        for k, c in enumerate(claimed):
            if k % 4 == 1:
                outcomes.append(Outcome(c.id, ItemState.FAILED, 1, 0.0, "AccessDeniedException",
                                        403, f"denied {c.arn}"))
            elif k % 4 == 2 and shard == WEST:
                outcomes.append(Outcome(c.id, ItemState.FAILED, 8, now + 1, "InternalError",
                                        500, "gave up after 8 attempts"))
            elif k == 3:
                outcomes.append(Outcome(c.id, ItemState.SKIPPED, 0, message="already tagged"))
            else:
                outcomes.append(Outcome(c.id, ItemState.SUCCEEDED, 1))
        assert await store.record(me, outcomes) == len(claimed)
    succeeded = [r for r in await store.export_items(0, 100, j1)
                 if r.state == ItemState.SUCCEEDED]
    await store.set_drift([(succeeded[0].id, "Owner: a -> b"), (succeeded[1].id, None)])
    await store.set_job_rate(j1, 12.5)
    await store.set_job_state(j1, JobState.COMPLETED)

    # 2: an active untag job: pending, due later after a throttle, leased by a dead worker
    j2 = await store.create_job("untag", options=JobOptions(keys=["Old", "Stale"]))
    await store.add_items(j2, items(range(100, 120), EAST, KEYS) + items(range(120, 126), FAR,
                                                                         KEYS))
    await store.set_job_state(j2, JobState.READY)
    await store.set_job_state(j2, JobState.ACTIVE)
    sids = await shard_ids(store, j2)
    await store.claim(dead, j2, sids[EAST], 5, lease_seconds=3600)
    retry = await store.claim(me, j2, sids[EAST], 3, lease_seconds=600)
    await store.record(me, [Outcome(c.id, ItemState.PENDING, 1, now + 300, "ThrottlingException",
                                    400, "Rate exceeded") for c in retry])
    assert await store.pause_account(j2, OTHER, "AccessDenied on the role")
    await store.set_job_rate(j2, 3.25)

    # 3: paused, with a reason
    j3 = await store.create_job("tag", name="paused one",
                                options=JobOptions(tags={"Owner": "b", "Env": "prod"}))
    await store.add_items(j3, items(range(200, 210), WEST, TAGS_B))
    await store.set_job_state(j3, JobState.READY)
    await store.set_job_state(j3, JobState.PAUSED, "paused by the operator")

    # 4: discovery: one walk done, one failed, one pending mid-pagination, one a dead worker ran
    j4 = await store.create_job("tag", options=JobOptions(
        tags={"Owner": "a"}, query={"Type": "TAG_FILTERS_1_0", "Query": "{}"}, accounts=[""],
        regions=["us-east-1", "us-west-2", "eu-west-1", "ap-south-1"]))
    await store.create_discoveries(j4, [("aws", "", r) for r in
                                        ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")])
    await store.set_job_state(j4, JobState.READY)
    walk = await store.claim_discovery(me, {j4})
    assert walk is not None
    await store.save_discovery_page(walk, me, "token-2", 3)
    await store.save_discovery_page(walk, me, None, 1)
    await store.finish_discovery(walk, "done")
    walk = await store.claim_discovery(me, {j4})
    assert walk is not None
    await store.restart_discovery(walk)
    await store.finish_discovery(walk, "failed", "AccessDenied: no GetResources")
    walk = await store.claim_discovery(me, {j4})
    assert walk is not None
    await store.save_discovery_page(walk, me, "token-7", 5)
    await store.release_owner(me, forget=False)  # back to pending, its token kept
    walk = await store.claim_discovery(dead, {j4})
    assert walk is not None
    await store.add_items(j4, items(range(300, 304)))
    await store.set_job_state(j4, JobState.ACTIVE)

    # 5: failed past its threshold: the rest cancelled with JobFailed
    j5 = await store.create_job("tag", options=JobOptions(tags={"Owner": "a"},
                                                          failure_min_items=1))
    await store.add_items(j5, items(range(400, 404), FAR))
    await store.set_job_state(j5, JobState.READY)
    c = (await store.claim(me, j5, (await shard_ids(store, j5))[FAR], 1, lease_seconds=60))[0]
    await store.record(me, [Outcome(c.id, ItemState.FAILED, 1, 0, "AccessDeniedException", 403,
                                    "denied")])
    await store.cancel_items(j5, "more than 50% failed", code="JobFailed")
    await store.set_job_state(j5, JobState.FAILED, "failure ratio passed")

    # 6: still being submitted (a live submitter): not copied
    j6 = await store.create_job("tag", options=JobOptions(tags={"Owner": "a"}), owner=me)
    await store.add_items(j6, items(range(500, 503)))

    # sync rules: one evaluated with members, one in ERROR without any
    rule = await store.add_sync_rule(NewSyncRule(
        "web", "Role", "web", None, {"Team": "web", "Cost": "42"}, ["us-east-1"], [""], 120))
    claimed_rule = await store.claim_sync_rule("web", force=True)
    assert claimed_rule is not None
    await store.update_sync_members(rule, [arn(n) for n in range(10)], [])
    await store.finish_sync_rule(claimed_rule, "ACTIVE", None, 10, 0, [j1])
    await store.add_sync_rule(NewSyncRule(
        "db", None, None, '{"Type": "TAG_FILTERS_1_0", "Query": "{}"}', {"Backup": "daily"},
        [], [ACCOUNT, ""], 3600))
    bad = await store.claim_sync_rule("db", force=True)
    assert bad is not None
    await store.finish_sync_rule(bad, "ERROR", "boom", 0, 0, [])

    await store.release_owner(me)  # this "worker" stops; the dead one never said goodbye
    return {"jobs": [j1, j2, j3, j4, j5], "preparing": j6, "dead": dead}


def timeless(status: dict[str, Any]) -> dict[str, Any]:
    """job_status without what depends on the moment it is read (elapsed of a running job)."""
    out = dict(status)
    for key in ("elapsed_seconds", "eta_seconds", "rate"):
        out.pop(key)
    out["shards"] = [{k: v for k, v in s.items() if k not in ("rate", "of_quota")}
                     for s in status["shards"]]
    return out
