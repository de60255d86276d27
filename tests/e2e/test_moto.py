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
it serves with its headers (X-Amz-Target names the Tagging API operation).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import CliRunner

pytestmark = pytest.mark.slow

REGIONS = ("us-east-1", "eu-west-1")
ACCOUNT = "123456789012"  # moto's default account
UNSUPPORTED_ARN = f"arn:aws:cloud9:us-east-1:{ACCOUNT}:environment/0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Moto:
    url: str
    recording: Path
    arns: dict[str, str] = field(default_factory=dict)  # name -> ARN
    env: dict[str, str] = field(default_factory=dict)  # name -> its env tag ("" untagged)

    def client(self, service: str, region: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def tags(self, arn: str) -> dict[str, str]:
        """The resource's tags read through its own service's API."""
        parts = arn.split(":")
        service, region = parts[2], parts[3]
        c = self.client(service, region)
        if service == "lambda":
            return dict(c.list_tags(Resource=arn)["Tags"])
        if service == "dynamodb":
            pairs = c.list_tags_of_resource(ResourceArn=arn)["Tags"]
            return {t["Key"]: t["Value"] for t in pairs}
        if service == "logs":
            by_arn = dict(c.list_tags_for_resource(resourceArn=arn)["tags"])
            name = arn.split(":log-group:", 1)[1]
            assert dict(c.list_tags_log_group(logGroupName=name)["tags"]) == by_arn
            return by_arn
        raise AssertionError(f"no service reader for {arn}")

    def api(self, path: str, method: str = "POST") -> bytes:
        req = urllib.request.Request(f"{self.url}/moto-api/{path}", method=method, data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bytes(resp.read())

    def start_recording(self) -> None:
        self.api("recorder/reset-recording")
        self.api("recorder/start-recording")

    def stop_recording(self) -> list[str]:
        """Stop; the Tagging API operations recorded since start_recording, in order."""
        self.api("recorder/stop-recording")
        ops = []
        for line in self.api("recorder/download-recording", "GET").decode().splitlines():
            if not line.strip():
                continue
            headers = {k.lower(): v for k, v in json.loads(line)["headers"].items()}
            target = headers.get("x-amz-target", "")
            if target.startswith("ResourceGroupsTaggingAPI_"):
                ops.append(target.split(".", 1)[1])
        return ops


def _lambda_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buf.getvalue()


def _populate(moto: Moto) -> None:
    role = moto.client("iam", "us-east-1").create_role(
        RoleName="bulktag-moto-lambda",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}),
    )["Role"]["Arn"]
    code = _lambda_zip()
    for region in REGIONS:
        lam = moto.client("lambda", region)
        ddb = moto.client("dynamodb", region)
        logs = moto.client("logs", region)
        for env in ("prod", "dev", ""):
            suffix = f"{env or 'plain'}-{region}"
            tags = {"env": env} if env else {}
            name = f"fn-{suffix}"
            moto.arns[name] = lam.create_function(
                FunctionName=name, Runtime="python3.11", Role=role,
                Handler="handler.handler", Code={"ZipFile": code}, Tags=tags,
            )["FunctionArn"]
            name = f"tbl-{suffix}"
            kwargs: dict[str, Any] = {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            moto.arns[name] = ddb.create_table(
                TableName=name, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                **(kwargs if tags else {}),
            )["TableDescription"]["TableArn"]
            name = f"/bulktag/lg-{suffix}"
            logs.create_log_group(logGroupName=name, **({"tags": tags} if tags else {}))
            group = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"][0]
            moto.arns[name] = group["logGroupArn"]  # without the ":*" of group["arn"]
            for n in (f"fn-{suffix}", f"tbl-{suffix}", name):
                moto.env[n] = env


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    port = _free_port()
    workdir = tmp_path_factory.mktemp("moto")
    recording = workdir / "recording.jsonl"
    env = dict(os.environ)
    env["MOTO_RECORDER_FILEPATH"] = str(recording)
    env.pop("MOTO_ENABLE_RECORDING", None)
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited {proc.returncode}: "
                                   f"{(workdir / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not answer in 30 s") from None
                time.sleep(0.1)
        m = Moto(url=url, recording=recording)
        _populate(m)
        yield m
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Cli:
    def __init__(self, run_cli: CliRunner, moto: Moto, db: Path) -> None:
        self.run_cli, self.moto, self.db = run_cli, moto, db

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        extra = ["--db", str(self.db)]
        if args[0] in ("tag", "untag", "run", "verify"):
            extra += ["--endpoint-url", self.moto.url, "--log-format", "json"]
        return self.run_cli(*args, *extra, timeout=60)

    def ok(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = self(*args)
        assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr[-3000:])
        return proc

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.ok(*args, "--json", code=code).stdout)

    def report(self, job: int) -> dict[str, dict[str, Any]]:
        out = self.ok("report", str(job), "--format", "jsonl").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {r["arn"]: r for r in rows}


def _job_of(result: Any) -> int:
    (st,) = result["jobs"]
    return int(st["job"])


@pytest.fixture
def cli(run_cli: CliRunner, moto: Moto, tmp_path: Path) -> Cli:
    return Cli(run_cli, moto, tmp_path / "state" / "bulktag.db")


def test_moto_resources_are_there_with_their_initial_tags(moto: Moto) -> None:
    assert len(moto.arns) == 3 * 3 * len(REGIONS)
    for name, arn in moto.arns.items():
        assert moto.tags(arn).get("env", "") == moto.env[name], name


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
    job = _job_of(result)
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
    job = _job_of(result)
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
    rerun = _job_of(result)
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
    job = _job_of(result)
    (st,) = result["jobs"]
    assert (st["counts"]["succeeded"], st["counts"]["failed"]) == (1, 1), st
    report = cli.report(job)
    assert report[good]["status"] == "succeeded"
    bad = report[UNSUPPORTED_ARN]
    assert bad["status"] == "failed" and bad["error_code"] == "InternalServiceException", bad
    assert "not yet supported" in (bad["message"] or ""), bad
    assert _env_and(moto, good, "probe") == {"env": "dev", "probe": "1"}
    moto.client("logs", "us-east-1").untag_resource(resourceArn=good, tagKeys=["probe"])
