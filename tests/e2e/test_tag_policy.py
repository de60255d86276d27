"""Tag policies (issue 23, first part): the accounts' effective policies are read through
Organizations' DescribeEffectivePolicy with each account's credentials, and a tag they enforce
against is never sent. Through the CLI against the simulator in another process, which answers
DescribeEffectivePolicy from its config and refuses noncompliant tags on enforced types inside
TagResources' FailedResourcesMap, as AWS does (its own reading of the policy, not bulktag's).

The policy of the issue: `costcenter` → `CostCenter` with values 100, 200, 300* enforced for
dynamodb:table, and `env` → `Env` with prod, dev, test (enforced nowhere)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulktag.sim import synthetic_arns
from tests.support.cli import CliRunner
from tests.support.sim import sim_get, sim_tags, simulator_process

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"
POLICY = {"tags": {
    "costcenter": {"tag_key": {"@@assign": "CostCenter"},
                   "tag_value": {"@@assign": ["100", "200", "300*"]},
                   "enforced_for": {"@@assign": ["dynamodb:table"]}},
    "env": {"tag_key": {"@@assign": "Env"}, "tag_value": {"@@assign": ["prod", "dev", "test"]}},
}}


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policy = tmp_path_factory.mktemp("policy") / "policy.json"
    policy.write_text(json.dumps(POLICY))
    with simulator_process("--tag-policy", f"{ACCOUNT}={policy}") as url:
        yield url


def arns_of(service: str, n: int = 40) -> list[str]:
    return [a for a in synthetic_arns([ACCOUNT], ["us-east-1"], n * 8)
            if f":{service}:" in a][:n]


def tag_calls(url: str) -> int:
    stats: dict[str, Any] = sim_get(url, "/_sim/stats")
    return int(stats["requests"].get("TagResources", 0))


def test_a_tag_the_policy_refuses_on_enforced_tables_is_refused_before_any_call(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    tables = arns_of("dynamodb")
    source = tmp_path / "tables.txt"
    source.write_text("\n".join(tables) + "\n")
    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim_url]
    before = tag_calls(sim_url)
    refused = run_cli("tag", "--arns", str(source), "--tag", "CostCenter=555", *common)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "carry tags their account's tag policy refuses" in refused.stderr
    assert "CostCenter='555' is not allowed by the tag policy (allowed: '100', '200', " \
           "'300*')" in refused.stderr
    assert "(dynamodb:table)" in refused.stderr and "--allow-noncompliant" in refused.stderr
    assert tag_calls(sim_url) == before  # not one call
    wrong_case = run_cli("tag", "--arns", str(source), "--tag", "costcenter=100", *common)
    assert wrong_case.returncode == 2 and "should be 'CostCenter'" in wrong_case.stderr
    assert json.loads(run_cli("jobs", "--json", "--db", str(tmp_path / "s.db")).stdout)[
        "jobs"] == []  # nothing was enqueued
    planned = run_cli("tag", "--arns", str(source), "--tag", "CostCenter=555", "--dry-run",
                      *common)  # the plan refuses it alike
    assert planned.returncode == 2 and "tag policy refuses" in planned.stderr
    assert tag_calls(sim_url) == before

    # Allowed values (a wildcard one too) go through.
    ok = run_cli("tag", "--arns", str(source), "--tag", "CostCenter=3001", "--json", *common)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert all(sim_tags(sim_url, a)["CostCenter"] == "3001" for a in tables)

    # --allow-noncompliant sends anyway: AWS (the simulator) refuses each table itself.
    sent = run_cli("tag", "--arns", str(source), "--tag", "CostCenter=556",
                   "--allow-noncompliant", "--json", "--failure-ratio", "1", *common)
    assert sent.returncode == 3, sent.stderr[-2000:]
    (job,) = json.loads(sent.stdout)["jobs"]
    assert job["counts"]["failed"] == len(tables)
    assert job["top_errors"][0]["code"] == "TagPolicyViolation"
    assert all(sim_tags(sim_url, a)["CostCenter"] == "3001" for a in tables)  # unchanged


def test_a_detached_job_is_checked_by_the_worker_and_unenforced_types_are_tagged(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    tables, functions = arns_of("dynamodb", 20), arns_of("lambda", 20)
    source = tmp_path / "mixed.txt"
    source.write_text("\n".join(tables + functions) + "\n")
    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim_url]
    submitted = run_cli("tag", "--detach", "--arns", str(source), "--tag", "CostCenter=777",
                        "--failure-ratio", "1", *common)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    before = tag_calls(sim_url)
    ran = run_cli("run", "--json", *common)
    assert ran.returncode == 3, ran.stderr[-2000:]
    (job,) = json.loads(ran.stdout)["jobs"]
    assert job["counts"]["failed"] == len(tables) and job["counts"]["succeeded"] == 20, job
    assert job["top_errors"][0]["code"] == "TagPolicyViolation"
    assert "refused before sending" in job["top_errors"][0]["example_message"]
    # the functions' one call (20 ARNs); no call carried a table
    assert tag_calls(sim_url) - before == 1
    assert all(sim_tags(sim_url, f)["CostCenter"] == "777" for f in functions)


def test_policy_show_prints_each_accounts_rules(sim_url: str, run_cli: CliRunner) -> None:
    common = ["--endpoint-url", sim_url]
    shown = run_cli("policy", "show", "--accounts", ACCOUNT, "--json", *common)
    assert shown.returncode == 0, shown.stderr[-2000:]
    rules = json.loads(shown.stdout)["accounts"][ACCOUNT]["rules"]
    assert rules["costcenter"] == {"tag_key": "CostCenter", "values": ["100", "200", "300*"],
                                   "enforced_for": ["dynamodb:table"]}
    assert rules["env"]["tag_key"] == "Env" and rules["env"]["enforced_for"] == []
    table = run_cli("policy", "show", *common).stdout.splitlines()
    assert table[0].split()[:3] == ["account", "tag", "key"]
    assert any(line.split()[:3] == ["(caller)", "CostCenter", "dynamodb:table"]
               for line in table), table
    other = run_cli("policy", "show", "--accounts", "222222222222", "--json", *common)
    assert json.loads(other.stdout)["accounts"]["222222222222"] == {"rules": {}}  # none


def test_compliance_sums_what_get_compliance_summary_reports(
        tmp_path: Path, run_cli: CliRunner) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    with simulator_process("--tag-policy", f"{ACCOUNT}={policy}") as url:
        functions = arns_of("lambda", 30)
        queues = arns_of("sqs", 10)
        source = tmp_path / "fns.csv"
        rows = ["arn,tag:costcenter,tag:Env"]  # wrong key case; a value Env does not allow
        rows += [f"{a},100,prod" for a in functions[:10]]  # noncompliant key
        rows += [f"{a},,staging" for a in functions[10:20]]  # noncompliant value
        rows += [f"{a},,prod" for a in functions[20:] + queues]  # compliant
        source.write_text("\n".join(rows).replace(",,", ",(not tagged),") + "\n")
        common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", url]
        tagged = run_cli("tag", "--arns", str(source), "--allow-noncompliant", *common)
        assert tagged.returncode == 0, tagged.stderr[-2000:]

        out = run_cli("compliance", "--json", "--endpoint-url", url)
        assert out.returncode == 0, out.stderr[-2000:]
        groups = json.loads(out.stdout)
        assert groups == [{"account": ACCOUNT, "region": "us-east-1",
                           "resource_type": "lambda:function", "noncompliant": 20}]
        by_region = json.loads(run_cli("compliance", "--group-by", "region", "--json",
                                       "--endpoint-url", url).stdout)
        assert by_region == [{"account": None, "region": "us-east-1", "resource_type": None,
                              "noncompliant": 20}]
        table = run_cli("compliance", "--endpoint-url", url).stdout
        assert "total noncompliant: 20" in table

        # Another account's credentials: not the management account, said so.
        other = run_cli("compliance", "--endpoint-url", url,
                        env={"AWS_ACCESS_KEY_ID": "sim-222222222222-key"})
        assert other.returncode == 2
        assert "only the organization's management account, in us-east-1" in other.stderr


def test_a_transform_plan_and_run_refuse_what_the_policy_enforces_without_a_call(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    tables = arns_of("dynamodb", 10)
    source = tmp_path / "tables.txt"
    source.write_text("\n".join(tables) + "\n")
    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim_url]
    ok = run_cli("tag", "--arns", str(source), "--tag", "CostCenter=100", *common)
    assert ok.returncode == 0, ok.stderr[-2000:]
    mapping = ["transform", "--arns", str(source), "--map-value", "CostCenter:100=555"]
    planned = run_cli(*mapping, "--dry-run", "--json", *common)
    assert planned.returncode == 2, planned.stderr[-2000:]
    plan = json.loads(planned.stdout)
    assert plan["refused"] == {"TagPolicyViolation": len(tables)} and plan["change"] == 0
    assert "CostCenter='555' is not allowed" in plan["refusals"][0]["reason"]
    before = tag_calls(sim_url)
    ran = run_cli(*mapping, "--json", "--failure-ratio", "1", *common)
    assert ran.returncode == 3, ran.stderr[-2000:]
    (job,) = json.loads(ran.stdout)["jobs"]
    assert job["counts"]["failed"] == len(tables)
    assert job["top_errors"][0]["code"] == "TagPolicyViolation"
    assert tag_calls(sim_url) == before  # refused before sending: not one call
    assert all(sim_tags(sim_url, a)["CostCenter"] == "100" for a in tables)
