#include "tools/perf/schedule.h"

#include <gtest/gtest.h>

namespace warren::perf {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(step_schedule, without_steps_the_fallback_holds_for_ever) {
  const step_schedule s({}, 12);
  EXPECT_FALSE(s.varies());
  EXPECT_EQ(s.value_at(seconds(0)), 12);
  EXPECT_EQ(s.value_at(seconds(100000)), 12);
}

// PerfTest's example: 100 for 60 s, 1000 for 10 s, 500 for 15 s, then 100 again, and so on.
TEST(step_schedule, steps_follow_in_turn_and_repeat) {
  const step_schedule s({{100, 60}, {1000, 10}, {500, 15}}, 0);
  EXPECT_TRUE(s.varies());
  EXPECT_EQ(s.value_at(seconds(0)), 100);
  EXPECT_EQ(s.value_at(seconds(59) + milliseconds(999)), 100);
  EXPECT_EQ(s.value_at(seconds(60)), 1000);
  EXPECT_EQ(s.value_at(seconds(69)), 1000);
  EXPECT_EQ(s.value_at(seconds(70)), 500);
  EXPECT_EQ(s.value_at(seconds(84)), 500);
  EXPECT_EQ(s.value_at(seconds(85)), 100);
  EXPECT_EQ(s.value_at(seconds(85 + 60)), 1000);
}

TEST(step_schedule, until_change_reaches_the_next_boundary) {
  const step_schedule s({{0, 2}, {10, 1}}, 0);
  EXPECT_EQ(s.until_change(seconds(0)), seconds(2));
  EXPECT_EQ(s.until_change(milliseconds(1500)), milliseconds(500));
  EXPECT_EQ(s.until_change(seconds(2)), seconds(1));
  EXPECT_EQ(s.until_change(milliseconds(2999)), milliseconds(1));
  EXPECT_EQ(s.until_change(seconds(3)), seconds(2));
}

}  // namespace
}  // namespace warren::perf
