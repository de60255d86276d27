"""Running the `bulktag` command in a subprocess: what a user runs, for signals, kill -9, the
daemon and exit codes through a real process. (Usage errors need no real process: those tests
call `bulktag.cli.main.main([...])` in-process, tests/unit/test_cli_usage.py.)

Subprocesses get their own XDG folders under the test's tmp_path and the checkout on
PYTHONPATH, so they run this tree's code and never read the developer's configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tests.support import ROOT

#: run_cli(*args, input=None, timeout=120, env=None) -> CompletedProcess (see `cli_runner`).
CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def bulktag_argv(*args: str) -> list[str]:
    """The argv of `python -m bulktag ARGS` with this interpreter."""
    return [sys.executable, "-m", "bulktag", *args]


def cli_environment(tmp_path: Path) -> dict[str, str]:
    """os.environ (the fake AWS settings of tests/conftest.py) with XDG folders in tmp_path and
    the checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_runner(base_env: dict[str, str]) -> CliRunner:
    """A function that runs `python -m bulktag ARGS` to completion in `base_env` (updated by its
    `env`) and returns the CompletedProcess with text output."""

    def run(*args: str, input: str | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            bulktag_argv(*args),
            input=input, capture_output=True, text=True, timeout=timeout,
            env={**base_env, **(env or {})},
        )

    return run


def start_cli(*args: str, env: dict[str, str], stderr: IO[Any] | int = subprocess.DEVNULL,
              ) -> subprocess.Popen[bytes]:
    """`python -m bulktag ARGS` started in the background (stdout discarded), for a test that
    signals or kills it mid-run."""
    return subprocess.Popen(bulktag_argv(*args), env=env, stdout=subprocess.DEVNULL,
                            stderr=stderr)
