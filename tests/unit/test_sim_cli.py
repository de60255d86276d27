"""The simulator's command line parsed in-process (every option mapped to its config and seed,
bad options refused) and its synthetic ARNs (deterministic, placed in their account and region,
any partition). The simulator run as a process: tests/e2e/test_sim_cli.py."""

from __future__ import annotations

import argparse

import pytest

from bulktag.sim import add_sim_arguments, config_from_args, seed_from_args, synthetic_arns


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    return parser.parse_args(list(argv))


def test_config_from_args_maps_every_option() -> None:
    args = parse(
        "--latency-ms", "200-500", "--fault-500", "0.1", "--fault-resource-500", "0.2",
        "--fault-resource-throttle", "0.3", "--no-quotas", "--quota", "TagResources=50",
        "--quota", "GetResources=30", "--seed-resources", "7", "--regions", "us-east-1,eu-west-1",
        "--accounts", "111111111111", "--port", "8123",
    )
    config = config_from_args(args)
    assert config.latency_ms == (200.0, 500.0)
    assert (config.whole_call_error_rate, config.resource_error_rate) == (0.1, 0.2)
    assert config.resource_throttle_rate == 0.3
    assert not config.enforce_quotas
    assert config.quotas["TagResources"] == 50 and config.quotas["GetResources"] == 30
    assert config.quotas["UntagResources"] == 5
    seed = seed_from_args(args, config)
    assert seed is not None and seed.regions == ["us-east-1", "eu-west-1"] and seed.per_region == 7
    assert (args.host, args.port) == ("127.0.0.1", 8123)
    assert seed_from_args(parse(), config_from_args(parse())) is None


@pytest.mark.parametrize(
    "argv", [["--quota", "Nope=5"], ["--quota", "TagResources"], ["--latency-ms", "5-1"],
             ["--fault-500", "2"]]
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_synthetic_arns_are_deterministic_and_placed() -> None:
    accounts, regions = ["111111111111", "222222222222"], ["eu-west-1", "us-east-2"]
    arns = list(synthetic_arns(accounts, regions, 10))
    assert arns == list(synthetic_arns(accounts, regions, 10))
    assert len(set(arns)) == 40
    for text in arns[:10]:
        _, partition, _, region, account, _ = text.split(":", 5)
        assert (partition, region, account) == ("aws", "eu-west-1", "111111111111")
    assert len({a.split(":")[2] for a in arns}) >= 5
    china = next(synthetic_arns(["111111111111"], ["cn-north-1"], 1, partition="aws-cn"))
    assert china.startswith("arn:aws-cn:")
