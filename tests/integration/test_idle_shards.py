"""Per-shard cost at scale (issue 26, part 3): a shard's hot calls share one botocore client per
region yet sign with their own account's credentials, and a shard out of work lets go of its
hot calls, client, limiter and assumed credentials after `idle_shard_seconds`, building them
again when work comes back. Against the simulator over HTTP (a resource of another account
refuses the caller's keys: a call signed as the wrong account fails)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio

from bulktag.app.submit import Request, submit
from bulktag.arn import Shard
from bulktag.aws.clients import ClientPool
from bulktag.config import Settings
from bulktag.engine import Engine
from bulktag.sim import RunningSimulator, SimConfig, start_simulator
from bulktag.store import ItemState, JobState, Store, new_owner_token
from tests.support.engine import fast_settings
from tests.support.waits import wait_until_async

CALLER, OTHER = "123456789012", "210987654321"
REGION = "eu-west-1"


def arn(account: str, name: str, region: str = REGION) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


async def test_accounts_share_a_regions_client_and_sign_as_themselves() -> None:
    async with await start_simulator(SimConfig(enforce_quotas=False)) as sim:
        pool = ClientPool(Settings(endpoint_url=sim.url, role_name="Tagger"))
        try:
            mine = await pool.calls(Shard("aws", CALLER, REGION))
            theirs = await pool.calls(Shard("aws", OTHER, REGION))
            again = await pool.calls(Shard("aws", OTHER, REGION))
            assert again is theirs and mine is not theirs
            # One botocore client per (region, kind of session): the caller's and the roles'.
            assert pool.holds() == 2 + 2
            for client, account in ((mine, CALLER), (theirs, OTHER)):
                answer = await client.tag_resources(ResourceARNList=[arn(account, "f")],
                                                    Tags={"k": account})
                assert not answer.get("FailedResourcesMap"), answer
                assert sim.state.tags(arn(account, "f")) == {"k": account}
            # Anything but the three hot calls would sign with another account's keys.
            try:
                theirs.get_compliance_summary  # noqa: B018
            except AttributeError as exc:
                assert "hot calls" in str(exc)
            else:
                raise AssertionError("a shard's hot calls hand out the shared client")
        finally:
            await pool.close()


async def test_idle_shards_release_their_calls_and_credentials(sim: RunningSimulator) -> None:
    pool = ClientPool(Settings(endpoint_url=sim.url, role_name="Tagger"))
    busy_shard, idle_shard = Shard("aws", CALLER, REGION), Shard("aws", OTHER, "us-east-1")
    try:
        first = await pool.calls(idle_shard)
        await pool.calls(busy_shard)
        # Used just now: nothing is idle yet.
        assert await pool.release_idle(60.0, set()) == 0
        # The busy shard keeps everything, however long it was unused; the idle one lets go
        # of its hot calls, its region's shared client and its account's credentials.
        released = await pool.release_idle(0.0, {(CALLER, REGION)})
        assert released == 2
        assert pool.holds() == 2
        assert pool.accounts.accounts() == {CALLER}
        # Work comes back: built again (the role assumed again), and it signs as its account.
        second = await pool.calls(idle_shard)
        assert second is not first
        answer = await second.tag_resources(ResourceARNList=[arn(OTHER, "g", "us-east-1")],
                                            Tags={"k": "v"})
        assert not answer.get("FailedResourcesMap"), answer
        assert await pool.release_idle(0.0, set()) == 4
        assert pool.holds() == 0 and pool.accounts.accounts() == set()
    finally:
        await pool.close()


async def test_a_worker_lets_go_of_a_shard_out_of_work_and_takes_it_up_again(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """A daemon-like engine (follow): once its job is done, its shards' clients, limiters and
    credentials go after `idle_shard_seconds`; a second job on the same shards is tagged."""
    settings = dataclasses.replace(
        fast_settings(tmp_path / "s.db", sim.url), role_name="Tagger", max_rate=100.0,
        idle_shard_seconds=0.4)
    store = await Store.open(settings.db)
    arns = [arn(a, f"fn-{i}", r) for a in (CALLER, OTHER) for r in (REGION, "us-east-1")
            for i in range(30)]
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    engine = Engine(store, settings, owner=new_owner_token(), follow=True)

    async def state(job_id: int) -> JobState | None:
        job = await store.get_job(job_id)
        return job.state if job else None

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            for value in ("one", "two"):
                job = await submit(store, [str(source)], Request("tag", tags={"k": value}))

                async def done(job_id: int = job.job_id) -> bool:
                    return await state(job_id) == JobState.COMPLETED

                await wait_until_async(done, f"job {job.job_id} completed", timeout=30)
                counts = await store.counts(job.job_id)
                assert counts[ItemState.SUCCEEDED] == len(arns), counts.by_state
                assert all(sim.state.tags(a) == {"k": value} for a in arns)
                await wait_until_async(
                    lambda: engine.clients.holds() == 0 and not engine.limiters
                    and not engine.clients.accounts.accounts(),
                    "the idle shards' clients, limiters and credentials released", timeout=30)
            engine.request_stop()
    finally:
        await store.close()
