"""Screenshots of the dashboard for the README: `/` and one job's page, as PNGs.

    python docs/screenshots.py URL JOB [OUT_DIR]     # default OUT_DIR: docs/

URL is a running daemon's dashboard (`bulktag daemon --listen ...`). The browser test
(tests/e2e/test_dashboard_browser.py) calls `take()` against the demo data at the end of its run;
with BULKTAG_UPDATE_SCREENSHOTS=1 it writes them here (docs/dashboard.png and
docs/dashboard-job.png, the files the README shows). Debian's chromium drives the shots through
Playwright; no browser is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}


def launch(playwright: Any) -> Any:
    """Debian's chromium, headless, through Playwright (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def take(url: str, job: int, out: Path, browser: Any = None) -> list[Path]:
    """Shoot `/` and `/jobs/JOB` of the dashboard at `url` into `out`; returns the files.
    `browser`: a Playwright browser to use (default: launch one for these shots)."""
    out.mkdir(parents=True, exist_ok=True)
    shots = [(f"{url}/", out / "dashboard.png"),
             (f"{url}/jobs/{job}", out / "dashboard-job.png")]
    if browser is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            own = launch(p)
            try:
                return take(url, job, out, own)
            finally:
                own.close()
    page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
    try:
        for address, path in shots:
            page.goto(address)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(path), full_page=True)
    finally:
        page.close()
    return [path for _, path in shots]


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    target = Path(sys.argv[3]) if len(sys.argv) == 4 else Path(__file__).resolve().parent
    for written in take(sys.argv[1].rstrip("/"), int(sys.argv[2]), target):
        print(written)
