#include "tools/perf/sequence.h"

#include <gtest/gtest.h>

namespace warren::perf {
namespace {

constexpr std::uint16_t tag = 0x1234;
constexpr std::uint64_t stream(std::uint32_t n, std::uint16_t t = tag) {
  return (std::uint64_t{t} << 32) | n;
}

TEST(sequence_tracker, in_order_deliveries_are_one_range) {
  sequence_tracker t;
  for (std::uint64_t i = 0; i < 1000; ++i) t.record(stream(1), i);
  EXPECT_EQ(t.received(), 1000u);
  EXPECT_EQ(t.duplicates(), 0u);
  EXPECT_EQ(t.reordered(), 0u);
  ASSERT_EQ(t.streams().at(stream(1)).size(), 1u);
  EXPECT_EQ(t.streams().at(stream(1)).begin()->second, 999u);
  EXPECT_EQ(summarize({{"q", &t}}, tag), (sequence_summary{1, 1000, 0, 0, 0, 0}));
}

TEST(sequence_tracker, a_gap_counts_its_missing_numbers_once) {
  sequence_tracker t;
  for (std::uint64_t i : {0, 1, 2, 6, 7, 10}) t.record(stream(1), i);
  // 3, 4, 5 and 8, 9: two gaps, five missing.
  EXPECT_EQ(summarize({{"q", &t}}, tag), (sequence_summary{1, 6, 5, 2, 0, 0}));
}

TEST(sequence_tracker, this_runs_streams_start_at_zero) {
  sequence_tracker t;
  t.record(stream(1), 3);
  t.record(stream(1), 4);
  EXPECT_EQ(summarize({{"q", &t}}, tag).missing, 3u);
  // An earlier run's stream (another tag) starts where the queue's messages start.
  sequence_tracker old;
  old.record(stream(1, 7), 3);
  old.record(stream(1, 7), 4);
  EXPECT_EQ(summarize({{"q", &old}}, tag).missing, 0u);
}

TEST(sequence_tracker, duplicates_and_late_arrivals_are_told_apart) {
  sequence_tracker t;
  for (std::uint64_t i : {0, 1, 3, 4}) t.record(stream(1), i);
  t.record(stream(1), 1);  // again: a duplicate
  t.record(stream(1), 2);  // late: fills the hole, reordered
  t.record(stream(1), 2);  // again
  EXPECT_EQ(t.duplicates(), 2u);
  EXPECT_EQ(t.reordered(), 1u);
  ASSERT_EQ(t.streams().at(stream(1)).size(), 1u);  // 0..4, the ranges joined
  EXPECT_EQ(summarize({{"q", &t}}, tag), (sequence_summary{1, 7, 0, 0, 2, 1}));
}

TEST(sequence_tracker, a_late_number_below_every_range_is_reordered) {
  sequence_tracker t;
  t.record(stream(1), 5);
  t.record(stream(1), 4);
  t.record(stream(1), 0);
  EXPECT_EQ(t.reordered(), 2u);
  EXPECT_EQ(t.streams().at(stream(1)).size(), 2u);  // 0, 4..5
  EXPECT_EQ(summarize({{"q", &t}}, tag).missing, 3u);
}

TEST(sequence_tracker, streams_are_kept_apart) {
  sequence_tracker t;
  for (std::uint64_t i = 0; i < 10; ++i) {
    t.record(stream(1), i);
    t.record(stream(2), i * 2);  // every other number: 9 missing
  }
  const sequence_summary s = summarize({{"q", &t}}, tag);
  EXPECT_EQ(s.streams, 2u);
  EXPECT_EQ(s.missing, 9u);
  EXPECT_EQ(s.gaps, 9u);
  EXPECT_EQ(s.reordered, 0u);
}

// Two consumers of one queue share its messages: neither alone has all of them, together they
// do; one each on its own queue must have all of them.
TEST(sequence_summary, channels_of_one_queue_are_merged) {
  sequence_tracker even, odd;
  for (std::uint64_t i = 0; i < 100; ++i) (i % 2 ? odd : even).record(stream(1), i);
  EXPECT_EQ(summarize({{"shared", &even}, {"shared", &odd}}, tag),
            (sequence_summary{1, 100, 0, 0, 0, 0}));
  const sequence_summary apart = summarize({{"q1", &even}, {"q2", &odd}}, tag);
  EXPECT_EQ(apart.streams, 2u);
  EXPECT_EQ(apart.missing, 99u);  // q1 lacks the 49 odd ones below 98, q2 the 50 even ones
}

TEST(sequence_summary, a_message_two_consumers_of_a_queue_got_is_a_duplicate) {
  sequence_tracker a, b;
  for (std::uint64_t i = 0; i < 10; ++i) a.record(stream(1), i);
  for (std::uint64_t i = 5; i < 12; ++i) b.record(stream(1), i);  // 5..9 redelivered to b
  EXPECT_EQ(summarize({{"q", &a}, {"q", &b}}, tag), (sequence_summary{1, 17, 0, 0, 5, 0}));
}

}  // namespace
}  // namespace warren::perf
