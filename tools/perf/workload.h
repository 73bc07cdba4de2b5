// The producers and consumers of one run, behind one small interface so that the client
// driving them (warren's blocking API or the async engine) is chosen in one place:
// make_workload() in workload.cc.
//
// What is the same whichever client drives them lives here: a producer's pacing, sizing and
// stamping (publisher), and what a consumer channel does with each message it receives
// (receiver). Message format: stamp.h.
//
// Threads: start(), the counters and stop() are called from the run's (main) thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/metrics/metrics.h"
#include "tools/perf/bodies.h"
#include "tools/perf/options.h"
#include "tools/perf/plan.h"
#include "tools/perf/rate_limiter.h"
#include "tools/perf/schedule.h"
#include "tools/perf/sequence.h"
#include "tools/perf/stamp.h"
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
  // How many producers reached -C, and consumers -D or their --exit-when condition.
  virtual unsigned producers_finished() const = 0;
  virtual unsigned consumers_finished() const = 0;
  // The first failure of a producer or consumer since start(), if any.
  virtual std::optional<std::string> failure() const = 0;
  // Stops the producers, waits (up to `confirm_grace`) for their outstanding confirms, then
  // stops the consumers; joins everything and closes every connection. Idempotent.
  virtual void stop(std::chrono::milliseconds confirm_grace) = 0;
  // What each consumer channel received of each sequence stream, and from which queue. Valid
  // after stop(), as long as the workload lives.
  virtual std::vector<sequence_record> sequence_records() const = 0;
};

// Stats slots: producer i uses slot i, consumer j slot producers + j. `bodies`: -B or
// --json-body bodies (null for the tool's own). `registry`: where the async client's connections
// record warren's metrics (--metrics-prometheus); null records none (the blocking client records
// none either way).
std::unique_ptr<workload> make_workload(const perf_options& o, const topology_plan& plan,
                                        run_stats& stats, std::shared_ptr<const body_source> bodies,
                                        std::shared_ptr<metrics::registry> registry = nullptr);

// Declares the exchange and the shared queues with their bindings, on one short-lived
// connection (the first URI). Throws run_error.
void declare_topology(const perf_options& o, const topology_plan& plan);

inline std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// One producer's publishes, whatever client makes them: when the next may go (-r,
// --variable-rate, paused at rate 0), its body (-s, --variable-size, -B, --json-body) and its
// stamp (stamp.h; in a header with -B and --json-body). One thread: the producer's.
class publisher {
 public:
  using clock = std::chrono::steady_clock;

  publisher(const perf_options& o, const topology_plan& plan, unsigned producer_index,
            std::shared_ptr<const body_source> bodies);

  // Waits for the next publish's turn. False once stopping() is true (then nothing is due).
  // `wait(d)` waits for `d` (the blocking client reads its socket meanwhile, so that confirms
  // are timed when they arrive, not when the producer next looks).
  template <class Stop, class Wait>
  bool wait_turn(Stop stopping, Wait wait) {
    // Unpaced, the usual case: no clock read per publish.
    if (!rates_.varies() && !limiter_.limited()) return !stopping();
    for (;;) {
      if (stopping()) return false;
      const clock::time_point now = clock::now();
      if (rates_.varies()) {
        const std::int64_t r = rates_.value_at(now - start_);
        if (r != rate_) {
          rate_ = r;
          limiter_.set_rate(static_cast<double>(r), now);
        }
        if (r == 0) {
          // Paused: wake at the next step, or to look at stopping() again.
          wait(std::min<clock::duration>(rates_.until_change(now - start_),
                                         std::chrono::milliseconds(50)));
          continue;
        }
      }
      if (!limiter_.limited()) return true;
      const clock::duration d = limiter_.acquire(now);
      if (d > clock::duration::zero()) wait(d);
      return !stopping();
    }
  }
  template <class Stop>
  bool wait_turn(Stop stopping) {
    return wait_turn(stopping, [&](clock::duration d) { sleep_unless(d, stopping); });
  }

  // The next publish on channel `channel`: body, and (in header mode) the headers' stamp.
  // Against the null broker's sink nothing is measured (it discards every body): no stamp, no
  // clock read, sent_ns 0.
  struct message {
    std::string_view body;
    std::int64_t sent_ns = 0;  // monotonic, for publish-to-confirm latency; 0: not measured
    std::uint32_t lag_us = 0;
    std::uint64_t sequence = 0;
  };
  message next(std::size_t channel);

  // With -B/--json-body: the encoded headers table holding this publish's stamp (the
  // x-perf-stamp long string), valid until the next call of next(); empty otherwise.
  std::string_view headers() const noexcept {
    return header_stamp_ ? std::string_view(headers_) : std::string_view();
  }
  // The stamp's 24 octets in the headers table, to build a field table from (blocking client).
  std::string_view header_stamp() const noexcept {
    return header_stamp_ ? std::string_view(headers_).substr(headers_.size() - sequence_octets)
                         : std::string_view();
  }
  const std::string& content_type() const noexcept;

  // Random start delay (--producer-random-start-delay): 1 ms to the option's seconds.
  clock::duration start_delay();
  // Call once when publishing starts (after any start delay): the schedules count from here.
  void begin(clock::time_point now) noexcept { start_ = now; }

 private:
  const perf_options& o_;
  std::uint16_t run_tag_;
  unsigned producer_;
  std::shared_ptr<const body_source> bodies_;
  step_schedule rates_, sizes_;
  rate_limiter limiter_;
  std::int64_t rate_ = -1;
  clock::time_point start_ = clock::now();
  std::string buffer_;
  std::string headers_;  // encoded {x-perf-stamp: S(24 octets)}
  bool header_stamp_ = false;
  bool measure_;
  std::vector<std::uint64_t> sequences_;  // per channel
  std::uint64_t published_ = 0;
  std::mt19937_64 rng_;
};

// What a consumer channel does with each message, whatever client delivered it: latency (from
// the publish, and from the intended send time), the sequence check and the count. One thread
// at a time (the channel's handler).
class receiver {
 public:
  receiver(const perf_options& o, stats_slot& slot, sequence_tracker& tracker)
      : slot_(slot),
        tracker_(tracker),
        wall_(o.use_millis),
        body_stamps_(o.timestamps() && !o.stamp_in_header()),
        work_us_(o.consumer_latency_us) {}

  // `header_stamp`: the x-perf-stamp header's value when the message has one.
  void count(std::string_view body, std::optional<std::string_view> header_stamp);

  // -L: the simulated work, after the message was settled.
  void work() const noexcept;

 private:
  stats_slot& slot_;
  sequence_tracker& tracker_;
  bool wall_, body_stamps_;
  std::uint32_t work_us_;
};

// One line: newlines in `s` become spaces.
std::string one_line(std::string s);

}  // namespace warren::perf
