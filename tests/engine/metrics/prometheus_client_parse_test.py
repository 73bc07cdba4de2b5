#!/usr/bin/python3 -I
"""The renderer's output as Prometheus' own Python client reads it.

Runs render_sample (the snapshot of sample_snapshot.h in the text format) and parses it with
Debian's python3-prometheus-client (prometheus_client.parser.text_string_to_metric_families):
every family warren documents is there with its type, the values are those recorded, histogram
buckets are cumulative and end in +Inf == _count, and escaped label values come back intact.
"""

import math
import re
import subprocess
import sys
import unittest

from prometheus_client.parser import text_string_to_metric_families

RENDER = sys.argv[1] if len(sys.argv) > 1 else "tests/engine/metrics/render_sample"

CONNECTION = {"connection": "1", "connection_name": "orders"}
OTHER = {"connection": "2"}

# family name as the parser gives it (counters without _total) -> (type, value for CONNECTION)
CONNECTION_FAMILIES = {
    "warren_publishes": ("counter", 10),
    "warren_publishes_confirmed": ("counter", 7),
    "warren_publishes_nacked": ("counter", 2),
    "warren_publishes_in_doubt": ("counter", 1),
    "warren_publishes_returned": ("counter", 1),
    "warren_publishes_republished": ("counter", 0),
    "warren_deliveries": ("counter", 4),
    "warren_deliveries_acked": ("counter", 3),
    "warren_deliveries_nacked": ("counter", 0),
    "warren_deliveries_rejected": ("counter", 1),
    "warren_received_bytes": ("counter", 1024),
    "warren_sent_bytes": ("counter", 512),
    "warren_received_frames": ("counter", 12),
    "warren_sent_frames": ("counter", 34),
    "warren_socket_reads": ("counter", 2),
    "warren_socket_writes": ("counter", 1),
    "warren_blocked_seconds": ("counter", 1.5),
    "warren_blocked": ("gauge", 1),
    "warren_recoveries": ("counter", 0),
    "warren_missed_heartbeats": ("counter", 1),
    "warren_open_channels": ("gauge", 2),
}
# histogram family -> (count, sum in seconds) for CONNECTION
HISTOGRAMS = {
    "warren_publish_confirm_seconds": (9, 4.017),
    "warren_delivery_handled_seconds": (3, 0.040003),
}


def render(*args):
    out = subprocess.run([RENDER, *args], check=True, capture_output=True, timeout=60)
    return out.stdout.decode("utf-8")


def families(*args):
    return {f.name: f for f in text_string_to_metric_families(render(*args))}


def value(family, name, labels):
    for s in family.samples:
        if s.name == name and s.labels == labels:
            return s.value
    raise AssertionError(f"no sample {name}{labels} in {family.name}")


class ParsedByPrometheusClient(unittest.TestCase):
    def test_connection_families_have_their_types_and_values(self):
        fams = families()
        for name, (kind, want) in CONNECTION_FAMILIES.items():
            with self.subTest(family=name):
                self.assertIn(name, fams)
                self.assertEqual(fams[name].type, kind)
                sample = name + "_total" if kind == "counter" else name
                self.assertEqual(value(fams[name], sample, CONNECTION), want)
                self.assertEqual(value(fams[name], sample, OTHER), 0)
                self.assertTrue(fams[name].documentation)

    def test_histograms_are_cumulative_and_end_in_inf_equal_to_count(self):
        fams = families()
        for name, (count, total) in HISTOGRAMS.items():
            with self.subTest(family=name):
                fam = fams[name]
                self.assertEqual(fam.type, "histogram")
                buckets = [
                    (float(s.labels["le"]), s.value)
                    for s in fam.samples
                    if s.name == name + "_bucket" and s.labels["connection"] == "1"
                ]
                self.assertEqual(len(buckets), 27)
                self.assertEqual(buckets[-1][0], math.inf)
                bounds = [b for b, _ in buckets]
                self.assertEqual(bounds, sorted(bounds))
                counts = [c for _, c in buckets]
                self.assertEqual(counts, sorted(counts))
                self.assertEqual(counts[-1], count)
                self.assertEqual(value(fam, name + "_count", CONNECTION), count)
                self.assertAlmostEqual(value(fam, name + "_sum", CONNECTION), total, places=9)
                self.assertEqual(bounds[0], 1.024e-06)
                self.assertEqual(bounds[-2], 34.359738368)

    def test_publish_confirm_buckets_hold_the_recorded_latencies(self):
        # 3 at 1 ms, 3 at 3 ms, 1 at 5 ms, 2 at 2 s.
        fam = families()["warren_publish_confirm_seconds"]
        by_le = {
            float(s.labels["le"]): s.value
            for s in fam.samples
            if s.name.endswith("_bucket") and s.labels["connection"] == "1"
        }
        self.assertEqual(by_le[0.000524288], 0)
        self.assertEqual(by_le[0.001048576], 3)
        self.assertEqual(by_le[0.004194304], 6)
        self.assertEqual(by_le[0.008388608], 7)
        self.assertEqual(by_le[1.073741824], 7)
        self.assertEqual(by_le[2.147483648], 9)

    def test_channel_and_consumer_families_carry_their_labels(self):
        fams = families("channels", "consumers")
        ch1 = dict(CONNECTION, channel="1")
        ch2 = dict(CONNECTION, channel="2")
        self.assertEqual(value(fams["warren_channel_publishes"], "warren_channel_publishes_total", ch1), 10)
        self.assertEqual(
            value(fams["warren_channel_deliveries_acked"], "warren_channel_deliveries_acked_total", ch2), 3
        )
        self.assertEqual(fams["warren_channel_publish_confirm_seconds"].type, "histogram")
        self.assertEqual(
            value(
                fams["warren_channel_delivery_handled_seconds"],
                "warren_channel_delivery_handled_seconds_count",
                ch2,
            ),
            3,
        )
        consumer = dict(ch2, consumer="ctag-1")
        self.assertEqual(fams["warren_consumer_pending_deliveries"].type, "gauge")
        self.assertEqual(
            value(fams["warren_consumer_pending_deliveries"], "warren_consumer_pending_deliveries", consumer), 1
        )
        self.assertEqual(
            value(fams["warren_consumer_deliveries"], "warren_consumer_deliveries_total", consumer), 4
        )

    def test_constant_label_values_come_back_unescaped(self):
        fams = families("label")
        labels = dict(role='test "x"', **CONNECTION)
        self.assertEqual(value(fams["warren_publishes"], "warren_publishes_total", labels), 10)

    def test_names_follow_prometheus_conventions(self):
        fams = families("channels", "consumers")
        for name, fam in fams.items():
            with self.subTest(family=name):
                self.assertRegex(name, r"^warren_[a-z_]+[a-z]$")
                for s in fam.samples:
                    if fam.type == "counter":
                        self.assertTrue(s.name.endswith("_total"), s.name)
                    if fam.type == "histogram":
                        self.assertTrue(name.endswith("_seconds"), name)
                        self.assertRegex(s.name, r"_(bucket|sum|count)$")
                    self.assertIsNone(re.search(r"_total_total|_seconds_total_", s.name))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
