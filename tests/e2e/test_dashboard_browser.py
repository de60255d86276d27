"""The dashboard in a real browser: Debian's headless chromium driven by Playwright, against a
`bulktag daemon --listen` subprocess working the simulator (another subprocess), with jobs
submitted by the CLI. What an operator does: watch `/` until the job completes without a
reload, open the job, see its chart and shard table, be refused without the token, pause and
resume with it, and read an AWS error message full of markup as text. The run ends with the
README's screenshots (written to docs/ with BULKTAG_UPDATE_SCREENSHOTS=1).

No browser is downloaded: `apt-get install chromium` provides /usr/bin/chromium. When it is
missing these tests fail (never skip), saying so."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulktag.cli.demo import DEMO_ACCOUNT, demo_arns
from tests.support import ROOT
from tests.support.cli import bulktag_argv
from tests.support.daemon import Daemon
from tests.support.sim import simulator_process
from tests.support.waits import wait_until


def _load_screenshots() -> Any:
    """docs/screenshots.py (not a package module): the README's shots and the browser launch."""
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "docs" / "screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screenshots = _load_screenshots()

pytestmark = pytest.mark.slow

TOKEN = "browser-test-token-0123456789"
MARKUP = "<img src=x onerror=alert(1)>"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]
PER_REGION = 500


def chromium_or_fail() -> None:
    if not Path(screenshots.CHROMIUM).exists():
        pytest.fail(f"{screenshots.CHROMIUM} is missing: the dashboard's browser tests need "
                    "Debian's chromium (apt-get update && apt-get install -y chromium); "
                    ".ci/run installs it", pytrace=False)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'", pytrace=False)


@pytest.fixture
def daemon(tmp_path: Path, cli_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A daemon with the dashboard on a free port, a token, a slow rate (30 ARNs/s per region)
    so that a job of 2,000 ARNs runs long enough to watch and pause, and a sample every 2 s
    (10 s by default) so that its chart has points."""
    chromium_or_fail()
    with simulator_process("--latency-ms", "100-200") as sim_url:
        db = tmp_path / "bulktag.db"
        env = {**cli_env, "BULKTAG_UI_TOKEN": TOKEN, "BULKTAG_MAX_RATE": "1.5",
               "BULKTAG_SAMPLE_SECONDS": "2",
               "BULKTAG_IN_FLIGHT_PER_SHARD": "2", "BULKTAG_GRACE_SECONDS": "3"}
        running = Daemon(tmp_path, "daemon", db, sim_url, env)
        try:
            yield {"url": running.url, "db": db, "sim": sim_url, "env": env, "tmp": tmp_path}
        finally:
            try:
                running.stop(15)
            except subprocess.TimeoutExpired:
                running.proc.kill()


def submit(d: dict[str, Any], arns: list[str], name: str) -> int:
    source = d["tmp"] / f"{name}.txt"
    source.write_text("\n".join(arns) + "\n")
    result = subprocess.run(
        bulktag_argv("tag", "--arns", str(source), "--tag", "Owner=platform", "--tag",
                     "CostCenter=cc-1234", "--name", name, "--detach", "--db", str(d["db"]),
                     "--endpoint-url", d["sim"]),
        env=d["env"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def done_of(text: str) -> int:
    match = re.match(r"([\d,]+) / ([\d,]+)", text.strip())
    assert match, text
    return int(match[1].replace(",", ""))


def test_watch_steer_and_read_a_job_in_chromium(daemon: dict[str, Any]) -> None:
    from playwright.sync_api import Dialog, expect, sync_playwright

    url = daemon["url"]
    arns = demo_arns(REGIONS, PER_REGION)
    arns += [f"arn:aws:ec2:us-east-1:{DEMO_ACCOUNT}:instance/i-markup{i}" for i in range(2)]
    alerts: list[str] = []
    answers: list[str | None] = []  # what the next token prompts answer (None: dismiss)

    def on_dialog(dialog: Dialog) -> None:
        if dialog.type != "prompt":
            alerts.append(dialog.message)  # markup that ran would show up here
            dialog.dismiss()
            return
        answer = answers.pop(0)
        if answer is None:
            dialog.dismiss()
        else:
            dialog.accept(answer)

    with sync_playwright() as p:
        browser = screenshots.launch(p)
        try:
            context = browser.new_context(viewport=screenshots.VIEWPORT)
            context.on("dialog", on_dialog)
            jobs = context.new_page()
            jobs.goto(url + "/")
            expect(jobs.locator("#jobs tbody")).to_contain_text("no jobs yet")
            jobs.evaluate("window.__not_reloaded = true")

            job = submit(daemon, arns, "demo")
            row = jobs.locator(f'#jobs tbody tr[data-job="{job}"]')
            expect(row).to_be_visible(timeout=15_000)  # appeared without a reload
            done_cell = row.locator("td").nth(5)
            first = done_of(done_cell.inner_text())
            wait_until(lambda: done_of(done_cell.inner_text()) > first,
                       "progress advanced on /", timeout=30, interval=0.5)
            assert row.locator("svg.bar rect.seg-succeeded").count() == 1

            # The job's page: refused without the token, then paused and resumed with it.
            page = context.new_page()
            page.goto(f"{url}/jobs/{job}")
            expect(page.locator("#state")).to_have_text(re.compile("ready|active"))
            # Buttons for what applies now: a running job pauses, does not resume.
            expect(page.locator("button[data-action=pause]")).to_be_enabled()
            expect(page.locator("button[data-action=resume]")).to_be_disabled()
            status = page.locator("#action-status")
            answers.append(None)  # the operator dismisses the token prompt
            page.click("button[data-action=pause]")
            expect(status).to_contain_text("refused (401)")
            expect(status).to_contain_text("needs the dashboard token")
            answers.append("not-the-token-000000")
            page.click("button[data-action=pause]")
            expect(status).to_contain_text("wrong dashboard token")
            expect(page.locator("#state")).not_to_have_text("paused")
            answers.append(TOKEN)
            page.click("button[data-action=pause]")
            expect(status).to_have_text(f"job {job} paused")
            expect(page.locator("#state")).to_have_text("paused")
            expect(page.locator("button[data-action=pause]")).to_be_disabled()
            expect(page.locator("button[data-action=resume]")).to_be_enabled()
            time.sleep(2)  # the scenario: the job stays paused a while before the resume
            page.click("button[data-action=resume]")  # the token is kept for the tab
            expect(status).to_have_text(f"job {job} resumed")
            expect(page.locator("#state")).to_have_text(re.compile("ready|active"))
            assert answers == []

            # To the end, on both pages, without a reload.
            expect(page.locator("#state")).to_have_text("completed", timeout=120_000)
            expect(row.locator(".state")).to_have_text("completed", timeout=10_000)
            # A finished job: nothing to pause, resume, cancel or re-prioritise (each button
            # says why); its failures can still be retried.
            for name in ("pause", "resume", "cancel", "priority"):
                button = page.locator(f"button[data-action={name}]")
                expect(button).to_be_disabled()
                expect(button).to_have_attribute("title", re.compile("."))
            expect(page.locator("button[data-action=retry]")).to_be_enabled()
            assert done_of(done_cell.inner_text()) == len(arns)
            assert jobs.evaluate("window.__not_reloaded") is True

            # The chart (a sample every 2 s, the last one after the end) and the shard table.
            expect(page.locator("#chart svg polyline.line")).to_have_count(1, timeout=20_000)
            expect(page.locator("#chart svg circle")).not_to_have_count(0)
            points = page.locator("#chart svg polyline.line").get_attribute("points") or ""
            assert len(points.split()) >= 4, points
            shard_rows = page.locator("#shards tbody tr")
            # The IAM role is tagged in us-east-1; the demo's snapshots (no account in their ARN)
            # make a second shard per region, the caller's.
            expect(shard_rows).to_have_count(2 * len(REGIONS))
            for region in REGIONS:
                expect(page.locator("#shards tbody")).to_contain_text(region)

            # The markup in AWS's error message is text: visible, and no element made of it.
            page.reload()
            failures = page.locator("#failures")
            expect(failures).to_contain_text(MARKUP)
            expect(page.locator("#errors")).to_contain_text("TagPolicyViolation")
            expect(page.locator("#errors")).to_contain_text(MARKUP)
            assert page.locator("img").count() == 0
            assert page.locator("#failures b, #errors b").count() == 0
            assert page.evaluate("document.querySelectorAll('img').length") == 0
            assert alerts == []

            shots = screenshots.take(url, job, daemon["tmp"] / "shots", browser)
        finally:
            browser.close()
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("BULKTAG_UPDATE_SCREENSHOTS") == "1":
        for shot in shots:
            shutil.copy(shot, ROOT / "docs" / shot.name)
