#include "tools/perf/rate_limiter.h"

#include <gtest/gtest.h>

namespace warren::perf {
namespace {

using clock = rate_limiter::clock;
using std::chrono::milliseconds;

TEST(rate_limiter, unlimited_never_waits) {
  rate_limiter r(0);
  EXPECT_FALSE(r.limited());
  const clock::time_point t{std::chrono::seconds(100)};
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(r.acquire(t), clock::duration::zero());
}

TEST(rate_limiter, events_are_spaced_by_one_over_the_rate) {
  rate_limiter r(100);  // 10 ms apart
  const clock::time_point t{std::chrono::seconds(100)};
  EXPECT_EQ(r.acquire(t), clock::duration::zero());
  EXPECT_EQ(r.acquire(t), milliseconds(10));
  EXPECT_EQ(r.acquire(t), milliseconds(20));
  // A caller that waited as told is on time: no wait.
  EXPECT_EQ(r.acquire(t + milliseconds(30)), clock::duration::zero());
}

TEST(rate_limiter, a_long_stall_does_not_turn_into_a_burst) {
  rate_limiter r(1000);
  clock::time_point t{std::chrono::seconds(100)};
  r.acquire(t);
  t += std::chrono::seconds(5);
  EXPECT_EQ(r.acquire(t), clock::duration::zero());
  EXPECT_EQ(r.acquire(t), milliseconds(1));
}

TEST(rate_limiter, fractional_rates_pace_slower_than_once_a_second) {
  rate_limiter r(0.5);
  const clock::time_point t{std::chrono::seconds(100)};
  r.acquire(t);
  EXPECT_EQ(r.acquire(t), std::chrono::seconds(2));
}

TEST(sleep_unless, returns_early_when_stopping) {
  const auto start = clock::now();
  sleep_unless(std::chrono::seconds(30), [] { return true; });
  EXPECT_LT(clock::now() - start, milliseconds(500));
}

}  // namespace
}  // namespace warren::perf
