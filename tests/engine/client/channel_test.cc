// Every channel method of the blocking API against the real broker.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include "engine/client/connection.h"
#include "tests/broker_env.h"
#include "tests/engine/client/test_support.h"

namespace warren {
namespace {

using test::broker_options;
using test::drain_until;
using test::unique_name;

class channel_test : public test::broker_test {
 protected:
  void SetUp() override {
    test::broker_test::SetUp();
    conn_ = std::make_unique<connection>(broker_options());
    conn_->connect();
    ch_ = &conn_->channel();
  }
  void TearDown() override {
    if (conn_ && conn_->connected()) {
      for (const auto& q : queues_) {
        try {
          conn_->channel().queue_delete(q);
        } catch (const std::exception&) {
        }
      }
    } else {
      for (const auto& q : queues_) test::delete_queue_quietly(q);
    }
    conn_.reset();
  }
  // A fresh auto-delete-free queue, deleted in TearDown.
  std::string declare_queue(queue_declare_options o = {.auto_delete = false}) {
    std::string q = unique_name("q");
    ch_->queue_declare(q, o);
    queues_.push_back(q);
    return q;
  }
  // The queue's ready-message count once it reaches `expected` (or after 2 s, whatever it is
  // then). RabbitMQ answers a passive declare ahead of deliveries still in the queue's mailbox,
  // so a count taken right after a publish may lag.
  std::uint32_t message_count(const std::string& q, std::uint32_t expected) {
    std::uint32_t n = 0;
    for (int i = 0; i < 100; ++i) {
      n = ch_->queue_declare(q, {.passive = true}).message_count;
      if (n == expected) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return n;
  }

  // A queue of one message that refuses more (x-overflow reject-publish): a confirmed publish
  // to it is nacked, so a publish that raises message_nacked proves it waited for the broker.
  std::string full_reject_publish_queue() {
    const std::string q = declare_queue(
        {.auto_delete = false,
         .arguments = {{"x-max-length", codec::field_value::i32(1)},
                       {"x-overflow", codec::field_value::long_string("reject-publish")}}});
    ch_->basic_publish(message("fills"), "", q);
    EXPECT_EQ(message_count(q, 1), 1u);
    return q;
  }

  // The channel still works: a message goes through a fresh queue and back.
  void expect_round_trip(const std::string& body) {
    const std::string q = declare_queue();
    ch_->basic_publish(message(body), "", q);
    std::optional<message> m = ch_->basic_get(q, true);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->body(), body);
  }

  std::unique_ptr<connection> conn_;
  channel* ch_ = nullptr;
  std::vector<std::string> queues_;
};

TEST_F(channel_test, exchange_to_exchange_binding_routes_until_unbound) {
  const std::string src = unique_name("src");
  const std::string dst = unique_name("dst");
  ch_->exchange_declare(src, "direct", {.auto_delete = false});
  ch_->exchange_declare(dst, "fanout", {.auto_delete = false});
  const std::string q = declare_queue();
  ch_->queue_bind(q, dst);
  ch_->exchange_bind(dst, src, "key");

  ch_->basic_publish(message("routed"), src, "key");
  ch_->basic_publish(message("wrong key"), src, "other");
  std::optional<message> m = ch_->basic_get(q, true);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body(), "routed");
  EXPECT_EQ(m->delivery_info().exchange, src);
  EXPECT_FALSE(ch_->basic_get(q, true));

  ch_->exchange_unbind(dst, src, "key");
  ch_->basic_publish(message("after unbind"), src, "key");
  EXPECT_FALSE(ch_->basic_get(q, true));

  ch_->exchange_delete(src);
  ch_->exchange_delete(dst);
  EXPECT_THROW(ch_->exchange_declare(src, "direct", {.passive = true}), not_found);
}

TEST_F(channel_test, exchange_declare_with_a_different_type_is_precondition_failed) {
  const std::string x = unique_name("x");
  ch_->exchange_declare(x, "direct", {.auto_delete = false});
  try {
    ch_->exchange_declare(x, "fanout", {.auto_delete = false});
    FAIL() << "redeclaring with another type must fail";
  } catch (const precondition_failed& e) {
    EXPECT_EQ(e.reply_code(), 406);
    EXPECT_EQ(e.method_name(), "exchange.declare");
  }
  ch_->exchange_delete(x);
}

TEST_F(channel_test, exchange_delete_if_unused_refuses_an_exchange_with_bindings) {
  const std::string x = unique_name("x");
  ch_->exchange_declare(x, "direct", {.auto_delete = false});
  const std::string q = declare_queue();
  ch_->queue_bind(q, x, "k");
  EXPECT_THROW(ch_->exchange_delete(x, /*if_unused=*/true), precondition_failed);
  ch_->exchange_delete(x);
}

TEST_F(channel_test, nowait_declares_and_binds_take_effect) {
  const std::string x = unique_name("x");
  const std::string q = unique_name("q");
  queues_.push_back(q);
  ch_->exchange_declare(x, "direct", {.auto_delete = false, .nowait = true});
  EXPECT_EQ(ch_->queue_declare(q, {.auto_delete = false, .nowait = true}).queue, q);
  ch_->queue_bind(q, x, "k", {.nowait = true});
  ch_->basic_publish(message("via nowait binding"), x, "k");
  EXPECT_EQ(message_count(q, 1), 1u);
  ch_->exchange_delete(x, false, /*nowait=*/true);
  EXPECT_THROW(ch_->exchange_declare(x, "direct", {.passive = true}), not_found);
}

TEST_F(channel_test, queue_declare_returns_server_name_and_counts) {
  queue_declare_ok anon = ch_->queue_declare("", {.exclusive = true});
  EXPECT_EQ(anon.queue.rfind("amq.gen-", 0), 0u) << anon.queue;
  EXPECT_EQ(anon.message_count, 0u);
  EXPECT_EQ(anon.consumer_count, 0u);

  const std::string q = declare_queue();
  // Confirmed publishes are in the queue, so the count below is exact.
  ch_->confirm_select();
  for (int i = 0; i < 3; ++i) ch_->basic_publish(message("m"), "", q);
  ch_->wait_for_confirms(seconds_f(5));
  queue_declare_ok ok = ch_->queue_declare(q, {.passive = true});
  EXPECT_EQ(ok.queue, q);
  EXPECT_EQ(ok.message_count, 3u);
  EXPECT_EQ(ok.consumer_count, 0u);

  channel& other = conn_->channel();
  other.basic_qos(0, 1, false);
  other.basic_consume(q, [](message&) {});
  ok = ch_->queue_declare(q, {.passive = true});
  EXPECT_EQ(ok.consumer_count, 1u);
  // Prefetch 1 and no ack: one message is out with the consumer, two are ready.
  EXPECT_EQ(ok.message_count, 2u);
}

TEST_F(channel_test, queue_bind_unbind_purge_and_delete_report_counts) {
  const std::string q = declare_queue();
  ch_->queue_bind(q, "amq.direct", q);
  ch_->basic_publish(message("1"), "amq.direct", q);
  ch_->basic_publish(message("2"), "amq.direct", q);
  EXPECT_EQ(ch_->queue_purge(q), 2u);
  EXPECT_EQ(ch_->queue_purge(q), 0u);

  ch_->basic_publish(message("3"), "amq.direct", q);
  ch_->queue_unbind(q, "amq.direct", q);
  ch_->basic_publish(message("not routed"), "amq.direct", q);
  EXPECT_EQ(ch_->queue_delete(q), 1u);
  queues_.clear();
  EXPECT_THROW(ch_->queue_declare(q, {.passive = true}), not_found);
}

TEST_F(channel_test, queue_delete_if_empty_refuses_a_queue_with_messages) {
  const std::string q = declare_queue();
  ch_->basic_publish(message("x"), "", q);
  EXPECT_THROW(ch_->queue_delete(q, {.if_empty = true}), precondition_failed);
  // The channel was revived: the queue and its message are still there.
  EXPECT_EQ(message_count(q, 1), 1u);
}

TEST_F(channel_test, basic_qos_prefetch_count_limits_unacked_deliveries) {
  const std::string q = declare_queue();
  for (int i = 0; i < 3; ++i) ch_->basic_publish(message(std::to_string(i)), "", q);
  ch_->basic_qos(0, 1, false);
  std::vector<message> got;
  ch_->basic_consume(q, [&](message& m) { got.push_back(m); });
  ASSERT_TRUE(drain_until(*conn_, [&] { return !got.empty(); }));
  // Nothing more arrives while the first is unacked.
  drain_until(
      *conn_, [&] { return got.size() > 1; }, std::chrono::milliseconds(500));
  ASSERT_EQ(got.size(), 1u);
  got[0].ack();
  ASSERT_TRUE(drain_until(*conn_, [&] { return got.size() == 2; }));
  EXPECT_EQ(got[1].body(), "1");
}

TEST_F(channel_test, basic_consume_calls_back_with_delivery_info) {
  const std::string q = declare_queue();
  std::vector<message> got;
  const std::string tag = ch_->basic_consume(q, [&](message& m) {
    got.push_back(m);
    m.ack();
  });
  EXPECT_FALSE(tag.empty());
  EXPECT_EQ(ch_->consumer_tags(), std::vector<std::string>{tag});
  ch_->basic_publish(message("a"), "", q);
  ch_->basic_publish(message("b"), "", q);
  ASSERT_TRUE(drain_until(*conn_, [&] { return got.size() == 2; }));
  EXPECT_EQ(got[0].body(), "a");
  EXPECT_EQ(got[1].body(), "b");
  EXPECT_EQ(got[0].delivery_info().consumer_tag, tag);
  EXPECT_EQ(got[0].delivery_info().routing_key, q);
  EXPECT_EQ(got[0].delivery_info().exchange, "");
  EXPECT_EQ(got[0].delivery_tag(), 1u);
  EXPECT_EQ(got[1].delivery_tag(), 2u);
  EXPECT_FALSE(got[0].delivery_info().redelivered);
  EXPECT_EQ(got[0].channel(), ch_);
  ch_->basic_cancel(tag);
  EXPECT_EQ(message_count(q, 0), 0u);  // both acked
}

TEST_F(channel_test, basic_consume_no_ack_needs_no_ack_and_is_listed) {
  const std::string q = declare_queue();
  int n = 0;
  const std::string tag = ch_->basic_consume(q, [&](message&) { ++n; }, {.no_ack = true});
  EXPECT_EQ(ch_->no_ack_consumers(), std::vector<std::string>{tag});
  ch_->basic_publish(message("x"), "", q);
  ASSERT_TRUE(drain_until(*conn_, [&] { return n == 1; }));
  ch_->basic_cancel(tag);
  EXPECT_TRUE(ch_->no_ack_consumers().empty());
  // Not requeued on cancel: the broker forgot it when it was sent.
  EXPECT_EQ(message_count(q, 0), 0u);
}

TEST_F(channel_test, basic_consume_exclusive_locks_out_other_consumers) {
  const std::string q = declare_queue();
  ch_->basic_consume(q, [](message&) {}, {.exclusive = true});
  channel& other = conn_->channel();
  try {
    other.basic_consume(q, [](message&) {});
    FAIL() << "a second consumer on an exclusively consumed queue must be refused";
  } catch (const access_refused& e) {
    EXPECT_EQ(e.reply_code(), 403);
    EXPECT_EQ(e.method_name(), "basic.consume");
  }
}

TEST_F(channel_test, basic_consume_sends_arguments) {
  const std::string q = declare_queue();
  // The broker checks x-priority's type: a string there proves the table reached it.
  EXPECT_THROW(
      ch_->basic_consume(q, [](message&) {},
                         {.arguments = {{"x-priority", codec::field_value::long_string("high")}}}),
      precondition_failed);
  const std::string tag = ch_->basic_consume(
      q, [](message&) {}, {.arguments = {{"x-priority", codec::field_value::i32(5)}}});
  EXPECT_FALSE(tag.empty());
}

TEST_F(channel_test, basic_consume_nowait_uses_the_given_tag) {
  const std::string q = declare_queue();
  std::vector<std::string> tags;
  const std::string tag =
      ch_->basic_consume(q, [&](message& m) { tags.push_back(m.delivery_info().consumer_tag); },
                         {.consumer_tag = "my-tag", .no_ack = true, .nowait = true});
  EXPECT_EQ(tag, "my-tag");
  ch_->basic_publish(message("x"), "", q);
  ASSERT_TRUE(drain_until(*conn_, [&] { return !tags.empty(); }));
  EXPECT_EQ(tags[0], "my-tag");
  EXPECT_EQ(ch_->queue_declare(q, {.passive = true}).consumer_count, 1u);
  ch_->basic_cancel("my-tag", /*nowait=*/true);
  EXPECT_EQ(ch_->queue_declare(q, {.passive = true}).consumer_count, 0u);
}

TEST_F(channel_test, basic_cancel_stops_deliveries) {
  const std::string q = declare_queue();
  int n = 0;
  const std::string tag = ch_->basic_consume(q, [&](message& m) {
    ++n;
    m.ack();
  });
  ch_->basic_cancel(tag);
  EXPECT_TRUE(ch_->consumer_tags().empty());
  ch_->basic_publish(message("x"), "", q);
  drain_until(
      *conn_, [&] { return n > 0; }, std::chrono::milliseconds(300));
  EXPECT_EQ(n, 0);
  EXPECT_EQ(message_count(q, 1), 1u);
}

TEST_F(channel_test, basic_get_returns_nullopt_when_empty_and_the_remaining_count) {
  const std::string q = declare_queue();
  EXPECT_FALSE(ch_->basic_get(q));
  for (int i = 0; i < 3; ++i) ch_->basic_publish(message("m" + std::to_string(i)), "", q);
  std::optional<message> m = ch_->basic_get(q, true);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body(), "m0");
  EXPECT_EQ(m->delivery_info().message_count, 2u);
  EXPECT_EQ(m->delivery_info().routing_key, q);
}

TEST_F(channel_test, basic_reject_and_nack_with_requeue_redeliver) {
  const std::string q = declare_queue();
  ch_->basic_publish(message("x"), "", q);
  std::optional<message> m = ch_->basic_get(q);
  ASSERT_TRUE(m);
  EXPECT_FALSE(m->delivery_info().redelivered);
  m->reject(/*requeue=*/true);
  m = ch_->basic_get(q);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->delivery_info().redelivered);
  ch_->basic_nack(m->delivery_tag(), false, /*requeue=*/true);
  m = ch_->basic_get(q);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->delivery_info().redelivered);
  ch_->basic_nack(m->delivery_tag(), false, /*requeue=*/false);
  EXPECT_FALSE(ch_->basic_get(q));
}

TEST_F(channel_test, basic_ack_multiple_settles_every_earlier_delivery) {
  const std::string q = declare_queue();
  for (int i = 0; i < 3; ++i) ch_->basic_publish(message("m"), "", q);
  std::uint64_t last = 0;
  for (int i = 0; i < 3; ++i) last = ch_->basic_get(q)->delivery_tag();
  ch_->basic_ack(last, /*multiple=*/true);
  // Closing the channel would requeue unacked messages; none come back.
  ch_->close();
  ch_->open();
  EXPECT_EQ(message_count(q, 0), 0u);
}

TEST_F(channel_test, basic_reject_without_requeue_drops_the_message) {
  const std::string q = declare_queue();
  ch_->basic_publish(message("x"), "", q);
  ch_->basic_reject(ch_->basic_get(q)->delivery_tag(), false);
  ch_->close();
  ch_->open();
  EXPECT_EQ(message_count(q, 0), 0u);
}

TEST_F(channel_test, basic_recover_requeues_unacked_messages) {
  const std::string q = declare_queue();
  ch_->basic_publish(message("x"), "", q);
  ASSERT_TRUE(ch_->basic_get(q));
  ch_->basic_recover(/*requeue=*/true);
  std::optional<message> again = ch_->basic_get(q, true);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->delivery_info().redelivered);
}

TEST_F(channel_test, basic_recover_async_requeues_unacked_messages) {
  const std::string q = declare_queue();
  ch_->basic_publish(message("x"), "", q);
  ASSERT_TRUE(ch_->basic_get(q));
  ch_->basic_recover_async(/*requeue=*/true);
  // No reply to wait for: poll until the broker has requeued it.
  std::optional<message> again;
  for (int i = 0; i < 50 && !again; ++i) {
    again = ch_->basic_get(q, true);
    if (!again) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->delivery_info().redelivered);
}

TEST_F(channel_test, confirm_select_acks_publishes_in_sequence) {
  const std::string q = declare_queue();
  std::vector<std::uint64_t> acked;
  ch_->events().basic_ack.push_back([&](std::uint64_t tag, bool multiple) {
    acked.push_back(tag);
    if (multiple) acked.push_back(0);
  });
  ch_->confirm_select();
  EXPECT_TRUE(ch_->in_confirm_mode());
  EXPECT_EQ(ch_->next_publish_seq_no(), 1u);
  ch_->basic_publish(message("1"), "", q);
  ch_->basic_publish(message("2"), "", q);
  EXPECT_EQ(ch_->next_publish_seq_no(), 3u);
  ch_->wait_for_confirms(seconds_f(5));
  ASSERT_FALSE(acked.empty());
  // The broker may ack both at once (multiple) or one by one; the last tag is 2 either way.
  EXPECT_EQ(acked.back() == 0 ? acked[acked.size() - 2] : acked.back(), 2u);
  EXPECT_EQ(message_count(q, 2), 2u);
}

TEST_F(channel_test, reject_publish_overflow_nacks_and_wait_for_confirms_raises) {
  const std::string q = declare_queue(
      {.auto_delete = false,
       .arguments = {{"x-max-length", codec::field_value::i32(1)},
                     {"x-overflow", codec::field_value::long_string("reject-publish")}}});
  std::vector<std::uint64_t> nacked;
  ch_->events().basic_nack.push_back([&](std::uint64_t tag, bool) { nacked.push_back(tag); });
  ch_->confirm_select();
  ch_->basic_publish(message("fits"), "", q);
  ch_->basic_publish(message("overflows"), "", q);
  EXPECT_THROW(ch_->wait_for_confirms(seconds_f(5)), message_nacked);
  EXPECT_EQ(nacked, std::vector<std::uint64_t>{2});
  EXPECT_EQ(message_count(q, 1), 1u);
}

TEST_F(channel_test, confirm_publish_raises_message_nacked_from_the_overflowing_publish) {
  connection_options o = broker_options();
  client_options co;
  co.confirm_publish = true;
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  // Confirms are selected at the first publish, as py-amqp's basic_publish_confirm does.
  EXPECT_FALSE(ch.in_confirm_mode());
  const std::string q = declare_queue(
      {.auto_delete = false,
       .arguments = {{"x-max-length", codec::field_value::i32(1)},
                     {"x-overflow", codec::field_value::long_string("reject-publish")}}});
  ch.basic_publish(message("fits"), "", q, {.confirm_timeout = seconds_f(5)});
  EXPECT_TRUE(ch.in_confirm_mode());
  EXPECT_THROW(ch.basic_publish(message("overflows"), "", q, {.confirm_timeout = seconds_f(5)}),
               message_nacked);
  // The channel stays usable.
  ch.basic_publish(message("x"), "", "", {.confirm_timeout = seconds_f(5)});
}

// The broker closes a channel on a channel error (a 404 here) and the client revives it at
// once. With confirm_publish the revived channel must confirm again: its next publish selects
// confirms anew, waits for the ack, and raises message_nacked on a nack.
TEST_F(channel_test, confirm_publish_still_confirms_on_a_channel_the_broker_closed) {
  const std::string full = full_reject_publish_queue();
  const std::string q = declare_queue();
  connection_options o = broker_options();
  client_options co;
  co.confirm_publish = true;
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  ch.basic_publish(message("before"), "", q, {.confirm_timeout = seconds_f(5)});
  EXPECT_THROW(ch.queue_declare(unique_name("missing"), {.passive = true}), not_found);
  ch.basic_publish(message("after"), "", q, {.confirm_timeout = seconds_f(5)});
  // A new channel life: confirm.select again, and this publish took sequence number 1.
  EXPECT_TRUE(ch.in_confirm_mode());
  EXPECT_EQ(ch.next_publish_seq_no(), 2u);
  EXPECT_THROW(ch.basic_publish(message("overflows"), "", full, {.confirm_timeout = seconds_f(5)}),
               message_nacked);
  EXPECT_EQ(message_count(q, 2), 2u);
}

// The same for a channel the user closed and opened again, through channel::open() and
// through connection::channel(id).
TEST_F(channel_test, confirm_publish_still_confirms_on_a_channel_the_user_reopened) {
  const std::string full = full_reject_publish_queue();
  const std::string q = declare_queue();
  connection_options o = broker_options();
  client_options co;
  co.confirm_publish = true;
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  const std::uint16_t id = ch.channel_id();
  ch.basic_publish(message("first life"), "", q, {.confirm_timeout = seconds_f(5)});

  ch.close();
  ch.open();
  EXPECT_FALSE(ch.in_confirm_mode());
  EXPECT_THROW(ch.basic_publish(message("overflows"), "", full, {.confirm_timeout = seconds_f(5)}),
               message_nacked);
  EXPECT_TRUE(ch.in_confirm_mode());

  ch.close();
  channel& again = c.channel(id);
  EXPECT_EQ(&again, &ch);
  EXPECT_THROW(
      again.basic_publish(message("overflows"), "", full, {.confirm_timeout = seconds_f(5)}),
      message_nacked);
  again.basic_publish(message("third life"), "", q, {.confirm_timeout = seconds_f(5)});
  EXPECT_EQ(again.next_publish_seq_no(), 3u);
  EXPECT_EQ(message_count(q, 2), 2u);
}

// py-amqp selects confirms at a channel's first publish, so a channel of a confirm_publish
// connection can be made transactional (confirm mode first would make tx.select a 406).
TEST_F(channel_test, tx_select_works_on_a_confirm_publish_connection) {
  const std::string q = declare_queue();
  connection_options o = broker_options();
  client_options co;
  co.confirm_publish = true;
  connection c(o, co);
  c.connect();
  channel& tx = c.channel();
  EXPECT_FALSE(tx.in_confirm_mode());
  EXPECT_NO_THROW(tx.tx_select());
  EXPECT_NO_THROW(tx.tx_commit());
  EXPECT_TRUE(tx.is_open());
  // Another channel selects confirms at its first publish and waits for the ack.
  channel& other = c.channel();
  EXPECT_FALSE(other.in_confirm_mode());
  other.basic_publish(message("confirmed"), "", q, {.confirm_timeout = seconds_f(5)});
  EXPECT_TRUE(other.in_confirm_mode());
  EXPECT_EQ(other.next_publish_seq_no(), 2u);
  EXPECT_EQ(message_count(q, 1), 1u);
  // As with py-amqp, the transactional channel cannot then publish with confirms: the broker
  // refuses confirm.select on it (406).
  EXPECT_THROW(tx.basic_publish(message("x"), "", q), precondition_failed);
}

TEST_F(channel_test, mandatory_unroutable_publish_is_returned_before_the_ack) {
  connection_options o = broker_options();
  client_options co;
  co.confirm_publish = true;
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  std::vector<std::string> order;
  std::uint16_t code = 0;
  std::string text, routing_key, body;
  ch.events().basic_return.push_back(
      [&](const amqp_error& e, std::string_view exchange, std::string_view key, message& m) {
        order.push_back("return");
        code = e.reply_code();
        text = e.reply_text();
        routing_key = std::string(key);
        body = m.body_copy();
        EXPECT_EQ(exchange, "");
        EXPECT_NE(dynamic_cast<const no_route*>(&e), nullptr);
      });
  ch.events().basic_ack.push_back([&](std::uint64_t, bool) { order.push_back("ack"); });
  const std::string nowhere = unique_name("nowhere");
  ch.basic_publish(message("lost"), "", nowhere, {.mandatory = true});
  EXPECT_EQ(order, (std::vector<std::string>{"return", "ack"}));
  EXPECT_EQ(code, 312);
  EXPECT_EQ(text, "NO_ROUTE");
  EXPECT_EQ(routing_key, nowhere);
  EXPECT_EQ(body, "lost");
}

TEST_F(channel_test, mandatory_return_reaches_events_from_drain_events) {
  int returns = 0;
  ch_->events().basic_return.push_back(
      [&](const amqp_error& e, std::string_view, std::string_view, message&) {
        EXPECT_EQ(e.reply_code(), 312);
        ++returns;
      });
  ch_->basic_publish(message("lost"), "", unique_name("nowhere"), {.mandatory = true});
  ASSERT_TRUE(drain_until(*conn_, [&] { return returns == 1; }));
}

TEST_F(channel_test, mandatory_return_without_a_handler_raises_no_route_from_drain_events) {
  // py-amqp raises error_for_code(312, ...) from drain_events when no basic_return handler is
  // registered.
  const std::string nowhere = unique_name("nowhere");
  ch_->basic_publish(message("lost"), "", nowhere, {.mandatory = true});
  try {
    conn_->drain_events(seconds_f(5));
    FAIL() << "the basic.return was not raised";
  } catch (const no_route& e) {
    EXPECT_EQ(e.reply_code(), 312);
    EXPECT_EQ(e.reply_text(), "NO_ROUTE");
    EXPECT_EQ(e.method_sig(), (method_signature{60, 50}));
    EXPECT_EQ(e.method_name(), "basic.return");
    EXPECT_TRUE(is_channel_error(e));
  }
  // Nothing else broke: the same channel and connection go on working.
  EXPECT_TRUE(conn_->connected());
  EXPECT_TRUE(ch_->is_open());
  expect_round_trip("kept");
}

TEST_F(channel_test, mandatory_return_without_a_handler_raises_from_the_waiting_call) {
  // The broker handles a channel's methods in order, so the return reaches us before the
  // declare-ok: queue_declare is the call that reads it, and raises it.
  const std::string first = unique_name("q");
  const std::string second = unique_name("q");
  queues_.push_back(first);
  queues_.push_back(second);
  ch_->basic_publish(message("lost"), "", unique_name("nowhere"), {.mandatory = true});
  EXPECT_THROW(ch_->queue_declare(first, {.auto_delete = false}), no_route);
  // The abandoned declare-ok is not taken for the next call's reply.
  EXPECT_EQ(ch_->queue_declare(second, {.auto_delete = false}).queue, second);
  EXPECT_EQ(ch_->queue_declare(first, {.passive = true}).queue, first);
  EXPECT_TRUE(ch_->is_open());
  EXPECT_THROW(conn_->drain_events(seconds_f(0.2)), amqp_timeout);
}

TEST_F(channel_test, basic_consume_that_raised_a_return_leaves_no_consumer_behind) {
  const std::string q = declare_queue();
  int delivered = 0;
  ch_->basic_publish(message("lost"), "", unique_name("nowhere"), {.mandatory = true});
  EXPECT_THROW(ch_->basic_consume(q, [&](message&) { ++delivered; }), no_route);
  EXPECT_TRUE(ch_->consumer_tags().empty());
  // The broker had registered the consumer; the client cancels it, so a message published now
  // stays in the queue instead of bouncing between the broker and an unknown consumer tag.
  std::uint32_t consumers = 1;
  for (int i = 0; i < 100 && consumers != 0; ++i) {
    consumers = ch_->queue_declare(q, {.passive = true}).consumer_count;
    if (consumers != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(consumers, 0u);
  ch_->basic_publish(message("kept"), "", q);
  EXPECT_EQ(message_count(q, 1), 1u);
  EXPECT_EQ(delivered, 0);
}

TEST_F(channel_test, mandatory_return_without_a_handler_raises_from_a_confirmed_publish) {
  connection_options o = broker_options();
  client_options co;
  co.confirm_publish = true;
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  EXPECT_THROW(ch.basic_publish(message("lost"), "", unique_name("nowhere"), {.mandatory = true}),
               no_route);
  // The ack that followed the return is not mistaken for the next publish's.
  const std::string q = declare_queue();
  ch.basic_publish(message("kept"), "", q, {.confirm_timeout = seconds_f(5)});
  EXPECT_EQ(message_count(q, 1), 1u);
}

TEST_F(channel_test, immediate_publish_is_a_540_connection_error) {
  ch_->basic_publish(message("x"), "", unique_name("q"), {.immediate = true});
  try {
    conn_->drain_events(seconds_f(5));
    FAIL() << "RabbitMQ closes the connection on immediate=true";
  } catch (const amqp_not_implemented_error& e) {
    EXPECT_EQ(e.reply_code(), 540);
    EXPECT_EQ(e.method_name(), "basic.publish");
    EXPECT_TRUE(is_connection_error(e));
  }
  EXPECT_FALSE(conn_->connected());
  EXPECT_THROW(ch_->queue_declare(""), connection_error);
}

TEST_F(channel_test, flow_true_is_acknowledged_by_the_broker) {
  EXPECT_TRUE(ch_->flow(true));
  EXPECT_TRUE(ch_->active());
}

TEST_F(channel_test, tx_rollback_discards_and_tx_commit_delivers) {
  const std::string q = declare_queue();
  ch_->tx_select();
  ch_->basic_publish(message("rolled back"), "", q);
  ch_->tx_rollback();
  EXPECT_FALSE(ch_->basic_get(q, true));
  ch_->basic_publish(message("committed"), "", q);
  EXPECT_EQ(message_count(q, 0), 0u);  // not before the commit
  ch_->tx_commit();
  std::optional<message> m = ch_->basic_get(q, true);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body(), "committed");
}

TEST_F(channel_test, close_then_open_reuses_the_channel_object) {
  const std::uint16_t id = ch_->channel_id();
  ch_->close();
  EXPECT_FALSE(ch_->is_open());
  EXPECT_THROW(ch_->queue_declare("", {.exclusive = true}), recoverable_connection_error);
  ch_->close();  // a no-op when closed
  ch_->open();
  EXPECT_TRUE(ch_->is_open());
  EXPECT_EQ(ch_->channel_id(), id);
  EXPECT_FALSE(ch_->queue_declare("", {.exclusive = true}).queue.empty());
  EXPECT_EQ(&conn_->channel(id), ch_);
}

// py-amqp raises RecoverableConnectionError('connection already closed') for a call on a channel
// it closed (its send_method finds no connection); warren raises the same class, no reply code.
TEST_F(channel_test, a_call_on_a_channel_the_user_closed_raises_recoverable_connection_error) {
  const std::string q = declare_queue();
  ch_->close();
  const std::string expected = "channel " + std::to_string(ch_->channel_id()) + " already closed";
  auto expect_closed_error = [&](const char* call, const std::function<void()>& f) {
    try {
      f();
      ADD_FAILURE() << call << " on a closed channel did not raise";
    } catch (const amqp_error& e) {
      EXPECT_EQ(typeid(e), typeid(recoverable_connection_error)) << call << ": " << e.what();
      EXPECT_TRUE(is_recoverable_connection_error(e)) << call;
      EXPECT_EQ(e.reply_code(), 0) << call;
      EXPECT_EQ(std::string(e.what()), expected) << call;
    }
  };
  expect_closed_error("queue_declare", [&] { ch_->queue_declare(q, {.passive = true}); });
  expect_closed_error("basic_publish", [&] { ch_->basic_publish(message("x"), "", q); });
  expect_closed_error("basic_ack", [&] { ch_->basic_ack(1); });
  EXPECT_TRUE(conn_->connected());
}

TEST_F(channel_test, channel_error_revives_the_channel_with_the_error_details) {
  const std::string missing = unique_name("missing");
  try {
    ch_->queue_declare(missing, {.passive = true});
    FAIL() << "passive declare of a missing queue must fail";
  } catch (const not_found& e) {
    EXPECT_EQ(e.reply_code(), 404);
    EXPECT_NE(e.reply_text().find("NOT_FOUND"), std::string::npos) << e.reply_text();
    EXPECT_NE(e.reply_text().find(missing), std::string::npos) << e.reply_text();
    EXPECT_EQ(e.method_sig(), (method_signature{50, 10}));
    EXPECT_EQ(e.method_name(), "queue.declare");
    EXPECT_NE(std::string(e.what()).find("queue.declare"), std::string::npos);
    EXPECT_TRUE(is_channel_error(e));
  }
  EXPECT_TRUE(conn_->connected());
  expect_round_trip("after revival");
}

TEST_F(channel_test, channel_error_from_a_publish_is_raised_by_the_next_call) {
  ch_->basic_publish(message("x"), unique_name("no-such-exchange"), "k");
  try {
    ch_->basic_qos(0, 10, false);
    conn_->drain_events(seconds_f(2));
    FAIL() << "publishing to a missing exchange must raise not_found";
  } catch (const not_found& e) {
    EXPECT_EQ(e.method_name(), "basic.publish");
  }
  EXPECT_FALSE(ch_->queue_declare("", {.exclusive = true}).queue.empty());
}

TEST_F(channel_test, deleting_the_queue_calls_on_cancel) {
  const std::string q = declare_queue();
  std::string cancelled;
  const std::string tag = ch_->basic_consume(
      q, [](message&) {}, {.on_cancel = [&](std::string_view t) { cancelled = std::string(t); }});
  test::delete_queue_quietly(q);
  ASSERT_TRUE(drain_until(*conn_, [&] { return !cancelled.empty(); }));
  EXPECT_EQ(cancelled, tag);
  EXPECT_TRUE(ch_->consumer_tags().empty());
}

TEST_F(channel_test,
       deleting_the_queue_without_on_cancel_raises_consumer_cancelled_with_the_bare_tag) {
  const std::string q = declare_queue();
  const std::string tag = ch_->basic_consume(q, [](message&) {}, {.no_ack = true});
  test::delete_queue_quietly(q);
  try {
    drain_until(*conn_, [] { return false; });
    FAIL() << "the broker's basic.cancel must raise consumer_cancelled";
  } catch (const consumer_cancelled& e) {
    EXPECT_EQ(e.consumer_tag(), tag);
  }
  EXPECT_TRUE(ch_->no_ack_consumers().empty());
  EXPECT_TRUE(conn_->connected());
  EXPECT_TRUE(ch_->is_open());
}

TEST_F(channel_test, flow_false_is_refused_by_rabbitmq_with_540) {
  EXPECT_THROW(ch_->flow(false), amqp_not_implemented_error);
  EXPECT_FALSE(conn_->connected());
}

TEST_F(channel_test, messages_queued_before_consume_reach_a_server_named_consumer) {
  const std::string q = declare_queue();
  for (int i = 0; i < 100; ++i) ch_->basic_publish(message(std::to_string(i)), "", q);
  ASSERT_EQ(message_count(q, 100), 100u);
  std::vector<std::string> got;
  ch_->basic_consume(q, [&](message& m) { got.push_back(m.body_copy()); }, {.no_ack = true});
  ASSERT_TRUE(drain_until(*conn_, [&] { return got.size() == 100; }));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[i], std::to_string(i));
}

TEST_F(channel_test, consumer_callback_may_cancel_its_own_consumer_without_refeeding_frames) {
  const std::string q = declare_queue();
  int n = 0;
  std::vector<std::uint64_t> tags;
  ch_->basic_consume(q,
                     [&](message& m) {
                       ++n;
                       tags.push_back(m.delivery_tag());
                       m.ack();
                       ch_->basic_cancel("self-cancel");
                     },
                     {.consumer_tag = "self-cancel"});
  // Published after the consume: the deliveries reach the callback from drain_events, several
  // frames in one read.
  for (int i = 0; i < 5; ++i) ch_->basic_publish(message("m"), "", q);
  ASSERT_TRUE(drain_until(*conn_, [&] { return n >= 1; }));
  drain_until(
      *conn_, [] { return false; }, std::chrono::milliseconds(300));
  // Regression: the cancel's wait, inside the callback, fed the frames being dispatched a
  // second time (the same deliveries reached the callback again, and the cancel hung).
  EXPECT_EQ(n, 1) << ::testing::PrintToString(tags);
  EXPECT_TRUE(ch_->consumer_tags().empty());
  EXPECT_TRUE(ch_->is_open());
  // Deliveries in flight at the cancel were handed back (rejected with requeue).
  EXPECT_EQ(message_count(q, 4), 4u);
}

TEST_F(channel_test, early_deliveries_to_a_server_named_consumer_stop_when_it_cancels) {
  const std::string q = declare_queue();
  for (int i = 0; i < 5; ++i) ch_->basic_publish(message("m"), "", q);
  ASSERT_EQ(message_count(q, 5), 5u);
  int n = 0;
  // The first deliveries come with the consume-ok, before basic_consume returns.
  ch_->basic_consume(q, [&](message& m) {
    ++n;
    m.ack();
    ch_->basic_cancel(m.delivery_info().consumer_tag);
  });
  drain_until(
      *conn_, [] { return false; }, std::chrono::milliseconds(300));
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(ch_->consumer_tags().empty());
  EXPECT_EQ(message_count(q, 4), 4u);
}

TEST_F(channel_test, consumer_callback_may_close_its_own_channel) {
  const std::string q = declare_queue();
  for (int i = 0; i < 20; ++i) ch_->basic_publish(message("m"), "", q);
  int n = 0;
  ch_->basic_consume(q, [&](message&) {
    ++n;
    ch_->close();
  });
  ASSERT_TRUE(drain_until(*conn_, [&] { return n >= 1; }));
  drain_until(
      *conn_, [] { return false; }, std::chrono::milliseconds(300));
  EXPECT_EQ(n, 1);
  EXPECT_FALSE(ch_->is_open());
  EXPECT_TRUE(conn_->is_alive());
  channel& other = conn_->channel();
  // Unacked deliveries went back to the queue when the channel closed.
  EXPECT_EQ(other.queue_declare(q, {.passive = true}).message_count, 20u);
}

TEST_F(channel_test, consumer_callback_closing_the_connection_stops_early_deliveries) {
  const std::string q = unique_name("q");
  ch_->queue_declare(q, {.exclusive = true});
  for (int i = 0; i < 20; ++i) ch_->basic_publish(message("m"), "", q);
  int n = 0;
  ch_->basic_consume(q, [&](message&) {
    ++n;
    conn_->close();
  });
  try {
    drain_until(*conn_, [&] { return n >= 1; });
  } catch (const connection_error&) {
    // Draining on after the callback closed the connection reports it as closed.
  }
  // Regression: the replay of deliveries that came with the consume-ok went on after the
  // callback closed the connection (n was 10 with 20 queued messages).
  EXPECT_EQ(n, 1);
  EXPECT_FALSE(conn_->connected());
  EXPECT_THROW(conn_->drain_events(seconds_f(0.1)), connection_error);
}

TEST_F(channel_test, exception_from_a_consumer_callback_reaches_the_caller_and_delivery_goes_on) {
  const std::string q = declare_queue();
  int n = 0;
  ch_->basic_consume(q,
                     [&](message& m) {
                       ++n;
                       if (m.body() == "boom") throw std::runtime_error("callback failed");
                     },
                     {.no_ack = true});
  ch_->basic_publish(message("boom"), "", q);
  ch_->basic_publish(message("fine"), "", q);
  EXPECT_THROW(drain_until(*conn_, [&] { return n == 2; }), std::runtime_error);
  ASSERT_TRUE(drain_until(*conn_, [&] { return n == 2; }));
  EXPECT_TRUE(conn_->connected());
  EXPECT_EQ(ch_->queue_declare(q, {.passive = true}).consumer_count, 1u);
}

}  // namespace
}  // namespace warren
