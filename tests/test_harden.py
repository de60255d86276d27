"""Issue 12 hardening, through the real CLI against the simulator over HTTP: pre-flight
credentials, `run --no-wait` and lease takeover, dry-run source errors, --max-rate warnings."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CliRunner, simulator_process

ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """The simulator in its own process (the CLI subprocesses call it over HTTP)."""
    with simulator_process() as url:
        yield url


def arns(n: int, region: str = "us-east-1", prefix: str = "i-h") -> list[str]:
    return [f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{prefix}{i:06d}" for i in range(n)]


def no_jobs(run_cli: CliRunner, db: Path) -> None:
    if not db.exists():
        return
    out = run_cli("jobs", "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["jobs"] == []


# -- 1. pre-flight credentials -----------------------------------------------------------------

def test_no_credentials_exit_2_nothing_enqueued(run_cli: CliRunner, sim_url: str,
                                                tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("\n".join(arns(5)) + "\n")
    db = tmp_path / "state" / "b.db"
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true"}
    started = time.monotonic()
    out = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db", str(db),
                  "--endpoint-url", sim_url, env=env)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert "no usable AWS credentials" in out.stderr
    assert "aws configure" in out.stderr and "Traceback" not in out.stderr
    assert elapsed < 10, elapsed  # ~0.4 s here; generous so speed never fails the test
    no_jobs(run_cli, db)
    # `run` checks too, before touching any job
    out = run_cli("run", "--db", str(db), "--endpoint-url", sim_url, env=env)
    assert out.returncode == 2 and "no usable AWS credentials" in out.stderr


def test_unknown_profile_exit_2(run_cli: CliRunner, sim_url: str,
                                tmp_path: Path) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = us-east-1\n\n[profile real]\nregion = us-east-1\n")
    src = tmp_path / "a.txt"
    src.write_text("\n".join(arns(5)) + "\n")
    db = tmp_path / "state" / "b.db"
    started = time.monotonic()
    out = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db", str(db),
                  "--endpoint-url", sim_url,
                  env={"AWS_PROFILE": "doesnotexist", "AWS_CONFIG_FILE": str(config)})
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert "'doesnotexist' not found" in out.stderr and "--profile" in out.stderr
    assert "Traceback" not in out.stderr
    assert elapsed < 10, elapsed
    no_jobs(run_cli, db)


def test_unreachable_sts_does_not_stop_the_run(run_cli: CliRunner, tmp_path: Path) -> None:
    """No STS answer is no verdict on the credentials: `jobs` still works, `run` goes on."""
    db = tmp_path / "state" / "b.db"
    out = run_cli("run", "--db", str(db), "--endpoint-url", "http://127.0.0.1:9")
    assert out.returncode == 0, out.stderr
    assert "credentials_not_checked" in out.stderr


# -- 4. --max-rate above the quota ---------------------------------------------------------------

def test_max_rate_above_quota_warns(run_cli: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("\n".join(arns(3)) + "\n")
    db = tmp_path / "b.db"
    with simulator_process() as url:
        out = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db", str(db),
                      "--endpoint-url", url, "--max-rate", "50", "--log-format", "json")
        assert out.returncode == 0, out.stderr
        assert "max_rate_above_quota" in out.stderr and "quota of 5 requests/s" in out.stderr
        out = run_cli("tag", "--arns", str(src), "--tag", "a=c", "--db", str(db),
                      "--endpoint-url", url, "--max-rate", "4", "--log-format", "json")
        assert out.returncode == 0 and "max_rate_above_quota" not in out.stderr


# -- 3. dry-run shares the real run's source handling ----------------------------------------

def test_dry_run_bad_sources_exit_2_like_the_real_run(run_cli: CliRunner, sim_url: str,
                                                      tmp_path: Path) -> None:
    good = "\n".join(arns(3)) + "\n"
    truncated = tmp_path / "trunc.txt.gz"
    truncated.write_bytes(gzip.compress(good.encode())[:-12])
    notgz = tmp_path / "plain.txt.gz"
    notgz.write_text(good)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("name,owner\nx,y\n")
    for src in (tmp_path / "missing.txt", truncated, notgz, nocol):
        real = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db",
                       str(tmp_path / "r.db"), "--endpoint-url", sim_url)
        dry = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db",
                      str(tmp_path / "d.db"), "--endpoint-url", sim_url, "--dry-run")
        assert real.returncode == 2, (src, real.stderr)
        assert dry.returncode == 2, (src, dry.stderr)
        assert "Traceback" not in dry.stderr and "Traceback" not in real.stderr
        err = [ln for ln in real.stderr.splitlines() if ln.startswith("bulktag: error:")]
        assert err and err == [ln for ln in dry.stderr.splitlines()
                               if ln.startswith("bulktag: error:")], (real.stderr, dry.stderr)
    assert not (tmp_path / "d.db").exists()


# -- 2. leases of a live-looking owner: run --no-wait, then takeover ---------------------------

def test_sigstopped_worker_no_wait_then_takeover(cli_env: dict[str, str],
                                                 run_cli: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("\n".join(arns(600, prefix="i-stop")) + "\n")
    db = tmp_path / "b.db"
    with simulator_process("--latency-ms", "400-600") as url:
        out = run_cli("tag", "--arns", str(src), "--tag", "team=x", "--db", str(db),
                      "--endpoint-url", url, "--detach")
        assert out.returncode == 0, out.stderr
        job = out.stdout.strip()
        worker = subprocess.Popen(
            [sys.executable, "-m", "bulktag", "run", job, "--db", str(db), "--endpoint-url",
             url, "--max-rate", "2", "--log-format", "json"],
            env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # stop it once it holds leases mid-run
                st = json.loads(run_cli("status", job, "--db", str(db), "--json").stdout)
                if st["counts"]["leased"] and st["counts"]["succeeded"]:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"worker never got going: {st}")
            os.kill(worker.pid, signal.SIGSTOP)
            started = time.monotonic()
            blocked = run_cli("run", job, "--db", str(db), "--endpoint-url", url, "--no-wait",
                              "--log-format", "json", timeout=60)
            assert blocked.returncode == 5, (blocked.returncode, blocked.stderr)
            assert f"pid {worker.pid}" in blocked.stderr, blocked.stderr
            assert "--no-wait" in blocked.stderr
            assert time.monotonic() - started < 30
            # A plain run waits, says whose leases and until when, then takes them over.
            taken = run_cli("run", job, "--db", str(db), "--endpoint-url", url,
                            "--log-format", "json", "--json", timeout=120,
                            env={"BULKTAG_OWNER_STALE_SECONDS": "3"})
            assert taken.returncode == 0, taken.stderr[-3000:]
            assert "waiting_for_leases" in taken.stderr or "leases_reclaimed" in taken.stderr
            assert "leases_reclaimed" in taken.stderr
            st = json.loads(taken.stdout)["jobs"][0]
            # the stopped worker's in-flight batch may have landed: then it reads as skipped
            assert st["state"] == "completed", st
            assert st["counts"]["succeeded"] + st["counts"]["skipped"] == 600, st
        finally:
            os.kill(worker.pid, signal.SIGCONT)
            worker.kill()
            worker.wait(10)
