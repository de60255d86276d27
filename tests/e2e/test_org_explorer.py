"""Every resource of an organisation (issue 24, done-when): accounts from AWS Organizations
(`--ou`, `--accounts org`, `--exclude-accounts`; SUSPENDED ones skipped and counted) and
Resource Explorer as a source that finds the never-tagged resources GetResources cannot list.
Through the CLI against the simulator in another process (its Organizations tree from a file,
its organisation-wide view over everything it holds), and the accounts part against moto's
Organizations as well."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.cli import CliRunner
from tests.support.sim import sim_post, sim_tags, simulator_process

pytestmark = pytest.mark.slow

MANAGEMENT, PROD, PROD_EU, SUSPENDED, DEV = ("123456789012", "111111111111", "222222222222",
                                             "333333333333", "444444444444")
ACCOUNTS = [MANAGEMENT, PROD, PROD_EU, SUSPENDED, DEV]
REGIONS = ["us-east-1", "eu-west-1", "us-west-2"]
TREE = {"root": "r-sim1",
        "ous": {"ou-prod-aaaa1111": "r-sim1", "ou-prod-eu-bbbb2222": "ou-prod-aaaa1111",
                "ou-dev-cccc3333": "r-sim1"},
        "accounts": {MANAGEMENT: {"parent": "r-sim1"}, PROD: {"parent": "ou-prod-aaaa1111"},
                     PROD_EU: {"parent": "ou-prod-eu-bbbb2222"},
                     SUSPENDED: {"parent": "ou-prod-aaaa1111", "state": "SUSPENDED"},
                     DEV: {"parent": "ou-dev-cccc3333"}}}


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tree = tmp_path_factory.mktemp("org") / "org.json"
    tree.write_text(json.dumps(TREE))
    with simulator_process("--organization", str(tree)) as url:
        sim_post(url, "/_sim/seed", {"accounts": ACCOUNTS, "regions": REGIONS, "per_region": 64,
                                 "tags": {"team": "x"}, "never_tagged_share": 0.5})
        yield url


def every_arn(url: str) -> list[dict[str, Any]]:
    """Every resource the simulator holds, as its organisation-wide view lists it."""
    client = boto3.client("resource-explorer-2", region_name="us-east-1", endpoint_url=url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    found: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.list_resources(MaxResults=1000, **({"NextToken": token} if token else {}))
        found += page["Resources"]
        token = page.get("NextToken")
        if not token:
            return found


def test_tag_every_lambda_of_an_ou_never_tagged_ones_included(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    resources = every_arn(sim_url)
    lambdas = [r for r in resources if r["Service"] == "lambda"]
    untagged = [r for r in lambdas if not sim_tags(sim_url, r["Arn"])]
    assert untagged and len(untagged) < len(lambdas)  # some were never tagged
    wanted = {r["Arn"] for r in lambdas if r["OwningAccountId"] in (PROD, PROD_EU)
              and r["Region"] in ("us-east-1", "eu-west-1")}
    assert any(r["Arn"] in wanted for r in untagged)

    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim_url]
    job = ["tag", "--ou", "ou-prod-aaaa1111", "--role-name", "R", "--regions",
           "us-east-1,eu-west-1", "--tag", "Owner=platform"]
    planned = run_cli(*job, "--explorer", "service:lambda", "--dry-run", "--json", *common)
    assert planned.returncode == 0, planned.stderr[-2000:]
    plan = json.loads(planned.stdout)
    assert sorted(plan["accounts"]) == [PROD, PROD_EU]
    assert plan["accounts_skipped"] == {SUSPENDED: "SUSPENDED"}
    assert plan["change"] == len(wanted) and "warning" not in plan

    ran = run_cli(*job, "--explorer", "service:lambda", "--json", *common)
    assert ran.returncode == 0, ran.stderr[-2000:]
    (done,) = json.loads(ran.stdout)["jobs"]
    assert done["counts"]["succeeded"] == len(wanted), done
    for r in resources:
        assert (sim_tags(sim_url, r["Arn"]).get("Owner") == "platform") == \
            (r["Arn"] in wanted), r
    assert all(sim_tags(sim_url, r["Arn"]) == {"Owner": "platform"} for r in untagged
               if r["Arn"] in wanted)  # the never-tagged ones got theirs

    # GetResources cannot see what was never tagged: the plan says so and names --explorer.
    by_type = run_cli(*job, "--resource-type", "lambda", "--dry-run", *common)
    assert by_type.returncode == 0, by_type.stderr[-2000:]
    assert "never tagged are not found here; --explorer" in by_type.stdout


def test_accounts_org_and_exclusions(tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim_url]
    planned = run_cli("untag", "--accounts", "org", "--exclude-accounts", DEV, "--regions",
                      "us-east-1", "--resource-type", "dynamodb", "--key", "nothing",
                      "--dry-run", "--json", *common)
    assert planned.returncode == 0, planned.stderr[-2000:]
    plan = json.loads(planned.stdout)
    assert sorted(plan["accounts"]) == [PROD, MANAGEMENT, PROD_EU]
    assert plan["accounts_skipped"] == {SUSPENDED: "SUSPENDED"}

    member = run_cli("tag", "--accounts", "org", "--regions", "us-east-1", "--resource-type",
                     "lambda", "--tag", "a=b", "--dry-run", *common,
                     env={"AWS_ACCESS_KEY_ID": f"sim-{DEV}-key"})
    assert member.returncode == 2, member.stderr[-2000:]
    assert "management account or a delegated administrator" in member.stderr
    assert "Traceback" not in member.stderr
    bad = run_cli("tag", "--ou", "ou-nope-zzzz9999", "--regions", "us-east-1",
                  "--resource-type", "lambda", "--tag", "a=b", "--dry-run", *common)
    assert bad.returncode == 2 and "check the OU ids" in bad.stderr
    assert run_cli("tag", "--ou", "prod", "--tag", "a=b", *common).returncode == 2


def test_accounts_from_motos_organizations(tmp_path: Path, moto_url: str,
                                           run_cli: CliRunner) -> None:
    org = boto3.client("organizations", region_name="us-east-1", endpoint_url=moto_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    prod = org.create_organizational_unit(ParentId=root, Name="prod")["OrganizationalUnit"]["Id"]
    child = org.create_organizational_unit(ParentId=prod, Name="eu")["OrganizationalUnit"]["Id"]

    def account(name: str, parent: str) -> str:
        made = org.create_account(Email=f"{name}@example.com", AccountName=name)
        account_id: str = made["CreateAccountStatus"]["AccountId"]
        org.move_account(AccountId=account_id, SourceParentId=root, DestinationParentId=parent)
        return account_id

    direct, nested, closed = account("a", prod), account("b", child), account("c", prod)
    account("d", root)
    org.close_account(AccountId=closed)
    planned = run_cli("tag", "--ou", prod, "--regions", "us-east-1", "--resource-type",
                      "lambda", "--tag", "a=b", "--dry-run", "--json", "--db",
                      str(tmp_path / "s.db"), "--endpoint-url", moto_url)
    assert planned.returncode == 0, planned.stderr[-2000:]
    plan = json.loads(planned.stdout)
    assert sorted(plan["accounts"]) == sorted([direct, nested])
    assert plan["accounts_skipped"] == {closed: "SUSPENDED"}


def test_inventory_through_the_explorer_lists_never_tagged_resources(
        tmp_path: Path, sim_url: str, run_cli: CliRunner) -> None:
    lambdas = {r["Arn"] for r in every_arn(sim_url) if r["Service"] == "lambda"
               and r["OwningAccountId"] == PROD and r["Region"] == "us-west-2"}
    out = tmp_path / "inv.jsonl"
    common = ["--db", str(tmp_path / "s.db"), "--endpoint-url", sim_url]
    done = run_cli("inventory", "-o", str(out), "--explorer", "service:lambda", "--accounts",
                   PROD, "--regions", "us-west-2", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["arn"] for r in rows} == lambdas
    assert any(not r["tags"] for r in rows) and {r["account"] for r in rows} == {PROD}
    assert "never_tagged_not_listed" not in done.stderr
    by_type = run_cli("inventory", "-o", str(tmp_path / "inv2.jsonl"), "--resource-type",
                      "lambda", "--accounts", PROD, "--regions", "us-west-2", "--role-name",
                      "R", *common)
    assert by_type.returncode == 0, by_type.stderr[-2000:]
    assert "never_tagged_not_listed" in by_type.stderr
    fewer = (tmp_path / "inv2.jsonl").read_text().splitlines()
    assert len(fewer) < len(rows)  # GetResources does not see the never-tagged ones
