// Latency histograms with bounded relative error, in the manner of HdrHistogram: values (in
// nanoseconds) fall into log-linear buckets, 2^SubBits per power of two above 2^(SubBits+1) ns
// and one per nanosecond below, so any value read back (a percentile) is within half a bucket,
// 1/2^(SubBits+1) of a value that was recorded. Values above max_value_ns (60 s) count as
// max_value_ns in the buckets and the extremes (the sum keeps them whole).
//
// Two precisions are named below: latency_histogram (16 buckets per octave, 528 buckets, 4 KiB,
// within 3.2%) is what the engine keeps per channel; precise_histogram (128 per octave, 3840
// buckets, 30 KiB, within 0.39%) is the perf tool's. Every power of two of nanoseconds is a
// bucket boundary at any precision, which is what lets the Prometheus renderer give exact
// cumulative counts for power-of-two bounds.
//
// basic_histogram is a plain value for one thread (snapshots, merges). basic_concurrent_histogram
// is what a hot path records into while any other thread reads it: relaxed atomic counters, no
// lock, no allocation. Its record() may be called by several threads at once (atomic adds);
// record_exclusive() by one thread at a time only (a load and a store each, no locked
// instruction), for a histogram only its owner (an I/O thread) writes.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace warren::metrics {

inline constexpr std::uint64_t max_value_ns = 60'000'000'000;

// Percentiles in microseconds, as the perf tool reports them. All zero for an empty histogram.
struct latency_summary {
  std::uint64_t count = 0;
  double min = 0, p50 = 0, p75 = 0, p95 = 0, p99 = 0, p999 = 0, max = 0;
};

template <unsigned SubBits>
struct log_linear_layout {
  static_assert(SubBits >= 1 && SubBits <= 10);
  static constexpr unsigned sub_bits = SubBits;
  static constexpr std::uint64_t linear_limit = std::uint64_t{2} << sub_bits;  // exact below
  static constexpr unsigned top_octave = 36;  // 2^36 ns > max_value_ns
  static constexpr std::size_t bucket_count =
      linear_limit + (top_octave - (sub_bits + 1)) * (std::size_t{1} << sub_bits);

  static constexpr std::size_t index_of(std::uint64_t ns) noexcept {
    ns = std::min(ns, max_value_ns);
    if (ns < linear_limit) return static_cast<std::size_t>(ns);
    const unsigned octave = 63 - static_cast<unsigned>(std::countl_zero(ns));  // > sub_bits
    const std::uint64_t sub = (ns >> (octave - sub_bits)) & ((std::uint64_t{1} << sub_bits) - 1);
    return static_cast<std::size_t>(linear_limit + (octave - (sub_bits + 1)) * (1u << sub_bits) +
                                    sub);
  }
  // The smallest and largest value of bucket i (inclusive).
  static constexpr std::uint64_t lowest_of(std::size_t i) noexcept {
    if (i < linear_limit) return i;
    const std::size_t k = i - linear_limit;
    const unsigned octave = static_cast<unsigned>(k >> sub_bits) + sub_bits + 1;
    const std::uint64_t sub = k & ((std::size_t{1} << sub_bits) - 1);
    return ((std::uint64_t{1} << sub_bits) + sub) << (octave - sub_bits);
  }
  static constexpr std::uint64_t highest_of(std::size_t i) noexcept {
    if (i < linear_limit) return i;
    const unsigned octave = static_cast<unsigned>((i - linear_limit) >> sub_bits) + sub_bits + 1;
    return lowest_of(i) + (std::uint64_t{1} << (octave - sub_bits)) - 1;
  }
};

template <unsigned SubBits>
class basic_histogram {
 public:
  using layout = log_linear_layout<SubBits>;
  static constexpr std::size_t bucket_count = layout::bucket_count;

  void record(std::uint64_t ns, std::uint64_t n = 1) noexcept {
    if (n == 0) return;
    sum_ += ns * n;
    ns = std::min(ns, max_value_ns);
    counts_[layout::index_of(ns)] += n;
    count_ += n;
    min_ = std::min(min_, ns);
    max_ = std::max(max_, ns);
  }
  void merge(const basic_histogram& other) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    if (other.count_) {
      min_ = std::min(min_, other.min_);
      max_ = std::max(max_, other.max_);
    }
  }
  // Removes `earlier`'s counts: `*this` must be a later snapshot of the same recorder(s).
  // min and max become those of the buckets left (bounded error, not exact).
  void subtract(const basic_histogram& earlier) noexcept {
    count_ = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
      counts_[i] -= std::min(counts_[i], earlier.counts_[i]);
      count_ += counts_[i];
    }
    sum_ -= std::min(sum_, earlier.sum_);
    extremes_from_buckets();
  }
  void clear() noexcept { *this = basic_histogram(); }

  std::uint64_t count() const noexcept { return count_; }
  // Sum of the recorded values in nanoseconds (wraps after 584 years of them).
  std::uint64_t sum_ns() const noexcept { return sum_; }
  // Exact when every value came through record() or merge(); bucket bounds after subtract().
  std::uint64_t min() const noexcept { return count_ ? min_ : 0; }
  std::uint64_t max() const noexcept { return count_ ? max_ : 0; }
  // The value at quantile q (0..1): the recorded value of rank ceil(q * count) (at least 1) in
  // sorted order, within the relative error bound. 0 for an empty histogram.
  std::uint64_t value_at(double q) const noexcept {
    if (count_ == 0) return 0;
    q = std::clamp(q, 0.0, 1.0);
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        // The middle of the bucket halves the worst case; the exact extremes tighten the ends.
        const std::uint64_t lo = layout::lowest_of(i), hi = layout::highest_of(i);
        return std::clamp(lo + (hi - lo) / 2, min_, std::max(min_, max_));
      }
    }
    return max_;
  }
  // Values recorded below `ns` (exact when `ns` is a bucket's lowest value, e.g. a power of two).
  std::uint64_t count_below(std::uint64_t ns) const noexcept {
    if (ns > max_value_ns) return count_;
    const std::size_t end = layout::index_of(ns);
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < end; ++i) n += counts_[i];
    return n;
  }
  latency_summary summary() const noexcept {
    latency_summary s;
    s.count = count_;
    if (count_ == 0) return s;
    auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    s.min = us(min());
    s.p50 = us(value_at(0.50));
    s.p75 = us(value_at(0.75));
    s.p95 = us(value_at(0.95));
    s.p99 = us(value_at(0.99));
    s.p999 = us(value_at(0.999));
    s.max = us(max());
    return s;
  }

  std::uint64_t bucket(std::size_t i) const noexcept { return counts_[i]; }
  // For snapshots built bucket by bucket: adds counts without touching sum or extremes.
  void add_to_bucket(std::size_t i, std::uint64_t n) noexcept {
    counts_[i] += n;
    count_ += n;
  }
  void add_to_sum(std::uint64_t ns) noexcept { sum_ += ns; }
  void set_extremes(std::uint64_t min, std::uint64_t max) noexcept {
    min_ = min;
    max_ = max;
  }
  // min and max from the non-empty buckets' bounds.
  void extremes_from_buckets() noexcept {
    min_ = std::numeric_limits<std::uint64_t>::max();
    max_ = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
      if (counts_[i] == 0) continue;
      min_ = std::min(min_, layout::lowest_of(i));
      max_ = std::max(max_, std::min(layout::highest_of(i), max_value_ns));
    }
  }

 private:
  std::array<std::uint64_t, bucket_count> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t max_ = 0;
};

// Recorded into by any thread, read at any time by another. A snapshot taken while records
// happen may miss the latest ones (or see a record's bucket before its sum); the next one has
// them.
template <unsigned SubBits>
class basic_concurrent_histogram {
 public:
  using layout = log_linear_layout<SubBits>;
  using value_type = basic_histogram<SubBits>;
  static constexpr std::size_t bucket_count = layout::bucket_count;

  // Any number of threads at once.
  void record(std::uint64_t ns, std::uint64_t n = 1) noexcept {
    sum_.fetch_add(ns * n, std::memory_order_relaxed);
    ns = std::min(ns, max_value_ns);
    counts_[layout::index_of(ns)].fetch_add(n, std::memory_order_relaxed);
    // Extremes rarely move once warm: a load and a compare, a CAS only when they do.
    for (std::uint64_t m = min_.load(std::memory_order_relaxed);
         ns < m && !min_.compare_exchange_weak(m, ns, std::memory_order_relaxed);) {
    }
    for (std::uint64_t m = max_.load(std::memory_order_relaxed);
         ns > m && !max_.compare_exchange_weak(m, ns, std::memory_order_relaxed);) {
    }
  }
  // One thread at a time (the histogram's owner): plain loads and stores, no locked instruction.
  void record_exclusive(std::uint64_t ns, std::uint64_t n = 1) noexcept {
    bump(sum_, ns * n);
    ns = std::min(ns, max_value_ns);
    bump(counts_[layout::index_of(ns)], n);
    if (ns < min_.load(std::memory_order_relaxed)) min_.store(ns, std::memory_order_relaxed);
    if (ns > max_.load(std::memory_order_relaxed)) max_.store(ns, std::memory_order_relaxed);
  }
  // Adds the counts so far, their sum and the exact min and max, into `out`.
  void snapshot_into(value_type& out) const noexcept {
    std::uint64_t n = 0;
    const bool had = out.count() > 0;
    const std::uint64_t out_min = out.min(), out_max = out.max();
    for (std::size_t i = 0; i < bucket_count; ++i) {
      const std::uint64_t c = counts_[i].load(std::memory_order_relaxed);
      if (c) out.add_to_bucket(i, c);
      n += c;
    }
    out.add_to_sum(sum_.load(std::memory_order_relaxed));
    if (n == 0) return;
    const std::uint64_t lo = min_.load(std::memory_order_relaxed);
    const std::uint64_t hi = max_.load(std::memory_order_relaxed);
    // A record may have counted without its extreme yet (or the other way round): keep the
    // extremes within the buckets' range so percentiles stay ordered.
    if (lo > hi) {
      out.extremes_from_buckets();
      return;
    }
    out.set_extremes(had ? std::min(out_min, lo) : lo, had ? std::max(out_max, hi) : hi);
  }
  value_type snapshot() const noexcept {
    value_type v;
    snapshot_into(v);
    return v;
  }

 private:
  static void bump(std::atomic<std::uint64_t>& a, std::uint64_t n) noexcept {
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  std::array<std::atomic<std::uint64_t>, bucket_count> counts_{};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> min_{std::numeric_limits<std::uint64_t>::max()};
  std::atomic<std::uint64_t> max_{0};
};

// What the engine keeps per channel: 16 buckets per octave (values within 1/32, 3.2%).
using latency_histogram = basic_histogram<4>;
using concurrent_latency_histogram = basic_concurrent_histogram<4>;
// The perf tool's precision: 128 buckets per octave (within 1/256, 0.39%).
using precise_histogram = basic_histogram<7>;
using concurrent_precise_histogram = basic_concurrent_histogram<7>;

}  // namespace warren::metrics
