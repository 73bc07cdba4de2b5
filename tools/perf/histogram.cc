#include "tools/perf/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace warren::perf {
namespace histogram_layout {

std::size_t index_of(std::uint64_t ns) noexcept {
  ns = std::min(ns, max_value_ns);
  if (ns < linear_limit) return static_cast<std::size_t>(ns);
  const unsigned octave = 63 - static_cast<unsigned>(std::countl_zero(ns));  // >= sub_bits + 1
  const std::uint64_t sub = (ns >> (octave - sub_bits)) & ((1u << sub_bits) - 1);
  return linear_limit + (octave - (sub_bits + 1)) * (1u << sub_bits) + sub;
}

std::uint64_t lowest_of(std::size_t i) noexcept {
  if (i < linear_limit) return i;
  const std::size_t k = i - linear_limit;
  const unsigned octave = static_cast<unsigned>(k >> sub_bits) + sub_bits + 1;
  const std::uint64_t sub = k & ((1u << sub_bits) - 1);
  return ((1u << sub_bits) + sub) << (octave - sub_bits);
}

std::uint64_t highest_of(std::size_t i) noexcept {
  if (i < linear_limit) return i;
  const unsigned octave = static_cast<unsigned>((i - linear_limit) >> sub_bits) + sub_bits + 1;
  return lowest_of(i) + (std::uint64_t{1} << (octave - sub_bits)) - 1;
}

}  // namespace histogram_layout

using namespace histogram_layout;

void histogram::record(std::uint64_t ns, std::uint64_t n) noexcept {
  if (n == 0) return;
  ns = std::min(ns, max_value_ns);
  counts_[index_of(ns)] += n;
  count_ += n;
  min_ = std::min(min_, ns);
  max_ = std::max(max_, ns);
}

void histogram::merge(const histogram& other) noexcept {
  for (std::size_t i = 0; i < bucket_count; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  if (other.count_) {
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }
}

void histogram::subtract(const histogram& earlier) noexcept {
  count_ = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    counts_[i] -= std::min(counts_[i], earlier.counts_[i]);
    count_ += counts_[i];
  }
  extremes_from_buckets();
}

void histogram::add_to_bucket(std::size_t i, std::uint64_t n) noexcept {
  counts_[i] += n;
  count_ += n;
}

void histogram::set_extremes(std::uint64_t min, std::uint64_t max) noexcept {
  min_ = min;
  max_ = max;
}

void histogram::extremes_from_buckets() noexcept {
  min_ = std::numeric_limits<std::uint64_t>::max();
  max_ = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    if (counts_[i] == 0) continue;
    min_ = std::min(min_, lowest_of(i));
    max_ = std::max(max_, std::min(highest_of(i), max_value_ns));
  }
}

void histogram::clear() noexcept {
  *this = histogram();
}

std::uint64_t histogram::value_at(double q) const noexcept {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      // The middle of the bucket halves the worst case; the exact extremes tighten the ends.
      const std::uint64_t mid = lowest_of(i) + (highest_of(i) - lowest_of(i)) / 2;
      return std::clamp(mid, min_, std::max(min_, max_));
    }
  }
  return max_;
}

latency_summary histogram::summary() const noexcept {
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

void concurrent_histogram::record(std::uint64_t ns) noexcept {
  ns = std::min(ns, max_value_ns);
  counts_[index_of(ns)].fetch_add(1, std::memory_order_relaxed);
  // Extremes rarely move once warm: a load and a compare, a CAS only when they do.
  for (std::uint64_t m = min_.load(std::memory_order_relaxed);
       ns < m && !min_.compare_exchange_weak(m, ns, std::memory_order_relaxed);) {
  }
  for (std::uint64_t m = max_.load(std::memory_order_relaxed);
       ns > m && !max_.compare_exchange_weak(m, ns, std::memory_order_relaxed);) {
  }
}

void concurrent_histogram::snapshot_into(histogram& out) const noexcept {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    const std::uint64_t c = counts_[i].load(std::memory_order_relaxed);
    if (c) out.add_to_bucket(i, c);
    n += c;
  }
  if (n == 0) return;
  std::uint64_t lo = min_.load(std::memory_order_relaxed);
  std::uint64_t hi = max_.load(std::memory_order_relaxed);
  // A record may have counted without its extreme yet (or the other way round): keep the
  // extremes within the buckets' range so percentiles stay ordered.
  if (lo > hi) {
    out.extremes_from_buckets();
    return;
  }
  const bool had = out.count() > n;
  out.set_extremes(had ? std::min(out.min(), lo) : lo, had ? std::max(out.max(), hi) : hi);
}

}  // namespace warren::perf
