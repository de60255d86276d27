"""A local Resource Groups Tagging API (and STS) simulator that real AWS clients talk to.

Start it with `start_simulator()` and point aiobotocore at `sim.url`; it enforces the API's
parameter checks and request quotas and injects faults on demand.
"""

from bulktag.sim.arns import synthetic_arns
from bulktag.sim.cli import add_sim_arguments, config_from_args, seed_from_args
from bulktag.sim.config import DEFAULT_QUOTAS, SimConfig
from bulktag.sim.server import RunningSimulator, SeedSpec, serve_forever, start_simulator
from bulktag.sim.store import SimState

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
