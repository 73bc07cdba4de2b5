// The null broker's session, driven byte by byte like a client would, with no socket.
#include "tools/null_broker/session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "codec/content.h"
#include "codec/field_table.h"
#include "codec/frame.h"
#include "codec/methods.h"
#include "codec/publish.h"

namespace warren::null_broker {
namespace {

template <class Method>
std::string frame(std::uint16_t channel, const Method& m) {
  std::string out;
  codec::writer w(out);
  EXPECT_EQ(codec::encode_method_frame(channel, m, w), codec::errc::ok);
  w.finish();
  return out;
}

std::string publish(std::uint16_t channel, std::string_view body,
                    std::uint32_t frame_max = 131072) {
  const codec::basic_publish m{.routing_key = "q"};
  const codec::basic_properties p;
  std::string out(codec::publish_size(m, p, body.size(), frame_max), '\0');
  std::size_t written = 0;
  EXPECT_EQ(codec::encode_publish(out.data(), out.size(), written, channel, m, p, body, frame_max),
            codec::errc::ok);
  return out;
}

// A method frame read back from the session's output: its channel and its decoded payload.
struct reply {
  std::uint16_t channel = 0;
  std::uint32_t id = 0;
  std::string payload;  // owned, so that decoding later is safe
  template <class Method>
  Method as() const {
    Method m;
    EXPECT_EQ(id, Method::id);
    EXPECT_EQ(codec::decode(std::string_view(payload).substr(4), m), codec::errc::ok);
    return m;
  }
};

class session_test : public ::testing::Test {
 protected:
  explicit session_test(options o = {}) : s_(o) {}

  // Feeds bytes as a sequence of reads of at most `read_size` octets; returns the last result.
  bool feed(std::string_view bytes, std::size_t read_size = SIZE_MAX) {
    bool ok = true;
    while (!bytes.empty() && ok) {
      const std::size_t n = std::min({bytes.size(), read_size, s_.read_space_size()});
      std::memcpy(s_.read_space(), bytes.data(), n);
      bytes.remove_prefix(n);
      ok = s_.commit_read(n);
    }
    return ok;
  }

  // Every control frame queued so far (heartbeats as id 0).
  std::vector<reply> replies() {
    std::string out;
    s_.take_control(out);
    std::vector<reply> r;
    codec::frame_decoder d;
    d.set_input(out);
    codec::frame_view f;
    while (d.next(f) == codec::errc::ok) {
      reply x{f.channel, 0, std::string(f.payload)};
      if (f.type == codec::frame_method) x.id = codec::reader::load_u32(f.payload.data());
      r.push_back(std::move(x));
    }
    EXPECT_TRUE(d.unread().empty());
    return r;
  }

  // Protocol header to open channel 1, leaving no replies behind.
  void open_channel_1() {
    ASSERT_TRUE(feed(std::string_view("AMQP\x00\x00\x09\x01", 8)));
    ASSERT_TRUE(
        feed(frame(0, codec::connection_start_ok{.response = std::string_view("\0g\0g", 4)})));
    ASSERT_TRUE(feed(frame(
        0, codec::connection_tune_ok{.channel_max = 2047, .frame_max = 131072, .heartbeat = 0})));
    ASSERT_TRUE(feed(frame(0, codec::connection_open{})));
    ASSERT_TRUE(feed(frame(1, codec::channel_open{})));
    const auto r = replies();
    ASSERT_EQ(r.size(), 4u);
    EXPECT_EQ(r.back().id, codec::channel_open_ok::id);
  }

  session s_;
};

TEST_F(session_test, start_follows_the_protocol_header_with_mechanisms_and_capabilities) {
  ASSERT_TRUE(feed(std::string_view("AMQP\x00\x00\x09\x01", 8), 3));
  const auto r = replies();
  ASSERT_EQ(r.size(), 1u);
  const auto start = r[0].as<codec::connection_start>();
  EXPECT_EQ(start.mechanisms, "PLAIN AMQPLAIN EXTERNAL");
  codec::field_table props;
  ASSERT_EQ(codec::decode_table(start.server_properties, props), codec::errc::ok);
  const codec::field_value* caps = props.find("capabilities");
  ASSERT_NE(caps, nullptr);
  ASSERT_NE(caps->as_table(), nullptr);
  for (const char* name :
       {"publisher_confirms", "basic.nack", "consumer_cancel_notify", "connection.blocked",
        "exchange_exchange_bindings", "per_consumer_qos"}) {
    const codec::field_value* v = caps->as_table()->find(name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_EQ(*v->as_boolean(), true) << name;
  }
}

TEST_F(session_test, a_wrong_protocol_header_gets_ours_back_and_ends_the_session) {
  EXPECT_FALSE(feed(std::string_view("AMQP\x00\x00\x08\x00", 8)));
  std::string out;
  s_.take_control(out);
  EXPECT_EQ(out, std::string_view("AMQP\x00\x00\x09\x01", 8));
}

TEST_F(session_test, tune_offers_channel_max_2047_and_the_configured_frame_max) {
  ASSERT_TRUE(feed(std::string_view("AMQP\x00\x00\x09\x01", 8)));
  ASSERT_TRUE(feed(frame(0, codec::connection_start_ok{})));
  const auto r = replies();
  ASSERT_EQ(r.size(), 2u);
  const auto tune = r[1].as<codec::connection_tune>();
  EXPECT_EQ(tune.channel_max, 2047);
  EXPECT_EQ(tune.frame_max, 131072u);
  EXPECT_EQ(tune.heartbeat, 0);
}

TEST_F(session_test, publishes_of_one_read_are_confirmed_by_one_multiple_ack) {
  open_channel_1();
  ASSERT_TRUE(feed(frame(1, codec::confirm_select{})));
  ASSERT_EQ(replies().at(0).id, codec::confirm_select_ok::id);
  std::string batch;
  for (int i = 0; i < 500; ++i) batch += publish(1, "0123456789abcdef");
  ASSERT_TRUE(feed(batch));
  auto r = replies();
  ASSERT_EQ(r.size(), 1u);
  const auto ack = r[0].as<codec::basic_ack>();
  EXPECT_EQ(ack.delivery_tag, 500u);
  EXPECT_TRUE(ack.multiple);

  // The next read continues the sequence.
  ASSERT_TRUE(feed(publish(1, "x") + publish(1, "y")));
  r = replies();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].as<codec::basic_ack>().delivery_tag, 502u);
  EXPECT_EQ(s_.totals().published, 502u);
  EXPECT_EQ(s_.totals().acks_sent, 2u);
}

TEST_F(session_test, publishes_without_confirm_mode_are_counted_and_not_acked) {
  open_channel_1();
  std::string batch;
  for (int i = 0; i < 100; ++i) batch += publish(1, "0123456789abcdef");
  ASSERT_TRUE(feed(batch, 7));  // frames cut at every possible place
  EXPECT_TRUE(replies().empty());
  EXPECT_EQ(s_.totals().published, 100u);
}

TEST_F(session_test, large_bodies_split_over_many_reads_are_skipped_and_counted) {
  open_channel_1();
  const std::string body(300000, 'b');  // three body frames at frame-max 131072
  std::string batch = publish(1, body) + publish(1, "") + publish(1, body);
  ASSERT_TRUE(feed(batch, 4093));
  EXPECT_EQ(s_.totals().published, 3u);
  // A method after them is still understood: the skipping ended exactly at the frame boundary.
  ASSERT_TRUE(feed(frame(1, codec::basic_qos{.prefetch_count = 10})));
  const auto r = replies();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].id, codec::basic_qos_ok::id);
}

TEST_F(session_test, declare_echoes_a_name_or_generates_one_and_nowait_gets_no_reply) {
  open_channel_1();
  ASSERT_TRUE(feed(frame(1, codec::queue_declare{.queue = "orders"})));
  ASSERT_TRUE(feed(frame(1, codec::queue_declare{.queue = ""})));
  ASSERT_TRUE(feed(frame(1, codec::queue_declare{.queue = "quiet", .nowait = true})));
  ASSERT_TRUE(feed(frame(1, codec::queue_bind{.queue = "orders", .exchange = "amq.direct"})));
  ASSERT_TRUE(feed(frame(1, codec::exchange_declare{.exchange = "x"})));
  const auto r = replies();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].as<codec::queue_declare_ok>().queue, "orders");
  EXPECT_TRUE(r[1].as<codec::queue_declare_ok>().queue.starts_with("amq.gen-"));
  EXPECT_EQ(r[2].id, codec::queue_bind_ok::id);
  EXPECT_EQ(r[3].id, codec::exchange_declare_ok::id);
}

TEST_F(session_test, a_publish_on_a_channel_never_opened_closes_the_connection_with_504) {
  open_channel_1();
  EXPECT_FALSE(feed(publish(2, "x")));
  const auto r = replies();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].as<codec::connection_close>().reply_code, 504);
}

TEST_F(session_test, an_unhandled_method_closes_the_connection_with_540) {
  open_channel_1();
  EXPECT_FALSE(feed(frame(1, codec::tx_select{})));
  const auto r = replies();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].as<codec::connection_close>().reply_code, 540);
}

TEST_F(session_test, connection_close_is_answered_and_ends_the_session) {
  open_channel_1();
  EXPECT_FALSE(feed(frame(0, codec::connection_close{.reply_code = 200})));
  const auto r = replies();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].id, codec::connection_close_ok::id);
}

TEST_F(session_test, sink_mode_never_delivers) {
  open_channel_1();
  ASSERT_TRUE(feed(frame(1, codec::basic_consume{.queue = "q"})));
  EXPECT_EQ(replies().at(0).id, codec::basic_consume_ok::id);
  EXPECT_TRUE(s_.next_deliveries().empty());
}

class firehose_test : public session_test {
 protected:
  firehose_test()
      : session_test(options{.mode = mode::firehose,
                             .body_size = 10000,
                             .frame_max = 4096,
                             .firehose_chunk_octets = 64 * 1024}) {}

  // Decodes a chunk into its deliveries.
  static std::vector<codec::delivery_view> deliveries(std::string_view chunk) {
    std::vector<codec::delivery_view> out;
    while (!chunk.empty()) {
      codec::delivery_view d;
      std::size_t used = 0;
      EXPECT_EQ(codec::decode_delivery(chunk, 4096, d, used), codec::errc::ok);
      if (used == 0) break;
      out.push_back(d);
      chunk.remove_prefix(used);
    }
    return out;
  }
};

TEST_F(firehose_test, deliveries_carry_increasing_tags_and_bodies_of_body_size) {
  open_channel_1();
  ASSERT_TRUE(feed(frame(1, codec::basic_consume{.queue = "q", .consumer_tag = "c1"})));
  EXPECT_EQ(replies().at(0).as<codec::basic_consume_ok>().consumer_tag, "c1");
  std::uint64_t expected = 1;
  for (int round = 0; round < 3; ++round) {
    const std::string chunk(s_.next_deliveries());
    const auto ds = deliveries(chunk);
    ASSERT_GE(ds.size(), 6u);  // 64 KiB of 10 KB messages
    for (const auto& d : ds) {
      EXPECT_EQ(d.channel, 1);
      EXPECT_EQ(d.method.consumer_tag, "c1");
      EXPECT_EQ(d.method.routing_key, "q");
      EXPECT_EQ(d.method.delivery_tag, expected++);
      EXPECT_EQ(d.header.body_size, 10000u);
      EXPECT_EQ(d.body_frame_count, 3u);  // 4088 + 4088 + 1824 under frame-max 4096
      std::string body(10000, '\0');
      codec::copy_body(d, body.data());
      EXPECT_EQ(body, std::string(10000, 'x'));
    }
  }
  EXPECT_EQ(s_.totals().delivered, expected - 1);
}

TEST_F(firehose_test, cancel_stops_the_consumer_and_is_answered) {
  open_channel_1();
  ASSERT_TRUE(feed(frame(1, codec::basic_consume{.queue = "q", .consumer_tag = "c1"})));
  replies();
  EXPECT_FALSE(s_.next_deliveries().empty());
  ASSERT_TRUE(feed(frame(1, codec::basic_cancel{.consumer_tag = "c1"})));
  EXPECT_EQ(replies().at(0).as<codec::basic_cancel_ok>().consumer_tag, "c1");
  EXPECT_TRUE(s_.next_deliveries().empty());
}

TEST_F(firehose_test, acks_from_the_consumer_are_counted) {
  open_channel_1();
  ASSERT_TRUE(feed(frame(1, codec::basic_consume{.queue = "q"})));
  ASSERT_TRUE(feed(frame(1, codec::basic_ack{.delivery_tag = 5, .multiple = true})));
  ASSERT_TRUE(feed(frame(1, codec::basic_nack{.delivery_tag = 6})));
  EXPECT_EQ(s_.totals().acks_received, 2u);
}

TEST_F(firehose_test, consumers_on_two_channels_take_turns_with_their_own_tags) {
  open_channel_1();
  ASSERT_TRUE(feed(frame(2, codec::channel_open{})));
  ASSERT_TRUE(feed(frame(1, codec::basic_consume{.queue = "a", .consumer_tag = "c1"})));
  ASSERT_TRUE(feed(frame(2, codec::basic_consume{.queue = "b", .consumer_tag = "c2"})));
  replies();
  const auto first = deliveries(std::string(s_.next_deliveries()));
  const auto second = deliveries(std::string(s_.next_deliveries()));
  ASSERT_FALSE(first.empty());
  ASSERT_FALSE(second.empty());
  EXPECT_EQ(first[0].channel, 1);
  EXPECT_EQ(second[0].channel, 2);
  EXPECT_EQ(first[0].method.delivery_tag, 1u);
  EXPECT_EQ(second[0].method.delivery_tag, 1u);
}

}  // namespace
}  // namespace warren::null_broker
