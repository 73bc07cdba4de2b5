#include "tools/perf/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

namespace warren::perf {
namespace {

using namespace histogram_layout;

// Half a bucket width over the bucket's lowest value: 1/256 above the linear range.
constexpr double relative_error_bound = 1.0 / 256;

std::uint64_t exact_at(const std::vector<std::uint64_t>& sorted, double q) {
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(sorted.size()))));
  return sorted[rank - 1];
}

TEST(histogram, buckets_tile_the_range_without_gaps) {
  EXPECT_EQ(lowest_of(0), 0u);
  const std::size_t last = index_of(max_value_ns);  // values above it count as max_value_ns
  ASSERT_LT(last, bucket_count);
  for (std::size_t i = 1; i <= last; ++i) {
    ASSERT_EQ(lowest_of(i), highest_of(i - 1) + 1) << i;
    ASSERT_EQ(index_of(lowest_of(i)), i);
    ASSERT_EQ(index_of(highest_of(i)), i);
  }
  EXPECT_GE(highest_of(last), max_value_ns);
  EXPECT_EQ(index_of(max_value_ns + 1), last);
}

TEST(histogram, bucket_width_is_within_the_relative_error_bound) {
  for (std::size_t i = linear_limit; i < bucket_count; ++i) {
    const double width = static_cast<double>(highest_of(i) - lowest_of(i) + 1);
    ASSERT_LE(width / 2 / static_cast<double>(lowest_of(i)), relative_error_bound) << i;
  }
}

TEST(histogram, percentiles_match_an_exact_sort_within_the_bound) {
  std::mt19937_64 rng(12345);
  // Log-uniform from 1 us to 60 s: every octave of the range gets values.
  std::uniform_real_distribution<double> exponent(3.0, std::log10(6e10));
  for (int round = 0; round < 5; ++round) {
    histogram h;
    std::vector<std::uint64_t> values(20000 + round * 7919);
    for (auto& v : values) {
      v = static_cast<std::uint64_t>(std::pow(10.0, exponent(rng)));
      h.record(v);
    }
    std::sort(values.begin(), values.end());
    EXPECT_EQ(h.count(), values.size());
    EXPECT_EQ(h.min(), values.front());
    EXPECT_EQ(h.max(), values.back());
    for (double q : {0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0}) {
      const double exact = static_cast<double>(exact_at(values, q));
      const double got = static_cast<double>(h.value_at(q));
      EXPECT_LE(std::fabs(got - exact) / exact, relative_error_bound)
          << "q " << q << " exact " << exact << " got " << got;
    }
  }
}

TEST(histogram, small_values_are_exact) {
  histogram h;
  for (std::uint64_t v = 1; v <= 200; ++v) h.record(v);
  EXPECT_EQ(h.value_at(0.5), 100u);
  EXPECT_EQ(h.value_at(0.99), 198u);
}

TEST(histogram, values_above_sixty_seconds_count_as_sixty_seconds) {
  histogram h;
  h.record(3 * max_value_ns);
  EXPECT_EQ(h.max(), max_value_ns);
  EXPECT_EQ(h.value_at(1.0), max_value_ns);
}

TEST(histogram, summary_is_in_microseconds_and_empty_is_zero) {
  histogram h;
  EXPECT_EQ(h.summary().count, 0u);
  EXPECT_EQ(h.summary().p99, 0);
  h.record(2000);
  h.record(4000);
  const latency_summary s = h.summary();
  EXPECT_EQ(s.count, 2u);
  EXPECT_DOUBLE_EQ(s.min, 2.0);
  EXPECT_DOUBLE_EQ(s.max, 4.0);
  EXPECT_NEAR(s.p50, 2.0, 2.0 * relative_error_bound);
}

TEST(histogram, merge_equals_recording_everything_in_one) {
  histogram a, b, all;
  for (std::uint64_t v = 1000; v < 50000; v += 37) {
    (v % 2 ? a : b).record(v);
    all.record(v);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  for (double q : {0.1, 0.5, 0.99}) EXPECT_EQ(a.value_at(q), all.value_at(q));
}

TEST(histogram, subtract_leaves_the_later_values) {
  histogram before, after;
  before.record(1000);
  after = before;
  after.record(5'000'000);
  after.subtract(before);
  EXPECT_EQ(after.count(), 1u);
  EXPECT_NEAR(static_cast<double>(after.value_at(0.5)), 5e6, 5e6 * relative_error_bound);
  EXPECT_LE(after.min(), 5'000'000u);
  EXPECT_GE(after.max(), 5'000'000u);
}

TEST(concurrent_histogram, snapshots_while_writers_record_lose_nothing_at_the_end) {
  concurrent_histogram h;
  constexpr int writers = 4, per_writer = 50000;
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&h, w] {
      for (int i = 0; i < per_writer; ++i) h.record(1000 + static_cast<std::uint64_t>(w * i));
    });
  }
  std::uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    histogram snap;
    h.snapshot_into(snap);
    EXPECT_GE(snap.count(), last);
    last = snap.count();
    if (snap.count()) {
      EXPECT_LE(snap.value_at(0.5), snap.max());
    }
  }
  for (auto& t : threads) t.join();
  histogram final_snap;
  h.snapshot_into(final_snap);
  EXPECT_EQ(final_snap.count(), std::uint64_t{writers} * per_writer);
  EXPECT_EQ(final_snap.min(), 1000u);
  EXPECT_EQ(final_snap.max(), 1000u + 3u * (per_writer - 1));
}

}  // namespace
}  // namespace warren::perf
