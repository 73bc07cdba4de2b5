#!/usr/bin/python3 -I
"""End to end with Debian's real Prometheus server.

Starts test_exporter (warren's registry served by http_exporter, one connection "e2e"), starts
`prometheus` scraping it every second (tests/prometheus/prometheus_server.py: temporary config
and data, free loopback port, bounded waits, cleaned up however the test ends), records
publishes and deliveries through the exporter's stdin, and queries Prometheus' HTTP API until
it returns the recorded counts: the counter, its rate, the histogram's quantile, and the value
after a second batch (so scrapes go on, not only the first).
"""

import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "prometheus"))

from prometheus_server import PrometheusError, PrometheusServer  # noqa: E402

EXPORTER = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "test_exporter")
TIMEOUT = 90  # seconds for each wait; a scrape comes every second


class Exporter:
    """test_exporter as a child whose stdin is its lifeline."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            [EXPORTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        line = self._line()
        if not line.startswith("port "):
            raise RuntimeError(f"test_exporter said {line!r}")
        self.port = int(line.split()[1])
        return self

    def _line(self):
        # The exporter answers each line at once; a dead one gives "" (EOF), never a hang.
        return self.proc.stdout.readline().strip()

    def command(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        answer = self._line()
        if answer != "ok":
            raise RuntimeError(f"test_exporter answered {answer!r} to {text!r}")

    def __exit__(self, *exc):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.proc.stdout.close()
        return False


class PrometheusScrapesWarren(unittest.TestCase):
    def test_prometheus_returns_the_exported_counters(self):
        with Exporter() as exporter, PrometheusServer([f"127.0.0.1:{exporter.port}"]) as prom:
            exporter.command("publish 12345")
            exporter.command("deliver 77")
            series = 'warren_publishes_total{connection_name="e2e"}'
            labels, value = prom.wait_for_value(series, 12345.0, timeout=TIMEOUT)
            self.assertEqual(labels["job"], "warren")
            self.assertEqual(labels["instance"], f"127.0.0.1:{exporter.port}")
            self.assertEqual(labels["connection"], "1")
            prom.wait_for_value('warren_publishes_confirmed_total{connection_name="e2e"}', 12345.0, TIMEOUT)
            prom.wait_for_value('warren_deliveries_acked_total{connection_name="e2e"}', 77.0, TIMEOUT)
            prom.wait_for_value('warren_channel_publishes_total{channel="1"}', 12345.0, TIMEOUT)
            prom.wait_for_value('warren_sent_frames_total{connection_name="e2e"}', 3 * 12345.0, TIMEOUT)
            # Every value was recorded at 2 ms, inside the (1.048576 ms, 2.097152 ms] bucket:
            # histogram_quantile interpolates within it.
            ((_, p50),) = prom.query(
                'histogram_quantile(0.5, warren_publish_confirm_seconds_bucket{connection_name="e2e"})'
            )
            self.assertGreater(p50, 0.001048576)
            self.assertLessEqual(p50, 0.002097152)

            # A second batch: the next scrapes carry it.
            exporter.command("publish 655")
            prom.wait_for_value(series, 13000.0, timeout=TIMEOUT)
            prom.wait_for_value('warren_publish_confirm_seconds_count{connection_name="e2e"}', 13000.0, TIMEOUT)
            ((url, health, error),) = prom.targets_health()
            self.assertEqual(health, "up", error)
            self.assertEqual(url, f"http://127.0.0.1:{exporter.port}/metrics")
            pid, data_dir = prom.proc.pid, prom.dir
        # Cleaned up: the server is gone (not a zombie: it was waited for) with its directory.
        self.assertFalse(os.path.exists(f"/proc/{pid}"))
        self.assertFalse(os.path.exists(data_dir))

    def test_a_missing_value_fails_at_the_deadline_with_what_was_seen(self):
        with Exporter() as exporter, PrometheusServer([f"127.0.0.1:{exporter.port}"]) as prom:
            exporter.command("publish 1")
            prom.wait_for_value('warren_publishes_total{connection_name="e2e"}', 1.0, timeout=TIMEOUT)
            start = time.monotonic()
            with self.assertRaises(PrometheusError) as caught:
                prom.wait_for_value('warren_publishes_total{connection_name="e2e"}', 2.0, timeout=3)
            self.assertLess(time.monotonic() - start, 30)
            self.assertIn("last seen", str(caught.exception))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
