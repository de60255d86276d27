"""Usage errors, in-process: `main([...])` returns exit 2 and prints one line naming the problem,
before anything is enqueued (no subprocess needed for what needs no real process)."""

from __future__ import annotations

import contextlib
import io
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulktag.cli.main import main
from bulktag.errors import EXIT_USAGE


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "store" / "bulktag.db"


@pytest.mark.parametrize(("argv", "message"), [
    (["tag", "--tag", "A=b"],
     "nothing to work on: give --arns SRC, or a query (--query, --match-tag, --resource-type)"),
    (["tag", "--arns", "x.txt", "--tag", "Owner"],
     "--tag: expected KEY=VALUE, got 'Owner': no '=' in it"),
    (["tag", "--arns", "x.txt", "--tag", "AWS:owner=a"], "reserved prefix 'aws:'"),
    (["tag", "--arns", "x.txt", "--match-tag", "env=prod", "--tag", "a=b"],
     "give either --arns or a query"),
    (["tag", "--arns", "x.txt", "--tag", "a=b", "--failure-ratio", "2"],
     "--failure-ratio must be in (0, 1], not 2"),
    (["untag", "--arns", "x.txt", "--key", "a", "--if-absent"],
     "--if-absent applies to tag jobs only"),
    (["tag", "--arns", "x.txt", "--tag", "a=b", "--export-region", "eu-west-1"],
     "--export-region and --export-kms-key-arn need --export-on-finish"),
    (["tag", "--query", "{not json", "--tag", "a=b"], "--query"),
    (["tag", "--match-tag", "env=prod", "--tag", "a=b", "--accounts", "12"],
     "--accounts: '12' is not a 12-digit account id"),
    (["status", "7"], "no store at"),
    (["jobs", "--db", "postgresql://nobody@127.0.0.1:1/none"], "127.0.0.1:1"),
    (["jobs", "--db", "postgresql://127.0.0.1:1"], "names no database"),
    (["jobs", "--db", "mysql://root@127.0.0.1/bulktag"], "unsupported store URL mysql://"),
    (["transform", "--arns", "x.txt"], "no operation: give --rename"),
    (["tag", "--arns", "x.txt", "--tag", "k=1", "--tag", "K=2"], "differ only in case"),
    (["tag", "--arns", "x.txt", "--tag", " k = v "], "' k ' has leading or trailing spaces"),
    (["tag", "--match-tag", "env=prod", "--tag", "a=b", "--regions", "us-east-1,moon-1"],
     "--regions: 'moon-1' is not a region name"),
    (["sync", "add", "r1", "--tag-key", "<b>", "--tag-value", "x", "--apply", "a=b"],
     "has a character the API refuses"),
    (["sync", "add", "r1", "--tag-key", "env", "--tag-value", "x", "--apply", "a=b",
      "--regions", "moon-1"], "--regions: 'moon-1' is not a region name"),
    (["sync", "add", "r1", "--tag-key", "env", "--tag-value", "x", "--apply", "a=b",
      "--accounts", "12345"], "--accounts: '12345' is not a 12-digit account id"),
    (["transform", "--arns", "x.txt", "--rename", "aws:x=y"], "AWS's own tags cannot"),
    (["rename", "a", "a", "--arns", "x.txt"], "the new key is the old one"),
    (["transform", "--arns", "x.txt", "--value-case", "k=camel"], "lower, upper, title"),
])
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, store_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*argv, "--db", str(store_path)] if "--db" not in argv else argv)
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert err.startswith("bulktag: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not store_path.exists()  # nothing created, nothing enqueued


def test_a_missing_source_is_one_usage_error(store_path: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["tag", "--arns", str(tmp_path / "nope.txt"), "--tag", "a=b", "--detach",
                 "--db", str(store_path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "nope.txt" in err and "Traceback" not in err


NUMBERS = st.one_of(st.integers(min_value=-10**30, max_value=10**30).map(str),
                    st.sampled_from(["9" * 23, "-1", "0", "1e3", "0x10", " 7", "٣"]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["status", "report", "retry", "pause", "resume", "cancel",
                                "undo", "priority", "run", "tag-priority"]),
       job=NUMBERS, number=NUMBERS)
def test_no_number_on_the_command_line_reaches_a_traceback(command: str, job: str,
                                                           number: str,
                                                           store_path: Path) -> None:
    """Fuzz: job ids and priorities of any size or shape are refused as usage (or answered),
    never a crash (exit 70 with a traceback); nothing is created."""
    argv = {"priority": ["priority", job, number],
            "tag-priority": ["tag", "--arns", "x.txt", "--tag", "a=b", "--detach",
                             "--priority", number],
            "run": ["run", job]}.get(command, [command, job])
    err = io.StringIO()
    db = store_path.parent / f"{uuid.uuid4().hex}.db"  # one per example
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([*argv, "--db", str(db)])
        except SystemExit as exc:  # argparse's own refusal
            code = int(exc.code or 0)
    assert code == EXIT_USAGE, (argv, code, err.getvalue())
    assert "Traceback" not in err.getvalue()
    assert command == "tag-priority" or not db.exists()


def test_the_plan_refuses_an_arn_given_again_with_other_tags(
        store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "t.csv"
    arn = "arn:aws:sqs:us-east-1:123456789012:q1"
    src.write_text(f"arn,tag:team\n{arn},a\n{arn},a\n{arn},b\n")
    code = main(["tag", "--arns", str(src), "--dry-run", "--db", str(store_path),
                 "--endpoint-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert "1 row(s) give a resource again with other tags" in err
    assert f"t.csv:4: {arn} is given again with other tags than on line 2" in err
    assert not store_path.exists()
