"""Settings from layers as the `bulktag` command sees them, in subprocesses: the XDG config
file, the environment and flags each name the store it writes to, and a bad setting is a usage
error (exit 2) naming where it came from."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import CliRunner


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_cli_layers_xdg_file_env_and_flags(tmp_path: Path, run_cli: CliRunner,
                                           cli_env: dict[str, str]) -> None:
    """The store each layer names is the one the CLI writes to."""
    arns = write(tmp_path / "a.txt", "arn:aws:ec2:us-east-1:123456789012:instance/i-1\n")
    xdg_db = tmp_path / "from-xdg.db"
    write(Path(cli_env["XDG_CONFIG_HOME"]) / "bulktag" / "config.toml", f'db = "{xdg_db}"\n')

    def submit(*extra: str, env: dict[str, str] | None = None) -> None:
        proc = run_cli("tag", "--arns", str(arns), "--tag", "A=b", "--detach", *extra, env=env)
        assert proc.returncode == 0, proc.stderr

    submit()
    assert xdg_db.exists()
    env_db = tmp_path / "from-env.db"
    submit(env={"BULKTAG_DB": str(env_db)})
    assert env_db.exists()
    flag_db = tmp_path / "from-flag.db"
    submit("--db", str(flag_db), env={"BULKTAG_DB": str(env_db)})
    assert flag_db.exists()
    jobs = json.loads(run_cli("jobs", "--json", env={"BULKTAG_DB": str(env_db)}).stdout)
    assert len(jobs["jobs"]) == 1


def test_cli_reports_a_bad_config_as_a_usage_error(tmp_path: Path, run_cli: CliRunner) -> None:
    cfg = write(tmp_path / "c.toml", "max_rate = 'fast'\n")
    proc = run_cli("jobs", "--config", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"bulktag: error: {cfg}: setting 'max_rate' = 'fast'")
    proc = run_cli("jobs", env={"BULKTAG_MAX_RATE": "0"})
    assert proc.returncode == 2
    assert "bulktag: error: environment BULKTAG_MAX_RATE" in proc.stderr
