"""A local Resource Groups Tagging API (plus STS, and EC2's CreateTags / DeleteTags /
DescribeTags) simulator that real AWS clients talk to.

Start it with `start_simulator()` and point aiobotocore or boto3 at `sim.url`; it enforces the
APIs' parameter checks and request quotas and injects faults on demand. Both tagging APIs share
one store keyed by ARN (`ec2_arn` maps an EC2 id to its ARN). Imports nothing else of bulktag.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulktag.sim.arns import ec2_arn, ec2_resource_id, synthetic_arns, synthetic_resources
    from bulktag.sim.cli import add_sim_arguments, config_from_args, seed_from_args
    from bulktag.sim.config import DEFAULT_EC2_BUCKETS, DEFAULT_QUOTAS, SimConfig
    from bulktag.sim.server import RunningSimulator, SeedSpec, serve_forever, start_simulator
    from bulktag.sim.store import SimState

# Imported on first use: the server pulls in aiohttp (~0.1 s), which `bulktag status` and the
# other commands building the CLI parser never need.
_LAZY = {
    "ec2_arn": "bulktag.sim.arns",
    "ec2_resource_id": "bulktag.sim.arns",
    "synthetic_arns": "bulktag.sim.arns",
    "synthetic_resources": "bulktag.sim.arns",
    "add_sim_arguments": "bulktag.sim.cli",
    "config_from_args": "bulktag.sim.cli",
    "seed_from_args": "bulktag.sim.cli",
    "DEFAULT_EC2_BUCKETS": "bulktag.sim.config",
    "DEFAULT_QUOTAS": "bulktag.sim.config",
    "SimConfig": "bulktag.sim.config",
    "RunningSimulator": "bulktag.sim.server",
    "SeedSpec": "bulktag.sim.server",
    "serve_forever": "bulktag.sim.server",
    "start_simulator": "bulktag.sim.server",
    "SimState": "bulktag.sim.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_EC2_BUCKETS",
    "DEFAULT_QUOTAS",
    "RunningSimulator",
    "SeedSpec",
    "SimConfig",
    "SimState",
    "add_sim_arguments",
    "config_from_args",
    "ec2_arn",
    "ec2_resource_id",
    "seed_from_args",
    "serve_forever",
    "start_simulator",
    "synthetic_arns",
    "synthetic_resources",
]
