"""Undo, before-images and guardrails (issue 13) against the simulator over real HTTP, on both
store backends: resources with varied prior tags are tagged (or untagged) and undone back to
exactly what they had; values another client changed in between are left alone unless forced;
an undo is undone in turn; case conflicts and the 50-tag limit are refused per item, and the
plan counts them. The EC2 route (CreateTags/DeleteTags) is undone the same way."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from bulktag.app.plan import dry_run, plan_undo
from bulktag.app.report import report_records
from bulktag.app.settle import wait_settled
from bulktag.app.steering import ControlError, control_job
from bulktag.app.submit import Request, submit
from bulktag.app.undo import NothingToUndo, submit_undo, undo_by_shard, undo_options, undoable
from bulktag.aws.clients import ClientPool
from bulktag.config import Settings
from bulktag.engine import Engine
from bulktag.errors import JobBusy, UsageError
from bulktag.sim import RunningSimulator, ec2_arn
from bulktag.store import ItemState, JobOptions, JobState, Outcome, Store, new_owner_token
from tests.support.engine import ACCOUNT, fast_settings

REGION = "us-east-1"
KEEP = JobOptions(skip_compliant=True, before_images=True)


def arn(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"


#: prior tags: key absent, same value, other value, untouched keys, already compliant, none
PRIOR: dict[str, dict[str, str]] = {
    arn("absent"): {"Keep": "1"},
    arn("same"): {"Owner": "new", "Keep": "2"},
    arn("other"): {"Owner": "old", "Team": "y", "Keep": "3"},
    arn("compliant"): {"Owner": "new", "Team": "x"},
    arn("empty"): {},
}
WANT = {"Owner": "new", "Team": "x"}


def settings_of(store_url: str, sim: RunningSimulator) -> Settings:
    # Path() would fold a postgresql:// URL's slashes: the store goes in as given.
    return dataclasses.replace(fast_settings(Path("unused.db"), sim.url), db=store_url)


def seed(sim: RunningSimulator, prior: dict[str, dict[str, str]]) -> None:
    for a, tags in prior.items():
        sim.state.put(a, tags, account=ACCOUNT)


def now(sim: RunningSimulator, arns: list[str]) -> dict[str, dict[str, str]]:
    return {a: dict(sim.state.tags(a) or {}) for a in arns}


async def run(store: Store, settings: Settings, job_id: int) -> Engine:
    engine = Engine(store, settings, owner=new_owner_token(), job_ids={job_id})
    assert await engine.run()
    return engine


async def submit_and_run(store: Store, settings: Settings, tmp_path: Path, arns: list[str],
                         request: Request, options: JobOptions = KEEP) -> int:
    source = tmp_path / f"arns-{len(await store.list_jobs())}.txt"
    source.write_text("\n".join(arns) + "\n")
    job = await submit(store, [str(source)], request, options=options)
    await run(store, settings, job.job_id)
    return job.job_id


async def undo(store: Store, settings: Settings, job_id: int, **kw: Any) -> int:
    submitted = await submit_undo(store, job_id, **kw)
    await run(store, settings, submitted.job_id)
    return submitted.job_id


async def rows(store: Store, job_id: int) -> dict[str, dict[str, Any]]:
    job = await store.get_job(job_id)
    assert job is not None
    return {r["arn"]: r async for r in report_records(store, job_id, job.operation)}


async def other_client(settings: Settings, tag: dict[str, dict[str, str]],
                       untag: dict[str, list[str]]) -> None:
    """Another client changing tags over HTTP, as a colleague's script would."""
    from bulktag.arn import parse_arn

    pool = ClientPool(settings)
    try:
        for a, tags in tag.items():
            client = await pool.tagging(parse_arn(a).shard)
            await client.tag_resources(ResourceARNList=[a], Tags=tags)
        for a, keys in untag.items():
            client = await pool.tagging(parse_arn(a).shard)
            await client.untag_resources(ResourceARNList=[a], TagKeys=keys)
    finally:
        await pool.close()


async def test_tag_then_undo_restores_exactly_and_undo_of_undo_returns_to_the_result(
    tmp_path: Path, sim: RunningSimulator, store_url: str,
) -> None:
    seed(sim, PRIOR)
    settings = settings_of(store_url, sim)
    arns = list(PRIOR)
    async with await Store.open(store_url) as store:
        job = await submit_and_run(store, settings, tmp_path, arns, Request("tag", tags=WANT))
        result = now(sim, arns)
        assert all(result[a] == {**PRIOR[a], **WANT} for a in arns)
        report = await rows(store, job)
        assert report[arn("other")]["before"] == {"Owner": "old", "Team": "y"}
        assert report[arn("other")]["after"] == {"Owner": "new", "Team": "x"}
        assert report[arn("same")]["before"] == {"Team": None}  # only the keys it changed
        assert report[arn("compliant")]["status"] == "skipped"
        assert report[arn("compliant")]["before"] is None

        undo_job = await undo(store, settings, job)
        assert now(sim, arns) == PRIOR
        undone = await rows(store, undo_job)
        assert {a: r["status"] for a, r in undone.items()} == {
            arn("absent"): "succeeded", arn("same"): "succeeded", arn("other"): "succeeded",
            arn("empty"): "succeeded"}  # the compliant one was not changed: not undone
        assert undone[arn("other")]["before"] == {"Owner": "new", "Team": "x"}
        assert undone[arn("other")]["after"] == {"Owner": "old", "Team": "y"}
        assert undone[arn("absent")]["after"] == {"Owner": None, "Team": None}

        again = await undo(store, settings, undo_job)  # undo of the undo: the job's result
        assert now(sim, arns) == result
        assert (await store.get_job(again)).options.undo_of == undo_job  # type: ignore[union-attr]


async def test_changed_since_is_left_alone_then_restored_with_force(
    tmp_path: Path, sim: RunningSimulator, store_url: str,
) -> None:
    seed(sim, PRIOR)
    settings = settings_of(store_url, sim)
    arns = list(PRIOR)
    async with await Store.open(store_url) as store:
        job = await submit_and_run(store, settings, tmp_path, arns, Request("tag", tags=WANT))
        await other_client(settings, {arn("other"): {"Owner": "someone"},
                                      arn("absent"): {"Team": "z"}},
                           {arn("empty"): ["Team"]})  # as before the job: nothing in the way
        first = await undo(store, settings, job)
        report = await rows(store, first)
        for a, key in ((arn("other"), "Owner"), (arn("absent"), "Team")):
            assert report[a]["status"] == "skipped"
            assert f"changed since job {job}" in report[a]["message"]
            assert key in report[a]["message"]
            assert report[a]["error_code"] == "ChangedSince"
        assert now(sim, [arn("same"), arn("empty")]) == {a: PRIOR[a] for a in
                                                          (arn("same"), arn("empty"))}
        assert sim.state.tags(arn("other")) == {"Owner": "someone", "Team": "x", "Keep": "3"}
        assert report[arn("empty")]["status"] == "succeeded"

        forced = await undo(store, settings, job, force=True)
        assert now(sim, arns) == PRIOR
        report = await rows(store, forced)
        assert report[arn("same")]["status"] == "skipped"  # already put back by the first
        assert "already as before" in report[arn("same")]["message"]


async def test_untag_then_undo_puts_the_removed_values_back(
    tmp_path: Path, sim: RunningSimulator, store_url: str,
) -> None:
    prior = {arn("a"): {"Owner": "ann", "Team": "t1", "Keep": "k"},
             arn("b"): {"Owner": "bob"},
             arn("c"): {"Keep": "only"}}
    seed(sim, prior)
    settings = settings_of(store_url, sim)
    async with await Store.open(store_url) as store:
        job = await submit_and_run(store, settings, tmp_path, list(prior),
                                   Request("untag", keys=("Owner", "Team")),
                                   JobOptions(before_images=True))
        assert now(sim, list(prior)) == {arn("a"): {"Keep": "k"}, arn("b"): {},
                                         arn("c"): {"Keep": "only"}}
        report = await rows(store, job)
        assert report[arn("a")]["before"] == {"Owner": "ann", "Team": "t1"}
        assert report[arn("a")]["after"] == {"Owner": None, "Team": None}
        await undo(store, settings, job)
        assert now(sim, list(prior)) == prior


async def test_undo_refuses_a_running_job_and_says_when_there_is_nothing(
    tmp_path: Path, sim: RunningSimulator, store_url: str,
) -> None:
    seed(sim, {arn("x"): {"Owner": "new", "Team": "x"}})
    settings = settings_of(store_url, sim)
    async with await Store.open(store_url) as store:
        source = tmp_path / "one.txt"
        source.write_text(arn("x") + "\n")
        queued = await submit(store, [str(source)], Request("tag", tags=WANT), options=KEEP)
        with pytest.raises(UsageError, match=f"job {queued.job_id} is ready.*bulktag pause"):
            await submit_undo(store, queued.job_id)
        await store.set_job_state(queued.job_id, JobState.ACTIVE)
        with pytest.raises(UsageError, match="is active: .*bulktag cancel"):
            await submit_undo(store, queued.job_id)
        await store.set_job_state(queued.job_id, JobState.READY)
        await run(store, settings, queued.job_id)  # compliant: skipped, nothing changed
        with pytest.raises(NothingToUndo, match="nothing to undo"):
            await submit_undo(store, queued.job_id)
        assert [j.id for j in await store.list_jobs()] == [queued.job_id]  # none left behind
        plain = await submit_and_run(store, settings, tmp_path, [arn("x")],
                                     Request("tag", tags={"New": "1"}),
                                     JobOptions(skip_compliant=True))
        with pytest.raises(UsageError, match="kept no before-images"):
            await submit_undo(store, plain)


async def test_undo_and_retry_wait_for_a_stopped_jobs_items_in_flight(
    tmp_path: Path, sim: RunningSimulator, store_url: str,
) -> None:
    """A paused job with leased items: its outcomes may still change, so undo and retry refuse
    (JobBusy, exit 5) until the leases end; wait_settled waits, releasing expired leases as a
    reaper would. Retry keeps a paused job paused and refuses a job an undo put back."""
    settings = settings_of(store_url, sim)
    names = ["a", "b", "c"]
    seed(sim, {arn(n): {} for n in names})
    async with await Store.open(store_url) as store:
        done = await submit_and_run(store, settings, tmp_path, [arn(n) for n in names],
                                    Request("tag", tags=WANT))
        source = tmp_path / "more.txt"
        source.write_text(arn("d") + "\n" + arn("e") + "\n")
        job = (await submit(store, [str(source)], Request("tag", tags=WANT),
                            options=KEEP)).job_id
        shard = (await store.runnable())[0].shard_id
        worker = new_owner_token()  # a worker that claimed both items, then the pause came
        claimed = await store.claim(worker, job, shard, 10, lease_seconds=0.5)
        assert len(claimed) == 2
        await store.set_job_state(job, JobState.PAUSED)
        with pytest.raises(JobBusy, match=f"job {job} still has 2 item"):
            await submit_undo(store, job)
        with pytest.raises(JobBusy, match="retry plans from its outcomes"):
            await control_job(store, job, "retry")
        assert JobBusy.exit_code == 5
        await store.record(worker, [Outcome(claimed[0].id, ItemState.FAILED, 1,
                                            error_code="InternalServiceException")])
        waited: list[int] = []
        await wait_settled(store, job, command="undo", wait_seconds=30, stale_seconds=90,
                           on_wait=lambda leased, _left: waited.append(leased))
        assert waited and set(waited) == {1}  # waited for the last lease to expire, then on
        assert (await store.counts(job))[ItemState.LEASED] == 0

        retried = await control_job(store, job, "retry")
        assert retried.details["requeued"] == 1 and retried.state == JobState.PAUSED
        assert "stays paused" in retried.message

        await undo(store, settings, done)
        with pytest.raises(ControlError, match=f"job {done} was undone by job"):
            await control_job(store, done, "retry")


async def test_guardrails_refuse_per_item_and_the_plan_counts_them(
    tmp_path: Path, sim: RunningSimulator, store_url: str,
) -> None:
    full = {f"k{n}": "v" for n in range(50)}
    prior = {
        arn("lower"): {"owner": "someone"},  # Owner would be a second key to IAM
        arn("full"): full,  # 50 user tags: one more is 51
        arn("aws-keys"): {**{f"k{n}": "v" for n in range(49)},
                          "aws:cloudformation:stack-name": "s", "AWS:x": "y"},  # 49 user tags
        arn("fine"): {},
    }
    seed(sim, prior)
    settings = settings_of(store_url, sim)
    request = Request("tag", tags={"Owner": "new"})
    source = tmp_path / "g.txt"
    source.write_text("\n".join(prior) + "\n")

    plan = await dry_run(request, settings, KEEP, [str(source)], None)
    assert plan.data["refused"] == {"CaseConflict": 1, "TagLimitExceeded": 1}
    assert (plan.data["change"], plan.data["skip"], plan.data["fail"]) == (2, 1, 1)
    assert plan.data["keys"] == {"add": 2, "modify": 0, "remove": 0}
    assert {s["arn"] for s in plan.data["sample"]} == {arn("aws-keys"), arn("fine")}
    assert "Owner: absent → 'new'" in plan.human
    assert "would have 51 tags (limit 50)" in plan.human
    assert sim.state.arn_sends["TagResources"] == 0  # a plan sends nothing

    async with await Store.open(store_url) as store:
        job = await submit_and_run(store, settings, tmp_path, list(prior), request)
        report = await rows(store, job)
        assert report[arn("lower")]["status"] == "skipped"
        assert "'Owner' differs only in case from the resource's 'owner'" in \
            report[arn("lower")]["message"]
        assert report[arn("full")]["status"] == "failed"
        assert report[arn("full")]["message"] == "would have 51 tags (limit 50)"
        assert report[arn("full")]["error_code"] == "TagLimitExceeded"
        assert report[arn("full")]["attempts"] == 0  # no call was made for it
        assert report[arn("aws-keys")]["status"] == report[arn("fine")]["status"] == "succeeded"
        assert sim.state.tags(arn("lower")) == {"owner": "someone"}
        assert sim.state.tags(arn("full")) == full
        assert sim.state.arn_sends["TagResources"] == 2

        applied = await submit_and_run(store, settings, tmp_path, [arn("lower")], request,
                                       KEEP.with_(case_conflict="apply"))
        assert (await store.counts(applied)).by_state == {"succeeded": 1}
        assert sim.state.tags(arn("lower")) == {"owner": "someone", "Owner": "new"}


async def test_undo_dry_run_counts_and_samples_without_sending(
    tmp_path: Path, sim: RunningSimulator, store_url: str,
) -> None:
    seed(sim, PRIOR)
    settings = settings_of(store_url, sim)
    async with await Store.open(store_url) as store:
        job_id = await submit_and_run(store, settings, tmp_path, list(PRIOR),
                                      Request("tag", tags=WANT))
        await other_client(settings, {arn("other"): {"Owner": "someone"}}, {})
        sends = dict(sim.state.arn_sends)
        job = await undoable(store, job_id)
        plan = await plan_undo(settings, await undo_by_shard(store, job),
                               undo_options(job, force=False, case_conflict=None))
        assert dict(sim.state.arn_sends) == sends
        assert plan.data["resources"] == 4
        assert (plan.data["change"], plan.data["skip"]) == (3, 1)
        assert plan.data["refused"] == {"ChangedSince": 1}
        # absent: Owner and Team removed; same: Team removed; empty: both removed
        assert plan.data["keys"] == {"add": 0, "modify": 0, "remove": 5}
        assert f"changed since job {job_id}" in plan.human
        forced = await plan_undo(settings, await undo_by_shard(store, job),
                                 undo_options(job, force=True, case_conflict=None))
        assert forced.data["keys"] == {"add": 0, "modify": 2, "remove": 5}
        assert len(await store.list_jobs()) == 1


async def test_ec2_route_items_are_undone_through_create_and_delete_tags(
    tmp_path: Path, sim: RunningSimulator,
) -> None:
    ids = [f"i-{k:017x}" for k in range(6)]
    arns = [a for a in (ec2_arn(i, REGION, ACCOUNT) for i in ids) if a is not None]
    prior = {a: ({"Owner": "old", "Keep": "k"} if n % 2 else {}) for n, a in enumerate(arns)}
    seed(sim, prior)
    settings = fast_settings(tmp_path / "s.db", sim.url, route="auto", ec2_batch_size=100)
    async with await Store.open(settings.db) as store:
        job = await submit_and_run(store, settings, tmp_path, arns, Request("tag", tags=WANT))
        assert all(now(sim, arns)[a] == {**prior[a], **WANT} for a in arns)
        assert sim.state.arn_sends["TagResources"] == 0
        await other_client(settings, {arns[1]: {"Owner": "someone"}}, {})
        undo_job = await undo(store, settings, job)
        expect = dict(prior)
        expect[arns[1]] = {"Owner": "someone", "Team": "x", "Keep": "k"}
        assert now(sim, arns) == expect
        report = await rows(store, undo_job)
        assert {r["route"] for r in report.values()} == {"ec2"}
        assert report[arns[1]]["status"] == "skipped"
        # Odd ones: Owner restored (CreateTags) and Team removed (DeleteTags): both calls.
        assert sim.state.arn_sends["CreateTags"] >= 6 + 2
        assert sim.state.arn_sends["DeleteTags"] >= 5
        assert sim.state.arn_sends["TagResources"] == 1  # the other client's
        assert sim.state.arn_sends["UntagResources"] == 0
        await undo(store, settings, job, force=True)
        assert now(sim, arns) == prior


def test_before_images_are_compact() -> None:
    from bulktag.policy.changes import encode, undo_body

    assert encode({"Owner": None}) == '{"Owner":null}'
    body = undo_body("tag", json.dumps(WANT), encode({"Owner": "old", "Team": None}))
    assert json.loads(body or "") == {"Owner": ["old", "new"], "Team": [None, "x"]}
    assert undo_body("untag", '["Owner"]', '{"Owner":"a"}') == '{"Owner":["a",null]}'


async def test_retry_reads_a_new_before_image(
    tmp_path: Path, sim: RunningSimulator, store_url: str,
) -> None:
    """A failed item's image is from before a call that never changed it: `retry` reads anew,
    so another client's value set in between is what undo puts back, and a resource that
    client already put as the job wants is not taken for one the job changed."""
    changed, already = arn("changed-between"), arn("already-between")
    seed(sim, {changed: {}, already: {}})
    settings = dataclasses.replace(settings_of(store_url, sim), max_attempts=1)
    async with await Store.open(store_url) as store:
        sim.reconfigure(resource_error_rate=1.0)
        source = tmp_path / "arns.txt"
        source.write_text(f"{changed}\n{already}\n")
        job = (await submit(store, [str(source)], Request("tag", tags={"Stage": "new"}),
                            options=KEEP)).job_id
        await Engine(store, settings, owner=new_owner_token(), job_ids={job}).run()
        assert {r["status"] for r in (await rows(store, job)).values()} == {"failed"}
        sim.reconfigure(resource_error_rate=0.0)
        await other_client(settings, {changed: {"Stage": "other"}, already: {"Stage": "new"}}, {})

        await control_job(store, job, "retry")  # as `bulktag retry`
        await run(store, settings, job)
        report = await rows(store, job)
        assert report[changed]["status"] == "succeeded"
        assert report[changed]["before"] == {"Stage": "other"}
        assert report[already]["status"] == "skipped"

        await undo(store, settings, job)
        assert now(sim, [changed, already]) == {changed: {"Stage": "other"},
                                                already: {"Stage": "new"}}


@pytest.mark.parametrize("ec2_read", ["describe-tags", "get-resources"])
async def test_the_plan_counts_what_the_ec2_route_run_does(
    tmp_path: Path, sim: RunningSimulator, ec2_read: str,
) -> None:
    """DescribeTags narrowed to the job's keys cannot see a case-only twin (README "Two
    routes"): the plan must then not promise the guardrail the run will not apply; with
    ec2_read = get-resources both see every key and both skip."""
    arns = [a for a in (ec2_arn(f"i-{k:017x}", REGION, ACCOUNT) for k in range(2))
            if a is not None]
    twin, plain = arns
    seed(sim, {twin: {"costcenter": "a"}, plain: {}})
    settings = fast_settings(tmp_path / "s.db", sim.url, route="auto", ec2_read=ec2_read)
    request = Request("tag", tags={"CostCenter": "b"})
    source = tmp_path / "e.txt"
    source.write_text(f"{twin}\n{plain}\n")
    plan = await dry_run(request, settings, KEEP, [str(source)], None)
    async with await Store.open(settings.db) as store:
        job = await submit_and_run(store, settings, tmp_path, arns, request)
        report = await rows(store, job)
    skipped = ec2_read == "get-resources"
    assert plan.data["refused"] == ({"CaseConflict": 1} if skipped else {})
    assert (plan.data["change"], plan.data["skip"]) == ((1, 1) if skipped else (2, 0))
    assert report[twin]["status"] == ("skipped" if skipped else "succeeded")
    assert sim.state.tags(twin) == ({"costcenter": "a"} if skipped else
                                    {"costcenter": "a", "CostCenter": "b"})
