#include "codec/frame.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace warren::codec {
namespace {

using namespace std::string_literals;

// channel.open on channel 1, worked out by hand.
const std::string channel_open_frame =
    "\x01"s              // type: method
    "\x00\x01"s          // channel 1
    "\x00\x00\x00\x05"s  // size 5
    "\x00\x14"s          // class 20 (channel)
    "\x00\x0a"s          // method 10 (open)
    "\x00"s              // reserved-1: empty shortstr
    "\xce"s;             // frame-end

// A three-octet body frame on channel 2.
const std::string body_frame =
    "\x03"s              // type: body
    "\x00\x02"s          // channel 2
    "\x00\x00\x00\x03"s  // size 3
    "abc"s               // payload
    "\xce"s;

const std::string heartbeat = "\x08\x00\x00\x00\x00\x00\x00\xce"s;

struct frame_copy {
  std::uint8_t type;
  std::uint16_t channel;
  std::string payload;
  bool operator==(const frame_copy&) const = default;
};

frame_copy copy(const frame_view& f) {
  return {f.type, f.channel, std::string(f.payload)};
}

TEST(decode_frame, decodes_method_frame_with_payload_view_into_input) {
  frame_view f;
  std::size_t consumed = 99;
  ASSERT_EQ(decode_frame(channel_open_frame, 4096, f, consumed), errc::ok);
  EXPECT_EQ(f.type, frame_method);
  EXPECT_EQ(f.channel, 1);
  EXPECT_EQ(f.payload, "\x00\x14\x00\x0a\x00"s);
  EXPECT_EQ(f.payload.data(), channel_open_frame.data() + 7);
  EXPECT_EQ(consumed, channel_open_frame.size());
}

TEST(decode_frame, decodes_only_the_first_frame_of_a_buffer) {
  const std::string two = body_frame + heartbeat;
  frame_view f;
  std::size_t consumed = 0;
  ASSERT_EQ(decode_frame(two, 4096, f, consumed), errc::ok);
  EXPECT_EQ(copy(f), (frame_copy{frame_body, 2, "abc"}));
  EXPECT_EQ(consumed, body_frame.size());
}

TEST(decode_frame, decodes_heartbeat) {
  frame_view f;
  std::size_t consumed = 0;
  ASSERT_EQ(decode_frame(heartbeat, 4096, f, consumed), errc::ok);
  EXPECT_EQ(copy(f), (frame_copy{frame_heartbeat, 0, ""}));
  EXPECT_EQ(consumed, 8u);
}

TEST(decode_frame, heartbeat_constant_is_the_eight_octets_of_the_spec) {
  EXPECT_EQ(heartbeat_frame, heartbeat);
}

TEST(decode_frame, needs_more_for_every_truncation_and_consumes_nothing) {
  for (const std::string& whole : {channel_open_frame, body_frame, heartbeat}) {
    for (std::size_t n = 0; n < whole.size(); ++n) {
      frame_view f;
      std::size_t consumed = 99;
      EXPECT_EQ(decode_frame(std::string_view(whole).substr(0, n), 4096, f, consumed),
                errc::need_more)
          << "length " << n;
      EXPECT_EQ(consumed, 0u);
    }
  }
}

TEST(decode_frame, rejects_frame_without_end_octet) {
  std::string bad = body_frame;
  bad.back() = '\xcd';
  frame_view f;
  std::size_t consumed = 99;
  EXPECT_EQ(decode_frame(bad, 4096, f, consumed), errc::bad_frame_end);
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(reply_code(errc::bad_frame_end), 501);
}

TEST(decode_frame, rejects_oversized_frame_from_its_header_alone) {
  const std::string header =
      "\x03"s              // body
      "\x00\x01"s          // channel 1
      "\xff\xff\xff\xff"s  // size 4 GiB - 1
      ;
  frame_view f;
  std::size_t consumed = 99;
  EXPECT_EQ(decode_frame(header, 4096, f, consumed), errc::frame_too_large);
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(reply_code(errc::frame_too_large), 501);
}

TEST(decode_frame, accepts_payload_of_frame_max_minus_eight_and_rejects_one_more) {
  const std::string at_limit = "\x03\x00\x01\x00\x00\x0f\xf8"s;  // size 4088
  const std::string above = "\x03\x00\x01\x00\x00\x0f\xf9"s;     // size 4089
  frame_view f;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_frame(at_limit, 4096, f, consumed), errc::need_more);
  EXPECT_EQ(decode_frame(above, 4096, f, consumed), errc::frame_too_large);

  std::string whole = at_limit + std::string(4088, 'x') + "\xce"s;
  ASSERT_EQ(decode_frame(whole, 4096, f, consumed), errc::ok);
  EXPECT_EQ(f.payload.size(), 4088u);
}

TEST(decode_frame, applies_pre_tune_limit_while_frame_max_is_zero) {
  const std::string at_default = "\x03\x00\x01\x00\x01\xff\xf8"s;  // 131064 = 131072 - 8
  const std::string above_default = "\x03\x00\x01\x00\x01\xff\xf9"s;
  frame_view f;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_frame(at_default, 0, f, consumed), errc::need_more);
  EXPECT_EQ(decode_frame(above_default, 0, f, consumed), errc::frame_too_large);
  // A caller-chosen pre-tune limit replaces the default.
  EXPECT_EQ(decode_frame(at_default, 0, f, consumed, 8192), errc::frame_too_large);
  // A negotiated frame-max replaces the pre-tune limit.
  EXPECT_EQ(decode_frame(above_default, 1u << 20, f, consumed), errc::need_more);
}

TEST(decode_frame, frame_max_below_overhead_rejects_even_empty_frames) {
  frame_view f;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_frame(heartbeat, 7, f, consumed), errc::frame_too_large);
  EXPECT_EQ(decode_frame(heartbeat, 8, f, consumed), errc::ok);
}

TEST(decode_frame, rejects_unknown_frame_type_from_its_header_alone) {
  for (char type : {'\x00', '\x04', '\x07', '\x09', '\xff'}) {
    const std::string header = std::string(1, type) + "\x00\x00\x00\x00\x00\x00"s;
    frame_view f;
    std::size_t consumed = 99;
    EXPECT_EQ(decode_frame(header, 4096, f, consumed), errc::unknown_frame_type);
    EXPECT_EQ(consumed, 0u);
  }
  EXPECT_EQ(reply_code(errc::unknown_frame_type), 505);
}

TEST(decode_frame, rejects_heartbeat_on_channel_one) {
  const std::string bad = "\x08\x00\x01\x00\x00\x00\x00\xce"s;
  frame_view f;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_frame(bad, 4096, f, consumed), errc::bad_heartbeat);
  EXPECT_EQ(reply_code(errc::bad_heartbeat), 501);
}

TEST(decode_frame, rejects_heartbeat_with_payload_from_its_header_alone) {
  const std::string bad = "\x08\x00\x00\x00\x00\x00\x01"s;  // size 1, payload not yet here
  frame_view f;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_frame(bad, 4096, f, consumed), errc::bad_heartbeat);
}

const std::string three_frames = channel_open_frame + heartbeat + body_frame;
const std::vector<frame_copy> three_expected = {
    {frame_method, 1, "\x00\x14\x00\x0a\x00"s},
    {frame_heartbeat, 0, ""},
    {frame_body, 2, "abc"},
};

// Drains every complete frame; expects the loop to end on need_more.
void drain(frame_decoder& d, std::vector<frame_copy>& got) {
  frame_view f;
  errc e;
  while ((e = d.next(f)) == errc::ok) got.push_back(copy(f));
  EXPECT_EQ(e, errc::need_more);
}

TEST(frame_decoder, walks_all_frames_of_one_buffer) {
  frame_decoder d(4096);
  d.set_input(three_frames);
  std::vector<frame_copy> got;
  drain(d, got);
  EXPECT_EQ(got, three_expected);
  EXPECT_EQ(d.consumed(), three_frames.size());
  EXPECT_TRUE(d.unread().empty());
}

TEST(frame_decoder, yields_same_frames_for_every_split_point) {
  for (std::size_t split = 0; split <= three_frames.size(); ++split) {
    frame_decoder d(4096);
    std::vector<frame_copy> got;
    d.set_input(std::string_view(three_frames).substr(0, split));
    drain(d, got);
    // What the caller keeps (the unread tail) plus the rest of the stream.
    const std::string rest = std::string(d.unread()) + three_frames.substr(split);
    d.set_input(rest);
    drain(d, got);
    EXPECT_EQ(got, three_expected) << "split at " << split;
    EXPECT_EQ(d.consumed(), rest.size());
  }
}

TEST(frame_decoder, yields_same_frames_when_fed_one_octet_at_a_time) {
  frame_decoder d(4096);
  std::string buffer;
  std::vector<frame_copy> got;
  for (char c : three_frames) {
    buffer.push_back(c);
    d.set_input(buffer);
    drain(d, got);
    buffer.erase(0, d.consumed());
  }
  EXPECT_EQ(got, three_expected);
  EXPECT_TRUE(buffer.empty());
}

TEST(frame_decoder, error_does_not_advance_and_repeats) {
  std::string bad = heartbeat + "\x04\x00\x00\x00\x00\x00\x00\xce"s;
  frame_decoder d(4096);
  d.set_input(bad);
  frame_view f;
  ASSERT_EQ(d.next(f), errc::ok);
  EXPECT_EQ(d.next(f), errc::unknown_frame_type);
  EXPECT_EQ(d.next(f), errc::unknown_frame_type);
  EXPECT_EQ(d.consumed(), heartbeat.size());
}

TEST(frame_decoder, applies_frame_max_set_after_tune) {
  const std::string big = "\x03\x00\x01\x00\x00\x10\x00"s + std::string(4096, 'x') + "\xce"s;
  frame_decoder d;  // pre-tune: 131072
  d.set_input(big);
  frame_view f;
  ASSERT_EQ(d.next(f), errc::ok);
  d.set_input(big);
  d.set_frame_max(4096);
  EXPECT_EQ(d.frame_max(), 4096u);
  EXPECT_EQ(d.next(f), errc::frame_too_large);
}

TEST(write_frame_header, writes_type_channel_and_size_big_endian) {
  char out[7];
  char* end = write_frame_header(out, frame_body, 0x0102, 0x03040506);
  EXPECT_EQ(end, out + 7);
  EXPECT_EQ(std::string(out, 7), "\x03\x01\x02\x03\x04\x05\x06"s);
}

TEST(encode_method_frame, wraps_method_payload_in_a_frame) {
  std::string out = "prefix";
  writer w(out);
  ASSERT_EQ(encode_method_frame(1, channel_open{}, w), errc::ok);
  w.finish();
  EXPECT_EQ(out, "prefix" + channel_open_frame);
}

TEST(encode_method_frame, reports_buffer_too_small_for_fixed_writer) {
  char out[12];  // one octet short of the 13 of channel.open
  writer w(out, sizeof out);
  EXPECT_EQ(encode_method_frame(1, channel_open{}, w), errc::buffer_too_small);
  char exact[13];
  writer w2(exact, sizeof exact);
  ASSERT_EQ(encode_method_frame(1, channel_open{}, w2), errc::ok);
  EXPECT_EQ(std::string(exact, 13), channel_open_frame);
}

TEST(encode_method_frame, passes_method_errors_through) {
  std::string out;
  writer w(out);
  const std::string long_queue(256, 'q');
  queue_declare m;
  m.queue = long_queue;
  EXPECT_EQ(encode_method_frame(1, m, w), errc::string_too_long);
}

}  // namespace
}  // namespace warren::codec
