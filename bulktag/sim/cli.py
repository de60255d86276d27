"""Command-line options of the simulator, shared by `python -m bulktag.sim` and `bulktag sim`.

The simulator answers the Tagging API, STS, and EC2's CreateTags / DeleteTags / DescribeTags on
one port; `--quota` sets Tagging API rates, `--ec2-bucket` EC2's token buckets, and
`--seed-ec2-share` makes part of the seeded resources EC2 snapshots, volumes and instances.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bulktag.sim.config import (
    DEFAULT_EC2_BUCKETS,
    DEFAULT_QUOTAS,
    SimConfig,
    parse_ec2_bucket,
    parse_latency,
)

if TYPE_CHECKING:  # the server (and aiohttp) load only when the simulator runs
    from bulktag.sim.server import SeedSpec


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a rate is between 0 and 1")
    return value


def _latency(text: str) -> tuple[float, float]:
    try:
        return parse_latency(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _quota(text: str) -> tuple[str, float]:
    op, sep, rate = text.partition("=")
    if not sep or op not in DEFAULT_QUOTAS:
        raise argparse.ArgumentTypeError(
            f"{text}: expected OP=RATE, OP one of {sorted(DEFAULT_QUOTAS)}"
        )
    try:
        value = float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: RATE must be a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: RATE must be positive")
    return op, value


def _ec2_bucket(text: str) -> tuple[str, tuple[float, float]]:
    try:
        return parse_ec2_bucket(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to `parser`."""
    if parser.description is None:
        parser.description = (
            "A local simulator of the Resource Groups Tagging API, STS, and EC2's CreateTags, "
            "DeleteTags and DescribeTags (one store of tags: EC2 ids map to their ARNs). Real "
            "AWS clients talk to it at the printed URL; /_sim/stats, /_sim/config, /_sim/seed, "
            "/_sim/tags and /_sim/delete serve tests."
        )
    ec2_defaults = ", ".join(f"{op}={c:g}:{r:g}" for op, (c, r) in DEFAULT_EC2_BUCKETS.items())
    g = parser.add_argument_group("simulator")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on")
    g.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    g.add_argument("--latency-ms", type=_latency, default=(0.0, 0.0), metavar="LOW-HIGH",
                   help="uniform latency per call in ms, e.g. 200-500")
    g.add_argument("--fault-500", type=_rate, default=0.0, metavar="RATE",
                   help="fraction of calls answered 500 InternalServiceException "
                        "(EC2: InternalError)")
    g.add_argument("--fault-resource-500", type=_rate, default=0.0, metavar="RATE",
                   help="fraction of ARNs failed with InternalServiceException")
    g.add_argument("--fault-resource-throttle", type=_rate, default=0.0, metavar="RATE",
                   help="fraction of ARNs failed with ThrottlingException in FailedResourcesMap")
    g.add_argument("--no-quotas", action="store_true", help="do not enforce request quotas")
    g.add_argument("--quota", type=_quota, action="append", default=[], metavar="OP=RATE",
                   help="Tagging API requests/s of OP per account and region (repeatable)")
    g.add_argument("--ec2-bucket", type=_ec2_bucket, action="append", default=[],
                   metavar="ACTION=CAPACITY:REFILL",
                   help="EC2 token bucket of ACTION per account and region: capacity and "
                        f"refill tokens/s (repeatable; default {ec2_defaults})")
    g.add_argument("--seed-resources", type=int, default=0, metavar="N",
                   help="synthetic resources to create per account and region")
    g.add_argument("--seed-ec2-share", type=_rate, default=0.0, metavar="RATE",
                   help="fraction of seeded resources that are EC2 snapshots, volumes and "
                        "instances (default 0: the usual mix of services)")
    g.add_argument("--regions", type=_csv, default=["us-east-1"], metavar="R1,R2",
                   help="regions to seed (comma-separated)")
    g.add_argument("--accounts", type=_csv, default=None, metavar="A1,A2",
                   help="accounts to seed (comma-separated; default: the default account)")
    g.add_argument("--tag-policy", action="append", default=[], type=_tag_policy,
                   metavar="ACCOUNT=FILE",
                   help="the account's effective tag policy (JSON file, as "
                        "DescribeEffectivePolicy answers it); TagResources refuses "
                        "noncompliant tags on the types it enforces (repeatable)")
    g.add_argument("--organization", type=_organization, default=None, metavar="FILE",
                   help="the organisation's tree (JSON: {root, ous: {ou: parent}, accounts: "
                        "{id: {parent, state}}}) for Organizations' List* calls")
    g.add_argument("--fault-seed", type=int, default=None, metavar="N",
                   help="seed of the fault random generator")


def _tag_policy(text: str) -> tuple[str, str]:
    account, sep, path = text.partition("=")
    if not sep or not (len(account) == 12 and account.isdigit()):
        raise argparse.ArgumentTypeError(f"expected ACCOUNT=FILE, got {text!r}")
    try:
        content = open(path, encoding="utf-8").read()
        json.loads(content)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc}") from None
    return account, content


def _organization(path: str) -> dict[str, Any]:
    try:
        tree = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc}") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("root"), str):
        raise argparse.ArgumentTypeError(f"{path}: expected {{root, ous, accounts}}")
    return tree


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        quotas=dict(args.quota),
        ec2_buckets=dict(args.ec2_bucket),
        enforce_quotas=not args.no_quotas,
        latency_ms=args.latency_ms,
        whole_call_error_rate=args.fault_500,
        resource_error_rate=args.fault_resource_500,
        resource_throttle_rate=args.fault_resource_throttle,
        seed=args.fault_seed,
        tag_policies=dict(args.tag_policy),
        organization=args.organization,
    )


def seed_from_args(args: argparse.Namespace, config: SimConfig) -> SeedSpec | None:
    if args.seed_resources <= 0:
        return None
    from bulktag.sim.server import SeedSpec

    return SeedSpec(args.accounts or [config.default_account], args.regions, args.seed_resources,
                    ec2_share=args.seed_ec2_share)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bulktag-sim"
    )
    add_sim_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    try:
        from bulktag.sim.server import serve_forever

        asyncio.run(serve_forever(config, args.host, args.port, seed_from_args(args, config)))
    except KeyboardInterrupt:
        pass
