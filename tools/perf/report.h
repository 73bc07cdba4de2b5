// What the perf tool prints and writes: the per-second line, the live terminal line, the final
// summary, the JSON and CSV files, and PerfTest's CSV (-o). Pure formatting: no I/O, any thread.
//
// JSON layout (bench/compare reads the summary's names; keep them):
//   {"options": {...}, "intervals": [{...}, ...],
//    "summary": {"published", "confirmed", "nacked", "in_doubt", "returned", "received",
//                "recoveries", "republished", "unpublished_ms" (time producers could not publish
//                while recovering, summed; intervals have the three too),
//                "seconds", "publish_rate", "receive_rate", "client_cpu_us_per_msg",
//                "latency_us": {"min", "p50", "p75", "p95", "p99", "p999", "max"},
//                "latency_intended_us", "confirm_latency_us", "confirm_latency_intended_us"
//                (the same, or null when not measured), "sequence" (or null)}}
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tools/perf/options.h"
#include "tools/perf/sequence.h"
#include "tools/perf/stats.h"

namespace warren::perf {

// What the output shows, from the options.
struct report_style {
  bool latency = false;          // consumers measure publish-to-receipt latency
  bool confirm_latency = false;  // producers measure publish-to-confirm latency
  bool intended = false;         // paced publishing: latency from the intended send time too
  bool millis = false;           // -ms: latencies shown in milliseconds
  std::string id;                // --id: every line starts "id: ID, "
};
report_style style_of(const perf_options& o);

struct run_summary {
  interval_report totals;                    // the whole run
  double client_cpu_s = 0;                   // user + system CPU of this process during the run
  double cpu_us_per_msg = 0;                 // client_cpu_s per message published or received
  std::optional<sequence_summary> sequence;  // when any message carried a sequence number
};

run_summary make_summary(const interval_report& whole, double client_cpu_s);

// "time 3.0 s, published 1200 msg/s, ..., latency median/95th/99th 512/900/1200 us"
std::string format_interval(const interval_report& r, const report_style& style);
// Several lines, newline-terminated.
std::string format_summary(const run_summary& s, const report_style& style);

std::string to_json(const perf_options& o, const std::vector<interval_report>& intervals,
                    const run_summary& s);
// A header line, one "interval" row per interval, one "summary" row.
std::string to_csv(const std::vector<interval_report>& intervals, const run_summary& s);

// PerfTest's CSV (-o), as its CsvMetricsFormatter writes it: the header, then one row per
// interval (no summary row); rates in PerfTest's rounding, latencies as whole microseconds (or
// milliseconds with -ms), columns of what the run does not measure left empty.
std::string perftest_csv_header(const perf_options& o);
std::string perftest_csv_row(const perf_options& o, const std::string& id,
                             const interval_report& r);
// PerfTest's rate format: 0, two decimals below 1, one below 10, whole numbers above.
std::string perftest_rate(double rate);

// The tool's own counts in Prometheus' text format (--metrics-prometheus), the same the summary
// reports: warren_perf_published_total, _confirmed_total, _nacked_total, _in_doubt_total,
// _returned_total and _consumed_total, each labelled with the test id (`id`).
std::string prometheus_counters(const totals& t, const std::string& id);

}  // namespace warren::perf
