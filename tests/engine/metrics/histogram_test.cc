#include "engine/metrics/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

namespace warren::metrics {
namespace {

template <typename H>
class histogram_precision : public ::testing::Test {
 protected:
  using hist = H;
  using layout = typename H::layout;
  // Half a bucket width over the bucket's lowest value, above the linear range.
  static constexpr double bound = 1.0 / static_cast<double>(std::uint64_t{2} << layout::sub_bits);
};
using precisions = ::testing::Types<latency_histogram, precise_histogram>;
TYPED_TEST_SUITE(histogram_precision, precisions);

std::uint64_t exact_at(const std::vector<std::uint64_t>& sorted, double q) {
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(sorted.size()))));
  return sorted[rank - 1];
}

TYPED_TEST(histogram_precision, buckets_tile_the_range_without_gaps) {
  using L = typename TestFixture::layout;
  EXPECT_EQ(L::lowest_of(0), 0u);
  const std::size_t last = L::index_of(max_value_ns);
  ASSERT_LT(last, L::bucket_count);
  for (std::size_t i = 1; i <= last; ++i) {
    ASSERT_EQ(L::lowest_of(i), L::highest_of(i - 1) + 1) << i;
    ASSERT_EQ(L::index_of(L::lowest_of(i)), i);
    ASSERT_EQ(L::index_of(L::highest_of(i)), i);
  }
  EXPECT_GE(L::highest_of(last), max_value_ns);
  EXPECT_EQ(L::index_of(max_value_ns + 1), last);
}

TYPED_TEST(histogram_precision, every_power_of_two_starts_a_bucket) {
  using L = typename TestFixture::layout;
  for (unsigned k = 0; (std::uint64_t{1} << k) <= max_value_ns; ++k) {
    const std::uint64_t p = std::uint64_t{1} << k;
    EXPECT_EQ(L::lowest_of(L::index_of(p)), p) << k;
  }
}

TYPED_TEST(histogram_precision, bucket_width_is_within_the_relative_error_bound) {
  using L = typename TestFixture::layout;
  for (std::size_t i = L::linear_limit; i < L::bucket_count; ++i) {
    const double width = static_cast<double>(L::highest_of(i) - L::lowest_of(i) + 1);
    ASSERT_LE(width / 2 / static_cast<double>(L::lowest_of(i)), TestFixture::bound) << i;
  }
}

TYPED_TEST(histogram_precision, percentiles_match_an_exact_sort_within_the_bound) {
  std::mt19937_64 rng(12345);
  // Log-uniform from 1 us to 60 s: every octave of the range gets values.
  std::uniform_real_distribution<double> exponent(3.0, std::log10(6e10));
  for (int round = 0; round < 3; ++round) {
    typename TestFixture::hist h;
    std::vector<std::uint64_t> values(20000 + round * 7919);
    std::uint64_t sum = 0;
    for (auto& v : values) {
      v = static_cast<std::uint64_t>(std::pow(10.0, exponent(rng)));
      h.record(v);
      sum += v;
    }
    std::sort(values.begin(), values.end());
    EXPECT_EQ(h.count(), values.size());
    EXPECT_EQ(h.sum_ns(), sum);
    EXPECT_EQ(h.min(), values.front());
    EXPECT_EQ(h.max(), values.back());
    for (double q : {0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0}) {
      const double exact = static_cast<double>(exact_at(values, q));
      const double got = static_cast<double>(h.value_at(q));
      EXPECT_LE(std::fabs(got - exact) / exact, TestFixture::bound)
          << "q " << q << " exact " << exact << " got " << got;
    }
  }
}

TYPED_TEST(histogram_precision, count_below_a_power_of_two_is_exact) {
  typename TestFixture::hist h;
  for (std::uint64_t v : {1023u, 1024u, 1025u, 2047u, 2048u, 4096u}) h.record(v);
  EXPECT_EQ(h.count_below(1024), 1u);
  EXPECT_EQ(h.count_below(2048), 4u);
  EXPECT_EQ(h.count_below(4096), 5u);
  EXPECT_EQ(h.count_below(std::uint64_t{1} << 35), 6u);
}

TYPED_TEST(histogram_precision, values_above_sixty_seconds_count_as_sixty_in_buckets_not_in_sum) {
  typename TestFixture::hist h;
  h.record(3 * max_value_ns);
  EXPECT_EQ(h.max(), max_value_ns);
  EXPECT_EQ(h.value_at(1.0), max_value_ns);
  EXPECT_EQ(h.sum_ns(), 3 * max_value_ns);
  EXPECT_EQ(h.count_below(std::uint64_t{1} << 35), 0u);
}

TYPED_TEST(histogram_precision, record_with_a_count_equals_recording_n_times) {
  typename TestFixture::hist a, b;
  a.record(5000, 7);
  for (int i = 0; i < 7; ++i) b.record(5000);
  EXPECT_EQ(a.count(), b.count());
  EXPECT_EQ(a.sum_ns(), b.sum_ns());
  EXPECT_EQ(a.value_at(0.5), b.value_at(0.5));
  a.record(1, 0);
  EXPECT_EQ(a.count(), 7u);
}

TEST(histogram, small_values_are_exact) {
  precise_histogram h;
  for (std::uint64_t v = 1; v <= 200; ++v) h.record(v);
  EXPECT_EQ(h.value_at(0.5), 100u);
  EXPECT_EQ(h.value_at(0.99), 198u);
}

TEST(histogram, summary_is_in_microseconds_and_empty_is_zero) {
  latency_histogram h;
  EXPECT_EQ(h.summary().count, 0u);
  EXPECT_EQ(h.summary().p99, 0);
  h.record(2000);
  h.record(4000);
  const latency_summary s = h.summary();
  EXPECT_EQ(s.count, 2u);
  EXPECT_DOUBLE_EQ(s.min, 2.0);
  EXPECT_DOUBLE_EQ(s.max, 4.0);
  EXPECT_NEAR(s.p50, 2.0, 2.0 / 32);
}

TEST(histogram, merge_equals_recording_everything_in_one) {
  latency_histogram a, b, all;
  for (std::uint64_t v = 1000; v < 50000; v += 37) {
    (v % 2 ? a : b).record(v);
    all.record(v);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.sum_ns(), all.sum_ns());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  for (double q : {0.1, 0.5, 0.99}) EXPECT_EQ(a.value_at(q), all.value_at(q));
}

TEST(histogram, subtract_leaves_the_later_values) {
  precise_histogram before, after;
  before.record(1000);
  after = before;
  after.record(5'000'000);
  after.subtract(before);
  EXPECT_EQ(after.count(), 1u);
  EXPECT_EQ(after.sum_ns(), 5'000'000u);
  EXPECT_NEAR(static_cast<double>(after.value_at(0.5)), 5e6, 5e6 / 256);
  EXPECT_LE(after.min(), 5'000'000u);
  EXPECT_GE(after.max(), 5'000'000u);
}

TEST(concurrent_histogram, record_exclusive_equals_record) {
  concurrent_latency_histogram a, b;
  for (std::uint64_t v = 100; v < 1'000'000; v = v * 3 / 2) {
    a.record(v, 2);
    b.record_exclusive(v, 2);
  }
  const latency_histogram sa = a.snapshot(), sb = b.snapshot();
  EXPECT_EQ(sa.count(), sb.count());
  EXPECT_EQ(sa.sum_ns(), sb.sum_ns());
  EXPECT_EQ(sa.min(), sb.min());
  EXPECT_EQ(sa.max(), sb.max());
  for (std::size_t i = 0; i < latency_histogram::bucket_count; ++i)
    ASSERT_EQ(sa.bucket(i), sb.bucket(i)) << i;
}

TEST(concurrent_histogram, snapshot_into_merges_extremes_with_what_is_there) {
  concurrent_latency_histogram h;
  h.record(5000);
  latency_histogram out;
  out.record(100);
  h.snapshot_into(out);
  EXPECT_EQ(out.count(), 2u);
  EXPECT_EQ(out.min(), 100u);
  EXPECT_EQ(out.max(), 5000u);
  EXPECT_EQ(out.sum_ns(), 5100u);
}

TEST(concurrent_histogram, snapshots_while_writers_record_lose_nothing_at_the_end) {
  concurrent_precise_histogram h;
  constexpr int writers = 4, per_writer = 50000;
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&h, w] {
      for (int i = 0; i < per_writer; ++i) h.record(1000 + static_cast<std::uint64_t>(w * i));
    });
  }
  std::uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    const precise_histogram snap = h.snapshot();
    EXPECT_GE(snap.count(), last);
    last = snap.count();
    if (snap.count()) {
      EXPECT_LE(snap.value_at(0.5), snap.max());
    }
  }
  for (auto& t : threads) t.join();
  const precise_histogram final_snap = h.snapshot();
  EXPECT_EQ(final_snap.count(), std::uint64_t{writers} * per_writer);
  EXPECT_EQ(final_snap.min(), 1000u);
  EXPECT_EQ(final_snap.max(), 1000u + 3u * (per_writer - 1));
  std::uint64_t sum = 0;
  for (int w = 0; w < writers; ++w)
    for (int i = 0; i < per_writer; ++i) sum += 1000 + static_cast<std::uint64_t>(w * i);
  EXPECT_EQ(final_snap.sum_ns(), sum);
}

}  // namespace
}  // namespace warren::metrics
