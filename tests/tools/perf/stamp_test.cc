#include "tools/perf/stamp.h"

#include <gtest/gtest.h>

#include <string>

namespace warren::perf {
namespace {

stamp sample() {
  stamp s;
  s.sent_ns = 0x0123456789abcdefLL;
  s.lag_us = 0xfedcba98u;
  s.has_sequence = true;
  s.stream = (std::uint64_t{0xbeef} << 32) | 0x00c0ffeeu;
  s.sequence = 0x0000a1b2c3d4e5f6ULL;
  return s;
}

TEST(stamp, a_full_stamp_reads_back_as_written) {
  std::string body(sequence_octets + 10, 'x');
  write_stamp(body.data(), body.size(), sample());
  const auto r = read_stamp(body);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->sent_ns, sample().sent_ns);
  EXPECT_EQ(r->lag_us, sample().lag_us);
  ASSERT_TRUE(r->has_sequence);
  EXPECT_EQ(r->stream, sample().stream);
  EXPECT_EQ(r->sequence, sample().sequence);
  EXPECT_EQ(body.substr(sequence_octets), std::string(10, 'x'));  // the rest untouched
}

TEST(stamp, the_layout_is_little_endian_at_fixed_offsets) {
  std::string body(sequence_octets, '\0');
  stamp s;
  s.sent_ns = 1;
  s.lag_us = 2;
  s.stream = (std::uint64_t{4} << 32) | 3;
  s.sequence = 5;
  write_stamp(body.data(), body.size(), s);
  EXPECT_EQ(body[0], 1);
  EXPECT_EQ(body[8], 2);
  EXPECT_EQ(body[12], 3);
  EXPECT_EQ(body[16], 4);
  EXPECT_EQ(body[18], 5);
}

TEST(stamp, short_bodies_carry_the_times_or_nothing) {
  std::string times(timestamp_octets, '\0');
  write_stamp(times.data(), times.size(), sample());
  const auto r = read_stamp(times);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->sent_ns, sample().sent_ns);
  EXPECT_FALSE(r->has_sequence);
  std::string tiny(timestamp_octets - 1, 'x');
  write_stamp(tiny.data(), tiny.size(), sample());
  EXPECT_EQ(tiny, std::string(timestamp_octets - 1, 'x'));
  EXPECT_FALSE(read_stamp(tiny).has_value());
}

TEST(stamp, intended_time_is_the_publish_time_less_the_lag) {
  stamp s;
  s.sent_ns = 5'000'000;
  s.lag_us = 1500;
  EXPECT_EQ(s.intended_ns(), 3'500'000);
}

TEST(stamp, lag_saturates_and_is_never_negative) {
  EXPECT_EQ(lag_us_between(0, 2500), 2u);
  EXPECT_EQ(lag_us_between(100, 50), 0u);
  EXPECT_EQ(lag_us_between(0, std::int64_t{1} << 62), 0xffffffffu);
}

TEST(stamp, the_clocks_are_the_monotonic_and_the_wall_one) {
  EXPECT_GT(stamp_clock_ns(true), std::int64_t{1'600'000'000} * 1'000'000'000);
  const std::int64_t a = stamp_clock_ns(false);
  EXPECT_LE(a, stamp_clock_ns(false));
}

}  // namespace
}  // namespace warren::perf
