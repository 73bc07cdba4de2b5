// Latency histograms with bounded relative error, in the manner of HdrHistogram: values (in
// nanoseconds) fall into log-linear buckets, 128 per power of two above 256 ns and one per
// nanosecond below, so any value read back (a percentile) is within 1/256 (0.39%) of a value
// that was recorded. Values above max_value (60 s) count as max_value.
//
// histogram is a plain value for one thread (the reporter's merges and snapshots);
// concurrent_histogram is what a producer's or consumer's hot path records into while the
// reporter reads it: relaxed atomic counters, no lock, no allocation.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace warren::perf {

inline constexpr std::uint64_t max_value_ns = 60'000'000'000;

// Percentiles in microseconds, as reported. All zero for an empty histogram.
struct latency_summary {
  std::uint64_t count = 0;
  double min = 0, p50 = 0, p75 = 0, p95 = 0, p99 = 0, p999 = 0, max = 0;
};

namespace histogram_layout {
inline constexpr unsigned sub_bits = 7;  // 2^7 buckets per octave: width/value <= 1/128
inline constexpr std::uint64_t linear_limit = 2u << sub_bits;  // exact buckets below 256 ns
inline constexpr unsigned top_octave = 36;                     // 2^36 ns > 60 s
inline constexpr std::size_t bucket_count =
    linear_limit + (top_octave - (sub_bits + 1)) * (1u << sub_bits);

std::size_t index_of(std::uint64_t ns) noexcept;
// The smallest and largest value of bucket i (inclusive).
std::uint64_t lowest_of(std::size_t i) noexcept;
std::uint64_t highest_of(std::size_t i) noexcept;
}  // namespace histogram_layout

class histogram {
 public:
  void record(std::uint64_t ns, std::uint64_t n = 1) noexcept;
  void merge(const histogram& other) noexcept;
  // Removes `earlier`'s counts: `*this` must be a later snapshot of the same recorder(s).
  // min and max become those of the buckets left (bounded error, not exact).
  void subtract(const histogram& earlier) noexcept;
  void clear() noexcept;

  std::uint64_t count() const noexcept { return count_; }
  // Exact when every value came through record() or merge(); bucket bounds after subtract().
  std::uint64_t min() const noexcept { return count_ ? min_ : 0; }
  std::uint64_t max() const noexcept { return count_ ? max_ : 0; }
  // The value at quantile q (0..1): the recorded value of rank ceil(q * count) (at least 1) in
  // sorted order, within the relative error bound. 0 for an empty histogram.
  std::uint64_t value_at(double q) const noexcept;
  latency_summary summary() const noexcept;

  std::uint64_t bucket(std::size_t i) const noexcept { return counts_[i]; }
  void add_to_bucket(std::size_t i, std::uint64_t n) noexcept;
  void set_extremes(std::uint64_t min, std::uint64_t max) noexcept;
  // min and max from the non-empty buckets' bounds.
  void extremes_from_buckets() noexcept;

 private:
  std::array<std::uint64_t, histogram_layout::bucket_count> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t max_ = 0;
};

// Recorded into by any thread (normally one: a consumer's), read at any time by another.
// A snapshot taken while records happen may miss the latest ones; the next snapshot has them.
class concurrent_histogram {
 public:
  void record(std::uint64_t ns) noexcept;
  // Adds the counts so far, and the exact min and max, into `out`.
  void snapshot_into(histogram& out) const noexcept;

 private:
  std::array<std::atomic<std::uint64_t>, histogram_layout::bucket_count> counts_{};
  std::atomic<std::uint64_t> min_{std::numeric_limits<std::uint64_t>::max()};
  std::atomic<std::uint64_t> max_{0};
};

}  // namespace warren::perf
