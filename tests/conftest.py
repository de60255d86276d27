"""Shared fixtures: a simulator on a random 127.0.0.1 port, a store in a temp dir (SQLite, or a
fresh PostgreSQL database), new stores of either kind on demand, a way to run the real CLI in a
subprocess, and moto's servers. The helpers behind them are in tests/support/. No test reaches
AWS: credentials are fake and the shared AWS config files are pointed at nothing."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bulktag.sim import RunningSimulator, SimConfig, start_simulator
from tests.support.cli import CliRunner, cli_environment, cli_runner
from tests.support.moto import Moto, moto_server, populate
from tests.support.postgres import PG_ADMIN_URL, pg_admin, pg_database_url

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        # CLI runs keep the Tagging API route, which creates what it tags in the simulator:
        # most tests use EC2 instance ARNs as stand-ins for any resource. The `ec2` route
        # (EC2 tags only what exists) has its own tests, which seed what they tag.
        "BULKTAG_ROUTE": "tagging-api",
        "AWS_EC2_METADATA_DISABLED": "true",
        # A test that forgets its endpoint reaches a closed local port, never AWS.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
)
for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "BULKTAG_DB"):
    os.environ.pop(var, None)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """The simulator with its documented quotas and no latency or faults."""
    async with await start_simulator(SimConfig(seed=1)) as running:
        yield running


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "bulktag.db"


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI subprocess: XDG folders in tmp_path, this checkout's code."""
    return cli_environment(tmp_path)


@pytest.fixture
def run_cli(cli_env: dict[str, str]) -> CliRunner:
    """Run `python -m bulktag ARGS` to completion; returns the CompletedProcess."""
    return cli_runner(cli_env)


# -- PostgreSQL: a fresh database per test -----------------------------------------------------

@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The PostgreSQL server for tests ($BULKTAG_TEST_PG, default postgres@127.0.0.1:5432),
    checked once per session; fails every test that needs it when it does not answer."""
    try:
        pg_admin(PG_ADMIN_URL, "SELECT 1")
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({type(exc).__name__}: {exc}). "
            "Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main "
            "start) or point BULKTAG_TEST_PG at a server where this role may CREATE DATABASE.",
            pytrace=False)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """The URL of a new, empty database bulktag_test_<random>, dropped after the test."""
    import uuid

    name = f"bulktag_test_{uuid.uuid4().hex[:12]}"
    pg_admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield pg_database_url(pg_admin_url, name)
    finally:
        pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives, once per backend: a SQLite path in a temp dir, or the URL of
    a fresh PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "state" / "bulktag.db")


@pytest.fixture
def new_store_url(tmp_path: Path, pg_admin_url: str) -> Iterator[Callable[[str], str]]:
    """kind ("sqlite" | "postgres") → the location of a new, empty store of that kind."""
    made: list[str] = []
    count = iter(range(100))

    def make(kind: str) -> str:
        if kind == "sqlite":
            return str(tmp_path / f"store-{next(count)}" / "bulktag.db")
        name = f"bulktag_test_{uuid.uuid4().hex[:12]}"
        # in a thread: the tests call this on their running event loop
        with ThreadPoolExecutor(1) as pool:
            pool.submit(pg_admin, pg_admin_url, f'CREATE DATABASE "{name}"').result()
        made.append(name)
        return pg_database_url(pg_admin_url, name)

    yield make
    for name in made:
        pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')



# -- moto's server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bare moto server (S3 for exports), one per test module."""
    with moto_server(tmp_path_factory.mktemp("moto-s3")) as url:
        yield url


@pytest.fixture
def s3(moto_url: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> str:
    """A bucket of this test's own, named after it."""
    name = "reports-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:12]
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """moto with its recorder on and `populate`'s resources, one per test module (the module's
    tests share it; see tests/e2e/test_moto.py)."""
    workdir = tmp_path_factory.mktemp("moto")
    recording = workdir / "recording.jsonl"
    with moto_server(workdir, recording) as url:
        m = Moto(url=url, recording=recording)
        populate(m)
        yield m
