// Messages through the real broker: properties, headers of every type, body lifetime, text.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "engine/client/connection.h"
#include "tests/broker_env.h"
#include "tests/engine/client/test_support.h"

namespace warren {
namespace {

using codec::field_value;
using test::broker_options;
using test::drain_until;

class message_test : public test::broker_test {
 protected:
  void SetUp() override {
    test::broker_test::SetUp();
    conn_ = std::make_unique<connection>(broker_options());
    conn_->connect();
    ch_ = &conn_->channel();
    q_ = ch_->queue_declare("", {.exclusive = true}).queue;
  }
  message round_trip(const message& m) {
    ch_->basic_publish(m, "", q_);
    std::optional<message> got = ch_->basic_get(q_, true);
    if (!got) throw std::runtime_error("the message did not arrive");
    return std::move(*got);
  }

  std::unique_ptr<connection> conn_;
  channel* ch_ = nullptr;
  std::string q_;
};

codec::field_table every_type_letter() {
  codec::field_table inner{{"nested", field_value::long_string("yes")}};
  return codec::field_table{
      {"t", field_value::boolean(true)},
      {"b", field_value::i8(-5)},
      {"B", field_value::u8(250)},
      {"s", field_value::i16(-30000)},
      {"u", field_value::u16(60000)},
      {"I", field_value::i32(-2000000000)},
      {"i", field_value::u32(4000000000u)},
      {"l", field_value::i64(-9000000000000000000)},
      {"f", field_value::f32(1.5f)},
      {"d", field_value::f64(-2.25)},
      {"D", field_value::decimal(3, 123456)},
      {"S", field_value::long_string("long string \xC3\xA9")},
      {"A", field_value::array({field_value::i32(1), field_value::long_string("two"),
                                field_value::boolean(false)})},
      {"T", field_value::timestamp(1700000000)},
      {"F", field_value::table(inner)},
      {"V", field_value::void_value()},
      {"x", field_value::bytes(std::string("\x00\x01\xFF", 3))},
  };
}

TEST_F(message_test, all_fourteen_properties_and_every_header_type_round_trip) {
  properties p;
  p.content_type = "application/json";
  p.content_encoding = "utf-8";
  p.headers = every_type_letter();
  p.delivery_mode = 2;
  p.priority = 7;
  p.correlation_id = "corr-1";
  p.reply_to = "reply.queue";
  p.expiration = "600000";
  p.message_id = "msg-1";
  p.timestamp = 1700000123;
  p.type = "order.created";
  p.user_id = std::string(test::guest_user);  // RabbitMQ checks it against the login
  p.app_id = "warren-tests";
  p.cluster_id = "cluster-a";
  const message got = round_trip(message("{}", p));
  EXPECT_EQ(got.props(), p);
  EXPECT_EQ(got.body(), "{}");
  // Each value kept its type letter, not only its value.
  ASSERT_EQ(got.headers().size(), p.headers->size());
  for (const auto& entry : got.headers()) {
    EXPECT_EQ(std::string(1, entry.value.type()), entry.name);
  }
  const field_value* d = got.headers().find("D");
  ASSERT_NE(d, nullptr);
  ASSERT_NE(d->as_decimal(), nullptr);
  EXPECT_EQ(*d->as_decimal(), (codec::decimal{3, 123456}));
}

TEST_F(message_test, absent_properties_stay_absent) {
  const message got = round_trip(message("plain"));
  EXPECT_EQ(got.props(), properties{});
  EXPECT_TRUE(got.headers().empty());
}

TEST_F(message_test, text_honours_content_encoding) {
  EXPECT_EQ(round_trip(message("caf\xE9", {.content_encoding = "latin-1"})).text(), "caf\xC3\xA9");
  EXPECT_EQ(round_trip(message("caf\xC3\xA9", {.content_encoding = "utf-8"})).text(),
            "caf\xC3\xA9");
  EXPECT_EQ(round_trip(message("caf\xC3\xA9")).text(), "caf\xC3\xA9");
  EXPECT_THROW(round_trip(message("caf\xE9")).text(), std::invalid_argument);
  EXPECT_THROW(round_trip(message("x", {.content_encoding = "ebcdic"})).text(),
               std::invalid_argument);
}

TEST_F(message_test, body_view_outlives_the_callback_and_later_deliveries) {
  std::vector<message> kept;
  std::vector<std::string> expected;
  ch_->basic_consume(q_, [&](message& m) { kept.push_back(m); }, {.no_ack = true});
  // Enough deliveries, of mixed sizes, to cycle through the connection's receive buffers.
  for (int i = 0; i < 300; ++i) {
    std::string body(static_cast<std::size_t>((i * 7919) % 70000), static_cast<char>('a' + i % 26));
    body += "#" + std::to_string(i);
    expected.push_back(body);
    ch_->basic_publish(message(body), "", q_);
  }
  ASSERT_TRUE(drain_until(
      *conn_, [&] { return kept.size() == expected.size(); }, std::chrono::seconds(20)));
  for (std::size_t i = 0; i < expected.size(); ++i) {
    ASSERT_TRUE(kept[i].body() == expected[i]) << "message " << i << " changed";
  }
}

TEST_F(message_test, copies_and_moves_keep_the_received_body) {
  std::optional<message> first;
  ch_->basic_consume(q_, [&](message& m) {
    if (!first) first = m;
  });
  ch_->basic_publish(message("first body"), "", q_);
  ASSERT_TRUE(drain_until(*conn_, [&] { return first.has_value(); }));
  message copy = *first;
  message moved = std::move(*first);
  first.reset();
  for (int i = 0; i < 50; ++i) ch_->basic_publish(message(std::string(5000, 'z')), "", q_);
  int more = 0;
  const std::string q2 = ch_->queue_declare("", {.exclusive = true}).queue;
  ch_->basic_consume(q2, [&](message&) { ++more; }, {.no_ack = true});
  for (int i = 0; i < 50; ++i) ch_->basic_publish(message(std::string(5000, 'y')), "", q2);
  ASSERT_TRUE(drain_until(*conn_, [&] { return more == 50; }));
  EXPECT_EQ(copy.body(), "first body");
  EXPECT_EQ(moved.body(), "first body");
  EXPECT_EQ(copy.body_copy(), "first body");
  EXPECT_EQ(copy.delivery_tag(), moved.delivery_tag());
  moved.ack();
}

TEST_F(message_test, body_copy_is_an_independent_string) {
  message out("outgoing");
  std::string c = out.body_copy();
  EXPECT_EQ(c, "outgoing");
  EXPECT_NE(c.data(), out.body().data());
  message copy = out;
  EXPECT_EQ(copy.body(), "outgoing");
  EXPECT_NE(copy.body().data(), out.body().data());
}

TEST_F(message_test, ack_needs_a_received_message) {
  EXPECT_THROW(message("x").ack(), std::logic_error);
  EXPECT_THROW(message("x").reject(), std::logic_error);
  EXPECT_THROW(message("x").nack(), std::logic_error);
  ch_->basic_publish(message("x"), "", q_);
  std::optional<message> got = ch_->basic_get(q_);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->channel(), ch_);
  got->ack();
  // Had the ack not reached the broker, recover would requeue the message.
  ch_->basic_recover(/*requeue=*/true);
  EXPECT_FALSE(ch_->basic_get(q_));
}

TEST_F(message_test, received_message_outlives_its_connection) {
  // Its own connection, so that the fixture's does not keep anything alive.
  auto conn = std::make_unique<connection>(broker_options());
  conn->connect();
  channel& ch = conn->channel();
  const std::string q = ch.queue_declare("", {.exclusive = true}).queue;
  const properties p{
      .content_type = "text/plain", .headers = every_type_letter(), .message_id = "outlives-1"};
  ch.basic_publish(message("still here", p), "", q);
  std::optional<message> got = ch.basic_get(q, /*no_ack=*/true);
  ASSERT_TRUE(got);
  message copy = *got;
  conn.reset();

  // The body views the connection's receive buffer: it must still be there.
  EXPECT_EQ(got->body(), "still here");
  EXPECT_EQ(got->text(), "still here");
  EXPECT_EQ(got->props(), p);
  EXPECT_EQ(got->delivery_info().routing_key, q);
  // The channel went with the connection: no dangling pointer, and ack() says why it cannot.
  EXPECT_EQ(got->channel(), nullptr);
  EXPECT_THROW(got->ack(), std::logic_error);
  got.reset();
  // The last holder of the buffer releases it (ASan: no use of the destroyed connection).
  EXPECT_EQ(copy.body_copy(), "still here");
}

}  // namespace
}  // namespace warren
