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

TEST(rate_limiter, intended_times_follow_the_plan_on_time) {
  rate_limiter r(100);
  const clock::time_point t{std::chrono::seconds(100)};
  r.acquire(t);
  EXPECT_EQ(r.intended(), t);
  r.acquire(t + milliseconds(10));
  EXPECT_EQ(r.intended(), t + milliseconds(10));
}

// Coordinated omission: after a stall of 5 s, pacing restarts (no burst), and every later
// event is 5 s behind the plan, since the events the stall held up were never caught up.
TEST(rate_limiter, after_a_stall_events_stay_late_against_the_plan) {
  rate_limiter r(1000);
  clock::time_point t{std::chrono::seconds(100)};
  r.acquire(t);
  t += std::chrono::seconds(5);
  EXPECT_EQ(r.acquire(t), clock::duration::zero());
  EXPECT_EQ(t - r.intended(), std::chrono::seconds(5) - milliseconds(1));
  EXPECT_EQ(r.acquire(t), milliseconds(1));
  EXPECT_EQ(t + milliseconds(1) - r.intended(), std::chrono::seconds(5) - milliseconds(1));
}

// Within the second of slack the plan is caught up: late events go at once until on time.
TEST(rate_limiter, a_short_delay_is_caught_up) {
  rate_limiter r(100);
  clock::time_point t{std::chrono::seconds(100)};
  r.acquire(t);
  t += milliseconds(50);  // 4 events late
  for (int i = 0; i < 5; ++i) EXPECT_EQ(r.acquire(t), clock::duration::zero()) << i;
  EXPECT_EQ(r.acquire(t), milliseconds(10));
}

TEST(rate_limiter, set_rate_changes_the_spacing_from_the_next_event_on) {
  rate_limiter r(100);  // 10 ms
  const clock::time_point t{std::chrono::seconds(100)};
  r.acquire(t);
  r.set_rate(1000, t);  // 1 ms from the previous event
  EXPECT_EQ(r.acquire(t), milliseconds(1));
  EXPECT_EQ(r.acquire(t), milliseconds(2));
}

TEST(rate_limiter, a_rate_after_a_pause_starts_a_fresh_plan) {
  rate_limiter r(0);
  EXPECT_FALSE(r.limited());
  const clock::time_point t{std::chrono::seconds(100)};
  r.set_rate(10, t + std::chrono::seconds(3));
  EXPECT_TRUE(r.limited());
  EXPECT_EQ(r.acquire(t + std::chrono::seconds(3)), clock::duration::zero());
  EXPECT_EQ(r.intended(), t + std::chrono::seconds(3));
  r.set_rate(0, t + std::chrono::seconds(4));
  EXPECT_FALSE(r.limited());
  r.set_rate(10, t + std::chrono::seconds(9));
  EXPECT_EQ(r.acquire(t + std::chrono::seconds(9)), clock::duration::zero());
  EXPECT_EQ(r.intended(), t + std::chrono::seconds(9));
}

TEST(sleep_unless, returns_early_when_stopping) {
  const auto start = clock::now();
  sleep_unless(std::chrono::seconds(30), [] { return true; });
  EXPECT_LT(clock::now() - start, milliseconds(500));
}

}  // namespace
}  // namespace warren::perf
