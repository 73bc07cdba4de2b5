// Counters and latency recorded by producers and consumers, and the reporter's view of them.
//
// Each producer and each consumer owns one stats_slot (its I/O callbacks write to it too); the
// reporter thread sums all slots once a second. Slots are plain atomic counters: no lock on
// the hot path, and a slot per writer keeps cache lines unshared. Counts are monotonic; an
// interval is the difference of two snapshots. Counters are added with release and read with
// acquire, so a snapshot that sees a confirm also sees the publish counted before it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "tools/perf/histogram.h"

namespace warren::perf {

// How a confirmed-mode publish ended, as the tool counts it. A nack is the broker's refusal; in
// doubt means nobody knows whether the broker has the message (the connection or channel went
// before its confirm came, or the confirm timed out). They are different facts for a load
// tester and are never counted together. Which client outcome is which: confirm_outcome.h.
enum class settlement { confirmed, nacked, in_doubt };

// A histogram a slot has only when the run needs it: each holds 32 KiB of counters, and 10,000
// producers would otherwise hold 1.3 GB of histograms they never fill. enable() before the run
// (before any thread records); record() and snapshot_into() do nothing while disabled.
class optional_histogram {
 public:
  void enable() { h_ = std::make_unique<concurrent_histogram>(); }
  bool enabled() const noexcept { return h_ != nullptr; }
  void record(std::uint64_t ns) noexcept {
    if (h_) h_->record(ns);
  }
  void snapshot_into(histogram& out) const noexcept {
    if (h_) h_->snapshot_into(out);
  }

 private:
  std::unique_ptr<concurrent_histogram> h_;
};

struct alignas(64) stats_slot {
  std::atomic<std::uint64_t> published{0};
  std::atomic<std::uint64_t> confirmed{0};
  std::atomic<std::uint64_t> nacked{0};
  std::atomic<std::uint64_t> in_doubt{0};
  std::atomic<std::uint64_t> returned{0};
  std::atomic<std::uint64_t> received{0};
  // Recoveries of this slot's connection, publishes it republished, and the time its producer
  // could not publish because the connection was recovering (nanoseconds).
  std::atomic<std::uint64_t> recoveries{0};
  std::atomic<std::uint64_t> republished{0};
  std::atomic<std::uint64_t> unpublished_ns{0};
  // Consumers: publish to receipt; from the intended send time too when publishing is paced
  // (coordinated omission corrected). Producers: publish to confirm, likewise.
  optional_histogram latency, latency_intended, confirm_latency, confirm_latency_intended;

  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_release);
  }
  // Counts `n` publishes that ended as `s`.
  void settle(settlement s, std::uint64_t n = 1) noexcept {
    switch (s) {
      case settlement::confirmed:
        return add(confirmed, n);
      case settlement::nacked:
        return add(nacked, n);
      case settlement::in_doubt:
        return add(in_doubt, n);
    }
  }
  // For a counter only its owner thread writes (a producer's `published`): a plain load and
  // store, no locked read-modify-write per message.
  static void add_owned(std::atomic<std::uint64_t>& c, std::int64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(n),
            std::memory_order_release);
  }
};

// Sums over every slot at one moment.
struct totals {
  std::uint64_t published = 0, confirmed = 0, nacked = 0, in_doubt = 0, returned = 0, received = 0;
  std::uint64_t recoveries = 0, republished = 0, unpublished_ns = 0;
  histogram latency, latency_intended, confirm_latency, confirm_latency_intended;
};

// A fixed set of slots: their addresses never change, so writers may keep references.
class run_stats {
 public:
  explicit run_stats(std::size_t slot_count);
  stats_slot& slot(std::size_t i) noexcept { return slots_[i]; }
  std::size_t size() const noexcept { return count_; }
  // Any thread; sees every count a writer made before the call (and maybe some after).
  totals snapshot() const;

 private:
  std::size_t count_;
  std::unique_ptr<stats_slot[]> slots_;
};

// One reporting interval (or, as the summary, the whole run). Counts are for the interval;
// rates are counts / seconds.
struct interval_report {
  double elapsed_s = 0;  // since the start of the run, at the interval's end
  double seconds = 0;    // length of the interval
  std::uint64_t published = 0, confirmed = 0, nacked = 0, in_doubt = 0, returned = 0, received = 0;
  std::uint64_t recoveries = 0, republished = 0;
  // Time producers could not publish because their connection was recovering, summed over
  // producers (milliseconds).
  double unpublished_ms = 0;
  double publish_rate = 0, confirm_rate = 0, receive_rate = 0;
  latency_summary latency, latency_intended, confirm_latency, confirm_latency_intended;
};

// Turns successive snapshots into intervals (single thread: the reporter's).
class interval_meter {
 public:
  interval_report next(const totals& now, double elapsed_s);
  // The last interval again, stretched to end at `now`: folds a short tail (the stop's
  // confirm drain) into the last full interval instead of reporting a noisy sliver.
  interval_report extend_last(const totals& now, double elapsed_s);

 private:
  totals prev_, before_prev_;
  double prev_elapsed_s_ = 0, before_prev_elapsed_s_ = 0;
};

// The whole run from the final snapshot (exact latency extremes).
interval_report whole_run(const totals& final_totals, double elapsed_s);

}  // namespace warren::perf
