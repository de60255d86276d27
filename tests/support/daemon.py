"""`bulktag daemon` in a subprocess with /healthz, /metrics and the dashboard on a free port, and
plain HTTP reads of it. The launcher returns once /healthz answers 200 (polled), and fails with
the end of the daemon's log when it exits or never gets healthy."""

from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.samples import Sample

from tests.support.cli import bulktag_argv
from tests.support.metrics import samples
from tests.support.ports import free_port
from tests.support.waits import wait_until


def http(url: str) -> tuple[int, str]:
    """GET url: (status, body), HTTP errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def healthy(url: str) -> bool:
    """Whether url/healthz answers 200 now (False while nothing listens)."""
    try:
        return http(url + "/healthz")[0] == 200
    except OSError:
        return False


class Daemon:
    """`bulktag daemon --listen 127.0.0.1:<free port> --db DB --endpoint-url SIM ARGS`, its log
    (stderr, JSON) at tmp_path/<name>.log."""

    def __init__(self, tmp_path: Path, name: str, db: Path | str, sim: str,
                 env: dict[str, str], *args: str, ready_timeout: float = 30,
                 wait: bool = True, host: str | None = None) -> None:
        """Start it and, unless `wait` is False (to start several at once), wait until it is
        healthy. `host`: run it under that host name, in a UTS namespace of its own (`unshare
        -u`, as root): to the fleet it is another machine (its pid means nothing there)."""
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = tmp_path / f"{name}.log"
        argv = bulktag_argv("daemon", "--listen", self.url.removeprefix("http://"), "--db",
                            str(db), "--endpoint-url", sim, *args, "--log-format", "json")
        if host is not None:
            argv = ["unshare", "-u", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *argv]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("w"))
        if wait:
            self.ready(ready_timeout)

    def ready(self, timeout: float = 30) -> None:
        """Wait until /healthz answers; fail with the end of its log if it exits or never does."""

        def up() -> bool:
            assert self.proc.poll() is None, "the daemon exited"
            return healthy(self.url)

        try:
            wait_until(up, "daemon healthy", timeout=timeout, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.log.read_text()[-3000:]}") from None

    def metrics(self) -> list[Sample]:
        status, text = http(self.url + "/metrics")
        assert status == 200
        return samples(text)

    def stop(self, timeout: float) -> int:
        """SIGTERM, then its exit code within `timeout`."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)
