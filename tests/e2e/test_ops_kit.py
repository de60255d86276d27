"""The operations kit (issue 25): the Prometheus alert rules pass `promtool check rules`, and
every metric the rules and the Grafana dashboard query is one a running daemon's /metrics
exposes (a daemon on the simulator, after it worked a job, scraped for real)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bulktag.sim import synthetic_arns
from tests.support.daemon import Daemon, http
from tests.support.sim import simulator_process

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "bulktag-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "bulktag.json"
NAME = re.compile(r"\bbulktag_[a-z_]+\b")


def test_the_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (.ci/run does)"
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def exposed_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_every_queried_metric_is_exposed(
        tmp_path: Path, cli_env: dict[str, str],
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    db = tmp_path / "s.db"
    arns = tmp_path / "arns.txt"
    arns.write_text("\n".join(synthetic_arns(["123456789012"], ["us-east-1"], 40)) + "\n")
    with simulator_process() as sim:
        submitted = run_cli("tag", "--arns", str(arns), "--tag", "ops=kit", "--detach",
                            "--db", str(db), "--endpoint-url", sim)
        assert submitted.returncode == 0, submitted.stderr
        daemon = Daemon(tmp_path, "ops", db, sim, cli_env)
        try:
            status, text = http(daemon.url + "/metrics")
            assert status == 200
        finally:
            daemon.stop(30)
    exposed = exposed_names(text)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 12
    rules = RULES.read_text()
    for where, text_ in (("dashboard", "\n".join(queries)), ("rules", rules)):
        named = set(NAME.findall(text_))
        assert named, where
        missing = sorted(named - exposed)
        assert not missing, f"{where} queries metrics /metrics does not expose: {missing}"
