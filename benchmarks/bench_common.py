"""Shared helpers for the benchmarks: machine facts, the simulator as a separate process,
measured subprocesses (wall time, CPU seconds and peak RSS of exactly that child), ARN files,
and a read-only look into a bulktag store.

Nothing here asserts: benchmarks print figures; judging them is the reader's job.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
ACCOUNT = "123456789012"  # the simulator's default account (any access key maps to it)

# Real region names first; synthetic ones (valid in both bulktag's and the simulator's ARN
# grammar, and accepted by botocore as region names) for shard counts beyond them.
REAL_REGIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2", "eu-west-3",
    "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "ap-south-1",
    "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-east-1", "ca-central-1",
    "ca-west-1", "sa-east-1", "me-south-1", "me-central-1", "af-south-1", "il-central-1",
    "mx-central-1",
]


def regions(n: int) -> list[str]:
    out = REAL_REGIONS[:n]
    i = 1
    while len(out) < n:
        out.append(f"zz-bench-{i}")
        i += 1
    return out


# -- environment -------------------------------------------------------------------------------


def bulktag_env(tmp: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Environment for bulktag subprocesses: fake credentials, no user config files."""
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONUNBUFFERED="1",
    )
    for k in list(env):
        if k.startswith("BULKTAG_") or k in ("AWS_PROFILE", "AWS_SESSION_TOKEN",
                                              "AWS_ENDPOINT_URL"):
            env.pop(k)
    if tmp is not None:
        env["XDG_CONFIG_HOME"] = str(Path(tmp) / "xdg-config")  # no user config.toml
        env["XDG_STATE_HOME"] = str(Path(tmp) / "xdg-state")
    return env


def set_boto_env() -> None:
    """Same fake credentials for boto3 used in this process (alternatives)."""
    for k, v in bulktag_env().items():
        if k.startswith("AWS_"):
            os.environ[k] = v
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(k, None)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": "%.2f %.2f %.2f" % load,
        "commit": _commit(),
    }


def _commit() -> str:
    """The checkout measured: HEAD, plus '+dirty' when bulktag/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bulktag"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head or "?") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def print_machine(title: str) -> dict[str, Any]:
    m = machine()
    print(f"== {title}")
    print(f"   date {m['date']}; CPU {m['cpu']} x {m['cores']} cores; {m['platform']}; "
          f"Python {m['python']}; load average at start {m['loadavg']}; bulktag at "
          f"{m['commit']}")
    return m


# -- measured subprocesses ---------------------------------------------------------------------


@dataclass
class Measured:
    cmd: list[str]
    rc: int
    wall: float  # s
    utime: float  # s
    stime: float  # s
    maxrss_kb: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def cpu(self) -> float:
        return self.utime + self.stime

    @property
    def maxrss_mb(self) -> float:
        return self.maxrss_kb / 1024.0


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None,
                 timeout: float = 600.0, cwd: str | None = None) -> Measured:
    """Run cmd under a small fresh helper (bench_measure.py): wall time, CPU and peak RSS are
    those of exactly this command (wait4() rusage), never mixed with other children and never
    floored at this (big) benchmark process's RSS."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as res:
        helper = [PY, str(Path(__file__).resolve().parent / "bench_measure.py"), res.name,
                  str(timeout), "--", *cmd]
        subprocess.run(helper, stdout=out, stderr=err, env=env, cwd=cwd or str(REPO),
                       check=False)
        r = json.loads(Path(res.name).read_text())
        out.seek(0)
        err.seek(0)
        return Measured(list(cmd), r["rc"], r["wall"], r["utime"], r["stime"], r["maxrss_kb"],
                        out.read(), err.read(), r["timed_out"])


def bulktag_cmd(*args: str) -> list[str]:
    return [PY, "-m", "bulktag", *args]


# -- the simulator in its own process ----------------------------------------------------------


@dataclass
class SimProcess:
    args: list[str]
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    _conn: http.client.HTTPConnection | None = None
    cpu_seconds: float | None = None  # filled at stop()
    _log: Any = field(default=None, repr=False)

    def start(self) -> SimProcess:
        self._log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            bulktag_cmd("sim", "--port", "0", *self.args), stdout=subprocess.PIPE,
            stderr=self._log, text=True, env=bulktag_env(), cwd=str(REPO),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (\S+)", line)
        if not m:
            self.stop()
            self._log.seek(0)
            raise RuntimeError(f"simulator did not start: {line!r} {self._log.read()[-2000:]}")
        self.url = m.group(1).rstrip("/")
        return self

    def _http(self) -> http.client.HTTPConnection:
        if self._conn is None:
            u = urllib.parse.urlsplit(self.url)
            self._conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port,
                                                    timeout=30)
        return self._conn

    def get(self, path: str) -> tuple[int, Any]:
        for attempt in range(2):
            try:
                conn = self._http()
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                return resp.status, json.loads(body) if body else None
            except (OSError, http.client.HTTPException):
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.get("/_sim/stats")[1]
        return stats

    def tags(self, arn: str) -> dict[str, str] | None:
        status, body = self.get("/_sim/tags?arn=" + urllib.parse.quote(arn, safe=""))
        return body if status == 200 else None

    def count_without(self, arns: Iterable[str], key: str, value: str) -> int:
        """How many of these ARNs do not carry key=value in the simulator."""
        return sum(1 for a in arns if (self.tags(a) or {}).get(key) != value)

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                _, _, ru = os.wait4(self.proc.pid, 0)
                self.cpu_seconds = ru.ru_utime + ru.ru_stime
                self.proc.returncode = 0
            except ChildProcessError:
                pass
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stats_delta(before: dict[str, Any], after: dict[str, Any], op: str = "TagResources"
                ) -> dict[str, int]:
    def g(d: dict[str, Any], k: str) -> int:
        return int((d.get(k) or {}).get(op, 0))
    return {k: g(after, k) - g(before, k) for k in ("requests", "throttled", "arn_sends")}


# -- ARN files ---------------------------------------------------------------------------------

_KINDS = ("ec2:instance/i-{n:017x}", "lambda:function:fn-{n:08d}", "dynamodb:table/t-{n:08d}",
          "sqs:queue-{n:08d}", "sns:topic-{n:08d}", "logs:log-group:/app/g-{n:08d}",
          "rds:db:db-{n:08d}", "ec2:volume/vol-{n:017x}")


def arns_for(region_list: Sequence[str], per_region: int, *, prefix: str = "",
             account: str = ACCOUNT) -> Iterable[str]:
    """Distinct, deterministic ARNs of mixed services; `prefix` keeps runs apart."""
    for region in region_list:
        for n in range(per_region):
            service, _, template = _KINDS[n % len(_KINDS)].partition(":")
            resource = template.format(n=n)
            if prefix:
                resource = f"{resource}-{prefix}"
            yield f"arn:aws:{service}:{region}:{account}:{resource}"


def write_arns(path: Path, arns: Iterable[str]) -> int:
    n = 0
    with open(path, "w", buffering=1 << 20) as f:
        buf = []
        for a in arns:
            buf.append(a)
            n += 1
            if len(buf) >= 100_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    return n


# -- a read-only look into a bulktag store -----------------------------------------------------


def job_facts(db: str, job_id: int) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT state, started_at, finished_at, created_at FROM jobs "
                          "WHERE id = ?", (job_id,)).fetchone()
        counts = dict(con.execute("SELECT state, count(*) FROM items WHERE job_id = ? "
                                  "GROUP BY state", (job_id,)).fetchall())
        return {"state": row[0], "started_at": row[1], "finished_at": row[2],
                "created_at": row[3], "counts": counts}
    finally:
        con.close()


def arns_in_state(db: str, job_id: int, state: str) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute(
            "SELECT arn FROM items WHERE job_id = ? AND state = ?", (job_id, state))]
    finally:
        con.close()


def error_codes(db: str, job_id: int) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT error_code, count(*) FROM items WHERE job_id = ? AND "
                                "state = 'failed' GROUP BY error_code", (job_id,)).fetchall())
    finally:
        con.close()


# -- summary rows ------------------------------------------------------------------------------


@dataclass
class Row:
    bench: str
    figure: str
    value: float | int | str | None
    unit: str = ""
    budget: str = ""

    def fmt_value(self) -> str:
        v = self.value
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)


def print_rows(rows: Sequence[Row], title: str = "summary") -> None:
    if not rows:
        return
    w1 = max(len(r.bench) for r in rows)
    w2 = max(len(r.figure) for r in rows)
    w3 = max(len(r.fmt_value()) for r in rows)
    w4 = max(len(r.unit) for r in rows)
    print(f"\n-- {title}")
    print(f"{'benchmark':<{w1}}  {'figure':<{w2}}  {'value':>{w3}}  {'unit':<{w4}}  budget (DESIGN.md)")
    for r in rows:
        print(f"{r.bench:<{w1}}  {r.figure:<{w2}}  {r.fmt_value():>{w3}}  {r.unit:<{w4}}  {r.budget}")


def std_args(description: str, argv: Sequence[str] | None = None) -> Any:
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller, faster run")
    return p.parse_args(argv)
