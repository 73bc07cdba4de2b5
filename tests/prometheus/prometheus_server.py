"""A real Prometheus server (Debian's `prometheus`) for tests, scraping given targets.

    with PrometheusServer(["127.0.0.1:9419"], scrape_interval="1s") as prom:
        value = prom.wait_for_value('warren_publishes_total{connection_name="e2e"}', 1000,
                                    timeout=60)

Starts `prometheus` with a temporary configuration and data directory, listening on a free
loopback port, and waits (bounded) until it reports ready. Every wait has a deadline; the
process is stopped and the directory removed however the `with` block ends, and the kernel
kills the server should this process die without cleaning up (PR_SET_PDEATHSIG). Failures
raise PrometheusError with the tail of the server's log.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

PROMETHEUS = "/usr/bin/prometheus"
PR_SET_PDEATHSIG = 1


class PrometheusError(RuntimeError):
    pass


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class PrometheusServer:
    def __init__(self, targets, scrape_interval="1s", job="warren", start_timeout=60):
        if not os.access(PROMETHEUS, os.X_OK):
            raise PrometheusError(f"{PROMETHEUS} not found: run tools/setup.sh (Debian package prometheus)")
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.job = job
        self.start_timeout = start_timeout
        self.dir = None
        self.proc = None
        self.port = None
        self.log_path = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="warren-prometheus-")
        try:
            self._write_config()
            # The port is free when chosen and could be taken before prometheus binds it: a
            # server that exits at once is retried on another port.
            for _ in range(3):
                self._start()
                if self._wait_ready():
                    return self
            raise PrometheusError("prometheus did not start:\n" + self.log_tail())
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        self._stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return False

    def _write_config(self):
        targets = ", ".join(f'"{t}"' for t in self.targets)
        config = (
            "global:\n"
            f"  scrape_interval: {self.scrape_interval}\n"
            f"  scrape_timeout: {self.scrape_interval}\n"
            "scrape_configs:\n"
            f"  - job_name: {self.job}\n"
            f"    static_configs:\n"
            f"      - targets: [{targets}]\n"
        )
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as f:
            f.write(config)

    def _start(self):
        self._stop()
        self.port = free_loopback_port()
        self.log_path = os.path.join(self.dir, f"prometheus-{self.port}.log")
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={os.path.join(self.dir, 'prometheus.yml')}",
                    f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=5) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready after {self.start_timeout} s:\n" + self.log_tail())

    def _stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.proc = None

    # -- queries -----------------------------------------------------------------------------

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
        except (OSError, TypeError):
            return "(no log)"

    def api(self, path, **params):
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(self.url(f"{path}?{query}"), timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        """The instant vector of `expr` now: a list of (labels, float value)."""
        data = self.api("/api/v1/query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr}: {data['resultType']}, not a vector")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def targets_health(self):
        return [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.api("/api/v1/targets")["activeTargets"]]

    def wait_for_value(self, expr, want, timeout=60):
        """Polls `expr` until its one sample equals `want`; returns it, or raises at the deadline
        with what was last seen and the targets' health."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError("prometheus exited:\n" + self.log_tail())
            try:
                seen = self.query(expr)
            except (urllib.error.URLError, OSError) as e:
                seen = f"query failed: {e}"
            if isinstance(seen, list) and len(seen) == 1 and seen[0][1] == want:
                return seen[0]
            time.sleep(0.25)
        raise PrometheusError(
            f"{expr} did not become {want} within {timeout} s; last seen {seen}; "
            f"targets {self.targets_health()}\n" + self.log_tail()
        )
