"""The daemon's dashboard: watch and steer jobs in a browser (issue 14).

Mounted by `bulktag daemon --listen HOST:PORT` next to /healthz and /metrics, on the same
aiohttp application and the same store:

- `/` every job (progress, ARNs/s, ETA, failures), the tag-sync rules and the workers sharing
  the store; `/jobs/N` one job: a throughput chart (inline SVG from the samples the daemon
  keeps), the per account and region table, top errors with advice, the latest failures,
  report and manifest downloads. Both update themselves by polling the JSON API.
- `/api/jobs`, `/api/jobs/N`, `/api/workers`, `/api/sync-rules` (GET, JSON) and
  `/api/jobs/N/{pause,resume,cancel,retry,priority}` (POST, only with `ui_token` configured).

Layout: `app.py` routes and reads, `security.py` decides who may act and sets the headers,
`chart.py` turns samples into a chart, `samples.py` is what the daemon writes for it, and
`templates/` holds the Jinja2 pages (autoescaped) and the one inline script.
"""

from bulktag.web.dashboard.app import Dashboard
from bulktag.web.dashboard.samples import SAMPLE_SECONDS, sample_jobs

__all__ = ["SAMPLE_SECONDS", "Dashboard", "sample_jobs"]
