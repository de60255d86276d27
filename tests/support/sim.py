"""The simulator as a separate process (`bulktag sim`) for tests whose CLI subprocesses call it
over HTTP, readers of its `/_sim/*` endpoints, and seeding a running one with resources.
In-process tests use the `sim` fixture (tests/conftest.py) for the simulator itself."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from bulktag.sim import RunningSimulator, synthetic_arns


@contextlib.contextmanager
def simulator_process(*args: str) -> Iterator[str]:
    """`bulktag sim` in its own process on a free port; yields its URL, stops it after."""
    proc = subprocess.Popen([sys.executable, "-m", "bulktag", "sim", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("bulktag-sim listening on "), line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


def sim_get(url: str, path: str) -> dict[str, object]:
    """GET url+path of a running simulator, as JSON."""
    with urllib.request.urlopen(url + path, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def sim_post(url: str, path: str, body: dict[str, object]) -> Any:
    """POST JSON to url+path of a running simulator (`/_sim/seed`, `/_sim/config`); its
    JSON answer."""
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def sim_tags(url: str, arn: str) -> dict[str, str]:
    """The tags the simulator holds for `arn` ({} when none)."""
    return sim_get(url, "/_sim/tags?arn=" + urllib.parse.quote(arn, safe=""))  # type: ignore[return-value]


def seed_env(sim: RunningSimulator, accounts: list[str], regions: list[str],
             per_region: int) -> dict[str, bool]:
    """Synthetic resources in every account and region; every third one has env=prod, the rest
    env=dev. ARN -> whether it has env=prod."""
    matching = {}
    for n, arn in enumerate(synthetic_arns(accounts, regions, per_region)):
        prod = n % 3 == 0
        sim.state.put(arn, {"env": "prod" if prod else "dev"}, account=arn.split(":")[4])
        matching[arn] = prod
    return matching
