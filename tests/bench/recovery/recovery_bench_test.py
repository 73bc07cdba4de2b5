#!/usr/bin/python3
"""Self-check of bench/recovery/recovery_bench.py's parsing and counting: driver event lines,
trace files, the analysis of one run and the table. No broker, no client."""

import importlib.util
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CANDIDATES = [
    os.path.join(os.environ.get("TEST_SRCDIR", ""), os.environ.get("TEST_WORKSPACE", ""),
                 "bench", "recovery", "recovery_bench.py"),
    os.path.join(HERE, "..", "..", "..", "bench", "recovery", "recovery_bench.py"),
]
PATH = next(p for p in CANDIDATES if os.path.exists(p))
spec = importlib.util.spec_from_file_location("recovery_bench", PATH)
rb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rb)

FAULT = 10_000.0


def write_trace(rows):
    f = tempfile.NamedTemporaryFile("w", suffix=".trace", delete=False)
    for r in rows:
        f.write(json.dumps(r) + "\n")
    f.close()
    return f.name


class AnalyseTest(unittest.TestCase):
    def run_analysis(self, rows, stored, fault_t=FAULT, ref_t=FAULT):
        path = write_trace(rows)
        try:
            trace = rb.read_trace(path)
        finally:
            os.remove(path)
        return rb.analyse(trace, stored, fault_t, ref_t)

    def test_a_confirmed_message_missing_from_the_queue_is_counted_lost(self):
        rows = [[1, 100.0, "ack", 200.0], [2, 101.0, "ack", 201.0], [3, 102.0, "nack", 202.0]]
        a = self.run_analysis(rows, stored=[1])
        self.assertEqual(a["confirmed_lost"], 1)
        self.assertEqual(a["outcomes"], {"ack": 2, "nack": 1})

    def test_sequence_numbers_stored_twice_are_duplicates(self):
        rows = [[1, 100.0, "ack", 200.0], [2, 101.0, "ack", 201.0]]
        a = self.run_analysis(rows, stored=[1, 2, 2, 2])
        self.assertEqual(a["duplicates"], 2)
        self.assertEqual(a["stored_distinct"], 2)
        self.assertEqual(a["confirmed_lost"], 0)

    def test_unconfirmed_at_the_fault_are_split_by_what_the_client_said_later(self):
        rows = [
            [1, FAULT - 50, "ack", FAULT - 10],  # settled before the fault: not counted
            [2, FAULT - 40, "ack", FAULT + 5],
            [3, FAULT - 30, "none", None],
            [4, FAULT - 20, "fail", FAULT + 300],
            [5, FAULT - 15, "connection_lost", FAULT + 400],  # no verdict: in doubt
            [6, FAULT - 10, "in_doubt", FAULT + 300],
            [7, FAULT - 5, "nack", FAULT + 300],
        ]
        a = self.run_analysis(rows, stored=[1, 2, 3, 4])
        self.assertEqual(a["unconfirmed_at_fault"],
                         {"total": 6, "ack": 1, "none": 1, "fail": 1, "doubt": 2, "nack": 1})
        self.assertEqual(a["unconfirmed_at_fault_stored"], 3)
        self.assertEqual(a["not_acked_but_stored"], {"none": 1, "fail": 1})
        self.assertEqual(a["outcomes"]["connection_lost"], 1)  # raw names kept

    def test_time_to_first_confirm_counts_only_messages_published_after_the_fault(self):
        rows = [
            [1, FAULT - 5, "ack", FAULT + 2000],  # published before: its ack does not count
            [2, FAULT + 10, "fail", FAULT + 20],  # refused at once: not a publish
            [3, FAULT + 30, "ack", FAULT + 1500],
            [4, FAULT + 40, "ack", FAULT + 1400],
        ]
        a = self.run_analysis(rows, stored=[1, 3, 4], ref_t=FAULT + 100)
        self.assertAlmostEqual(a["time_to_first_confirm_s"], 1.3)
        self.assertEqual(a["first_publish_after_fault_t"], FAULT + 30)

    def test_no_confirm_after_the_fault_is_never(self):
        rows = [[1, FAULT - 5, "fail", FAULT + 1]]
        a = self.run_analysis(rows, stored=[])
        self.assertIsNone(a["time_to_first_confirm_s"])

    def test_the_fault_is_sorted_by_the_first_sign_the_client_gave_when_that_came_first(self):
        trace = {1: (0.0, "ack", 50.0), 2: (10.0, "connection_lost", 120.0),
                 3: (11.0, "connection_lost", 120.5),
                 4: (12.0, "nack", 40.0)}  # a nack before the command does not count
        self.assertEqual(rb.client_seen_instant(trace, 100.0, 130.0), 120.0)
        self.assertEqual(rb.client_seen_instant(trace, 100.0, 130.0, lost_t=110.0), 110.0)
        self.assertEqual(rb.client_seen_instant(trace, 100.0, 115.0, lost_t=140.0), 115.0)
        self.assertEqual(rb.client_seen_instant({1: (0.0, "none", None)}, 100.0, 130.0), 130.0)


class DriverTest(unittest.TestCase):
    def test_event_lines_are_parsed_and_a_bad_line_is_kept_not_dropped(self):
        script = ('printf \'{"event":"connected","t":1.5,"port":5}\\nnot json\\n'
                  '{"event":"ready","t":2}\\n\'; cat >/dev/null')
        log = tempfile.NamedTemporaryFile(delete=False)
        log.close()
        d = rb.Driver(["/bin/sh", "-c", script], log.name)
        try:
            self.assertEqual(d.wait_for("ready", 10)["t"], 2)
            self.assertEqual(d.first("connected")["port"], 5)
            self.assertEqual([e["event"] for e in d.events][:3], ["connected", "unparsed", "ready"])
            self.assertEqual(d.finish(10), 0)
        finally:
            d.kill()
            os.remove(log.name)

    def test_a_loss_the_application_caused_is_not_the_fault_detected(self):
        script = ('printf \'{"event":"lost","t":5,"initiated_by_application":true}\\n'
                  '{"event":"ready","t":6}\\n\'; cat >/dev/null')
        log = tempfile.NamedTemporaryFile(delete=False)
        log.close()
        d = rb.Driver(["/bin/sh", "-c", script], log.name)
        try:
            d.wait_for("ready", 10)
            self.assertIsNone(d.first("lost"))
        finally:
            d.kill()
            os.remove(log.name)

    def test_waiting_for_an_event_a_driver_never_sends_fails_when_it_ends(self):
        log = tempfile.NamedTemporaryFile(delete=False)
        log.close()
        d = rb.Driver(["/bin/sh", "-c", "echo boom >&2; exit 3"], log.name)
        try:
            with self.assertRaises(rb.HarnessError) as e:
                d.wait_for("ready", 10)
            self.assertIn("boom", str(e.exception))
        finally:
            d.kill()
            os.remove(log.name)


class TableTest(unittest.TestCase):
    def test_a_row_gives_medians_and_ranges_and_the_exit_statuses(self):
        def run(t, exit_code):
            return {"client": "warren", "scenario": "kill", "exit": exit_code, "detected_s": 0.02,
                    "analysis": {"time_to_first_confirm_s": t, "confirmed_lost": 0,
                                 "unconfirmed_at_fault": {"total": 500, "doubt": 500},
                                 "unconfirmed_at_fault_stored": 300,
                                 "not_acked_but_stored": {"fail": 300}, "duplicates": 0}}
        out = rb.table([run(None, 1), run(None, 1), run(None, 1)])
        row = out.splitlines()[2]
        self.assertIn("| never |", row)
        self.assertIn("500: 0 / 0 / 0 / 500 / 0", row)
        self.assertIn("3 of 3, exit 1", row)
        out = rb.table([dict(run(1.2, 0), client="java"), dict(run(1.0, 0), client="java"),
                        dict(run(1.1, 0), client="java")])
        self.assertIn("1.10 (1.00–1.20)", out)


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False).result.wasSuccessful() else 1)
