#include "codec/publish.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace warren::codec {
namespace {

using namespace std::string_literals;

const std::string one_header_entries = "\x01kS\x00\x00\x00\x01v"s;  // {"k": S "v"}

// basic.publish(exchange "ex", routing key "rk", mandatory) on channel 1 with content-type
// text/plain, delivery-mode 2 and one header, body "hello"; worked out by hand.
// clang-format off
const std::string golden_publish =
    // method frame
    "\x01"s                          // type: method
    "\x00\x01"s                      // channel 1
    "\x00\x00\x00\x0d"s              // size 13 = 4 + 2 + 3 + 3 + 1
    "\x00\x3c\x00\x28"s              // basic (60) . publish (40)
    "\x00\x00"s                      // ticket
    "\x02" "ex"s                     // exchange
    "\x02" "rk"s                     // routing key
    "\x01"s                          // bits: mandatory (bit 0), not immediate
    "\xce"s
    // content-header frame
    "\x02"s                          // type: header
    "\x00\x01"s                      // channel 1
    "\x00\x00\x00\x26"s              // size 38 = 12 + 2 + 11 + 12 + 1
    "\x00\x3c"s                      // class basic
    "\x00\x00"s                      // weight
    "\x00\x00\x00\x00\x00\x00\x00\x05"s  // body size 5
    "\xb0\x00"s                      // flags: content-type, headers, delivery-mode
    "\x0a" "text/plain"s             // content-type
    "\x00\x00\x00\x08"s              // headers: 8 octets
    "\x01" "kS" "\x00\x00\x00\x01" "v"s  // k = S "v"
    "\x02"s                          // delivery-mode persistent
    "\xce"s
    // body frame
    "\x03"s                          // type: body
    "\x00\x01"s                      // channel 1
    "\x00\x00\x00\x05"s              // size 5
    "hello"s
    "\xce"s;
// clang-format on

basic_publish golden_method() {
  basic_publish m;
  m.exchange = "ex";
  m.routing_key = "rk";
  m.mandatory = true;
  return m;
}

basic_properties golden_properties() {
  basic_properties p;
  p.set_content_type("text/plain");
  p.set_delivery_mode(basic_properties::persistent);
  p.set_headers(table_view{one_header_entries});
  return p;
}

std::string publish_flat(const basic_publish& m, const basic_properties& p, std::string_view body,
                         std::uint32_t frame_max, std::uint16_t channel = 1) {
  std::string out(publish_size(m, p, body.size(), frame_max), '\0');
  std::size_t written = 0;
  EXPECT_EQ(encode_publish(out.data(), out.size(), written, channel, m, p, body, frame_max),
            errc::ok);
  EXPECT_EQ(written, out.size());
  return out;
}

// The octets an iovec list of a publish stands for. Body chunks (the odd entries) must point
// into the caller's body, not at a copy; everything else into the scratch buffer.
std::string joined(const iovec* iov, std::size_t count, std::string_view scratch,
                   std::string_view body) {
  std::string out;
  for (std::size_t i = 0; i < count; ++i) {
    const char* base = static_cast<const char*>(iov[i].iov_base);
    const std::string_view within = i % 2 == 1 ? body : scratch;
    EXPECT_GE(base, within.data());
    EXPECT_LE(base + iov[i].iov_len, within.data() + within.size());
    out.append(base, iov[i].iov_len);
  }
  return out;
}

std::string publish_gathered(const basic_publish& m, const basic_properties& p,
                             std::string_view body, std::uint32_t frame_max,
                             std::uint16_t channel = 1) {
  std::string scratch(publish_scratch_size(m, p, body.size(), frame_max), '\0');
  std::vector<iovec> iov(publish_iov_count(body.size(), frame_max));
  std::size_t count = 0;
  EXPECT_EQ(encode_publish_iov(scratch.data(), scratch.size(), iov.data(), iov.size(), count,
                               channel, m, p, body, frame_max),
            errc::ok);
  EXPECT_EQ(count, iov.size());
  return joined(iov.data(), count, scratch, body);
}

// The frames of an encoded publish, read back with the frame decoder.
std::vector<frame_view> frames_of(std::string_view wire, std::uint32_t frame_max) {
  frame_decoder d(frame_max);
  d.set_input(wire);
  std::vector<frame_view> frames;
  frame_view f;
  while (d.next(f) == errc::ok) frames.push_back(f);
  EXPECT_EQ(d.consumed(), wire.size());
  return frames;
}

TEST(encode_publish, writes_method_header_and_body_frames) {
  EXPECT_EQ(publish_flat(golden_method(), golden_properties(), "hello", 4096), golden_publish);
  EXPECT_EQ(publish_size(golden_method(), golden_properties(), 5, 4096), golden_publish.size());
}

TEST(encode_publish, iovec_form_writes_the_same_octets) {
  EXPECT_EQ(publish_gathered(golden_method(), golden_properties(), "hello", 4096), golden_publish);
}

TEST(encode_publish, splits_body_at_frame_max_minus_eight) {
  std::string body(10000, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7);
  const std::string wire = publish_flat(golden_method(), golden_properties(), body, 4096);
  const std::vector<frame_view> frames = frames_of(wire, 4096);
  ASSERT_EQ(frames.size(), 5u);
  EXPECT_EQ(frames[0].type, frame_method);
  EXPECT_EQ(frames[1].type, frame_header);
  std::string joined;
  const std::size_t sizes[] = {4088, 4088, 1824};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(frames[2 + i].type, frame_body);
    EXPECT_EQ(frames[2 + i].channel, 1);
    EXPECT_EQ(frames[2 + i].payload.size(), sizes[i]);
    joined += frames[2 + i].payload;
  }
  EXPECT_EQ(joined, body);
  content_header h;
  ASSERT_EQ(decode(frames[1].payload, h), errc::ok);
  EXPECT_EQ(h.body_size, 10000u);
  EXPECT_EQ(publish_gathered(golden_method(), golden_properties(), body, 4096), wire);
}

TEST(encode_publish, body_of_exact_chunk_multiple_has_no_empty_trailing_frame) {
  const std::string body(2 * 4088, 'b');
  const std::string wire = publish_flat(golden_method(), {}, body, 4096);
  const std::vector<frame_view> frames = frames_of(wire, 4096);
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_EQ(frames[2].payload.size(), 4088u);
  EXPECT_EQ(frames[3].payload.size(), 4088u);
  EXPECT_EQ(publish_gathered(golden_method(), {}, body, 4096), wire);
}

TEST(encode_publish, empty_body_has_no_body_frame) {
  // clang-format off
  const std::string expected =
      "\x01\x00\x07\x00\x00\x00\x0a"s    // method frame, channel 7, size 10 = 4 + 2 + 1 + 2 + 1
      "\x00\x3c\x00\x28"s                // basic.publish
      "\x00\x00"s                        // ticket
      "\x00"s                            // exchange ""
      "\x01" "q"s                        // routing key "q"
      "\x00"s                            // no bits
      "\xce"s
      "\x02\x00\x07\x00\x00\x00\x0e"s    // header frame, channel 7, size 14
      "\x00\x3c\x00\x00"s                // class, weight
      "\x00\x00\x00\x00\x00\x00\x00\x00"s  // body size 0
      "\x00\x00"s                        // no properties
      "\xce"s;
  // clang-format on
  basic_publish m;
  m.routing_key = "q";
  EXPECT_EQ(publish_flat(m, {}, "", 4096, 7), expected);
  EXPECT_EQ(publish_gathered(m, {}, "", 4096, 7), expected);
  EXPECT_EQ(publish_iov_count(0, 4096), 1u);
}

TEST(encode_publish, uses_pre_tune_chunk_while_frame_max_is_zero) {
  const std::string body(131064 + 1, 'z');
  const std::string wire = publish_flat(golden_method(), {}, body, 0);
  const std::vector<frame_view> frames = frames_of(wire, 0);
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_EQ(frames[2].payload.size(), 131064u);
  EXPECT_EQ(frames[3].payload.size(), 1u);
}

TEST(encode_publish, iovec_form_matches_flat_form_for_many_sizes) {
  basic_properties p = golden_properties();
  p.set_message_id("id-1");
  p.set_timestamp(1700000000);
  for (std::uint32_t frame_max : {4096u, 5000u, 131072u}) {
    for (std::size_t size : {0ul, 1ul, 4087ul, 4088ul, 4089ul, 4992ul, 9000ul, 20000ul}) {
      const std::string body(size, 'q');
      EXPECT_EQ(publish_gathered(golden_method(), p, body, frame_max, 3),
                publish_flat(golden_method(), p, body, frame_max, 3))
          << "frame_max " << frame_max << " body " << size;
    }
  }
}

TEST(encode_publish, reports_buffer_too_small_and_writes_nothing) {
  const std::size_t need = golden_publish.size();
  std::string out(need - 1, '\x55');
  std::size_t written = 99;
  EXPECT_EQ(encode_publish(out.data(), out.size(), written, 1, golden_method(), golden_properties(),
                           "hello", 4096),
            errc::buffer_too_small);
  EXPECT_EQ(written, 0u);
  EXPECT_EQ(out, std::string(need - 1, '\x55'));
}

TEST(encode_publish, iovec_form_reports_too_little_scratch_or_iovecs) {
  const basic_publish m = golden_method();
  const basic_properties p = golden_properties();
  const std::size_t scratch_need = publish_scratch_size(m, p, 5, 4096);
  const std::size_t iov_need = publish_iov_count(5, 4096);
  ASSERT_EQ(iov_need, 3u);
  std::string scratch(scratch_need, '\0');
  iovec iov[3];
  std::size_t count = 99;
  EXPECT_EQ(encode_publish_iov(scratch.data(), scratch_need - 1, iov, iov_need, count, 1, m, p,
                               "hello", 4096),
            errc::buffer_too_small);
  EXPECT_EQ(count, 0u);
  EXPECT_EQ(encode_publish_iov(scratch.data(), scratch_need, iov, iov_need - 1, count, 1, m, p,
                               "hello", 4096),
            errc::buffer_too_small);
  EXPECT_EQ(encode_publish_iov(scratch.data(), scratch_need, iov, iov_need, count, 1, m, p, "hello",
                               4096),
            errc::ok);
  EXPECT_EQ(count, 3u);
}

TEST(encode_publish, refuses_shortstr_above_255_octets) {
  char out[2048];
  std::size_t written = 0;
  const std::string long_key(256, 'k');
  basic_publish m = golden_method();
  m.routing_key = long_key;
  EXPECT_EQ(encode_publish(out, sizeof out, written, 1, m, {}, "", 4096), errc::string_too_long);
  basic_properties p;
  p.set_reply_to(long_key);
  EXPECT_EQ(encode_publish(out, sizeof out, written, 1, golden_method(), p, "", 4096),
            errc::string_too_long);
  EXPECT_EQ(written, 0u);
}

TEST(encode_publish, refuses_frame_max_below_frame_min_size) {
  char out[512];
  std::size_t written = 0;
  for (std::uint32_t frame_max : {1u, 8u, 9u, 4095u}) {
    EXPECT_EQ(encode_publish(out, sizeof out, written, 1, golden_method(), {}, "x", frame_max),
              errc::value_out_of_range);
  }
}

std::string template_flat(const publish_template& t, std::string_view body) {
  std::string out(t.size(body.size()), '\0');
  std::size_t written = 0;
  EXPECT_EQ(t.encode(out.data(), out.size(), body, written), errc::ok);
  EXPECT_EQ(written, out.size());
  return out;
}

std::string template_gathered(const publish_template& t, std::string_view body,
                              std::uint32_t frame_max) {
  std::string scratch(t.scratch_size(body.size()), '\0');
  std::vector<iovec> iov(publish_iov_count(body.size(), frame_max));
  std::size_t count = 0;
  EXPECT_EQ(t.encode_iov(scratch.data(), scratch.size(), iov.data(), iov.size(), count, body),
            errc::ok);
  EXPECT_EQ(count, iov.size());
  return joined(iov.data(), count, scratch, body);
}

TEST(publish_template, writes_the_golden_publish) {
  publish_template t;
  ASSERT_EQ(t.assign(1, golden_method(), golden_properties(), 4096), errc::ok);
  EXPECT_TRUE(t.valid());
  EXPECT_EQ(t.channel(), 1);
  EXPECT_EQ(t.size(5), golden_publish.size());
  EXPECT_EQ(template_flat(t, "hello"), golden_publish);
  EXPECT_EQ(template_gathered(t, "hello", 4096), golden_publish);
  // The head is the golden method and header frames with body size 0.
  std::string head = golden_publish.substr(0, golden_publish.size() - 13);
  head[21 + 7 + 4 + 7] = '\0';
  EXPECT_EQ(t.head(), head);
}

TEST(publish_template, matches_encode_publish_around_every_frame_boundary) {
  basic_properties p = golden_properties();
  p.set_message_id("id-1");
  p.set_timestamp(1700000000);
  p.set_priority(9);
  for (std::uint32_t frame_max : {0u, 4096u, 4097u, 5000u, 131072u}) {
    publish_template t;
    ASSERT_EQ(t.assign(3, golden_method(), p, frame_max), errc::ok);
    const std::size_t chunk = max_body_chunk(frame_max);
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{16}, chunk - 1, chunk,
                             chunk + 1, 2 * chunk - 1, 2 * chunk, 2 * chunk + 1, 3 * chunk + 7}) {
      std::string body(size, '\0');
      for (std::size_t i = 0; i < size; ++i) body[i] = static_cast<char>(i * 13 + 1);
      const std::string expected = publish_flat(golden_method(), p, body, frame_max, 3);
      EXPECT_EQ(t.size(size), expected.size()) << "frame_max " << frame_max << " body " << size;
      EXPECT_EQ(template_flat(t, body), expected) << "frame_max " << frame_max << " body " << size;
      EXPECT_EQ(template_gathered(t, body, frame_max), expected)
          << "frame_max " << frame_max << " body " << size;
    }
  }
}

TEST(publish_template, is_reusable_for_bodies_of_different_sizes) {
  publish_template t;
  ASSERT_EQ(t.assign(1, golden_method(), golden_properties(), 4096), errc::ok);
  // A larger body first, then a smaller one into the same buffer: nothing stale survives.
  std::string out(t.size(9000), '\x55');
  std::size_t written = 0;
  ASSERT_EQ(t.encode(out.data(), out.size(), std::string(9000, 'x'), written), errc::ok);
  ASSERT_EQ(t.encode(out.data(), out.size(), "hello", written), errc::ok);
  EXPECT_EQ(out.substr(0, written), golden_publish);
}

TEST(publish_template, copies_its_arguments) {
  publish_template t;
  {
    std::string exchange = "ex", key = "rk", type = "text/plain", headers = one_header_entries;
    basic_publish m;
    m.exchange = exchange;
    m.routing_key = key;
    m.mandatory = true;
    basic_properties p;
    p.set_content_type(type);
    p.set_delivery_mode(basic_properties::persistent);
    p.set_headers(table_view{headers});
    ASSERT_EQ(t.assign(1, m, p, 4096), errc::ok);
    exchange.assign(2, '?');
    key.assign(2, '?');
    type.assign(10, '?');
    headers.assign(headers.size(), '?');
  }
  EXPECT_EQ(template_flat(t, "hello"), golden_publish);
}

TEST(publish_template, reports_buffer_too_small_and_writes_nothing) {
  publish_template t;
  ASSERT_EQ(t.assign(1, golden_method(), golden_properties(), 4096), errc::ok);
  std::string out(golden_publish.size() - 1, '\x55');
  std::size_t written = 99;
  EXPECT_EQ(t.encode(out.data(), out.size(), "hello", written), errc::buffer_too_small);
  EXPECT_EQ(written, 0u);
  EXPECT_EQ(out, std::string(golden_publish.size() - 1, '\x55'));

  std::string scratch(t.scratch_size(5), '\0');
  iovec iov[3];
  std::size_t count = 99;
  EXPECT_EQ(t.encode_iov(scratch.data(), scratch.size() - 1, iov, 3, count, "hello"),
            errc::buffer_too_small);
  EXPECT_EQ(count, 0u);
  EXPECT_EQ(t.encode_iov(scratch.data(), scratch.size(), iov, 2, count, "hello"),
            errc::buffer_too_small);
  EXPECT_EQ(count, 0u);
}

TEST(publish_template, refuses_what_encode_publish_refuses_and_is_then_empty) {
  publish_template t;
  ASSERT_EQ(t.assign(1, golden_method(), golden_properties(), 4096), errc::ok);
  const std::string long_key(256, 'k');
  basic_publish m = golden_method();
  m.routing_key = long_key;
  EXPECT_EQ(t.assign(1, m, {}, 4096), errc::string_too_long);
  EXPECT_FALSE(t.valid());
  basic_properties p;
  p.set_reply_to(long_key);
  EXPECT_EQ(t.assign(1, golden_method(), p, 4096), errc::string_too_long);
  EXPECT_EQ(t.assign(1, golden_method(), {}, 4095), errc::value_out_of_range);
  basic_properties bad_flags;
  bad_flags.flags = 0x0001;
  EXPECT_EQ(t.assign(1, golden_method(), bad_flags, 4096), errc::value_out_of_range);

  char out[512];
  std::size_t written = 99;
  EXPECT_EQ(t.encode(out, sizeof out, "x", written), errc::value_out_of_range);
  EXPECT_EQ(written, 0u);
  iovec iov[3];
  std::size_t count = 99;
  EXPECT_EQ(t.encode_iov(out, sizeof out, iov, 3, count, "x"), errc::value_out_of_range);
  EXPECT_EQ(count, 0u);
  EXPECT_EQ(publish_template().encode(out, sizeof out, "x", written), errc::value_out_of_range);
}

// A delivery built by hand: basic.deliver(ctag "c", tag 7, redelivered, exchange "ex",
// routing key "rk") on channel 2, content-type "t", body split as given.
std::string delivery_bytes(const std::vector<std::string>& chunks, std::uint16_t channel = 2) {
  std::string body;
  for (const std::string& c : chunks) body += c;
  // clang-format off
  std::string out =
      "\x01\x00"s + static_cast<char>(channel) + "\x00\x00\x00\x15"s  // method, size 21
      "\x00\x3c\x00\x3c"s                      // basic.deliver
      "\x01" "c"s                              // consumer tag
      "\x00\x00\x00\x00\x00\x00\x00\x07"s      // delivery tag 7
      "\x01"s                                  // redelivered
      "\x02" "ex"s                             // exchange
      "\x02" "rk"s                             // routing key
      "\xce"s
      "\x02\x00"s + static_cast<char>(channel) + "\x00\x00\x00\x10"s  // header, size 16
      "\x00\x3c\x00\x00"s                      // class, weight
      "\x00\x00\x00\x00\x00\x00\x00"s + static_cast<char>(body.size()) +
      "\x80\x00"s                              // content-type
      "\x01" "t"s
      "\xce"s;
  // clang-format on
  for (const std::string& c : chunks) {
    out += "\x03\x00"s + static_cast<char>(channel) + "\x00\x00\x00"s +
           static_cast<char>(c.size()) + c + "\xce"s;
  }
  return out;
}

TEST(decode_delivery, decodes_method_header_and_single_body_frame_as_views) {
  const std::string wire = delivery_bytes({"hello"}) + std::string(heartbeat_frame);
  delivery_view d;
  std::size_t consumed = 0;
  ASSERT_EQ(decode_delivery(wire, 4096, d, consumed), errc::ok);
  EXPECT_EQ(consumed, wire.size() - heartbeat_frame.size());
  EXPECT_EQ(d.channel, 2);
  EXPECT_EQ(d.method.consumer_tag, "c");
  EXPECT_EQ(d.method.delivery_tag, 7u);
  EXPECT_TRUE(d.method.redelivered);
  EXPECT_EQ(d.method.exchange, "ex");
  EXPECT_EQ(d.method.routing_key, "rk");
  EXPECT_EQ(d.header.body_size, 5u);
  EXPECT_EQ(d.header.properties.content_type, "t");
  EXPECT_EQ(d.body, "hello");
  EXPECT_EQ(d.body.data(), wire.data() + consumed - 6);
  EXPECT_EQ(d.body_frame_count, 1u);
}

TEST(decode_delivery, gathers_body_spread_over_several_frames) {
  const std::string wire = delivery_bytes({"hel", "lo", " world"});
  delivery_view d;
  std::size_t consumed = 0;
  ASSERT_EQ(decode_delivery(wire, 4096, d, consumed), errc::ok);
  EXPECT_EQ(consumed, wire.size());
  EXPECT_EQ(d.body_frame_count, 3u);
  EXPECT_TRUE(d.body.empty());
  std::string body(d.header.body_size, '\0');
  copy_body(d, body.data());
  EXPECT_EQ(body, "hello world");
}

TEST(decode_delivery, empty_body_takes_no_body_frame) {
  const std::string wire = delivery_bytes({});
  delivery_view d;
  std::size_t consumed = 0;
  ASSERT_EQ(decode_delivery(wire, 4096, d, consumed), errc::ok);
  EXPECT_EQ(consumed, wire.size());
  EXPECT_EQ(d.body_frame_count, 0u);
  EXPECT_TRUE(d.body_frames.empty());
}

TEST(decode_delivery, needs_more_for_every_truncation) {
  const std::string wire = delivery_bytes({"ab", "cd"});
  for (std::size_t n = 0; n < wire.size(); ++n) {
    delivery_view d;
    std::size_t consumed = 99;
    EXPECT_EQ(decode_delivery(std::string_view(wire).substr(0, n), 4096, d, consumed),
              errc::need_more)
        << "length " << n;
    EXPECT_EQ(consumed, 0u);
  }
}

TEST(decode_delivery, hands_interleaved_frames_back_as_unexpected) {
  const std::string one = delivery_bytes({"ab"});
  const std::size_t method_end = 29;  // 7 + 21 + 1
  const std::string with_heartbeat =
      one.substr(0, method_end) + std::string(heartbeat_frame) + one.substr(method_end);
  delivery_view d;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_delivery(with_heartbeat, 4096, d, consumed), errc::unexpected_frame);

  // The body frame on another channel.
  std::string other_channel = one;
  other_channel[other_channel.size() - 10 + 2] = '\x03';
  EXPECT_EQ(decode_delivery(other_channel, 4096, d, consumed), errc::unexpected_frame);
}

TEST(decode_delivery, rejects_method_other_than_deliver) {
  std::string wire = delivery_bytes({"ab"});
  wire[7 + 3] = '\x47';  // basic.get-ok (60, 71)
  delivery_view d;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_delivery(wire, 4096, d, consumed), errc::unexpected_frame);
}

TEST(decode_delivery, reports_malformed_deliver_arguments_as_the_method_decoder_does) {
  const std::string one = delivery_bytes({"ab"});
  delivery_view d;
  std::size_t consumed = 0;

  // Consumer tag length 0x15 runs past the 21-octet payload.
  std::string long_tag = one;
  long_tag[11] = '\x15';
  EXPECT_EQ(decode_delivery(long_tag, 4096, d, consumed), errc::truncated);

  // Routing key length 1 of 2: one octet left over.
  std::string trailing = one;
  trailing[25] = '\x01';
  EXPECT_EQ(decode_delivery(trailing, 4096, d, consumed), errc::trailing_bytes);

  // Exchange length 4 swallows the routing key's length octet and runs out.
  std::string long_exchange = one;
  long_exchange[22] = '\x04';
  EXPECT_EQ(decode_delivery(long_exchange, 4096, d, consumed), errc::truncated);
  EXPECT_EQ(consumed, 0u);
}

TEST(decode_delivery, reports_malformed_content_header_after_a_valid_method) {
  std::string wire = delivery_bytes({"ab"});
  wire[29 + 7 + 1] = '\x3d';  // class 61
  delivery_view d;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_delivery(wire, 4096, d, consumed), errc::bad_content_header);
}

TEST(decode_delivery, rejects_body_frames_longer_than_body_size) {
  std::string wire = delivery_bytes({"ab"});
  wire[29 + 7 + 11] = '\x01';  // body size 1, body frame still carries 2
  delivery_view d;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_delivery(wire, 4096, d, consumed), errc::unexpected_frame);
}

TEST(decode_delivery, passes_frame_errors_through) {
  std::string wire = delivery_bytes({"ab"});
  wire.back() = '\x00';
  delivery_view d;
  std::size_t consumed = 0;
  EXPECT_EQ(decode_delivery(wire, 4096, d, consumed), errc::bad_frame_end);
}

TEST(decode_delivery, reports_frame_errors_of_later_frames_before_their_type) {
  const std::string one = delivery_bytes({"ab"});
  const std::size_t header_at = 29;
  const std::size_t body_at = header_at + 7 + 16 + 1;
  delivery_view d;
  std::size_t consumed = 0;

  std::string unknown_type = one;
  unknown_type[body_at] = '\x09';
  EXPECT_EQ(decode_delivery(unknown_type, 4096, d, consumed), errc::unknown_frame_type);

  std::string bad_heartbeat = one;
  bad_heartbeat[header_at] = '\x08';  // a heartbeat on channel 2 with a payload
  EXPECT_EQ(decode_delivery(bad_heartbeat, 4096, d, consumed), errc::bad_heartbeat);

  // A header frame claiming more than frame-max: rejected as such, not as need_more.
  std::string too_large = one.substr(0, header_at + 7);
  too_large[header_at + 5] = '\x10';  // size 0x1010
  EXPECT_EQ(decode_delivery(too_large, 4096, d, consumed), errc::frame_too_large);

  std::string bad_end = one;
  bad_end[body_at - 1] = '\x00';  // the header frame's end octet
  EXPECT_EQ(decode_delivery(bad_end, 4096, d, consumed), errc::bad_frame_end);
  EXPECT_EQ(consumed, 0u);
}

TEST(decode_delivery, accepts_frames_of_exactly_frame_max) {
  const std::string body(4096 - 8, 'f');
  // Re-use the hand-built delivery's method and header, with a full-size body frame.
  std::string wire = delivery_bytes({});
  wire[29 + 7 + 10] = '\x0f';
  wire[29 + 7 + 11] = '\xf8';  // body size 4088
  wire += "\x03\x00\x02\x00\x00\x0f\xf8"s + body + "\xce"s;
  delivery_view d;
  std::size_t consumed = 0;
  ASSERT_EQ(decode_delivery(wire, 4096, d, consumed), errc::ok);
  EXPECT_EQ(d.body, body);
  EXPECT_EQ(decode_delivery(wire, 4095, d, consumed), errc::frame_too_large);
}

}  // namespace
}  // namespace warren::codec
