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
