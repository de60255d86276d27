"""Interop: the CLI against moto's server, a Tagging API implementation we did not write.

A module-scoped `python -m moto.server` on a random 127.0.0.1 port holds real resources made
with boto3 -- Lambda functions, DynamoDB tables and CloudWatch Logs log groups in two regions,
some tagged env=prod, some env=dev, some untagged -- and every check reads tags back through
the owning service's own API (lambda ListTags, dynamodb ListTagsOfResource, logs
ListTagsForResource / ListTagsLogGroup), not only through GetResources.

What moto (5.2.x, moto/resourcegroupstaggingapi/models.py) supports, and so what is tested:
- TagResources / UntagResources / GetResources for lambda:function, dynamodb:table and
  logs:loggroup (their backends mix in TaggableResourcesMixin with tag_resource/untag_resource).
- An ARN of a service without that support is answered with FailedResourcesMap
  {ErrorCode: InternalServiceException, StatusCode: 404, "Service not yet supported"}; the
  last test checks that bulktag records exactly that failure.
Known moto quirks that the tests steer around (they are moto's, not bulktag's):
- GetResources never returns a resource that has no tags at all (real AWS returns "tagged or
  previously tagged" ones). bulktag must treat an ARN missing from a ResourceARNList answer
  as "no tags".
- dynamodb's tag_resource appends to the table's tag list, so re-tagging an existing key with a
  new value leaves both values; drift is therefore made on a Lambda function.
Requests are counted with moto's recorder (`/moto-api/recorder/*`), which logs every request
it serves with its headers (X-Amz-Target names the Tagging API operation). That the resources
are there with their initial tags, in-process: tests/integration/test_moto.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import CliRunner
from tests.support.moto import REGIONS, UNSUPPORTED_ARN, Cli, Moto, job_of

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(run_cli: CliRunner, moto: Moto, tmp_path: Path) -> Cli:
    return Cli(run_cli, moto, tmp_path / "state" / "bulktag.db")


def _env_and(moto: Moto, arn: str, *keys: str) -> dict[str, str]:
    """The resource's env tag and the given keys (other tests' keys left out, so the tests
    sharing the module's server do not depend on their order)."""
    return {k: v for k, v in moto.tags(arn).items() if k == "env" or k in keys}


def _env(moto: Moto, name: str) -> dict[str, str]:
    return {"env": moto.env[name]} if moto.env[name] else {}


def test_file_flow_tags_then_untags_every_resource_through_the_service_apis(
    cli: Cli, moto: Moto, tmp_path: Path
) -> None:
    arns = sorted(moto.arns.values())
    src = tmp_path / "arns.txt"
    src.write_text("\n".join(arns) + "\n")

    result = cli.json("tag", "--arns", str(src), "--tag", "team=platform")
    job = job_of(result)
    (st,) = result["jobs"]
    assert st["state"] == "completed"
    assert st["counts"]["succeeded"] == len(arns) and st["counts"]["failed"] == 0
    for name, arn in moto.arns.items():
        assert _env_and(moto, arn, "team") == {**_env(moto, name), "team": "platform"}, name
    assert {r["status"] for r in cli.report(job).values()} == {"succeeded"}

    result = cli.json("untag", "--arns", str(src), "--key", "team")
    (st,) = result["jobs"]
    assert st["state"] == "completed" and st["counts"]["succeeded"] == len(arns), st
    for name, arn in moto.arns.items():
        assert _env_and(moto, arn, "team") == _env(moto, name), name


def test_query_flow_tags_exactly_the_matching_resources_and_a_rerun_sends_nothing(
    cli: Cli, moto: Moto
) -> None:
    query = ("--match-tag", "env=prod", "--regions", ",".join(REGIONS))
    prod = {moto.arns[n] for n, env in moto.env.items() if env == "prod"}
    assert len(prod) == 3 * len(REGIONS)

    moto.start_recording()
    result = cli.json("tag", *query, "--tag", "owner=x")
    ops = moto.stop_recording()
    job = job_of(result)
    (st,) = result["jobs"]
    assert st["state"] == "completed", st
    assert st["counts"]["succeeded"] == len(prod) and st["total"] == len(prod), st
    assert ops.count("TagResources") >= len(REGIONS)  # one shard per region at least
    for name, arn in moto.arns.items():
        tags = _env_and(moto, arn, "owner")
        if arn in prod:
            assert tags == {"env": "prod", "owner": "x"}, name
        else:
            assert "owner" not in tags, name
    assert set(cli.report(job)) == prod

    # The same query again: everything already carries owner=x, so no TagResources call.
    moto.start_recording()
    result = cli.json("tag", *query, "--tag", "owner=x")
    ops = moto.stop_recording()
    rerun = job_of(result)
    assert rerun != job
    st = cli.json("status", str(rerun))
    assert st["state"] == "completed", st
    assert st["total"] == len(prod) and st["counts"]["skipped"] == len(prod), st
    report = cli.report(rerun)
    assert set(report) == prod and {r["status"] for r in report.values()} == {"skipped"}
    assert "TagResources" not in ops, ops
    assert "GetResources" in ops, ops  # discovery and the compliance read did happen

    # verify: nothing drifted; then change a value behind bulktag's back.
    verified = cli.json("verify", str(job))
    assert (verified["checked"], verified["drifted"], verified["unreadable"]) == (len(prod), 0, 0)
    victim = moto.arns["fn-prod-eu-west-1"]
    moto.client("lambda", "eu-west-1").tag_resource(Resource=victim, Tags={"owner": "y"})
    assert moto.tags(victim)["owner"] == "y"
    verified = cli.json("verify", str(job), code=3)
    assert (verified["checked"], verified["drifted"]) == (len(prod), 1), verified
    (row,) = verified["drift"]
    assert row["arn"] == victim and row["region"] == "eu-west-1" and "owner" in row["drift"]
    proc = cli("verify", str(job))
    assert proc.returncode == 3 and victim in proc.stdout


def test_unsupported_service_arn_fails_with_motos_error_and_the_rest_succeed(
    cli: Cli, moto: Moto, tmp_path: Path
) -> None:
    """moto answers TagResources for a service it cannot tag with FailedResourcesMap
    {InternalServiceException, 404, "Service not yet supported"}; bulktag retries that code
    as transient, then fails the item with it while the supported ARN in the batch succeeds."""
    good = moto.arns["/bulktag/lg-dev-us-east-1"]
    src = tmp_path / "arns.txt"
    src.write_text(f"{good}\n{UNSUPPORTED_ARN}\n")
    result = cli.json("tag", "--arns", str(src), "--tag", "probe=1", "--max-attempts", "2",
                      "--no-skip-compliant", code=3)
    job = job_of(result)
    (st,) = result["jobs"]
    assert (st["counts"]["succeeded"], st["counts"]["failed"]) == (1, 1), st
    report = cli.report(job)
    assert report[good]["status"] == "succeeded"
    bad = report[UNSUPPORTED_ARN]
    assert bad["status"] == "failed" and bad["error_code"] == "InternalServiceException", bad
    assert "not yet supported" in (bad["message"] or ""), bad
    assert _env_and(moto, good, "probe") == {"env": "dev", "probe": "1"}
    moto.client("logs", "us-east-1").untag_resource(resourceArn=good, tagKeys=["probe"])
