// What the perf tool prints and writes: the per-second line, the live terminal line, the final
// summary, and the JSON and CSV files. Pure formatting: no I/O, any thread.
//
// JSON layout (bench/compare reads the summary's names; keep them):
//   {"options": {...}, "intervals": [{...}, ...],
//    "summary": {"published", "confirmed", "nacked", "in_doubt", "returned", "received", "seconds",
//                "publish_rate", "receive_rate", "client_cpu_us_per_msg",
//                "latency_us": {"min", "p50", "p75", "p95", "p99", "p999", "max"}}}
#pragma once

#include <string>
#include <vector>

#include "tools/perf/options.h"
#include "tools/perf/stats.h"

namespace warren::perf {

struct run_summary {
  interval_report totals;     // the whole run
  double client_cpu_s = 0;    // user + system CPU of this process during the run
  double cpu_us_per_msg = 0;  // client_cpu_s per message published or received
};

run_summary make_summary(const interval_report& whole, double client_cpu_s);

// "time 3.0 s, published 1200 msg/s, ..., latency median/95th/99th 512/900/1200 us"
std::string format_interval(const interval_report& r, bool latency);
// Several lines, newline-terminated.
std::string format_summary(const run_summary& s, bool latency);

std::string to_json(const perf_options& o, const std::vector<interval_report>& intervals,
                    const run_summary& s);
// A header line, one "interval" row per interval, one "summary" row.
std::string to_csv(const std::vector<interval_report>& intervals, const run_summary& s);

}  // namespace warren::perf
