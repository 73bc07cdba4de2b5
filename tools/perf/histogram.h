// The perf tool's latency histograms: the library's (engine/metrics/histogram.h) at the perf
// tool's precision, 128 log-linear buckets per power of two above 256 ns and one per nanosecond
// below, so any value read back (a percentile) is within 1/256 (0.39%) of a value that was
// recorded. Values above max_value_ns (60 s) count as max_value_ns.
//
// histogram is a plain value for one thread (the reporter's merges and snapshots);
// concurrent_histogram is what a producer's or consumer's hot path records into while the
// reporter reads it: relaxed atomic counters, no lock, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/metrics/histogram.h"

namespace warren::perf {

using metrics::latency_summary;
using metrics::max_value_ns;

namespace histogram_layout {
using layout = metrics::log_linear_layout<7>;
inline constexpr unsigned sub_bits = layout::sub_bits;               // width/value <= 1/128
inline constexpr std::uint64_t linear_limit = layout::linear_limit;  // exact below 256 ns
inline constexpr unsigned top_octave = layout::top_octave;           // 2^36 ns > 60 s
inline constexpr std::size_t bucket_count = layout::bucket_count;

constexpr std::size_t index_of(std::uint64_t ns) noexcept {
  return layout::index_of(ns);
}
// The smallest and largest value of bucket i (inclusive).
constexpr std::uint64_t lowest_of(std::size_t i) noexcept {
  return layout::lowest_of(i);
}
constexpr std::uint64_t highest_of(std::size_t i) noexcept {
  return layout::highest_of(i);
}
}  // namespace histogram_layout

using histogram = metrics::precise_histogram;
using concurrent_histogram = metrics::concurrent_precise_histogram;
static_assert(histogram::bucket_count == histogram_layout::bucket_count);

}  // namespace warren::perf
