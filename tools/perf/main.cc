// The perf tool (bazel run //tools:perf -- --help); see tools/perf/run.h.
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "tools/perf/run.h"

namespace {
extern "C" void on_signal(int) {
  warren::perf::interrupted().store(true);
}
}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  const std::vector<std::string> args(argv + 1, argv + argc);
  return warren::perf::perf_main(args, std::cout, std::cerr, ::isatty(STDOUT_FILENO) == 1);
}
