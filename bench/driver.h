// What the end-to-end publish drivers share (warren's and rabbitmq-c's; py-amqp's driver
// follows the same rules in Python): the command line, the clocks and the one-line JSON report
// that bench/compare_blocking.sh reads.
//
//   <driver> publish N QUEUE   publish N 16-octet messages to QUEUE through the default
//                              exchange, then one synchronous round trip so that the time
//                              covers every message having left the client; report msg/s.
//   <driver> confirm N QUEUE   N times: publish one message in confirm mode and wait for its
//                              ack; report the median and p99 round trip.
// Both declare QUEUE (auto-delete, x-expires), purge it first, run a warm-up that is not timed
// (warmup_count()), check the outcome after the timed part, and delete QUEUE at the end.
// CPU per message is getrusage(RUSAGE_SELF) user + sys over the timed part, divided by N.
//
// Single-threaded helpers for single-threaded programs.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace warren::bench {

inline constexpr const char* broker_host = "127.0.0.1";
inline constexpr int broker_port = 5672;
inline constexpr std::size_t message_size = 16;
// Declared with x-expires so that a run that fails before deleting its queue leaves nothing
// behind (auto-delete alone never fires on a queue that had no consumer).
inline constexpr std::int32_t queue_expires_ms = 300000;

enum class mode { publish, confirm };

struct args {
  bench::mode mode = mode::publish;
  long n = 0;
  std::string queue;
};

// Exits with status 2 and a usage line on bad arguments.
inline args parse_args(int argc, char** argv) {
  args a;
  if (argc == 4) {
    a.n = std::strtol(argv[2], nullptr, 10);
    a.queue = argv[3];
    if (std::strcmp(argv[1], "publish") == 0 && a.n > 0) return a;
    if (std::strcmp(argv[1], "confirm") == 0 && a.n > 0) return (a.mode = mode::confirm, a);
  }
  std::fprintf(stderr, "usage: %s publish|confirm N QUEUE\n", argc > 0 ? argv[0] : "driver");
  std::exit(2);
}

// Untimed messages before the timed part: connection and queue warm, allocator settled.
inline long warmup_count(const args& a) {
  return a.mode == mode::publish ? std::max(1000L, a.n / 10) : std::max(100L, a.n / 10);
}

inline double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

// Wall and CPU time of the timed part.
class stopwatch {
 public:
  stopwatch() : wall_(clock::now()), cpu_(cpu_seconds()) {}
  double wall() const { return std::chrono::duration<double>(clock::now() - wall_).count(); }
  double cpu() const { return cpu_seconds() - cpu_; }

 private:
  using clock = std::chrono::steady_clock;
  clock::time_point wall_;
  double cpu_;
};

// Nearest-rank percentile (p in (0, 1]) of samples; sorts them.
inline double percentile(std::vector<double>& samples, double p) {
  std::sort(samples.begin(), samples.end());
  auto rank = static_cast<std::size_t>(p * static_cast<double>(samples.size()) + 0.999999);
  return samples[std::clamp<std::size_t>(rank, 1, samples.size()) - 1];
}

inline void report_publish(const char* client, long n, double wall, double cpu) {
  std::printf(
      "{\"client\": \"%s\", \"mode\": \"publish\", \"n\": %ld, \"seconds\": %.6f, "
      "\"msg_per_s\": %.1f, \"cpu_us_per_msg\": %.4f}\n",
      client, n, wall, static_cast<double>(n) / wall, cpu * 1e6 / static_cast<double>(n));
}

// round_trips_us: one sample per confirmed publish, in µs.
inline void report_confirm(const char* client, std::vector<double>& round_trips_us, double cpu) {
  const auto n = static_cast<double>(round_trips_us.size());
  const double median = percentile(round_trips_us, 0.5);
  const double p99 = percentile(round_trips_us, 0.99);
  std::printf(
      "{\"client\": \"%s\", \"mode\": \"confirm\", \"n\": %zu, \"median_us\": %.2f, "
      "\"p99_us\": %.2f, \"cpu_us_per_msg\": %.4f}\n",
      client, round_trips_us.size(), median, p99, cpu * 1e6 / n);
}

}  // namespace warren::bench
