"""A local Resource Groups Tagging API (and STS) simulator that real AWS clients talk to.

Start it with `start_simulator()` and point aiobotocore at `sim.url`; it enforces the API's
parameter checks and request quotas and injects faults on demand.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulktag.sim.arns import synthetic_arns
    from bulktag.sim.cli import add_sim_arguments, config_from_args, seed_from_args
    from bulktag.sim.config import DEFAULT_QUOTAS, SimConfig
    from bulktag.sim.server import RunningSimulator, SeedSpec, serve_forever, start_simulator
    from bulktag.sim.store import SimState

# Imported on first use: the server pulls in aiohttp (~0.1 s), which `bulktag status` and the
# other commands building the CLI parser never need.
_LAZY = {
    "synthetic_arns": "bulktag.sim.arns",
    "add_sim_arguments": "bulktag.sim.cli",
    "config_from_args": "bulktag.sim.cli",
    "seed_from_args": "bulktag.sim.cli",
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
    "DEFAULT_QUOTAS",
    "RunningSimulator",
    "SeedSpec",
    "SimConfig",
    "SimState",
    "add_sim_arguments",
    "config_from_args",
    "seed_from_args",
    "serve_forever",
    "start_simulator",
    "synthetic_arns",
]
