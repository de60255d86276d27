"""A job keeps how it reaches its accounts (issue 27): a role given at submission is stored with
the job and used by whichever worker works it. Submitted detached with --role-name for two
accounts; a plain `bulktag run` with no role in its settings tags every resource of both (before,
every call of the other account went out with the caller's credentials and failed
AccessDenied). Through the CLI against the simulator in another process (AssumeRole answers
with keys of the role's account; a resource of another account refuses the caller's keys), on
both stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulktag.sim import synthetic_arns
from tests.support.cli import CliRunner
from tests.support.sim import sim_tags, simulator_process

pytestmark = pytest.mark.slow

CALLER, OTHER = "123456789012", "222222222222"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with simulator_process("--accounts", f"{CALLER},{OTHER}", "--regions", "us-east-1",
                           "--seed-resources", "30") as url:
        yield url


def test_a_detached_jobs_role_is_used_by_a_worker_without_one(
        tmp_path: Path, sim_url: str, store_url: str, run_cli: CliRunner) -> None:
    arns = list(synthetic_arns([CALLER, OTHER], ["us-east-1"], 30))
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    store = ["--db", store_url]
    common = [*store, "--endpoint-url", sim_url]
    key = f"k{abs(hash(store_url)) % 10_000}"  # this run's own tag on the shared simulator
    submitted = run_cli("tag", "--detach", "--arns", str(source), "--tag", f"{key}=v",
                        "--role-name", "Tagger", "--external-id", "ext-1", *common)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job = int(submitted.stdout.strip())
    status = json.loads(run_cli("status", str(job), "--json", *store).stdout)
    assert status["role_name"] == "Tagger"
    assert "role arn:aws:iam::222222222222:role/Tagger (the job's" in status["access"][OTHER]
    assert "ext-1" not in json.dumps(status)  # the external id is not shown

    ran = run_cli("run", "--json", *common)  # no --role-name here
    assert ran.returncode == 0, ran.stderr[-2000:]
    (done,) = json.loads(ran.stdout)["jobs"]
    assert done["counts"]["succeeded"] == len(arns), done
    assert all(sim_tags(sim_url, a).get(key) == "v" for a in arns)

    # Undo goes the same way, again from a worker that names no role.
    undone = run_cli("undo", str(job), "--json", *common)
    assert undone.returncode == 0, undone.stderr[-2000:]
    assert all(key not in sim_tags(sim_url, a) for a in arns)
    listed = json.loads(run_cli("jobs", "--json", *store).stdout)["jobs"]
    assert [j["role_name"] for j in listed] == ["Tagger", "Tagger"]


def test_without_a_role_the_other_account_fails_and_retry_can_add_one(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    arns = list(synthetic_arns([OTHER], ["us-east-1"], 30))
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    store = ["--db", str(tmp_path / "s.db")]
    common = [*store, "--endpoint-url", sim_url]
    first = run_cli("tag", "--arns", str(source), "--tag", "r27=x", "--json",
                    "--failure-ratio", "1", *common)
    assert first.returncode == 3, first.stderr[-2000:]
    status = json.loads(run_cli("status", "1", "--json", *store).stdout)
    advice = status["top_errors"][0]["advice"]
    assert "the worker used the caller's own credentials (account 123456789012)" in advice
    assert "--role-name" in advice
    retried = run_cli("retry", "1", "--role-name", "Tagger", *store)
    assert retried.returncode == 0, retried.stderr[-2000:]
    ran = run_cli("run", "--json", *common)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert all(sim_tags(sim_url, a).get("r27") == "x" for a in arns)


def test_a_sync_rule_keeps_its_role_for_its_reads_and_jobs(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    arns = list(synthetic_arns([OTHER], ["us-east-1"], 30))
    source = tmp_path / "arns.txt"
    source.write_text("\n".join(arns) + "\n")
    store = ["--db", str(tmp_path / "s.db")]
    common = [*store, "--endpoint-url", sim_url]
    marked = run_cli("tag", "--arns", str(source), "--tag", "s27=in", "--role-name", "Tagger",
                     *common)
    assert marked.returncode == 0, marked.stderr[-2000:]
    added = run_cli("sync", "add", "r27", "--tag-key", "s27", "--tag-value", "in", "--apply",
                    "s27owner=team", "--accounts", OTHER, "--regions", "us-east-1",
                    "--role-name", "Tagger", "--json", *store)
    assert added.returncode == 0, added.stderr[-2000:]
    assert json.loads(added.stdout)["role_name"] == "Tagger"
    ran = run_cli("sync", "run", "r27", "--json", *common)  # this worker names no role
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert all(sim_tags(sim_url, a).get("s27owner") == "team" for a in arns)
