"""A big file's job is worked while the file is still being read (issue 26), and a load that
stops part way (killed, refused) is continued by the same command run again.

The source is a named pipe the test writes to: the file is, literally, not finished while the
simulator (another process, over HTTP) already answers TagResources for its first rows."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from bulktag.app.submit import STREAM_AFTER
from tests.support.cli import CliRunner, start_cli
from tests.support.sim import sim_get, simulator_process
from tests.support.sql import plain_sql
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]
FIRST = 2 * STREAM_AFTER + 5_000  # written before the test waits: two full chunks, then some
TOTAL = FIRST + 5_000
FAST = ["--max-rate", "100"]  # calls/s per shard: the simulator's quotas are lifted too


@pytest.fixture
def sim_url() -> Iterator[str]:
    with simulator_process("--no-quotas", "--latency-ms", "0") as url:
        yield url


def arns(n: int = TOTAL) -> list[str]:
    return [f"arn:aws:lambda:{REGIONS[i % len(REGIONS)]}:{ACCOUNT}:function:fn-{i:07d}"
            for i in range(n)]


def tag_calls(url: str) -> int:
    stats: dict[str, Any] = sim_get(url, "/_sim/stats")
    return int(stats["requests"].get("TagResources", 0))


def sends(url: str) -> tuple[int, int]:
    """(ARNs sent in TagResources calls, resources the simulator holds): each of N resources
    tagged exactly once is (N, N) on a simulator that held none before."""
    stats: dict[str, Any] = sim_get(url, "/_sim/stats")
    return int(stats["arn_sends"].get("TagResources", 0)), int(stats["resources"])


def job_rows(db: Path | str) -> list[tuple[Any, ...]]:
    return asyncio.run(plain_sql(str(db), "SELECT id, state, loading, loaded FROM jobs "
                                          "ORDER BY id"))


def item_count(db: Path | str) -> int:
    return int(asyncio.run(plain_sql(str(db), "SELECT count(*) FROM items"))[0][0])


class Pipe:
    """A named pipe the test writes ARNs into, opened in a thread (opening blocks until the
    reader opens it)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.writer: IO[str] | None = None
        self._opened = threading.Thread(target=self._open, daemon=True)
        self._opened.start()

    def _open(self) -> None:
        self.writer = self.path.open("w")

    def write(self, lines: list[str]) -> None:
        self._opened.join(60)
        assert self.writer is not None, "bulktag never opened the pipe"
        self.writer.write("\n".join(lines) + "\n")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except BrokenPipeError:
                pass


def start_tag(pipe: Path, db: Path | str, url: str, env: dict[str, str],
              log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as err:
        return start_cli("tag", "--arns", str(pipe), "--tag", "migrated=yes", "--db", str(db),
                         "--endpoint-url", url, "--log-format", "json", *FAST, env=env,
                         stderr=err)


def test_first_items_are_tagged_while_the_file_is_still_being_read(
        tmp_path: Path, sim_url: str, cli_env: dict[str, str], run_cli: CliRunner,
        store_url: str) -> None:
    """On both stores: the PostgreSQL loader holds four sessions of the pool while the run in
    the same process uses it too."""
    db, all_arns = store_url, arns()
    pipe = Pipe(tmp_path / "arns.pipe")
    proc = start_tag(pipe.path, db, sim_url, cli_env, tmp_path / "tag.log")
    try:
        pipe.write(all_arns[:FIRST])
        # The rest of the file is not written yet: the pipe is open, bulktag waits on it.
        wait_until(lambda: tag_calls(sim_url) > 0, "a TagResources call while the file is open",
                   timeout=60)
        assert proc.poll() is None
        [(job, state, loading, loaded)] = job_rows(db)
        assert state in ("ready", "active") and loading is not None and loaded >= STREAM_AFTER
        assert sends(sim_url)[0] > 0
        shown = run_cli("status", str(job), "--db", str(db))
        assert "its file is still being read" in shown.stdout, shown.stdout + shown.stderr
        pipe.write(all_arns[FIRST:])
    finally:
        pipe.close()
    assert proc.wait(120) == 0, (tmp_path / "tag.log").read_text()[-3000:]
    assert sends(sim_url) == (TOTAL, TOTAL)  # each resource once, none missed
    assert job_rows(db) == [(job, "completed", None, TOTAL)]


def running_while_read(tmp_path: Path, sim_url: str, cli_env: dict[str, str], log: str,
                       ) -> tuple[Path, list[str], Pipe, subprocess.Popen[bytes]]:
    """`tag` of a pipe, its first FIRST rows written and the job already tagging (the pipe is
    left open): the store, every ARN, the pipe and the process."""
    db, all_arns = tmp_path / "s.db", arns()
    pipe = Pipe(tmp_path / "arns.pipe")
    proc = start_tag(pipe.path, db, sim_url, cli_env, tmp_path / log)
    try:
        pipe.write(all_arns[:FIRST])
        wait_until(lambda: tag_calls(sim_url) > 0, "the job running while its file is read")
    except BaseException:
        pipe.close()
        proc.kill()
        raise
    return db, all_arns, pipe, proc


def test_a_load_killed_part_way_is_continued_by_the_same_command(
        tmp_path: Path, sim_url: str, cli_env: dict[str, str]) -> None:
    db, all_arns, pipe, proc = running_while_read(tmp_path, sim_url, cli_env, "first.log")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        pipe.close()
    [(job, _state, loading, loaded)] = job_rows(db)
    assert loading is not None and STREAM_AFTER <= loaded < TOTAL
    in_before = item_count(db)
    assert in_before == loaded < TOTAL

    # The same command again, on the whole file: the job is continued after its rows in.
    pipe.path.unlink()
    pipe = Pipe(tmp_path / "arns.pipe")
    proc = start_tag(pipe.path, db, sim_url, cli_env, tmp_path / "again.log")
    try:
        pipe.write(all_arns)
    finally:
        pipe.close()
    log = (tmp_path / "again.log").read_text()
    assert proc.wait(120) == 0, log[-3000:]
    assert job_rows(db) == [(job, "completed", None, TOTAL)]  # one job, not a second one
    continued = [json.loads(line) for line in log.splitlines()
                 if '"load_continued"' in line]
    assert continued and continued[0]["rows_in"] == loaded
    assert item_count(db) == TOTAL
    sent, held = sends(sim_url)
    assert held == TOTAL  # every resource reached
    # Only what was in flight at the kill may have been sent twice.
    assert TOTAL <= sent <= TOTAL + 200


def test_bad_rows_after_the_job_started_pause_it_and_the_fixed_file_continues_it(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    db, good = tmp_path / "s.db", arns(FIRST + 10)
    source = tmp_path / "arns.txt"
    source.write_text("\n".join([*good[:FIRST], "not-an-arn", *good[FIRST:]]) + "\n")
    common = ["--tag", "migrated=yes", "--db", str(db), "--endpoint-url", sim_url, "--detach"]
    refused = run_cli("tag", "--arns", str(source), *common)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"arns.txt:{FIRST + 1}: malformed ARN" in refused.stderr
    assert "job 1 was already running while its file was read" in refused.stderr
    [(job, state, loading, loaded)] = job_rows(db)
    assert (job, state) == (1, "paused") and loading is not None
    assert item_count(db) == loaded >= STREAM_AFTER  # what was in before the bad row stays

    source.write_text("\n".join(good) + "\n")  # fixed
    again = run_cli("tag", "--arns", str(source), *common)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip() == "1"
    assert job_rows(db) == [(1, "ready", None, FIRST + 10)]
    assert item_count(db) == FIRST + 10


def test_a_file_edited_before_it_is_continued_is_read_again_from_the_change(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    """The continue skips only chunks that read the same as those loaded: a file edited in
    between (here its first row moved to the end) is read again from the first chunk that
    differs, so no row is skipped for its place (skipping by count left one out)."""
    db, good = tmp_path / "s.db", arns(FIRST + 10)
    source = tmp_path / "arns.txt"
    source.write_text("\n".join([*good[:FIRST], "not-an-arn", *good[FIRST:]]) + "\n")
    common = ["--tag", "migrated=yes", "--db", str(db), "--endpoint-url", sim_url, "--detach",
              "--log-format", "json"]
    refused = run_cli("tag", "--arns", str(source), *common)
    assert refused.returncode == 2, refused.stderr[-2000:]
    [(job, state, _loading, loaded)] = job_rows(db)
    assert state == "paused" and STREAM_AFTER <= loaded < FIRST

    source.write_text("\n".join([*good[1:], good[0]]) + "\n")  # fixed, and edited
    again = run_cli("tag", "--arns", str(source), *common)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip() == str(job)
    changed = [json.loads(line) for line in again.stderr.splitlines()
               if '"load_source_changed"' in line]
    assert changed and changed[0]["from_row"] == 1
    assert job_rows(db) == [(job, "ready", None, FIRST + 10)]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        held = {arn for (arn,) in con.execute("SELECT arn FROM items")}
    finally:
        con.close()
    assert held == set(good)  # every row in, good[loaded] (once skipped by count) too


def test_a_source_that_fails_after_the_job_started_says_the_job_is_paused(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    """A source unreadable part way (a truncated gzip) after the job became workable: the
    message says what is in and that the job is paused, not that nothing was enqueued."""
    import gzip

    good = arns(TOTAL)
    whole = gzip.compress(("\n".join(good[:FIRST]) + "\n").encode())
    rest = gzip.compress(("\n".join(good[FIRST:]) + "\n").encode())
    source = tmp_path / "arns.txt.gz"
    source.write_bytes(whole + rest[: len(rest) // 2])  # a second member cut short
    db = tmp_path / "s.db"
    failed = run_cli("tag", "--arns", str(source), "--tag", "migrated=yes", "--db", str(db),
                     "--endpoint-url", sim_url, "--detach")
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "nothing was enqueued" not in failed.stderr
    assert "nothing more was enqueued" in failed.stderr and "arns.txt.gz" in failed.stderr
    assert "job 1 was already running while its file was read" in failed.stderr
    [(job, state, _loading, loaded)] = job_rows(db)
    assert (job, state) == (1, "paused") and item_count(db) == loaded >= STREAM_AFTER


def test_a_job_cancelled_while_its_file_is_read_stays_cancelled(
        tmp_path: Path, sim_url: str, cli_env: dict[str, str], run_cli: CliRunner) -> None:
    """Cancelling a job whose file is still being read ends the load: nothing more goes in,
    nothing is left pending, and the same command run again starts a new job rather than
    bringing the cancelled one back."""
    db, all_arns, pipe, proc = running_while_read(tmp_path, sim_url, cli_env, "tag.log")
    try:
        cancelled = run_cli("cancel", "1", "--db", str(db))
        assert cancelled.returncode == 0, cancelled.stderr
        proc.wait(60)  # its run ends with the job, and stops reading
    finally:
        pipe.close()
        if proc.poll() is None:
            proc.kill()
    [(job, state, _loading, _loaded)] = job_rows(db)
    assert (job, state) == (1, "cancelled")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        open_items = con.execute("SELECT count(*) FROM items WHERE state IN "
                                 "('pending', 'leased')").fetchone()[0]
    finally:
        con.close()
    assert open_items == 0

    source = tmp_path / "arns.pipe"
    source.unlink()
    source.write_text("\n".join(all_arns[:10]) + "\n")  # the same command, a short file now
    again = run_cli("tag", "--arns", str(source), "--tag", "migrated=yes", "--db", str(db),
                    "--endpoint-url", sim_url, "--detach", *FAST)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "2"
    assert job_rows(db)[0][1] == "cancelled"
