#include "codec/wire.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

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

// put_bytes copies short strings with overlapping fixed-size moves instead of memcpy; every
// length through each size class and past the memcpy switch is copied exactly, from a source
// block of exactly that size (ASan reports any read past it) into a destination whose guard
// octets on both sides stay untouched.
TEST(put_bytes, copies_every_length_exactly_and_nothing_around_it) {
  for (std::size_t n = 0; n <= 300; ++n) {
    std::unique_ptr<char[]> src(new char[n == 0 ? 1 : n]);
    for (std::size_t i = 0; i < n; ++i) src[i] = static_cast<char>('a' + i % 26);
    std::string dst(n + 32, '#');
    char* end = detail::put_bytes(dst.data() + 16, std::string_view(src.get(), n));
    EXPECT_EQ(end, dst.data() + 16 + n) << n;
    EXPECT_EQ(dst.substr(0, 16), std::string(16, '#')) << n;
    EXPECT_EQ(dst.substr(16, n), std::string_view(src.get(), n)) << n;
    EXPECT_EQ(dst.substr(16 + n), std::string(16, '#')) << n;
  }
}

TEST(put_shortstr, writes_the_length_octet_then_the_string_for_every_length) {
  for (std::size_t n = 0; n <= 255; ++n) {
    const std::string s(n, 'k');
    std::string dst(n + 2, '#');
    EXPECT_EQ(detail::put_shortstr(dst.data(), s), dst.data() + 1 + n);
    EXPECT_EQ(static_cast<std::uint8_t>(dst[0]), n);
    EXPECT_EQ(dst.substr(1, n), s);
    EXPECT_EQ(dst.back(), '#');
  }
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
