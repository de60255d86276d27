"""Discovery by query, accounts through AssumeRole, skip-compliant, --if-absent, verify and the
plan: against the simulator over HTTP, with real SQLite stores (the same through the CLI in
subprocesses: tests/e2e/test_discovery_cli.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from bulktag.app.submit import Request, submit
from bulktag.app.verify import drift_of, verify_job
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.config import Settings
from bulktag.engine import Engine
from bulktag.engine.discovery import (
    DiscoveryStats,
    Query,
    QueryError,
    decide,
    parse_resource_query,
    query_from_flags,
    walk,
)
from bulktag.sim import RunningSimulator, SimConfig, start_simulator, synthetic_arns
from bulktag.store import JobOptions, JobState, Store, new_owner_token
from tests.support.sim import seed_env as seed

CALLER, SECOND, THIRD, REFUSED = "111111111111", "222222222222", "333333333333", "444444444444"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]


# -- pure parts -----------------------------------------------------------------------------------


def test_tag_filters_query_is_parsed_as_users_paste_it() -> None:
    text = json.dumps({"Type": "TAG_FILTERS_1_0", "Query": json.dumps({
        "ResourceTypeFilters": ["AWS::AllSupported", "ec2:instance"],
        "TagFilters": [{"Key": "env", "Values": ["prod", "stage"]}, {"Key": "team"}]})})
    q = parse_resource_query(text)
    assert q.tag_filters == (("env", ("prod", "stage")), ("team", ()))
    assert q.resource_types == ("ec2:instance",)  # AWS::AllSupported means any type
    assert q.params()["TagFilters"] == [{"Key": "env", "Values": ["prod", "stage"]},
                                        {"Key": "team"}]


def test_cloudformation_stack_query_selects_by_the_stack_id_tag() -> None:
    stack = "arn:aws:cloudformation:us-east-1:111111111111:stack/web/abc"
    q = parse_resource_query(json.dumps({"Type": "CLOUDFORMATION_STACK_1_0",
                                         "Query": json.dumps({"StackIdentifier": stack})}))
    assert q.tag_filters == (("aws:cloudformation:stack-id", (stack,)),)


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "--query is not JSON"),
    ('{"Type": "X", "Query": "{}"}', "unknown Type 'X'"),
    ('{"Type": "TAG_FILTERS_1_0", "Query": "{}"}', "matches every resource"),
    ('{"Type": "TAG_FILTERS_1_0", "Query": "{\\"TagFilter\\": []}"}', "unknown field(s) TagFilter"),
    ('{"Type": "CLOUDFORMATION_STACK_1_0", "Query": "{}"}', "needs a StackIdentifier"),
    ('{"Type": "TAG_FILTERS_1_0", "Query": "{\\"ResourceTypeFilters\\": [\\"AWS::EC2::Instance\\"]}"}',
     "is a CloudFormation type name"),
])
def test_bad_queries_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_resource_query(text)


def test_match_tag_flags_group_values_of_one_key() -> None:
    q = query_from_flags(["env=prod", "env=stage", "team"], ["lambda"])
    assert q.tag_filters == (("env", ("prod", "stage")), ("team", ()))
    assert q.matches("lambda:function", {"env": "stage", "team": ""})
    assert not q.matches("lambda:function", {"env": "dev", "team": "a"})
    assert not q.matches("ec2:instance", {"env": "prod", "team": "a"})


def test_compliance_decisions() -> None:
    want = {"a": "1", "b": "2"}
    assert not decide("tag", want, {"a": "1", "b": "2", "c": "3"}, if_absent=False).send
    assert decide("tag", want, {"a": "1", "b": "x"}, if_absent=False).send
    d = decide("tag", want, {"a": "9"}, if_absent=True)
    assert d.send and d.override == {"b": "2"}  # never overwrites a
    assert not decide("tag", want, {"a": "9", "b": "9"}, if_absent=True).send
    assert not decide("untag", ["a"], {"b": "1"}, if_absent=False).send
    assert decide("untag", ["a"], {"a": "1"}, if_absent=False).send


def test_drift_names_what_changed() -> None:
    assert drift_of("tag", {"a": "1"}, {"a": "1"}) is None
    assert drift_of("tag", {"a": "1", "b": "2"}, {"a": "x"}) == "a: expected '1', found 'x'; b missing"
    assert drift_of("untag", ["a"], {"a": "1"}) == "removed keys present again: a"


# -- against the simulator -------------------------------------------------------------------------


def settings_for(tmp_path: Path, url: str, **changes: Any) -> Settings:
    base = Settings(db=str(tmp_path / "bulktag.db"), endpoint_url=url, backoff_base=0.02,
                    backoff_cap=0.2, role_name="bulktag-tagger",
                    # EC2 ARNs stand in for any resource here (the Tagging API creates what it
                    # tags in the simulator); the ec2 route is tested in test_ec2_route.py.
                    route="tagging-api")
    return dataclasses.replace(base, **changes)


async def run_query_job(store: Store, settings: Settings, query: Query, accounts: list[str],
                        tags: dict[str, str], **options: Any) -> tuple[int, Engine]:
    job = await store.create_job("tag", options=JobOptions(
        query=query.to_json(), tags=tags, keys=[], skip_compliant=True, **options))
    await store.create_discoveries(job, [("aws", a, r) for a in accounts for r in REGIONS])
    await store.set_job_state(job, JobState.READY)
    engine = Engine(store, settings, owner=new_owner_token(), job_ids={job})
    assert await engine.run()
    return job, engine


async def test_query_job_tags_exactly_the_matches_in_each_accounts_own_account(
    tmp_path: Path,
) -> None:
    config = SimConfig(default_account=CALLER, refused_roles=frozenset(
        {f"arn:aws:iam::{REFUSED}:role/bulktag-tagger"}))
    async with await start_simulator(config) as sim:
        matching = seed(sim, [CALLER, SECOND, THIRD, REFUSED], REGIONS, 30)
        settings = settings_for(tmp_path, sim.url)
        store = await Store.open(settings.db)
        query = query_from_flags(["env=prod"], [])
        job, _ = await run_query_job(store, settings, query, [CALLER, SECOND, THIRD, REFUSED],
                                     {"owner": "finops"})
        for arn, is_match in matching.items():
            account = arn.split(":")[4]
            tagged = sim.state.tags(arn).get("owner") == "finops"  # type: ignore[union-attr]
            # The simulator refuses a call whose credentials are of another account or region,
            # so a tag here proves it was applied with the resource's own account's role.
            assert tagged == (is_match and account != REFUSED), arn
        counts = await store.counts(job)
        expected = sum(1 for a, m in matching.items() if m and a.split(":")[4] != REFUSED)
        assert counts.by_state == {"succeeded": expected}
        walks = {(d.account, d.region): d for d in await store.job_discoveries(job)}
        assert {d.state for (a, _), d in walks.items() if a != REFUSED} == {"done"}
        refused = [d for (a, _), d in walks.items() if a == REFUSED]
        assert {d.state for d in refused} == {"failed"}
        assert all("bulktag-tagger" in (d.error or "") for d in refused)
        assert (await store.get_job(job)).state == "completed"  # type: ignore[union-attr]

        # A second run over already-tagged resources makes no TagResources call.
        before = sim.state.stats["requests"].get("TagResources", 0)
        job2, engine2 = await run_query_job(store, settings, query, [CALLER, SECOND, THIRD],
                                            {"owner": "finops"})
        assert sim.state.stats["requests"].get("TagResources", 0) == before
        assert (await store.counts(job2)).by_state == {"skipped": expected}
        assert engine2.stats.requests["TagResources"] == 0
        await store.close()


async def test_items_of_an_account_whose_role_is_refused_fail_with_the_reason(
    tmp_path: Path,
) -> None:
    config = SimConfig(default_account=CALLER, refused_roles=frozenset(
        {f"arn:aws:iam::{REFUSED}:role/bulktag-tagger"}))
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([SECOND, REFUSED], ["us-east-1"], 20))
        source = tmp_path / "arns.txt"
        source.write_text("\n".join(arns))
        settings = settings_for(tmp_path, sim.url)
        store = await Store.open(settings.db)
        job = await submit(store, [str(source)], Request("tag", tags={"k": "v"}))
        assert await Engine(store, settings, owner=new_owner_token()).run()
        rows = {r.arn: r async for r in store.report_rows(job.job_id)}
        for arn in arns:
            if REFUSED in arn:
                assert rows[arn].state == "failed"
                assert rows[arn].error_code == "AccessDenied"
                assert f"arn:aws:iam::{REFUSED}:role/bulktag-tagger" in (rows[arn].message or "")
            else:
                assert rows[arn].state == "succeeded"
                assert sim.state.tags(arn) == {"k": "v"}
        await store.close()


async def test_an_expired_pagination_token_restarts_the_walk_without_duplicates(
    tmp_path: Path,
) -> None:
    config = SimConfig(pagination_token_ttl=0.3, default_account=CALLER)
    async with await start_simulator(config) as sim:
        matching = seed(sim, [CALLER], REGIONS, 600)  # 200 matches per region: 2 pages of 100
        settings = settings_for(tmp_path, sim.url)
        store = await Store.open(settings.db)
        job = await store.create_job("tag", options=JobOptions(
            query=query_from_flags(["env=prod"], []).to_json(), tags={"x": "y"},
            keys=[], skip_compliant=True))
        await store.create_discoveries(job, [("aws", CALLER, "us-east-1")])
        await store.set_job_state(job, JobState.READY)
        d = await store.claim_discovery("me", None)
        assert d is not None

        class SlowSecondPage(ShardLimiter):
            calls = 0

            async def acquire(self) -> None:
                SlowSecondPage.calls += 1
                if SlowSecondPage.calls == 2:
                    await asyncio.sleep(0.5)  # the first page's token dies meanwhile

        stats = DiscoveryStats()
        job_row = await store.get_job(job)
        assert job_row is not None
        clients = ClientPool(settings)
        await walk(store, settings, clients, SlowSecondPage(15), "me", d, job_row.options,
                   "tag", stats, anyio.Event())
        await clients.close()
        assert stats.restarts == 1
        assert stats.errors == {"PaginationTokenExpiredException": 1}
        expected = sum(1 for a, m in matching.items() if m and ":us-east-1:" in a)
        assert (await store.counts(job)).total == expected  # the re-walk added nothing twice
        (done,) = await store.job_discoveries(job)
        assert (done.state, done.restarts) == ("done", 1)
        await store.close()


async def test_a_stale_saved_token_is_not_used_on_resume(tmp_path: Path) -> None:
    async with await start_simulator(SimConfig(default_account=CALLER)) as sim:
        seed(sim, [CALLER], REGIONS, 30)
        settings = settings_for(tmp_path, sim.url)
        store = await Store.open(settings.db)
        job = await store.create_job("tag", options=JobOptions(
            query=query_from_flags(["env"], []).to_json(), tags={"x": "y"}, keys=[]))
        await store.create_discoveries(job, [("aws", CALLER, "eu-west-1")])
        await store.set_job_state(job, JobState.READY)
        d = await store.claim_discovery("crashed-owner", {job})  # a walk saved a page, then died
        assert d is not None
        await store.save_discovery_page(d, "crashed-owner", "stale", 0)
        await store.release_owner("crashed-owner")
        with sqlite3.connect(settings.db) as conn:  # ... an hour ago: long expired
            conn.execute("UPDATE discoveries SET token_at = ?", (time.time() - 3600,))
        assert await Engine(store, settings, owner=new_owner_token(), job_ids={job}).run()
        (d,) = await store.job_discoveries(job)
        assert (d.state, d.restarts) == ("done", 1)
        assert (await store.counts(job)).by_state == {"succeeded": 30}
        await store.close()


async def test_skip_compliant_and_if_absent_for_a_file_source(tmp_path: Path,
                                                             sim: RunningSimulator) -> None:
    arns = [f"arn:aws:sqs:us-east-1:123456789012:q-{n}" for n in range(150)]
    for n, arn in enumerate(arns):
        sim.state.put(arn, {"team": "a", "env": "prod"} if n < 100 else {"team": "keep"},
                      account="123456789012")
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns))
    settings = settings_for(tmp_path, sim.url, role_name=None)
    store = await Store.open(settings.db)
    job = await submit(store, [str(source)], Request("tag", tags={"team": "a", "env": "prod"}),
                       options=JobOptions(skip_compliant=True, if_absent=True))
    engine = Engine(store, settings, owner=new_owner_token())
    assert await engine.run()
    assert (await store.counts(job.job_id)).by_state == {"skipped": 100, "succeeded": 50}
    assert engine.stats.arns_sent == 50
    # --if-absent added env but never overwrote team=keep.
    assert all(sim.state.tags(a) == {"team": "keep", "env": "prod"} for a in arns[100:])
    await store.close()


async def test_verify_reports_drift_and_stores_it(tmp_path: Path, sim: RunningSimulator) -> None:
    arns = [f"arn:aws:sns:eu-west-1:123456789012:t-{n}" for n in range(30)]
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns))
    settings = settings_for(tmp_path, sim.url, role_name=None)
    store = await Store.open(settings.db)
    job = await submit(store, [str(source)], Request("tag", tags={"cc": "1"}))
    assert await Engine(store, settings, owner=new_owner_token()).run()
    assert (await verify_job(store, settings, job.job_id)).drifted == 0
    sim.state.put(arns[3], {"cc": "2"}, account="123456789012")
    result = await verify_job(store, settings, job.job_id)
    assert (result.checked, result.drifted) == (30, 1)
    assert result.rows == [{"arn": arns[3], "account": "123456789012", "region": "eu-west-1",
                            "drift": "cc: expected '1', found '2'"}]
    # kept with the item: a second verify of the same drift finds the same
    again = await verify_job(store, settings, job.job_id)
    assert again.rows == result.rows
    await store.close()


async def test_on_access_error_pause_parks_the_account_until_resumed(tmp_path: Path) -> None:
    role = f"arn:aws:iam::{REFUSED}:role/bulktag-tagger"
    config = SimConfig(default_account=CALLER, refused_roles=frozenset({role}))
    async with await start_simulator(config) as sim:
        arns = list(synthetic_arns([SECOND, REFUSED], ["us-east-1"], 20))
        source = tmp_path / "arns.txt"
        source.write_text("\n".join(arns))
        settings = settings_for(tmp_path, sim.url, on_access_error="pause")
        store = await Store.open(settings.db)
        job = await submit(store, [str(source)], Request("tag", tags={"k": "v"}))
        assert await Engine(store, settings, owner=new_owner_token()).run()
        counts = await store.counts(job.job_id)
        assert counts.by_state == {"succeeded": 20, "pending": 20}  # parked, not failed
        rows = {r.arn: r async for r in store.report_rows(job.job_id)}
        assert all(rows[a].attempts == 0 for a in arns if REFUSED in a)
        (paused,) = await store.paused_accounts(job.job_id)
        assert paused[0] == REFUSED and role in paused[1]
        assert (await store.get_job(job.job_id)).state == "active"  # type: ignore[union-attr]

        sim.reconfigure(refused_roles=[])  # the role's trust policy is fixed
        assert await store.clear_paused_accounts(job.job_id) == 1  # bulktag resume JOB
        assert await Engine(store, settings, owner=new_owner_token()).run()
        assert (await store.counts(job.job_id)).by_state == {"succeeded": 40}
        assert all(sim.state.tags(a) == {"k": "v"} for a in arns)
        await store.close()
