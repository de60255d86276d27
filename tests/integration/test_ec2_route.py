"""The `ec2` route (issue 15) against the simulator over real HTTP with a real SQLite store: EC2
resources go through CreateTags/DeleteTags in wide batches, the rest through the Tagging API;
missing ids fail exactly themselves; RequestLimitExceeded spends no attempts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from bulktag.app.plan import dry_run
from bulktag.app.submit import Request, submit
from bulktag.arn import ROUTE_EC2, ROUTE_TAGGING, Shard, ec2_route, route_of
from bulktag.config import Settings, ec2_rate_warning
from bulktag.engine import Engine
from bulktag.engine.sender import ec2_named_ids
from bulktag.policy.classify import Failure
from bulktag.sim import (
    RunningSimulator,
    SimConfig,
    ec2_arn,
    start_simulator,
)
from bulktag.store import JobOptions, Store, new_owner_token
from tests.support.engine import ACCOUNT, TAGS, fast_settings, items, run_job

REGION = "us-east-1"


def ec2(resource_id: str, region: str = REGION) -> str:
    arn = ec2_arn(resource_id, region, ACCOUNT)
    assert arn is not None
    return arn


def mixed(sim: RunningSimulator, n: int) -> tuple[list[str], list[str]]:
    """(EC2 ARNs, other ARNs): n each of snapshots, volumes, instances, tables, log groups."""
    ec2_arns = [ec2(f"{kind}-{k:017x}") for k in range(n) for kind in ("snap", "vol", "i")]
    others = [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t{k}" for k in range(n)] + \
        [f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/app/{k}" for k in range(n)]
    for arn in ec2_arns + others:
        sim.state.put(arn, {}, account=ACCOUNT)
    return ec2_arns, others


def settings_for(tmp_path: Path, url: str, **changes: object) -> Settings:
    return fast_settings(tmp_path / "s.db", url, **({"ec2_batch_size": 100, "route": "auto"} | changes))


def test_routes_by_arn() -> None:
    assert ec2_route(f"arn:aws:ec2:{REGION}::snapshot/snap-0123456789abcdef0") == \
        "snap-0123456789abcdef0"
    assert ec2_route(f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0abc") == "i-0abc"
    assert ec2_route(f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/snap-1") is None  # wrong prefix
    assert ec2_route(f"arn:aws:ec2:{REGION}:{ACCOUNT}:transit-gateway/tgw-1") is None
    assert ec2_route(f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t") is None
    assert route_of(f"arn:aws:ec2:{REGION}::image/ami-1", None) == ROUTE_EC2
    assert route_of(f"arn:aws:ec2:{REGION}::image/ami-1", "tagging-api") == ROUTE_TAGGING


def test_named_ids_and_rate_warning() -> None:
    named = ec2_named_ids(Failure("InvalidSnapshot.NotFound", 400,
                                  "The snapshot 'snap-1a, snap-3c' does not exist."))
    assert named == {"snap-1a", "snap-3c"}
    assert ec2_named_ids(Failure("InvalidID", 400, "The ID 'x-1' is not valid")) == {"x-1"}
    assert ec2_named_ids(Failure("TagLimitExceeded", 400, "'snap-1' has too many")) == set()
    assert ec2_rate_warning(Settings(ec2_rate=8)) is None
    assert ec2_rate_warning(Settings(ec2_rate=12)) is not None


async def test_mixed_job_tags_every_resource_by_its_route(tmp_path: Path,
                                                          sim: RunningSimulator) -> None:
    ec2_arns, others = mixed(sim, 150)
    store, job, engine = await run_job(tmp_path, settings_for(tmp_path, sim.url),
                                       ec2_arns + others)
    assert (await store.counts(job)).by_state == {"succeeded": 750}
    assert all(sim.state.tags(a) == TAGS for a in ec2_arns + others)
    # 450 EC2 ids in batches of 100 (snapshots are the caller's own shard, account ""):
    # at least 5 CreateTags calls, and not one EC2 ARN through TagResources.
    assert engine.stats.requests["CreateTags"] >= 5
    assert engine.stats.requests["CreateTags"] <= 8
    assert sim.state.arn_sends["CreateTags"] == 450
    assert sim.state.arn_sends["TagResources"] == 300
    rows = await items(store, job)
    assert {rows[a]["route"] for a in ec2_arns} == {"ec2"}
    assert {rows[a]["route"] for a in others} == {"tagging-api"}

    # Untag goes through DeleteTags.
    untag = await run_job(tmp_path, settings_for(tmp_path, sim.url), ec2_arns + others,
                          Request("untag", keys=("team",)))
    assert untag[2].stats.requests["DeleteTags"] >= 5
    assert sim.state.arn_sends["DeleteTags"] == 450
    assert all(sim.state.tags(a) == {"env": "prod"} for a in ec2_arns + others)
    await store.close()
    await untag[0].close()


async def test_route_tagging_api_sends_everything_through_tagresources(
        tmp_path: Path, sim: RunningSimulator) -> None:
    ec2_arns, others = mixed(sim, 20)
    settings = settings_for(tmp_path, sim.url, route="tagging-api")
    store, job, engine = await run_job(tmp_path, settings, ec2_arns + others)
    assert (await store.counts(job)).by_state == {"succeeded": 100}
    assert engine.stats.requests["CreateTags"] == 0
    assert sim.state.arn_sends["TagResources"] == 100
    rows = await items(store, job)
    assert {r["route"] for r in rows.values()} == {"tagging-api"}
    await store.close()

    # The job's own option wins over the setting.
    store, job, engine = await run_job(tmp_path, dataclasses.replace(
        settings, db=str(tmp_path / "t.db")), ec2_arns, options=JobOptions(route="auto"))
    assert engine.stats.requests["CreateTags"] == 2  # snapshots: the caller's shard; the rest
    await store.close()


async def test_deleted_snapshots_fail_exactly_themselves(tmp_path: Path,
                                                         sim: RunningSimulator) -> None:
    snaps = [ec2(f"snap-{k:017x}") for k in range(300)]
    for arn in snaps:
        sim.state.put(arn, {}, account=ACCOUNT)
    gone = {snaps[k] for k in (3, 57, 58, 140, 299)}
    for arn in gone:
        sim.state.delete(arn)
    store, job, engine = await run_job(tmp_path, settings_for(tmp_path, sim.url), snaps)
    rows = await items(store, job)
    assert {a for a, r in rows.items() if r["status"] == "failed"} == gone
    for arn in gone:
        assert rows[arn]["error_code"] == "InvalidSnapshot.NotFound"
        assert ec2_route(arn) in rows[arn]["message"]
        assert rows[arn]["attempts"] == 1
    assert {rows[a]["attempts"] for a in snaps if a not in gone} == {1}
    assert all(sim.state.tags(a) == TAGS for a in snaps if a not in gone)
    # One whole-call failure per batch holding a deleted snapshot, then the rest at once: the
    # EC2 route claims at its own width (ec2_batch_size x in_flight), so the 300 come in one
    # claim as 3 batches of 100, and every one of them holds a deleted snapshot.
    assert engine.stats.splits == 0
    assert engine.stats.requests["CreateTags"] == 3 + 3
    await store.close()


async def test_request_limit_exceeded_spends_no_attempts(tmp_path: Path) -> None:
    # A bucket of 2 refilled at 2/s against a client asking 8/s: most calls are refused.
    config = SimConfig(seed=3, ec2_buckets={"CreateTags": (2.0, 2.0)})
    async with await start_simulator(config) as sim:
        snaps = [ec2(f"snap-{k:017x}") for k in range(400)]
        for arn in snaps:
            sim.state.put(arn, {}, account=ACCOUNT)
        settings = settings_for(tmp_path, sim.url, ec2_batch_size=20, max_attempts=1)
        store, job, engine = await run_job(tmp_path, settings, snaps)
        assert sim.state.throttled["CreateTags"] > 0
        assert engine.stats.throttled_calls > 0
        rows = await items(store, job)
        assert {r["status"] for r in rows.values()} == {"succeeded"}
        assert {r["attempts"] for r in rows.values()} == {1}  # max_attempts=1 held
        await store.close()


async def test_tag_limit_is_isolated_by_splitting(tmp_path: Path,
                                                  sim: RunningSimulator) -> None:
    snaps = [ec2(f"snap-{k:017x}") for k in range(64)]
    for arn in snaps:
        sim.state.put(arn, {}, account=ACCOUNT)
    full = snaps[21]
    sim.state.put(full, {f"k{n}": "v" for n in range(50)}, account=ACCOUNT)
    store, job, engine = await run_job(tmp_path, settings_for(tmp_path, sim.url), snaps)
    rows = await items(store, job)
    assert {a for a, r in rows.items() if r["status"] == "failed"} == {full}
    assert rows[full]["error_code"] == "TagLimitExceeded"
    assert engine.stats.splits > 0
    await store.close()


async def test_in_one_account_region_ec2_items_do_not_wait_on_the_tagging_api(
        tmp_path: Path) -> None:
    # One account-region holds EC2 instances and volumes and DynamoDB tables and log groups.
    # Routes are stored per item and claimed per (shard, route): the EC2 items go in full
    # batches at EC2's pace while the Tagging API items are still going at theirs (2 calls/s
    # here: 10 calls for 200 items). What the simulator saw decides, not wall time.
    config = SimConfig(seed=5, quotas={"TagResources": 2.0})
    async with await start_simulator(config) as sim:
        ec2_arns, others = mixed(sim, 100)  # 100 each of snapshot, volume, instance; 200 others
        settings = settings_for(tmp_path, sim.url, max_rate=2.0)
        source = tmp_path / "arns.txt"
        # Interleaved, as a real export would list them.
        source.write_text("\n".join(a for pair in zip(ec2_arns[:200], others, strict=True)
                                    for a in pair) + "\n" + "\n".join(ec2_arns[200:]) + "\n")
        store = await Store.open(settings.db)
        job = (await submit(store, [str(source)], Request("tag", tags=TAGS),
                            options=JobOptions(route="auto"))).job_id
        shard = Shard("aws", ACCOUNT, REGION)
        by_route = {route: c.total for (s, route), c in (await store.route_counts(job)).items()
                    if s == shard}
        assert by_route == {"ec2": 200, "tagging-api": 200}  # stored at submission
        engine = Engine(store, settings, owner=new_owner_token(), job_ids={job})
        seen: dict[str, int] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            while True:
                counts = await store.route_counts(job)
                ec2_done = sum(c["succeeded"] for (s, r), c in counts.items()
                               if r == "ec2" and s == shard)
                if ec2_done == 200:
                    seen = {"TagResources": sim.state.requests["TagResources"],
                            "tagging_done": counts[(shard, "tagging-api")]["succeeded"]}
                    break
                await anyio.sleep(0.01)
        assert (await store.counts(job)).by_state == {"succeeded": 500}
        # 300 EC2 ids in 3 CreateTags calls, every one full (100): 2 for the account's volumes
        # and instances, 1 for the snapshots (bulktag's caller shard; the same account here).
        assert sim.state.shard_requests[(ACCOUNT, REGION, "CreateTags")] == 3
        assert sim.state.arn_sends["CreateTags"] == 300
        # ... all done while the Tagging API items of the same account-region were not: fewer
        # than the 10 TagResources calls they need had been answered.
        assert seen["TagResources"] < 10 and seen["tagging_done"] < 200, seen
        assert sim.state.requests["TagResources"] == 10
        await store.close()


@pytest.mark.parametrize("ec2_read", ["describe-tags", "get-resources"])
async def test_compliance_read_of_ec2_items_goes_by_describe_tags(
        tmp_path: Path, sim: RunningSimulator, ec2_read: str) -> None:
    ec2_arns, others = mixed(sim, 40)
    compliant = set(ec2_arns[::2]) | set(others[::2])
    for arn in compliant:
        sim.state.put(arn, {**TAGS, "other": "x"}, account=ACCOUNT)
    store, job, _ = await run_job(tmp_path, settings_for(tmp_path, sim.url, ec2_read=ec2_read),
                                  ec2_arns + others,
                                  options=JobOptions(route="auto", skip_compliant=True))
    rows = await items(store, job)
    assert {a for a, r in rows.items() if r["status"] == "skipped"} == compliant
    assert all(sim.state.tags(a) == TAGS for a in set(ec2_arns + others) - compliant)
    # EC2 items read by DescribeTags (narrowed to the job's keys; or GetResources when the
    # setting says so), the rest by GetResources; only the non-compliant ones sent.
    if ec2_read == "describe-tags":
        assert sim.state.requests["DescribeTags"] >= 2  # two shards: snapshots, the account's
        assert sim.state.requests["GetResources"] == 1  # the 80 others: one call of 100
    else:
        assert sim.state.requests["DescribeTags"] == 0
        assert sim.state.requests["GetResources"] >= 3  # 120 + 80 in the account's shard
    assert sim.state.arn_sends["CreateTags"] == 60
    assert sim.state.arn_sends["TagResources"] == 40
    await store.close()


async def test_the_plan_shows_each_account_region_by_route(tmp_path: Path,
                                                           sim: RunningSimulator) -> None:
    ec2_arns, others = mixed(sim, 30)  # 30 snapshots, 60 volumes and instances, 60 others
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(ec2_arns + others) + "\n")
    plan = await dry_run(Request("tag", tags=TAGS), settings_for(tmp_path, sim.url),
                         JobOptions(route="auto"), [str(source)], None)
    routes = {(s["account"], r["route"]): (r["change"], r["batches"])
              for s in plan.data["shards"] for r in s["routes"]}
    assert routes == {("", "ec2"): (30, 1), (ACCOUNT, "ec2"): (60, 1),
                      (ACCOUNT, "tagging-api"): (60, 3)}
    lines = plan.human.splitlines()
    assert ("    by route: ec2 60 to change, 0 skipped, 1 batches, ~0.1 s; "
            "tagging-api 60 to change, 0 skipped, 3 batches, ~0.6 s") in lines
    assert "    by route: ec2 30 to change, 0 skipped, 1 batches, ~0.1 s" in lines
    assert sim.state.requests["CreateTags"] == 0  # nothing sent
