// The producers and consumers of one run, behind one small interface so that the client
// driving them (warren's blocking API or the async engine) is chosen in one place:
// make_workload() in workload.cc.
//
// Message format: the first 8 body octets are the publish time (steady clock, nanoseconds,
// little-endian), the next 4 the producer's number; the rest is zero. Consumers on the same
// host compute latency from them. Bodies shorter than timestamp_octets carry nothing.
//
// Threads: start(), the counters and stop() are called from the run's (main) thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "tools/perf/options.h"
#include "tools/perf/plan.h"
#include "tools/perf/stats.h"

namespace warren::perf {

// A failure that ends the run; what() is one line, without passwords.
class run_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class workload {
 public:
  virtual ~workload() = default;
  // Connects every consumer (declaring and binding its queue), then every producer, then lets
  // the producers go. Throws run_error when any of them fails; nothing is left running then.
  virtual void start() = 0;
  // How many producers reached -C, and consumers -D.
  virtual unsigned producers_finished() const = 0;
  virtual unsigned consumers_finished() const = 0;
  // The first failure of a producer or consumer since start(), if any.
  virtual std::optional<std::string> failure() const = 0;
  // Stops the producers, waits (up to `confirm_grace`) for their outstanding confirms, then
  // stops the consumers; joins everything and closes every connection. Idempotent.
  virtual void stop(std::chrono::milliseconds confirm_grace) = 0;
};

// Stats slots: producer i uses slot i, consumer j slot producers + j.
std::unique_ptr<workload> make_workload(const perf_options& o, const topology_plan& plan,
                                        run_stats& stats);

// Declares the exchange and the shared queues with their bindings, on one short-lived
// connection (the first URI). Throws run_error.
void declare_topology(const perf_options& o, const topology_plan& plan);

inline std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Writes the timestamp and producer number into `body` (when it is long enough).
inline void stamp_body(std::string& body, std::uint32_t producer, std::int64_t now_ns) noexcept {
  if (body.size() < static_cast<std::size_t>(timestamp_octets)) return;
  for (int i = 0; i < 8; ++i)
    body[i] = static_cast<char>((static_cast<std::uint64_t>(now_ns) >> (8 * i)) & 0xff);
  for (int i = 0; i < 4; ++i) body[8 + i] = static_cast<char>((producer >> (8 * i)) & 0xff);
}

// The publish time in a received body, if it carries one.
inline std::optional<std::int64_t> body_timestamp(std::string_view body) noexcept {
  if (body.size() < static_cast<std::size_t>(timestamp_octets)) return std::nullopt;
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(body[i]);
  return static_cast<std::int64_t>(v);
}

// Records one received message into `slot`: its latency, when the body is stamped and
// `timestamps` is on.
inline void count_received(stats_slot& slot, std::string_view body, bool timestamps) noexcept {
  if (timestamps) {
    if (auto ts = body_timestamp(body)) {
      const std::int64_t d = steady_now_ns() - *ts;
      slot.latency.record(d > 0 ? static_cast<std::uint64_t>(d) : 0);
    }
  }
  stats_slot::add(slot.received);
}

// One line: newlines in `s` become spaces.
std::string one_line(std::string s);

}  // namespace warren::perf
