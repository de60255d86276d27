"""Tag-sync rules against the simulator over HTTP: the CLI in subprocesses for what an operator
types, the store and the engine in-process for what the daemon does, and `bulktag priority`
on a running job. Rules refused before anything is stored: tests/unit/test_sync.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

from bulktag.app.submit import Request, submit
from bulktag.app.sync_rules import evaluate, own_limiters
from bulktag.aws.clients import ClientPool
from bulktag.config import Settings
from bulktag.engine import Engine
from bulktag.sim import RunningSimulator, SimConfig, start_simulator
from bulktag.store import JobOptions, Store, new_owner_token

CALLER, REFUSED = "123456789012", "444444444444"
APPLIED = {"team": "web", "cc": "42"}


def arn(n: int, region: str = "us-east-1") -> str:
    return f"arn:aws:sqs:{region}:{CALLER}:queue-{n}"


async def cli(run_cli: Any, *args: str) -> Any:
    return await asyncio.to_thread(run_cli, *args)


async def test_resources_gaining_and_losing_the_matching_tag_gain_and_lose_the_applied_tags(
    tmp_path: Path, sim: RunningSimulator, run_cli: Any
) -> None:
    db = str(tmp_path / "bulktag.db")
    common = ("--db", db, "--endpoint-url", sim.url)
    for n in range(30):
        sim.state.put(arn(n), {"app": "shop" if n < 12 else "other"}, account=CALLER)
    sim.state.put(arn(99, "eu-west-1"), {"app": "shop"}, account=CALLER)

    r = await cli(run_cli, "sync", "add", "shop", "--tag-key", "app", "--tag-value", "shop",
                  "--apply", "team=web", "--apply", "cc=42", "--regions", "us-east-1,eu-west-1",
                  "--interval", "60", "--json", *common)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "ACTIVE"
    r = await cli(run_cli, "sync", "add", "shop", "--tag-key", "app", "--tag-value", "x",
                  "--apply", "a=b", *common)
    assert r.returncode == 2 and "exists already" in r.stderr

    r = await cli(run_cli, "sync", "run", "shop", "--json", *common)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["evaluation"]["matched"], out["evaluation"]["added"]) == (13, 13)
    assert [j["state"] for j in out["jobs"]] == ["completed"]
    assert out["jobs"][0]["name"] == "sync:shop"
    for n in range(30):
        tags = sim.state.tags(arn(n))
        assert tags == ({"app": "shop", **APPLIED} if n < 12 else {"app": "other"}), n
    assert sim.state.tags(arn(99, "eu-west-1")) == {"app": "shop", **APPLIED}

    # One loses the matching tag, one gains it, one's applied tags drift; the next
    # evaluation (in-process, as the daemon runs it) puts each right and nothing else.
    sim.state.put(arn(0), {"team": "web", "cc": "42", "keep": "me"}, account=CALLER)
    sim.state.put(arn(20), {"app": "shop"}, account=CALLER)
    sim.state.put(arn(5), {"app": "shop", "team": "web", "cc": "7"}, account=CALLER)
    before = sim.state.stats["arn_sends"]
    settings = Settings(db=db, endpoint_url=sim.url, backoff_base=0.02, backoff_cap=0.2)
    store = await Store.open(db)
    assert await store.claim_sync_rule("shop") is None  # not due for another minute
    rule = await store.claim_sync_rule("shop", force=True)
    assert rule is not None
    clients = ClientPool(settings)
    ev = await evaluate(store, settings, clients, rule, own_limiters(settings))
    assert (ev.status, ev.matched, ev.added, ev.removed) == ("ACTIVE", 13, 2, 1)
    assert len(ev.jobs) == 2
    assert await Engine(store, settings, owner=new_owner_token(), clients=clients,
                        job_ids=set(ev.jobs)).run()
    assert sim.state.tags(arn(0)) == {"keep": "me"}
    assert sim.state.tags(arn(20)) == {"app": "shop", **APPLIED}
    assert sim.state.tags(arn(5)) == {"app": "shop", **APPLIED}
    after = sim.state.stats["arn_sends"]
    assert after["TagResources"] - before["TagResources"] == 2  # only the new and the drifted
    assert after["UntagResources"] - before.get("UntagResources", 0) == 1
    await store.close()

    r = await cli(run_cli, "sync", "show", "shop", "--json", *common)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["status"], shown["members"], shown["last_added"], shown["last_removed"]) \
        == ("ACTIVE", 13, 2, 1)
    assert shown["last_run_at"] and shown["created_at"] <= shown["last_run_at"]
    r = await cli(run_cli, "sync", "list", "--json", *common)
    assert [x["name"] for x in json.loads(r.stdout)["rules"]] == ["shop"]
    r = await cli(run_cli, "sync", "list", *common)
    assert r.stdout.startswith("shop") and "members 13" in r.stdout

    # Remove with --untag: the applied keys leave every member; the rule is gone.
    r = await cli(run_cli, "sync", "remove", "shop", "--untag", "--json", *common)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["untag_job"]
    r = await cli(run_cli, "run", str(job), "--json", *common)
    assert r.returncode == 0, r.stderr
    assert all(sim.state.tags(arn(n)) == {"app": "shop"} for n in range(1, 12))
    assert sim.state.tags(arn(20)) == {"app": "shop"}
    r = await cli(run_cli, "sync", "list", "--json", *common)
    assert json.loads(r.stdout)["rules"] == []
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM sync_members").fetchone()[0] == 0
    con.close()


async def test_a_refused_role_puts_the_rule_in_error_with_the_reason_and_keeps_members(
    tmp_path: Path, run_cli: Any
) -> None:
    role = f"arn:aws:iam::{REFUSED}:role/bulktag-tagger"
    config = SimConfig(default_account=CALLER, refused_roles=frozenset({role}))
    async with await start_simulator(config) as sim:
        for n in range(5):
            sim.state.put(arn(n), {"app": "shop"}, account=CALLER)
            sim.state.put(f"arn:aws:sqs:us-east-1:{REFUSED}:q-{n}", {"app": "shop"},
                          account=REFUSED)
        db = str(tmp_path / "bulktag.db")
        common = ("--db", db, "--endpoint-url", sim.url, "--role-name", "bulktag-tagger")
        r = await cli(run_cli, "sync", "add", "shop", "--resource-query", json.dumps(
            {"Type": "TAG_FILTERS_1_0", "Query": json.dumps(
                {"ResourceTypeFilters": ["AWS::AllSupported"],
                 "TagFilters": [{"Key": "app", "Values": ["shop"]}]})}),
            "--apply", "team=web", "--regions", "us-east-1",
            "--accounts", f"{CALLER},{REFUSED}", *common)
        assert r.returncode == 0, r.stderr
        r = await cli(run_cli, "sync", "run", "shop", "--json", *common)
        assert r.returncode == 3, r.stderr
        assert json.loads(r.stdout)["evaluation"]["status"] == "ERROR"
        # What could be read is still synced; the refused account is untouched.
        assert all(sim.state.tags(arn(n)) == {"app": "shop", "team": "web"} for n in range(5))
        assert sim.state.tags(f"arn:aws:sqs:us-east-1:{REFUSED}:q-0") == {"app": "shop"}
        r = await cli(run_cli, "sync", "show", "shop", "--json", *common)
        shown = json.loads(r.stdout)
        assert shown["status"] == "ERROR"
        assert f"{REFUSED}/us-east-1" in shown["error"] and role in shown["error"]
        assert shown["members"] == 5

        # The daemon re-evaluates ERROR rules; a member it cannot see is not removed.
        settings = Settings(db=db, endpoint_url=sim.url, role_name="bulktag-tagger")
        sim.state.put(arn(0), {"team": "web"}, account=CALLER)  # lost the match meanwhile
        store = await Store.open(db)
        rule = await store.claim_sync_rule("shop", force=True)
        assert rule is not None
        clients = ClientPool(settings)
        ev = await evaluate(store, settings, clients, rule, own_limiters(settings))
        await clients.close()
        assert (ev.status, ev.removed) == ("ERROR", 0)
        # Once the role is allowed, the rule recovers to ACTIVE and removals resume.
        sim.reconfigure(refused_roles=[])
        clients = ClientPool(settings)
        rule = await store.claim_sync_rule("shop", force=True)
        assert rule is not None
        ev = await evaluate(store, settings, clients, rule, own_limiters(settings))
        assert (ev.status, ev.removed, ev.added) == ("ACTIVE", 1, 5)
        assert await Engine(store, settings, owner=new_owner_token(), clients=clients,
                            job_ids=set(ev.jobs)).run()
        assert sim.state.tags(arn(0)) == {}
        assert sim.state.tags(f"arn:aws:sqs:us-east-1:{REFUSED}:q-0") == {"app": "shop",
                                                                          "team": "web"}
        shown_rule = await store.get_sync_rule("shop")
        assert shown_rule is not None and (shown_rule.status, shown_rule.error) == ("ACTIVE", None)
        await store.close()


async def test_priority_changed_while_a_job_runs_is_served_first(
    tmp_path: Path, run_cli: Any
) -> None:
    async with await start_simulator(SimConfig(enforce_quotas=False)) as sim:
        db = str(tmp_path / "bulktag.db")
        settings = dataclasses.replace(
            Settings(db=db, endpoint_url=sim.url), max_rate=1.0, in_flight_per_shard=1)
        (tmp_path / "slow.txt").write_text("\n".join(arn(n) for n in range(200)))
        (tmp_path / "urgent.txt").write_text("\n".join(arn(n) + "-u" for n in range(40)))
        store = await Store.open(db)
        slow = await submit(store, [str(tmp_path / "slow.txt")], Request("tag", tags={"a": "1"}),
                            options=JobOptions(skip_compliant=False))
        engine = Engine(store, settings, owner=new_owner_token())
        running = asyncio.create_task(engine.run())
        while (await store.counts(slow.job_id))["succeeded"] < 20:
            await asyncio.sleep(0.05)
        urgent = await submit(store, [str(tmp_path / "urgent.txt")],
                              Request("tag", tags={"a": "1"}), options=JobOptions(skip_compliant=False))
        r = await cli(run_cli, "priority", str(urgent.job_id), "10", "--json", "--db", db)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["job"], out["priority"], out["was"]) == (urgent.job_id, 10, 0)
        job = await store.get_job(urgent.job_id)
        assert job is not None and job.priority == 10
        while (await store.counts(urgent.job_id))["succeeded"] < 40:
            await asyncio.sleep(0.05)
        # The urgent job finished while most of the slow one was still waiting.
        assert (await store.counts(slow.job_id))["pending"] > 60
        engine.request_stop()
        await running
        r = await cli(run_cli, "priority", "999", "1", "--db", db)
        assert r.returncode == 2 and "no job 999" in r.stderr
        await store.close()
