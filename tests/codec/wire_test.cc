#include "codec/wire.h"

#include <gtest/gtest.h>

namespace warren::codec {
namespace {

TEST(reader, reads_big_endian_integers) {
  const char in[] = "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f";
  reader r(in, 15);
  std::uint8_t a;
  std::uint16_t b;
  std::uint32_t c;
  std::uint64_t d;
  ASSERT_TRUE(r.read_u8(a) && r.read_u16(b) && r.read_u32(c) && r.read_u64(d));
  EXPECT_EQ(a, 0x01);
  EXPECT_EQ(b, 0x0203);
  EXPECT_EQ(c, 0x04050607u);
  EXPECT_EQ(d, 0x08090a0b0c0d0e0full);
  EXPECT_TRUE(r.empty());
  EXPECT_FALSE(r.read_u8(a));
}

TEST(reader, rejects_longstr_whose_length_exceeds_input_without_moving) {
  const char in[] =
      "\xff\xff\xff\xff"
      "abc";
  reader r(in, 7);
  std::string_view v;
  EXPECT_FALSE(r.read_longstr(v));
  EXPECT_EQ(r.remaining(), 7u);
}

TEST(reader, rejects_shortstr_truncated_after_length_octet) {
  const char in[] =
      "\x05"
      "ab";
  reader r(in, 3);
  std::string_view v;
  EXPECT_FALSE(r.read_shortstr(v));
  EXPECT_EQ(r.remaining(), 3u);
}

TEST(writer, fixed_buffer_sets_overflow_instead_of_writing_past_end) {
  char buf[5] = {};
  writer w(buf, 4);
  w.u32(0xdeadbeef);
  EXPECT_FALSE(w.overflowed());
  w.u8(1);
  EXPECT_TRUE(w.overflowed());
  EXPECT_EQ(buf[4], 0);
  EXPECT_EQ(w.size(), 4u);
}

TEST(writer, growable_string_round_trips_through_reader) {
  std::string s;
  writer w(s);
  w.shortstr("hello");
  w.longstr(std::string(1000, 'x'));
  w.i64(-2);
  w.f64(1.5);
  w.finish();
  EXPECT_FALSE(w.overflowed());
  reader r(s);
  std::string_view a, b;
  std::int64_t i;
  double d;
  ASSERT_TRUE(r.read_shortstr(a) && r.read_longstr(b) && r.read_i64(i) && r.read_f64(d));
  EXPECT_EQ(a, "hello");
  EXPECT_EQ(b.size(), 1000u);
  EXPECT_EQ(i, -2);
  EXPECT_EQ(d, 1.5);
  EXPECT_TRUE(r.empty());
}

TEST(writer, refuses_shortstr_longer_than_255) {
  std::string s;
  writer w(s);
  EXPECT_FALSE(w.shortstr(std::string(256, 'a')));
  EXPECT_TRUE(w.overflowed());
}

TEST(error, maps_frame_errors_to_reply_codes) {
  EXPECT_EQ(reply_code(errc::bad_frame_end), 501);
  EXPECT_EQ(reply_code(errc::frame_too_large), 501);
  EXPECT_EQ(reply_code(errc::unknown_frame_type), 505);
  EXPECT_EQ(reply_code(errc::need_more), 0);
  std::error_code ec = errc::truncated;
  EXPECT_EQ(ec.category().name(), std::string("warren.codec"));
}

}  // namespace
}  // namespace warren::codec
