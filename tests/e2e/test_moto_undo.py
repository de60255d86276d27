"""Undo and guardrails (issue 13) through the CLI against moto's server, a Tagging API we did not
write: log groups with varied prior tags are tagged, undone back to exactly what they had, the
undo undone, a value another client changed is left alone and restored with --force; an untag
is undone; a case conflict and the 50-tag limit are refused per item and counted by the plan.
Tags are read back through CloudWatch Logs' own API. The log groups are this module's own, so
the shared server's other tests are not disturbed (see test_moto.py for moto's quirks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliRunner
from tests.support.moto import ACCOUNT, Cli, Moto, ec2_actions, log_groups

pytestmark = pytest.mark.slow

REGION = "us-east-1"


groups = log_groups


def state(moto: Moto, arns: dict[str, str]) -> dict[str, dict[str, str]]:
    return {name: moto.tags(arn) for name, arn in arns.items()}


def source(tmp_path: Path, arns: dict[str, str], name: str = "arns.txt") -> str:
    path = tmp_path / name
    path.write_text("\n".join(arns.values()) + "\n")
    return str(path)


def job_of(result: Any) -> int:
    (st,) = result["jobs"]
    return int(st["job"])


@pytest.fixture
def cli(run_cli: CliRunner, moto: Moto, tmp_path: Path) -> Cli:
    return UndoCli(run_cli, moto, tmp_path / "state" / "bulktag.db")


class UndoCli(Cli):
    def __call__(self, *args: str) -> Any:
        extra = ["--db", str(self.db)]
        if args[0] in ("tag", "untag", "run", "undo"):
            extra += ["--endpoint-url", self.moto.url, "--log-format", "json"]
        return self.run_cli(*args, *extra, timeout=60)


def test_tag_undo_undo_of_undo_changed_since_and_force(cli: Cli, moto: Moto,
                                                       tmp_path: Path) -> None:
    prior = {"absent": {"keep": "1"}, "same": {"owner": "new", "keep": "2"},
             "other": {"owner": "old", "team": "y"}, "none": {}}
    arns = groups(moto, "u13a", prior)
    src = source(tmp_path, arns)
    tag = cli.json("tag", "--arns", src, "--tag", "owner=new", "--tag", "team=x")
    job = job_of(tag)
    result = state(moto, arns)
    assert result == {n: {**t, "owner": "new", "team": "x"} for n, t in prior.items()}
    report = cli.report(job)
    assert report[arns["other"]]["before"] == {"owner": "old", "team": "y"}
    assert report[arns["same"]]["before"] == {"team": None}

    undo = job_of(cli.json("undo", str(job)))
    assert state(moto, arns) == prior
    again = job_of(cli.json("undo", str(undo)))  # undo of the undo: the job's result
    assert again == undo + 1
    assert state(moto, arns) == result

    moto.client("logs", REGION).tag_resource(resourceArn=arns["other"],
                                             tags={"owner": "someone"})
    partial = cli.json("undo", str(job))
    (st,) = partial["jobs"]
    assert st["counts"]["skipped"] == 1 and st["counts"]["succeeded"] == 3
    row = cli.report(job_of(partial))[arns["other"]]
    assert row["status"] == "skipped" and row["error_code"] == "ChangedSince"
    assert f"changed since job {job}: owner is 'someone', job {job} set 'new'" in row["message"]
    assert moto.tags(arns["other"]) == {"owner": "someone", "team": "x"}
    assert {n: t for n, t in state(moto, arns).items() if n != "other"} == \
        {n: t for n, t in prior.items() if n != "other"}

    cli.json("undo", str(job), "--force")
    assert state(moto, arns) == prior


def test_untag_then_undo_restores_the_removed_values(cli: Cli, moto: Moto,
                                                     tmp_path: Path) -> None:
    prior = {"both": {"owner": "ann", "cost": "c1", "keep": "k"}, "one": {"owner": "bob"},
             "neither": {"keep": "k2"}}
    arns = groups(moto, "u13u", prior)
    job = job_of(cli.json("untag", "--arns", source(tmp_path, arns), "--key", "owner",
                          "--key", "cost"))
    assert state(moto, arns) == {"both": {"keep": "k"}, "one": {}, "neither": {"keep": "k2"}}
    cli.json("undo", str(job))
    assert state(moto, arns) == prior


def test_case_conflict_and_tag_limit_are_refused_per_item_and_planned(
    cli: Cli, moto: Moto, tmp_path: Path,
) -> None:
    prior = {"lower": {"Owner": "someone"}, "full": {f"k{n}": "v" for n in range(50)},
             "fine": {"keep": "1"}}
    arns = groups(moto, "u13g", prior)
    src = source(tmp_path, arns)
    plan = cli.json("tag", "--arns", src, "--tag", "owner=me", "--dry-run")
    assert plan["refused"] == {"CaseConflict": 1, "TagLimitExceeded": 1}
    assert (plan["change"], plan["skip"], plan["fail"]) == (1, 1, 1)
    assert plan["shards"][0]["refused"] == {"CaseConflict": 1, "TagLimitExceeded": 1}
    reasons = {r["arn"]: r["reason"] for r in plan["refusals"]}
    assert reasons[arns["full"]] == "would have 51 tags (limit 50)"

    moto.start_recording()
    result = cli.json("tag", "--arns", src, "--tag", "owner=me", code=3)
    ops = moto.stop_recording()
    assert ops.count("TagResources") == 1  # the one resource that passed
    report = cli.report(job_of(result))
    assert report[arns["lower"]]["status"] == "skipped"
    assert "'owner' differs only in case from the resource's 'Owner'" in \
        report[arns["lower"]]["message"]
    assert (report[arns["full"]]["status"], report[arns["full"]]["message"]) == \
        ("failed", "would have 51 tags (limit 50)")
    assert state(moto, arns) == {**prior, "fine": {"keep": "1", "owner": "me"}}

    applied = cli.json("tag", "--arns", source(tmp_path, {"lower": arns["lower"]}, "l.txt"),
                       "--tag", "owner=me", "--case-conflict", "apply")
    assert applied["jobs"][0]["counts"]["succeeded"] == 1
    assert moto.tags(arns["lower"]) == {"Owner": "someone", "owner": "me"}
    assert json.dumps(plan)  # the plan is JSON all through


def test_ec2_route_is_undone_through_create_and_delete_tags(cli: Cli, moto: Moto,
                                                            tmp_path: Path) -> None:
    ec2 = moto.client("ec2", REGION)
    vols = [ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
            for _ in range(4)]
    ec2.create_tags(Resources=vols[:2], Tags=[{"Key": "u13e", "Value": "old"}])
    arns = {v: f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/{v}" for v in vols}

    def tags() -> dict[str, dict[str, str]]:
        found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": vols}])["Tags"]
        out: dict[str, dict[str, str]] = {v: {} for v in vols}
        for t in found:
            out[t["ResourceId"]][t["Key"]] = t["Value"]
        return out

    prior = tags()
    src = source(tmp_path, arns)
    job = job_of(cli.json("tag", "--arns", src, "--tag", "u13e=new", "--tag", "u13f=x",
                          "--route", "auto"))
    assert all(t == {"u13e": "new", "u13f": "x"} for t in tags().values())
    assert {r["route"] for r in cli.report(job).values()} == {"ec2"}
    moto.start_recording()
    undo = job_of(cli.json("undo", str(job)))
    actions = ec2_actions(moto)
    assert tags() == prior
    assert "CreateTags" in actions and "DeleteTags" in actions  # restore and remove
    assert {r["route"] for r in cli.report(undo).values()} == {"ec2"}
