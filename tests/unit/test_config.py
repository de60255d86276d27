"""Settings from layers: defaults < config file < environment < CLI flags; bad input named by
file and key; the shipped example config loads and documents the defaults. The same layers
through the CLI in a subprocess: tests/e2e/test_config_cli.py."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from bulktag.config import DEFAULT_QUOTAS, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "bulktag.example.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_with_no_file_and_no_environment(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    s = load_settings(environ=env)
    assert s.db == str(tmp_path / "state" / "bulktag" / "bulktag.db")
    assert s.quotas == DEFAULT_QUOTAS
    assert s.max_rate is None
    assert s.rate_for("TagResources") == 5.0
    assert s.rate_for("GetResources") == 15.0
    assert s.max_attempts == 8


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", """
db = "/from/file.db"
max_rate = 2.0
max_attempts = 3
endpoint_url = "http://file"
[quotas]
TagResources = 4
GetResources = 10
""")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "none")}

    s = load_settings(config_path=str(cfg), environ=env)
    assert (s.db, s.max_rate, s.max_attempts, s.endpoint_url) == (
        "/from/file.db", 2.0, 3, "http://file")
    assert s.quotas == {**DEFAULT_QUOTAS, "TagResources": 4.0, "GetResources": 10.0}

    env |= {"BULKTAG_DB": "/from/env.db", "BULKTAG_MAX_RATE": "1.5",
            "BULKTAG_QUOTA_TAGRESOURCES": "3", "BULKTAG_QUOTA_UNTAGRESOURCES": "2.5"}
    s = load_settings(config_path=str(cfg), environ=env)
    assert (s.db, s.max_rate, s.max_attempts) == ("/from/env.db", 1.5, 3)
    # The env quota overrides one operation; the file's other quota stays.
    assert s.quotas["TagResources"] == 3.0
    assert s.quotas["UntagResources"] == 2.5
    assert s.quotas["GetResources"] == 10.0
    assert s.rate_for("TagResources") == 1.5  # max_rate caps tagging calls
    assert s.rate_for("GetResources") == 10.0

    s = load_settings(config_path=str(cfg), environ=env,
                      overrides={"db": "/from/flag.db", "max_rate": 0.5, "max_attempts": None})
    assert (s.db, s.max_rate, s.max_attempts) == ("/from/flag.db", 0.5, 3)


def test_xdg_config_home_file_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path / "xdg" / "bulktag" / "config.toml", "max_attempts = 5\n")
    s = load_settings(environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert s.max_attempts == 5
    # An explicit --config wins over the XDG file (which is then not read at all).
    other = write(tmp_path / "other.toml", "lease_seconds = 12\n")
    s = load_settings(config_path=str(other), environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert (s.max_attempts, s.lease_seconds) == (8, 12.0)


def test_dashes_in_keys_are_accepted(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", "max-attempts = 2\nlog-format = 'json'\n")
    s = load_settings(config_path=str(cfg), environ={})
    assert (s.max_attempts, s.log_format) == (2, "json")


def test_fast_calls_is_a_boolean_from_file_or_environment(tmp_path: Path) -> None:
    assert Settings().fast_calls is True
    cfg = write(tmp_path / "c.toml", "fast_calls = false\n")
    assert load_settings(config_path=str(cfg), environ={}).fast_calls is False
    for raw, expected in (("false", False), ("0", False), ("Off", False), ("true", True),
                          ("yes", True)):
        env = {"BULKTAG_FAST_CALLS": raw, "XDG_CONFIG_HOME": "/nonexistent"}
        assert load_settings(environ=env).fast_calls is expected, raw


@pytest.mark.parametrize(("text", "named"), [
    ("max_atempts = 3\n", "unknown setting 'max_atempts'"),
    ("fast_calls = 'sometimes'\n", "setting 'fast_calls' = 'sometimes': expected true or false"),
    ("fast_calls = 1\n", "setting 'fast_calls' = 1: expected true or false"),
    ("max_attempts = 'many'\n", "setting 'max_attempts' = 'many': expected a whole number"),
    ("max_attempts = 2.5\n", "setting 'max_attempts' = 2.5: expected a whole number"),
    ("max_attempts = 0\n", "setting 'max_attempts' = 0: must be positive"),
    ("max_attempts = true\n", "setting 'max_attempts' = True: expected a number"),
    ("lease_seconds = -1\n", "setting 'lease_seconds' = -1: must be positive"),
    ("backoff_base = nan\n", "setting 'backoff_base' = nan: expected a finite number"),
    ("max_rate = 0\n", "setting 'max_rate' = 0: must be positive"),
    ("failure_ratio = 1.5\n", "setting 'failure_ratio' = 1.5: must be in (0, 1]"),
    ("log_format = 'xml'\n", "setting 'log_format' = 'xml': expected one of auto, console, json"),
    ("log_level = 'loud'\n", "setting 'log_level' = 'loud': expected one of"),
    ("endpoint_url = 8080\n", "setting 'endpoint_url' = 8080: expected a string"),
    ("db = ''\n", "setting 'db' = '': must not be empty"),
    ("quotas = 5\n", "setting 'quotas' = 5: expected a table"),
    ("[quotas]\nTagResource = 5\n", "unknown operation 'TagResource'"),
    ("[quotas]\nTagResources = 0\n", "rate for TagResources must be positive"),
    ("max_attempts = \n", "not valid TOML"),
])
def test_bad_config_file_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    cfg = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=str(cfg), environ={})
    assert str(info.value).startswith(f"{cfg}: ")
    assert named in str(info.value)


@pytest.mark.parametrize(("var", "value", "named"), [
    ("BULKTAG_MAX_RATE", "fast", "environment BULKTAG_MAX_RATE: setting 'max_rate' = 'fast'"),
    ("BULKTAG_MAX_RATE", "0", "environment BULKTAG_MAX_RATE: setting 'max_rate' = '0': must be"),
    ("BULKTAG_MAX_ATTEMPTS", "-1", "environment BULKTAG_MAX_ATTEMPTS"),
    ("BULKTAG_DB", "", "environment BULKTAG_DB: setting 'db' = '': must not be empty"),
    ("BULKTAG_QUOTA_TAGRESOURCES", "0", "environment BULKTAG_QUOTA_TAGRESOURCES"),
    ("BULKTAG_QUOTA_GETRESOURCES", "x", "environment BULKTAG_QUOTA_GETRESOURCES"),
])
def test_bad_environment_value_is_refused_naming_the_variable(
    var: str, value: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(environ={var: value, "XDG_CONFIG_HOME": "/nonexistent"})


def test_missing_config_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="/no/such.toml: config file not found"):
        load_settings(config_path="/no/such.toml", environ={})


def test_bad_flag_value_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"option --max-rate: setting 'max_rate' = -2\.0"):
        load_settings(environ={"XDG_CONFIG_HOME": "/nonexistent"}, overrides={"max_rate": -2.0})


# -- the shipped example ------------------------------------------------------------------------


def test_example_config_loads_and_matches_the_defaults(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    loaded = load_settings(config_path=str(EXAMPLE), environ=env)
    defaults = load_settings(environ=env)
    assert loaded == defaults
    assert dataclasses.asdict(defaults) | {"db": ""} == dataclasses.asdict(
        dataclasses.replace(Settings(), db=""))


def test_example_config_documents_every_setting() -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    for f in dataclasses.fields(Settings):
        # Set, or shown commented out (settings whose default is "unset" or environment-bound).
        assert re.search(rf"^(# )?(\[)?{f.name}( = |\]|\.)", text, re.M) or f.name in data, f.name
    assert set(data["quotas"]) == set(DEFAULT_QUOTAS)
