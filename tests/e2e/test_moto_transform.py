"""Transforms through the CLI against moto's server, a Tagging API we did not write: a rename
with a conflict and a resource without the key, a key-case fix and a value map on log groups
(tags read back through CloudWatch Logs' own API), then undo; and a rename on EC2 volumes by
the EC2 route (CreateTags, then DeleteTags), undone. The resources are this module's own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cli import CliRunner
from tests.support.moto import ACCOUNT, Cli, Moto, ec2_actions, job_of, log_groups

pytestmark = pytest.mark.slow

REGION = "us-east-1"


class TransformCli(Cli):
    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        extra = ["--db", str(self.db)]
        if args[0] in ("transform", "rename", "undo", "run"):
            extra += ["--endpoint-url", self.moto.url, "--log-format", "json"]
        return self.run_cli(*args, *extra, timeout=60)


@pytest.fixture
def cli(run_cli: CliRunner, moto: Moto, tmp_path: Path) -> Cli:
    return TransformCli(run_cli, moto, tmp_path / "state" / "bulktag.db")


def test_rename_key_case_and_map_on_log_groups_then_undo(cli: Cli, moto: Moto,
                                                         tmp_path: Path) -> None:
    prior = {"plain": {"cost-center": "a1", "keep": "1"},
             "clash": {"cost-center": "a2", "CostCenter": "zz"},
             "none": {"keep": "2"},
             "cases": {"TEAM": "Old-Team"}}
    arns = log_groups(moto, "t22", prior)
    src = tmp_path / "arns.txt"
    src.write_text("\n".join(arns.values()) + "\n")
    job = job_of(cli.json("transform", "--arns", str(src),
                          "--rename", "cost-center=CostCenter", "--key-case", "team=Team",
                          "--map-value", "Team:Old-Team=new-team"))
    now = {n: moto.tags(a) for n, a in arns.items()}
    assert now == {"plain": {"CostCenter": "a1", "keep": "1"},
                   "clash": prior["clash"],  # a conflict: left alone
                   "none": prior["none"],
                   "cases": {"Team": "new-team"}}
    report = cli.report(job)
    assert report[arns["clash"]]["status"] == "skipped"
    assert "CostCenter is 'zz'" in report[arns["clash"]]["message"]
    assert report[arns["none"]]["status"] == "skipped"
    cli.json("undo", str(job))
    assert {n: moto.tags(a) for n, a in arns.items()} == prior


def test_rename_by_the_ec2_route_then_undo(cli: Cli, moto: Moto, tmp_path: Path) -> None:
    ec2 = moto.client("ec2", REGION)
    vols = [ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
            for _ in range(3)]
    ec2.create_tags(Resources=vols, Tags=[{"Key": "t22-env", "Value": "Prod"}])

    def tags() -> dict[str, dict[str, str]]:
        found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": vols}])["Tags"]
        out: dict[str, dict[str, str]] = {v: {} for v in vols}
        for t in found:
            out[t["ResourceId"]][t["Key"]] = t["Value"]
        return out

    prior = tags()
    src = tmp_path / "vols.txt"
    src.write_text("".join(f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/{v}\n" for v in vols))
    moto.start_recording()
    job = job_of(cli.json("transform", "--arns", str(src), "--rename", "t22-env=T22Env",
                          "--value-case", "T22Env=lower", "--route", "auto"))
    actions = ec2_actions(moto)
    assert all(t == {"T22Env": "prod"} for t in tags().values())
    assert actions.index("CreateTags") < actions.index("DeleteTags")  # set, then remove
    assert {r["route"] for r in cli.report(job).values()} == {"ec2"}
    cli.json("undo", str(job))
    assert tags() == prior
