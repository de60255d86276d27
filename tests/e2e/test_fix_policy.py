"""`bulktag fix-policy` and the compliance report (issue 23, done-when): two accounts (one
through a role) × two regions under the issue's policy (`costcenter` → `CostCenter` with 100, 200,
300* enforced for dynamodb:table; `env` → `Env` with prod, dev, test). Each resource's tags come
from a cycle of eight kinds; the fix renames keys to the policy's case and sets values that match
one allowed value but for case, leaves what needs a decision alone (skipped, `needs-decision`),
and sends no call the policy refuses. `bulktag compliance --json` sums to the simulator's own
GetComplianceSummary before and after. Through the CLI against the simulator in another process
(its reading of the policy is its own, not bulktag's)."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from bulktag.sim import synthetic_arns
from tests.support.cli import CliRunner
from tests.support.sim import sim_get, sim_post, sim_tags, simulator_process

pytestmark = pytest.mark.slow

CALLER, OTHER = "123456789012", "222222222222"
REGIONS = ["us-east-1", "eu-west-1"]
PER_REGION = 48
POLICY = {"tags": {
    "costcenter": {"tag_key": {"@@assign": "CostCenter"},
                   "tag_value": {"@@assign": ["100", "200", "300*"]},
                   "enforced_for": {"@@assign": ["dynamodb:table"]}},
    "env": {"tag_key": {"@@assign": "Env"}, "tag_value": {"@@assign": ["prod", "dev", "test"]}},
}}
#: (tags a resource has, what the fix leaves: None = the same, untouched)
KINDS: list[tuple[dict[str, str], dict[str, str] | None]] = [
    ({"costcenter": "100", "env": "Prod"}, {"CostCenter": "100", "Env": "prod"}),
    ({"CostCenter": "300a", "Env": "dev"}, None),  # compliant (a wildcard value)
    ({"costcenter": "999", "env": "dev"}, None),  # 999 is no allowed value: a decision
    ({"COSTCENTER": "200", "Owner": "ops"}, {"CostCenter": "200", "Owner": "ops"}),
    ({"Env": "PROD"}, {"Env": "prod"}),
    ({"env": "staging"}, None),  # not allowed, matches nothing: a decision
    ({"costcenter": "100", "CostCenter": "200"}, None),  # two values: a decision
    ({"Owner": "x"}, None),  # no key of the policy
]
NONCOMPLIANT_BEFORE = {0, 2, 3, 4, 5, 6}
NEEDS_DECISION = {2, 5, 6}


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policy = tmp_path_factory.mktemp("policy") / "policy.json"
    policy.write_text(json.dumps(POLICY))
    with simulator_process("--tag-policy", f"{CALLER}={policy}",
                           "--tag-policy", f"{OTHER}={policy}") as url:
        added = sim_post(url, "/_sim/seed", {"accounts": [CALLER, OTHER], "regions": REGIONS,
                                         "per_region": PER_REGION,
                                         "tag_sets": [tags for tags, _ in KINDS]})
        assert added["added"] == 2 * len(REGIONS) * PER_REGION
        yield url


def kinds() -> dict[str, int]:
    """ARN -> its kind (the seed's order: the n-th resource has KINDS[n % 8])."""
    arns = synthetic_arns([CALLER, OTHER], REGIONS, PER_REGION)
    return {arn: n % len(KINDS) for n, arn in enumerate(arns)}


def their_summary(url: str) -> int:
    """Noncompliant resources as the simulator's own GetComplianceSummary counts them."""
    client = botocore.session.get_session().create_client(
        "resourcegroupstaggingapi", region_name="us-east-1", endpoint_url=url,
        aws_access_key_id="testing", aws_secret_access_key="testing")
    rows = client.get_compliance_summary(GroupBy=["TARGET_ID", "REGION", "RESOURCE_TYPE"])
    return sum(int(r["NonCompliantResources"]) for r in rows["SummaryList"])


def our_summary(run_cli: CliRunner, url: str) -> list[dict[str, Any]]:
    done = run_cli("compliance", "--json", "--endpoint-url", url)
    assert done.returncode == 0, done.stderr[-2000:]
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    assert rows and all(set(r) == {"account", "region", "resource_type", "noncompliant"}
                        for r in rows)
    return rows


def test_fix_policy_fixes_what_has_one_answer_and_leaves_the_rest(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    by_arn = kinds()
    expect_before = sum(1 for k in by_arn.values() if k in NONCOMPLIANT_BEFORE)
    rows = our_summary(run_cli, sim_url)
    assert sum(r["noncompliant"] for r in rows) == their_summary(sim_url) == expect_before
    assert {r["account"] for r in rows} == {CALLER, OTHER}

    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim_url]
    where = ["--accounts", f"{CALLER},{OTHER}", "--regions", ",".join(REGIONS),
             "--role-name", "Tagger"]
    planned = run_cli("fix-policy", *where, "--dry-run", "--json", *common)
    assert planned.returncode == 0, planned.stderr[-2000:]
    plan = json.loads(planned.stdout)
    changing = sum(1 for k in by_arn.values() if k in NONCOMPLIANT_BEFORE - NEEDS_DECISION)
    assert plan["change"] == changing, plan
    assert plan["refused"].get("needs-decision") == \
        sum(1 for k in by_arn.values() if k in NEEDS_DECISION)
    stats: Any = sim_get(sim_url, "/_sim/stats")
    assert stats["requests"].get("TagResources", 0) == 0  # the plan sent nothing

    ran = run_cli("fix-policy", *where, "--json", *common)
    assert ran.returncode == 0, ran.stderr[-2000:]
    (job,) = json.loads(ran.stdout)["jobs"]
    assert job["counts"]["failed"] == 0, job  # not one call the policy refused
    assert job["counts"]["succeeded"] == changing, job
    for arn, kind in by_arn.items():
        tags, fixed = KINDS[kind]
        assert sim_tags(sim_url, arn) == (fixed or tags), (arn, kind)

    report = run_cli("report", str(job["job"]), "--format", "jsonl", "--db",
                     str(tmp_path / "s.db"))
    assert report.returncode == 0, report.stderr[-2000:]
    skipped = [json.loads(line) for line in report.stdout.splitlines()
               if json.loads(line)["status"] == "skipped"]
    assert {r["error_code"] for r in skipped} == {"needs-decision"}
    assert len(skipped) == sum(1 for k in by_arn.values() if k in NEEDS_DECISION)
    assert any("'999' is not an allowed value" in r["message"] for r in skipped)

    rows = our_summary(run_cli, sim_url)
    expect_after = sum(1 for k in by_arn.values() if k in NEEDS_DECISION)
    assert sum(r["noncompliant"] for r in rows) == their_summary(sim_url) == expect_after

    verified = run_cli("verify", str(job["job"]), "--json", *common)
    assert verified.returncode == 0, verified.stderr[-2000:]
    assert json.loads(verified.stdout)["checked"] == changing

    # Undo puts every resource back as it was, without reading the policy again.
    undone = run_cli("undo", str(job["job"]), "--json", *common)
    assert undone.returncode == 0, undone.stderr[-2000:]
    for arn, kind in by_arn.items():
        assert sim_tags(sim_url, arn) == KINDS[kind][0], (arn, kind)
    assert their_summary(sim_url) == expect_before
    drifted = run_cli("verify", str(job["job"]), "--json", *common)
    assert drifted.returncode == 3  # the policy would fix them again
    assert json.loads(drifted.stdout)["drifted"] == changing

    # --map-value decides the values the policy leaves open; a resource with two values for
    # one key still needs a person.
    mapped = run_cli("fix-policy", *where, "--map-value", "costcenter:999=300-x",
                     "--map-value", "Env:staging=test", "--json", *common)
    assert mapped.returncode == 0, mapped.stderr[-2000:]
    for arn, kind in by_arn.items():
        now = sim_tags(sim_url, arn)
        if kind == 2:
            assert now == {"CostCenter": "300-x", "Env": "dev"}
        elif kind == 5:
            assert now == {"Env": "test"}
        elif kind == 6:
            assert now == KINDS[6][0]
    assert their_summary(sim_url) == sum(1 for k in by_arn.values() if k == 6)


def test_compliance_report_is_started_followed_and_located(
        sim_url: str, run_cli: CliRunner) -> None:
    common = ["--endpoint-url", sim_url]
    done = run_cli("compliance", "--report-bucket", "org-reports", "--wait", "--json", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads(done.stdout)
    assert status["status"] == "SUCCEEDED"
    assert status["location"].startswith("s3://org-reports/AwsTagPolicies/")
    assert status["location"].endswith("/report.csv")
    with urllib.request.urlopen(sim_url + "/_sim/report", timeout=10) as resp:
        rows = list(csv.DictReader(io.StringIO(resp.read().decode())))
    assert sum(r["ComplianceStatus"] == "false" for r in rows) == their_summary(sim_url)

    shown = run_cli("compliance", "--report-status", *common)
    assert shown.returncode == 0 and status["location"] in shown.stdout

    sim_post(sim_url, "/_sim/config", {"report_denied_buckets": ["locked-bucket"]})
    failed = run_cli("compliance", "--report-bucket", "locked-bucket", "--wait", *common)
    assert failed.returncode == 3, failed.stderr[-2000:]
    assert "the report failed" in failed.stdout and "locked-bucket" in failed.stdout

    bad = run_cli("compliance", "--report-bucket", "Bad_Bucket", *common)
    assert bad.returncode == 2 and "S3Bucket" in bad.stderr
    elsewhere = run_cli("compliance", "--report-status", *common,
                        env={"AWS_ACCESS_KEY_ID": f"sim-{OTHER}-key"})
    assert elsewhere.returncode == 2
    assert "management account" in elsewhere.stderr and "Traceback" not in elsewhere.stderr
