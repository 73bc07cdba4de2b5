// The perf tool as a function: parse the arguments, run, report. main.cc is a thin wrapper,
// and tests call perf_main() or run the binary.
//
// Output: one line per second on `out` (with `live`, one line rewritten in place instead),
// then the summary; the --json, --csv and --plot files at the end. Errors: one line on `err`,
// "perf: ...". Exit status: 0 success, 2 bad usage, 1 a failed run (broker unreachable, login
// refused, a connection lost mid-run, an output file that cannot be written).
#pragma once

#include <atomic>
#include <ostream>
#include <span>
#include <string>

#include "tools/perf/options.h"

namespace warren::perf {

int perf_main(std::span<const std::string> args, std::ostream& out, std::ostream& err, bool live);
int run(const perf_options& o, std::ostream& out, std::ostream& err, bool live);

// Set from a signal handler (SIGINT, SIGTERM): the run stops as if its time was up.
std::atomic<bool>& interrupted() noexcept;

}  // namespace warren::perf
