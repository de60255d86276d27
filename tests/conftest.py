"""Shared fixtures: a simulator on a random 127.0.0.1 port, a store in a temp dir, and a way to
run the real CLI in a subprocess. No test reaches AWS: credentials are fake and the shared AWS
config files are pointed at nothing."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bulktag.sim import RunningSimulator, SimConfig, start_simulator

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

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def simulator_process(*args: str) -> Iterator[str]:
    """`bulktag sim` in its own process on a free port; yields its URL, stops it after."""
    proc = subprocess.Popen([sys.executable, "-m", "bulktag", "sim", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("bulktag-sim listening on "), line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """The simulator with its documented quotas and no latency or faults."""
    async with await start_simulator(SimConfig(seed=1)) as running:
        yield running


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "bulktag.db"


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def run_cli(cli_env: dict[str, str]) -> CliRunner:
    """Run `python -m bulktag ARGS` to completion; returns the CompletedProcess."""

    def run(*args: str, input: str | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bulktag", *args],
            input=input, capture_output=True, text=True, timeout=timeout,
            env={**cli_env, **(env or {})},
        )

    return run


# -- PostgreSQL: a fresh database per test -----------------------------------------------------

#: The server tests create their databases on (trust auth). CI runs PostgreSQL: when it is not
#: reachable, tests that need it FAIL, never skip.
PG_ADMIN_URL = os.environ.get("BULKTAG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_admin(url: str, *statements: str) -> None:
    """Run statements on the server's maintenance database, outside any transaction."""
    import asyncio

    import asyncpg

    async def run() -> None:
        con = await asyncpg.connect(url, timeout=10)
        try:
            for statement in statements:
                await con.execute(statement)
        finally:
            await con.close()

    asyncio.run(run())


def pg_database_url(admin_url: str, database: str) -> str:
    """admin_url with its database replaced."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The PostgreSQL server for tests ($BULKTAG_TEST_PG, default postgres@127.0.0.1:5432),
    checked once per session; fails every test that needs it when it does not answer."""
    try:
        _pg_admin(PG_ADMIN_URL, "SELECT 1")
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
    _pg_admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield pg_database_url(pg_admin_url, name)
    finally:
        _pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives, once per backend: a SQLite path in a temp dir, or the URL of
    a fresh PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "state" / "bulktag.db")
