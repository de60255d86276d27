"""moto's server (`python -m moto.server`), a Tagging API, EC2 and S3 we did not write, on a free
127.0.0.1 port in its own process: a bare server for S3 exports, and `Moto`, one holding Lambda
functions, DynamoDB tables and log groups in two regions with its request recorder on (see
tests/e2e/test_moto.py for what moto supports and its quirks).

The fixtures (`moto_url`, `moto`, `s3`, `bucket`) are in tests/conftest.py; both servers are
module-scoped there, so a module's tests share one and modules never share state."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests.support.cli import CliRunner
from tests.support.ports import free_port
from tests.support.waits import wait_until

ACCOUNT = "123456789012"  # moto's default account
#: Where `populate` makes its resources.
REGIONS = ("us-east-1", "eu-west-1")
UNSUPPORTED_ARN = f"arn:aws:cloud9:us-east-1:{ACCOUNT}:environment/0123456789abcdef"


@contextlib.contextmanager
def moto_server(workdir: Path, recording: Path | None = None) -> Iterator[str]:
    """moto's server in workdir (its log in server.log), recording requests to `recording` when
    given; yields its URL once /moto-api/ answers, stops it after."""
    port = free_port()
    env = dict(os.environ)
    env.pop("MOTO_ENABLE_RECORDING", None)
    if recording is not None:
        env["MOTO_RECORDER_FILEPATH"] = str(recording)
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
        )
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited {proc.returncode}: "
                                   f"{log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    return True
            except OSError:
                return False

        try:
            wait_until(answers, "moto server answers", timeout=30, interval=0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def populate(moto: Moto) -> None:
    """Lambda functions, DynamoDB tables and log groups in REGIONS, tagged env=prod, env=dev or
    not at all; their ARNs and env tags noted on `moto`."""
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


class Cli:
    """run_cli with --db (and moto's URL for tag/untag/run/verify) filled in."""

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


def job_of(result: Any) -> int:
    """The one job of a `tag --json` / `untag --json` answer."""
    (st,) = result["jobs"]
    return int(st["job"])


def ec2_actions(moto: Moto) -> list[str]:
    """EC2 actions moto served since start_recording (form-encoded bodies name them)."""
    moto.api("recorder/stop-recording")
    actions = []
    for line in moto.api("recorder/download-recording", "GET").decode().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        body = record.get("body") or ""
        if record.get("body_encoded"):
            body = base64.b64decode(body).decode(errors="replace")
        action = urllib.parse.parse_qs(str(body)).get("Action", [""])[0]
        if action in ("CreateTags", "DeleteTags", "DescribeTags"):
            actions.append(action)
    return actions


def log_groups(moto: Moto, prefix: str, prior: dict[str, dict[str, str]],
               region: str = "us-east-1") -> dict[str, str]:
    """Create log groups `/bulktag/PREFIX-NAME` with their prior tags; NAME -> ARN."""
    logs = moto.client("logs", region)
    arns = {}
    for name, tags in prior.items():
        group = f"/bulktag/{prefix}-{name}"
        logs.create_log_group(logGroupName=group, **({"tags": tags} if tags else {}))
        arns[name] = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0][
            "logGroupArn"]
    return arns
