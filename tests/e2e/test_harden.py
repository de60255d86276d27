"""Issue 12 hardening, through the real CLI against the simulator over HTTP: pre-flight
credentials, `run --no-wait` and lease takeover, dry-run source errors, --max-rate warnings.
Log lines beside the progress bar, in-process: tests/unit/test_progress.py."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliRunner, start_cli
from tests.support.sim import simulator_process
from tests.support.sql import plain_sql
from tests.support.waits import wait_until

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


def test_detached_submit_of_a_file_needs_no_credentials(run_cli: CliRunner, sim_url: str,
                                                        tmp_path: Path) -> None:
    """`--detach` of a file calls no AWS API: it enqueues without checking the submitter's
    credentials (the worker checks its own), and a `run` without credentials still exits 2
    before touching the job."""
    src = tmp_path / "a.txt"
    src.write_text("\n".join(arns(5)) + "\n")
    db = tmp_path / "state" / "b.db"
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true"}
    out = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db", str(db), "--detach",
                  "--json", "--endpoint-url", sim_url, env=env)
    assert out.returncode == 0, out.stderr
    job = str(json.loads(out.stdout.strip().splitlines()[-1])["job"])
    out = run_cli("run", job, "--db", str(db), "--endpoint-url", sim_url, env=env)
    assert out.returncode == 2 and "no usable AWS credentials" in out.stderr
    out = run_cli("status", job, "--db", str(db), "--json")
    assert json.loads(out.stdout)["counts"]["pending"] == 5, out.stdout


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
    out = run_cli("run", "--db", str(db), "--endpoint-url", "http://127.0.0.1:9",
                  "--log-level", "debug")
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
        worker = start_cli("run", job, "--db", str(db), "--endpoint-url", url, "--max-rate",
                           "2", "--log-format", "json", env=cli_env)
        try:
            st: dict[str, Any] = {}

            def mid_run() -> bool:  # stop it once it holds leases mid-run
                nonlocal st
                st = json.loads(run_cli("status", job, "--db", str(db), "--json").stdout)
                return bool(st["counts"]["leased"] and st["counts"]["succeeded"])

            wait_until(mid_run, "the worker holds leases mid-run", timeout=30, interval=0.2)
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


# -- 5. the smaller list ------------------------------------------------------------------------

def test_read_only_commands_create_no_store(run_cli: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "typo" / "bulktag.db"
    for args in (["jobs"], ["status"], ["status", "1"], ["report", "1"], ["verify", "1"],
                 ["retry", "1"], ["pause", "1"], ["resume", "1"], ["cancel", "1"],
                 ["priority", "1", "3"]):
        out = run_cli(*args, "--db", str(db))
        assert out.returncode == 2, (args, out.stderr)
        assert "no store at" in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        assert "Event loop is closed" not in out.stderr
        assert not db.exists() and not db.parent.exists(), args


def test_read_only_commands_make_no_tables_in_an_empty_postgres_database(
        run_cli: CliRunner, pg_url: str) -> None:
    """Newcomer finding 21.4: `jobs` on a database holding no store created bulktag's tables
    there. Now, as on SQLite, it says there is no store; a worker (`run`) may set one up."""
    for args in (["jobs"], ["status"], ["status", "1"], ["report", "1"], ["pause", "1"]):
        out = run_cli(*args, "--db", pg_url)
        assert out.returncode == 2 and "no store in" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    tables = asyncio.run(plain_sql(pg_url, "SELECT count(*) FROM pg_tables "
                                           "WHERE schemaname = 'public'"))
    assert tables == [(0,)]
    assert run_cli("run", "--db", pg_url, "--json").returncode == 0


def test_a_read_only_store_is_said_so_on_tag_and_run(run_cli: CliRunner, sim_url: str,
                                                      tmp_path: Path) -> None:
    """Newcomer finding 21.3: a store file that cannot be written crashed `tag` and `run`
    (exit 70, a traceback). An immutable file (chattr +i) is read-only even for root."""
    db = tmp_path / "bulktag.db"
    src = tmp_path / "arns.txt"
    src.write_text("\n".join(arns(3, prefix="i-ro")) + "\n")
    common = ["--db", str(db), "--endpoint-url", sim_url]
    assert run_cli("tag", "--arns", str(src), "--tag", "a=b", "--detach", *common
                   ).returncode == 0
    subprocess.run(["chattr", "+i", str(db)], check=True)
    try:
        for args in (["tag", "--arns", str(src), "--tag", "a=c"], ["run"]):
            out = run_cli(*args, *common)
            assert out.returncode == 2, (args, out.stderr[-2000:])
            assert f"the store {db} is read-only" in out.stderr
            assert "Traceback" not in out.stderr
        listed = run_cli("jobs", "--db", str(db), "--json")  # reading it still works
        assert listed.returncode == 0 and len(json.loads(listed.stdout)["jobs"]) == 1
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


def test_demo_keeps_out_of_the_default_store(run_cli: CliRunner, cli_env: dict[str, str]
                                              ) -> None:
    out = run_cli("demo", "--per-region", "10", "--regions", "us-east-1", "--latency-ms", "0-0")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "temporary store" in out.stdout
    assert not (Path(cli_env["XDG_STATE_HOME"]) / "bulktag").exists()


def test_tag_without_tags_is_one_usage_error(run_cli: CliRunner, sim_url: str,
                                             tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("\n".join(arns(50)) + "\n")
    for extra in ([], ["--dry-run"]):
        out = run_cli("tag", "--arns", str(src), "--db", str(tmp_path / "b.db"),
                      "--endpoint-url", sim_url, *extra)
        assert out.returncode == 2, out.stderr
        errors = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert errors == [("bulktag: error: no tags to apply: give --tag KEY=VALUE (or per-row "
                           "tag columns in a CSV/JSONL source); nothing was enqueued")], errors


def test_skip_invalid_items_keep_file_and_line(run_cli: CliRunner, sim_url: str,
                                               tmp_path: Path) -> None:
    src = tmp_path / "mixed.txt"
    src.write_text(arns(1)[0] + "\nnot-an-arn\n" + arns(2)[1] + "\n")
    db = tmp_path / "b.db"
    out = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db", str(db),
                  "--endpoint-url", sim_url, "--skip-invalid")
    assert out.returncode == 3, out.stderr
    rep = run_cli("report", "1", "--db", str(db), "--failed-only", "--format", "jsonl")
    rows = [json.loads(x) for x in rep.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "invalid"
    assert rows[0]["message"].startswith(f"{src}:2: malformed ARN"), rows[0]


def test_other_account_without_role_gets_role_advice(run_cli: CliRunner, sim_url: str,
                                                     tmp_path: Path) -> None:
    other = "arn:aws:ec2:us-east-1:210987654321:instance/i-other1"
    src = tmp_path / "a.txt"
    src.write_text(other + "\n")
    db = tmp_path / "b.db"
    out = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db", str(db),
                  "--endpoint-url", sim_url)
    assert out.returncode == 3, out.stderr
    st = json.loads(run_cli("status", "1", "--db", str(db), "--json").stdout)
    advice = st["top_errors"][0]["advice"]
    assert "belongs to account 210987654321" in advice and "--role-name" in advice, advice
    assert "CreateTags" not in advice


def test_debug_logs_batches_and_info_logs_retries(run_cli: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("\n".join(arns(200, prefix="i-dbg")) + "\n")
    with simulator_process("--fault-resource-500", "0.2") as url:
        out = run_cli("tag", "--arns", str(src), "--tag", "a=b", "--db", str(tmp_path / "b.db"),
                      "--endpoint-url", url, "--log-format", "json", "--log-level", "debug",
                      "--no-skip-compliant")
    events = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    sent = [e for e in events if e["event"] == "batch_sent"]
    assert sent and {"shard", "size", "seconds", "outcomes", "operation"} <= set(sent[0])
    assert sum(e["size"] for e in sent) >= 200
    retrying = [e for e in events if e["event"] == "retrying"]
    assert retrying and retrying[0]["level"] == "info" and retrying[0]["items"] >= 1


def test_store_open_errors_say_why_without_tracebacks(run_cli: CliRunner, tmp_path: Path
                                                      ) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("garbage\n")
    cases = {str(tmp_path / "dir"): "it is a directory",
             str(tmp_path / "file" / "x.db"): "is a file, not a directory",
             str(tmp_path / "file"): "file is not a database"}
    for db, words in cases.items():
        for command in (["run"], ["jobs"]):
            out = run_cli(*command, "--db", db)
            assert out.returncode == 2, (db, out.stderr)
            assert words in out.stderr or (command == ["jobs"] and "no store at" in out.stderr), \
                (db, out.stderr)
            assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr
