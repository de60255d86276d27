"""The README's "Your own job on the simulator" and its dashboard snippet, run as written: the
simulator's command in one process, the second terminal's block in bash, then the dashboard's
block with the same variables. Only the port changes (a free one on 127.0.0.1 instead of 8000
and 9464), and `.venv/bin/bulktag` is this interpreter's bulktag. A snippet that stops working
(a renamed option, a changed output, a token the daemon no longer takes) fails here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docs import doc_block
from tests.support.ports import free_port
from tests.support.sim import sim_tags

pytestmark = pytest.mark.slow

README_SIM = "127.0.0.1:8000"
README_DASHBOARD = "127.0.0.1:9464"


def with_port(block: str, readme_address: str, port: int) -> str:
    assert readme_address in block, f"the snippet no longer uses {readme_address}"
    return block.replace(readme_address, f"127.0.0.1:{port}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory like the checkout: `.venv/bin/bulktag` runs this interpreter's bulktag."""
    bin_dir = tmp_path / "work" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "bulktag"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bulktag "$@"\n')
    shim.chmod(0o755)
    return tmp_path / "work"


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    """The tests' isolation (no AWS config files, a closed default endpoint), without the
    route the other CLI tests pin: the README's job runs on the default route."""
    out = dict(cli_env)
    out.pop("BULKTAG_ROUTE", None)
    return out


@pytest.fixture
def simulator(workdir: Path, env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    command = doc_block("simulator").strip()
    assert "--port 8000" in command, "the first terminal's simulator no longer takes port 8000"
    command = command.replace("--port 8000", f"--port {port}")
    assert "\n" not in command, "the first terminal is one command"
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"bulktag-sim listening on http://127.0.0.1:{port}", line
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def post(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            status: int = r.status
            return status
    except urllib.error.HTTPError as e:
        return e.code


def test_your_own_job_then_the_dashboard(workdir: Path, env: dict[str, str],
                                         simulator: int) -> None:
    own_job = with_port(doc_block("own-job"), README_SIM, simulator)
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", own_job], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout

    resources = [json.loads(line) for line in (workdir / "resources.jsonl").read_text()
                 .splitlines()]
    assert len(resources) == 400  # 200 seeded in each of the two regions
    assert "job 1: tag completed" in out and "items 400: succeeded 400" in out
    status = json.loads(next(line for line in out.splitlines() if line.startswith('{"job": 1')))
    assert status["counts"]["succeeded"] == 400
    assert (workdir / "reports" / "job-1" / "report.csv").exists()
    assert (workdir / "reports" / "job-1" / "manifest.json").exists()
    assert "0 drifted, 0 unreadable" in out
    assert "400 to change" in out  # the undo's dry run
    assert "job 2 (undo of job 1): tag completed" in out
    for resource in resources[:20]:  # undone: the simulator's resources are as before
        assert "Owner" not in sim_tags(f"http://127.0.0.1:{simulator}", resource["arn"])

    # The dashboard, with the second terminal's variables still set.
    exports = "\n".join(line for line in own_job.splitlines()
                        if line.startswith(("export ", "unset ")))
    port = free_port()
    dashboard = with_port(doc_block("dashboard"), README_DASHBOARD, port)
    proc = subprocess.Popen(["bash", "-e", "-c", exports + "\n" + dashboard], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        token = proc.stdout.readline().strip()
        assert len(token) >= 16, token
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
                    assert r.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, "the daemon ended"
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.2)
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:
            assert r.status == 200
        action = f"{base}/api/jobs/1/pause"
        assert post(action, None) == 401
        assert post(action, "not-the-token-at-all") == 401
        assert post(action, token) == 409  # the token is taken; job 1 is done, so no pause
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
