#!/usr/bin/python3 -I
"""The perf tool's --metrics-prometheus, end to end, against the broker on 127.0.0.1:5672.

Debian's real `prometheus` (tests/prometheus/prometheus_server.py: temporary config and data,
free loopback port, bounded waits, cleaned up however the test ends) scrapes the perf tool every
second during a run; afterwards its HTTP API must return, as the last value it scraped, the
published count of the run's JSON summary, both the tool's own counter and the sum of warren's
per-connection counters. Meanwhile the exposition itself is parsed with Debian's
python3-prometheus-client.

Why the last scrape has the final count (and not one short by the last interval's publishes):
the producers stop at -C after about a second, while the rate-limited consumer (-R) keeps the
run going about five seconds more, so several 1 s scrapes come after the last publish. A broker
that is down fails the run, and so the test, loudly.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "prometheus"))

from prometheus_server import PrometheusServer, free_loopback_port  # noqa: E402

PERF = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tools", "perf", "perf")
PRODUCERS, PER_PRODUCER = 2, 1500
PUBLISHED = PRODUCERS * PER_PRODUCER
RUN_TIMEOUT = 180  # seconds; the run itself takes about 7


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def total(fams, name):
    return sum(s.value for s in fams[name].samples if s.name == name + "_total")


class PerfMetricsPrometheus(unittest.TestCase):
    def run_perf(self, port, json_path):
        return subprocess.Popen(
            [PERF, "-x", str(PRODUCERS), "-y", "1", "-C", str(PER_PRODUCER), "-r", "1500",
             "-R", "600", "-c", "100", "--id", "prom-e2e", "--json", json_path,
             "--metrics-prometheus", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def scrape_until_published(self, port, perf):
        """The exposition, parsed, once the tool says every publish was made (bounded)."""
        deadline = time.monotonic() + RUN_TIMEOUT
        last = None
        while time.monotonic() < deadline and perf.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    self.assertEqual(r.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
                    last = r.read().decode("utf-8")
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
                continue
            fams = families(last)
            if "warren_perf_published" in fams and total(fams, "warren_perf_published") == PUBLISHED:
                return fams
            time.sleep(0.1)
        self.fail(f"the tool never exposed {PUBLISHED} publishes; last exposition:\n{last}")

    def test_prometheus_scrapes_the_published_count_of_the_runs_summary(self):
        with tempfile.TemporaryDirectory(prefix="warren-perf-prom-") as tmp:
            json_path = os.path.join(tmp, "run.json")
            port = free_loopback_port()
            with PrometheusServer([f"127.0.0.1:{port}"], scrape_interval="1s", job="perf") as prom:
                perf = self.run_perf(port, json_path)
                try:
                    fams = self.scrape_until_published(port, perf)
                    out, err = perf.communicate(timeout=RUN_TIMEOUT)
                except BaseException:
                    perf.kill()
                    perf.communicate()
                    raise
                self.assertEqual(perf.returncode, 0, f"perf failed:\n{out}\n{err}")
                self.assertIn(f"metrics: http://0.0.0.0:{port}/metrics", out)

                # The exposition as Prometheus' Python client reads it.
                self.assertEqual(fams["warren_perf_published"].type, "counter")
                self.assertEqual(fams["warren_publishes"].type, "counter")
                self.assertEqual(fams["warren_publish_confirm_seconds"].type, "histogram")
                self.assertEqual(fams["warren_consumer_pending_deliveries"].type, "gauge")
                (sample,) = [s for s in fams["warren_perf_published"].samples if s.name.endswith("_total")]
                self.assertEqual(sample.labels, {"id": "prom-e2e"})
                # warren's counters are counted before the tool's, so they have it all too.
                self.assertEqual(total(fams, "warren_publishes"), PUBLISHED)

                with open(json_path) as f:
                    published = json.load(f)["summary"]["published"]
                self.assertEqual(published, PUBLISHED)
                # The last value scraped (the tool has exited: no more scrapes come).
                prom.wait_for_value('max_over_time(warren_perf_published_total{id="prom-e2e"}[10m])',
                                    float(published), timeout=30)
                prom.wait_for_value("sum(max_over_time(warren_publishes_total[10m]))",
                                    float(published), timeout=30)
                prom.wait_for_value("sum(max_over_time(warren_publishes_confirmed_total[10m]))",
                                    float(published), timeout=30)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
