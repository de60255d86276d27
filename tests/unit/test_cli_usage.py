"""Usage errors, in-process: `main([...])` returns exit 2 and prints one line naming the problem,
before anything is enqueued (no subprocess needed for what needs no real process)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
