"""From sources to items through the CLI (`bulktag tag/untag --detach` in a subprocess): each
validation error's message from `submit()` and from the command line (exit 2, nothing left
behind), --skip-invalid rows visible in the report, gzip sources and stdin, a missing source
file. The refusals and per-row tags that need no process: tests/integration/test_submit.py."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

from bulktag.app.submit import Request
from tests.support.cli import CliRunner, bulktag_argv
from tests.support.submit import (
    arn,
    item_rows,
    refused,
    store_is_empty,
    write_csv,
    write_jsonl,
    write_lines,
)
from tests.support.waits import wait_until


def cli_refused(run_cli: CliRunner, db: Path, *args: str, input: str | None = None) -> str:
    proc = run_cli(*args, "--db", str(db), "--detach", input=input)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.startswith("bulktag: error: ")
    store_is_empty(db)
    return proc.stderr


# -- refused submissions: every message names source, line and reason -------------------------


async def test_malformed_arn_is_refused_naming_file_line_and_reason(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    src = write_lines(tmp_path / "arns.txt", [
        "# a comment", arn(1), "arn:aws:ec2:us-east-1:12345:instance/i-2", "", "nope"])
    msg = await refused(db_path, [src], Request("tag", tags={"Owner": "me"}))
    assert "2 invalid row(s); nothing was enqueued" in msg
    assert f"{src}:3: malformed ARN: malformed account '12345': expected 12 digits" in msg
    assert f"{src}:5: malformed ARN: not an ARN" in msg
    assert "--skip-invalid" in msg

    err = cli_refused(run_cli, db_path, "tag", "--arns", str(src), "--tag", "Owner=me")
    assert f"{src}:3: malformed ARN: malformed account '12345'" in err
    assert f"{src}:5: malformed ARN: not an ARN" in err


async def test_bad_tag_key_character_in_a_csv_column_is_refused(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    src = write_csv(tmp_path / "t.csv", ["arn", "tag:Co$t"], [[arn(1), "10"], [arn(2), ""]])
    msg = await refused(db_path, [src], Request("tag", tags={"Owner": "me"}))
    assert f"{src}:2: tag key 'Co$t' has a character the API refuses: '$'" in msg
    assert f"{src}:3" not in msg  # an empty cell is no tag: row 3 is fine

    err = cli_refused(run_cli, db_path, "tag", "--arns", str(src), "--tag", "Owner=me")
    assert f"{src}:2: tag key 'Co$t' has a character the API refuses: '$'" in err
    # On the command line it is refused before any source is read.
    err = cli_refused(run_cli, db_path, "tag", "--arns", str(src), "--tag", "Own!er=me")
    assert "--tag: tag key 'Own!er' has a character the API refuses: '!'" in err


async def test_reserved_aws_prefix_is_refused(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", [
        {"arn": arn(1), "tags": {"Team": "x"}},
        {"arn": arn(2), "tags": {"AWS:CloudFormation": "x"}}])
    msg = await refused(db_path, [src], Request("tag"))
    assert f"{src}:2: tag key 'AWS:CloudFormation' uses the reserved prefix 'aws:'" in msg

    plain = write_lines(tmp_path / "a.txt", [arn(1)])
    err = cli_refused(run_cli, db_path, "tag", "--arns", str(plain), "--tag", "aws:owner=me")
    assert "--tag: tag key 'aws:owner' uses the reserved prefix 'aws:'" in err
    err = cli_refused(run_cli, db_path, "untag", "--arns", str(plain), "--key", "aws:owner")
    assert "--key: tag key 'aws:owner' uses the reserved prefix 'aws:'" in err


async def test_too_long_tag_value_is_refused(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    src = write_csv(tmp_path / "t.csv", ["ResourceARN", "tag:Note"],
                    [[arn(1), "ok"], [arn(2), "v" * 257]])
    msg = await refused(db_path, [src], Request("tag"))
    assert f"{src}:3: tag value for 'Note' is 257 characters long; the API accepts at most 256" \
        in msg
    err = cli_refused(run_cli, db_path, "tag", "--arns", str(src))
    assert f"{src}:3: tag value for 'Note' is 257 characters long" in err
    err = cli_refused(run_cli, db_path, "tag", "--arns", str(src), "--tag", "K=" + "x" * 300)
    assert "--tag: tag value for 'K' is 300 characters long" in err


async def test_more_than_50_tags_counting_row_tags_and_command_line_tags(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    columns = [f"tag:Row{i}" for i in range(25)]
    src = write_csv(tmp_path / "t.csv", ["arn", *columns],
                    [[arn(1), *["v"] * 25], [arn(2), *[""] * 25]])
    flags = {f"Cli{i}": "v" for i in range(26)}
    msg = await refused(db_path, [src], Request("tag", tags=flags))
    assert f"{src}:2: 51 tags given; the API accepts at most 50" in msg
    assert f"{src}:3" not in msg  # 26 tags: fine

    args = [a for k in flags for a in ("--tag", f"{k}=v")]
    err = cli_refused(run_cli, db_path, "tag", "--arns", str(src), *args)
    assert f"{src}:2: 51 tags given; the API accepts at most 50" in err


async def test_untag_with_no_keys_is_refused(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    src = write_lines(tmp_path / "a.txt", [arn(1), arn(2)])
    # Every row lacks keys and none is given: one usage error, not one per row.
    msg = await refused(db_path, [src], Request("untag"))
    assert msg == ("no tag keys to remove: give --key KEY (or per-row keys in a CSV/JSONL "
                   "source); nothing was enqueued")
    err = cli_refused(run_cli, db_path, "untag", "--arns", str(src))
    assert err == f"bulktag: error: {msg}\n"


async def test_empty_source_is_refused_and_leaves_nothing(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    empty = write_lines(tmp_path / "empty.txt", ["# only a comment", ""])
    msg = await refused(db_path, [empty], Request("tag", tags={"A": "b"}))
    assert f"{empty}: no ARNs found" in msg
    err = cli_refused(run_cli, db_path, "tag", "--arns", str(empty), "--tag", "A=b")
    assert f"{empty}: no ARNs found" in err
    err = cli_refused(run_cli, db_path, "tag", "--arns", "-", "--tag", "A=b", input="")
    assert "<stdin>: no ARNs found" in err


# -- accepted submissions ------------------------------------------------------------------------


async def test_skip_invalid_records_bad_rows_visible_in_the_report(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    src = write_csv(tmp_path / "t.csv", ["arn", "tag:Owner"], [
        [arn(1), "alice"], ["arn:aws:ec2:us-east-1:12345:instance/i-2", "bob"],
        [arn(3), "aws-team"], [arn(4), "x" * 300]])
    proc = run_cli("tag", "--arns", str(src), "--db", str(db_path), "--detach", "--json",
                   "--skip-invalid")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["rows"], out["added"], out["invalid"], out["duplicates"]) == (4, 4, 2, 0)

    report = run_cli("report", str(out["job"]), "--db", str(db_path), "--failed-only")
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader(report.stdout.splitlines()))
    rows.sort(key=lambda r: r["message"])  # the report lists them in ARN order
    assert [(r["arn"], r["status"], r["error_code"]) for r in rows] == [
        ("arn:aws:ec2:us-east-1:12345:instance/i-2", "invalid", "InvalidInput"),
        (arn(4), "invalid", "InvalidInput"),
    ]
    # Kept with the file and line they came from.
    assert rows[0]["message"] == (f"{src}:3: malformed ARN: malformed account '12345': "
                                  "expected 12 digits")
    assert rows[1]["message"].startswith(f"{src}:5: tag value for 'Owner' is 300 characters")

    status = json.loads(run_cli("status", str(out["job"]), "--db", str(db_path),
                                "--json").stdout)
    assert status["state"] == "ready"
    assert status["counts"]["pending"] == 2 and status["counts"]["invalid"] == 2
    assert status["top_errors"][0]["code"] == "InvalidInput"


async def test_gzip_sources_of_every_format(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    txt = tmp_path / "a.txt.gz"
    txt.write_bytes(gzip.compress(f"{arn(1)}\n{arn(2)}\n".encode()))
    csv_gz = tmp_path / "b.csv.gz"
    csv_gz.write_bytes(gzip.compress(f"arn,tag:Owner\n{arn(3)},carol\n".encode()))
    jsonl_gz = tmp_path / "c.jsonl.gz"
    jsonl_gz.write_bytes(gzip.compress(
        (json.dumps({"arn": arn(4), "tags": {"Owner": "dan"}}) + "\n").encode()))
    proc = run_cli("tag", "--arns", str(txt), "--arns", str(csv_gz), "--arns", str(jsonl_gz),
                   "--tag", "Env=prod", "--db", str(db_path), "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["rows"], out["added"], out["invalid"]) == (4, 4, 0)
    bodies = {r["arn"]: json.loads(r["body"]) for r in item_rows(db_path, out["job"])}
    assert bodies == {arn(1): {"Env": "prod"}, arn(2): {"Env": "prod"},
                      arn(3): {"Env": "prod", "Owner": "carol"},
                      arn(4): {"Env": "prod", "Owner": "dan"}}


async def test_stdin_source(db_path: Path, run_cli: CliRunner) -> None:
    proc = run_cli("tag", "--arns", "-", "--tag", "Env=prod", "--db", str(db_path), "--detach",
                   input=f"# from a pipe\n{arn(1)}\n\n{arn(2, 'eu-west-1')}\n")
    assert proc.returncode == 0, proc.stderr
    job = int(proc.stdout.strip())
    # A file's rows go in in ARN order (one commit: tests/integration/test_store.py)
    assert [r["arn"] for r in item_rows(db_path, job)] == [arn(2, "eu-west-1"), arn(1)]

    jsonl = json.dumps({"arn": arn(3), "tags": {"Owner": "eve"}}) + "\n"
    proc = run_cli("tag", "--arns", "-", "--format", "jsonl", "--db", str(db_path), "--detach",
                   input=jsonl)
    assert proc.returncode == 0, proc.stderr
    rows = item_rows(db_path, int(proc.stdout.strip()))
    assert [json.loads(r["body"]) for r in rows] == [{"Owner": "eve"}]


async def test_missing_source_file_is_a_usage_error(
    tmp_path: Path, db_path: Path, run_cli: CliRunner
) -> None:
    err = cli_refused(run_cli, db_path, "tag", "--arns", str(tmp_path / "nope.txt"),
                      "--tag", "A=b")
    assert f"nothing was enqueued: {tmp_path / 'nope.txt'}: No such file or directory" in err


def test_ctrl_c_during_a_submission_says_nothing_more_was_enqueued(
        db_path: Path, tmp_path: Path, run_cli: CliRunner, cli_env: dict[str, str]) -> None:
    """Newcomer finding 21.7: SIGINT while the source is read printed nothing. Now it says
    so and exits 130. A file this long was already workable (issue 26): the job keeps what
    is in, paused (nothing more of it runs), and says the same command continues it."""
    # A pipe the test holds open: the file is never done before the interrupt (a regular file
    # of 1.5M rows was, once loads got fast enough).
    source = tmp_path / "many.pipe"
    os.mkfifo(source)
    done = threading.Event()

    def write() -> None:
        with open(source, "w") as f:
            f.writelines(f"{arn(n)}\n" for n in range(150_000))
            f.flush()
            done.wait(120)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    proc = subprocess.Popen(bulktag_argv("tag", "--detach", "--arns", str(source), "--tag",
                                         "a=b", "--db", str(db_path)),
                            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        def preparing() -> bool:
            assert proc.poll() is None, "the submission ended before the interrupt"
            try:
                with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as con:
                    return bool(con.execute(
                        "SELECT count(*) FROM jobs WHERE loading IS NOT NULL").fetchone()[0])
            except sqlite3.Error:
                return False

        wait_until(preparing, "the job workable while its file is read", timeout=60)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; nothing more enqueued" in err and "Traceback" not in err
    shown = run_cli("status", "1", "--db", str(db_path), "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "paused" and 0 < status["total"] <= 150_000
    assert "run the same command again to continue" in status["reason"]


def test_jobs_lists_with_a_header_and_counts_cancelled_apart(
        db_path: Path, tmp_path: Path, run_cli: CliRunner) -> None:
    src = write_lines(tmp_path / "a.txt", [arn(n) for n in range(7)])
    assert run_cli("tag", "--detach", "--arns", str(src), "--tag", "a=b", "--db",
                   str(db_path)).returncode == 0
    assert run_cli("cancel", "1", "--db", str(db_path)).returncode == 0
    out = run_cli("jobs", "--db", str(db_path)).stdout.splitlines()
    assert out[0].split() == ["job", "operation", "state", "priority", "done/total", "failed",
                              "cancelled", "ARN/s", "name"]
    assert out[1].split() == ["1", "tag", "cancelled", "0", "0/7", "0", "7", "-"]
    (row,) = json.loads(run_cli("jobs", "--db", str(db_path), "--json").stdout)["jobs"]
    assert (row["done"], row["cancelled"], row["total"]) == (0, 7, 7)
