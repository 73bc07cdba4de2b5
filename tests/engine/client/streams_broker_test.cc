// Quorum queues and streams through the blocking API against the real broker (RabbitMQ 3.10):
// typed declares, x-delivery-count on quorum redeliveries, the broker's basic.cancel when a
// queue is deleted, stream consumers from each kind of x-stream-offset with the offsets of what
// they get, the checks made before sending, and the last handled offset.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/client/connection.h"
#include "tests/broker_env.h"
#include "tests/engine/client/test_support.h"

namespace warren {
namespace {

using namespace std::chrono_literals;
using test::broker_options;
using test::drain_until;
using test::unique_name;

struct received {
  std::uint64_t offset = 0;
  std::string body;
};

class streams_broker_test : public test::broker_test {
 protected:
  void SetUp() override {
    test::broker_test::SetUp();
    conn_ = std::make_unique<connection>(broker_options());
    conn_->connect();
    ch_ = &conn_->channel();
  }
  void TearDown() override {
    conn_.reset();
    for (const auto& q : queues_) test::delete_queue_quietly(q);
  }
  std::string declare(const queue_declare_options& o, std::string_view prefix) {
    std::string q = unique_name(prefix);
    queues_.push_back(q);
    ch_->queue_declare(q, o);
    return q;
  }
  // Publishes bodies "<first>".."<first + n - 1>" and waits for the broker's confirms: once
  // confirmed, the messages are in the stream (the timestamp and last cases depend on it).
  void publish_confirmed(channel& ch, const std::string& q, int first, int n) {
    if (!ch.in_confirm_mode()) ch.confirm_select();
    for (int i = first; i < first + n; ++i) ch.basic_publish(message(std::to_string(i)), "", q);
    ch.wait_for_confirms(seconds_f(10));
  }
  // Consumes `q` on a fresh channel from `start` until `n` messages came, acking each; returns
  // them with their offsets. The consumer stays (its tag in *tag).
  std::vector<received> consume_n(const std::string& q, const stream_offset& start, std::size_t n,
                                  std::string* tag = nullptr, channel** used = nullptr) {
    channel& ch = conn_->channel();
    ch.basic_qos(0, 100, false);
    std::vector<received> got;
    const std::string t =
        ch.basic_consume(q,
                         [&](message& m) {
                           got.push_back({m.stream_offset().value_or(UINT64_MAX), m.body_copy()});
                           m.ack();
                         },
                         {.stream_start = start});
    EXPECT_TRUE(drain_until(
        *conn_, [&] { return got.size() >= n; }, 20s))
        << "got " << got.size() << " of " << n;
    if (tag) *tag = t;
    if (used) *used = &ch;
    return got;
  }

  std::unique_ptr<connection> conn_;
  channel* ch_ = nullptr;
  std::vector<std::string> queues_;
};

// Quorum queues ---------------------------------------------------------------------------------

TEST_F(streams_broker_test, quorum_queue_declares_a_quorum_queue) {
  const std::string q = declare(quorum_queue({.delivery_limit = 10}), "quorum");
  const std::string info = test::management_get("/api/queues/%2F/" + q);
  EXPECT_NE(info.find("\"type\":\"quorum\""), std::string::npos) << info;
  EXPECT_NE(info.find("\"x-delivery-limit\":10"), std::string::npos) << info;
  // Declaring it again with the same typed options is equivalent (no 406).
  EXPECT_NO_THROW(ch_->queue_declare(q, quorum_queue({.delivery_limit = 10})));
}

TEST_F(streams_broker_test, a_quorum_redelivery_counts_up_in_x_delivery_count) {
  const std::string q = declare(quorum_queue(), "quorum");
  ch_->basic_publish(message("once"), "", q);
  ch_->basic_qos(0, 1, false);
  std::vector<std::optional<std::uint64_t>> counts;
  std::vector<bool> redelivered;
  ch_->basic_consume(q, [&](message& m) {
    counts.push_back(m.delivery_count());
    redelivered.push_back(m.delivery_info().redelivered);
    if (counts.size() < 3) {
      m.reject(true);  // back to the queue: the quorum queue counts the return
    } else {
      m.ack();
    }
  });
  ASSERT_TRUE(drain_until(
      *conn_, [&] { return counts.size() >= 3; }, 20s));
  EXPECT_EQ(counts[0], std::nullopt) << "a first delivery carries no count";
  EXPECT_EQ(counts[1], 1u);
  EXPECT_EQ(counts[2], 2u);
  EXPECT_EQ(redelivered, (std::vector<bool>{false, true, true}));
}

TEST_F(streams_broker_test, deleting_a_quorum_queue_cancels_its_consumer_through_on_cancel) {
  const std::string q = declare(quorum_queue(), "quorum");
  std::vector<std::string> cancelled;
  const std::string tag = ch_->basic_consume(
      q, [](message&) {}, {.on_cancel = [&](std::string_view t) { cancelled.emplace_back(t); }});
  test::delete_queue_quietly(q);  // another connection: the broker tells the consumer
  ASSERT_TRUE(drain_until(
      *conn_, [&] { return !cancelled.empty(); }, 20s));
  EXPECT_EQ(cancelled, std::vector<std::string>{tag});
  EXPECT_TRUE(ch_->consumer_tags().empty()) << "the consumer left the channel";
  EXPECT_TRUE(ch_->is_open());
}

// Streams ---------------------------------------------------------------------------------------

TEST_F(streams_broker_test, stream_queue_declares_a_stream_with_its_retention) {
  const std::string q =
      declare(stream_queue({.max_length_bytes = 10'000'000, .max_segment_size_bytes = 1'000'000}),
              "stream");
  const std::string info = test::management_get("/api/queues/%2F/" + q);
  EXPECT_NE(info.find("\"type\":\"stream\""), std::string::npos) << info;
  EXPECT_NE(info.find("\"x-max-length-bytes\":10000000"), std::string::npos) << info;
  EXPECT_NE(info.find("\"x-stream-max-segment-size-bytes\":1000000"), std::string::npos) << info;
}

TEST_F(streams_broker_test, a_stream_read_from_first_gives_every_offset_in_order) {
  const std::string q = declare(stream_queue(), "stream");
  publish_confirmed(*ch_, q, 0, 20);
  std::string tag;
  channel* ch = nullptr;
  const auto got = consume_n(q, stream_offset::first(), 20, &tag, &ch);
  ASSERT_EQ(got.size(), 20u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].offset, i);
    EXPECT_EQ(got[i].body, std::to_string(i));
  }
  EXPECT_EQ(ch->stream_last_handled(tag), 19u) << "every delivery was acked";
}

TEST_F(streams_broker_test, a_stream_read_from_a_numeric_offset_starts_there) {
  const std::string q = declare(stream_queue(), "stream");
  publish_confirmed(*ch_, q, 0, 20);
  const auto got = consume_n(q, stream_offset::at(12), 8);
  ASSERT_EQ(got.size(), 8u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].offset, 12 + i);
    EXPECT_EQ(got[i].body, std::to_string(12 + i));
  }
}

TEST_F(streams_broker_test, a_stream_read_from_a_timestamp_skips_what_was_written_before_it) {
  const std::string q = declare(stream_queue(), "stream");
  publish_confirmed(*ch_, q, 0, 10);
  // The next whole second: everything confirmed so far was written before it, so its chunks'
  // timestamps are earlier, and the broker starts at the first chunk written at or after it.
  const auto from = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()) + 1s;
  std::this_thread::sleep_until(from + 10ms);
  publish_confirmed(*ch_, q, 10, 10);
  const auto got = consume_n(q, stream_offset::at_time(from), 10);
  ASSERT_EQ(got.size(), 10u);
  EXPECT_EQ(got.front().offset, 10u) << "a timestamp sent as anything but 'T' is read as offset "
                                        "(or refused)";
  EXPECT_EQ(got.back().offset, 19u);
}

TEST_F(streams_broker_test, a_stream_read_from_an_interval_covers_the_recent_messages) {
  const std::string q = declare(stream_queue(), "stream");
  publish_confirmed(*ch_, q, 0, 5);
  const auto got = consume_n(q, stream_offset::interval("1h"), 5);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got.front().offset, 0u) << "all five were written within the hour";
}

TEST_F(streams_broker_test, a_stream_read_from_last_starts_at_the_last_chunk) {
  const std::string q = declare(stream_queue(), "stream");
  publish_confirmed(*ch_, q, 0, 10);
  publish_confirmed(*ch_, q, 10, 10);  // written after the first ten were confirmed: a later chunk
  const auto got = consume_n(q, stream_offset::last(), 1);
  ASSERT_FALSE(got.empty());
  EXPECT_GE(got.front().offset, 10u) << "not from the start of the stream";
  EXPECT_LE(got.front().offset, 19u);
}

TEST_F(streams_broker_test, a_stream_read_from_next_gets_only_what_is_published_after) {
  const std::string q = declare(stream_queue(), "stream");
  publish_confirmed(*ch_, q, 0, 10);
  channel& ch = conn_->channel();
  ch.basic_qos(0, 100, false);
  std::vector<received> got;
  ch.basic_consume(q,
                   [&](message& m) {
                     got.push_back({m.stream_offset().value_or(UINT64_MAX), m.body_copy()});
                     m.ack();
                   },
                   {.stream_start = stream_offset::next()});
  publish_confirmed(*ch_, q, 10, 3);
  ASSERT_TRUE(drain_until(
      *conn_, [&] { return got.size() >= 3; }, 20s));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].offset, 10u);
  EXPECT_EQ(got[2].offset, 12u);
  EXPECT_EQ(got[0].body, "10");
}

TEST_F(streams_broker_test, the_last_handled_offset_stops_at_the_first_unacked_delivery) {
  const std::string q = declare(stream_queue(), "stream");
  publish_confirmed(*ch_, q, 0, 6);
  channel& ch = conn_->channel();
  ch.basic_qos(0, 100, false);
  std::vector<std::uint64_t> tags;
  const std::string tag = ch.basic_consume(q, [&](message& m) { tags.push_back(m.delivery_tag()); },
                                           {.stream_start = stream_offset::first()});
  ASSERT_TRUE(drain_until(
      *conn_, [&] { return tags.size() >= 6; }, 20s));
  EXPECT_EQ(ch.stream_last_handled(tag), std::nullopt) << "nothing settled yet";
  ch.basic_ack(tags[1], true);  // offsets 0 and 1
  ch.basic_ack(tags[3]);        // offset 3: 2 is still unsettled
  EXPECT_EQ(ch.stream_last_handled(tag), 1u);
  ch.basic_reject(tags[2], false);
  EXPECT_EQ(ch.stream_last_handled(tag), 3u);
}

TEST_F(streams_broker_test, a_stream_consume_without_prefetch_fails_before_sending) {
  const std::string q = declare(stream_queue(), "stream");
  channel& ch = conn_->channel();
  const std::uint64_t sent = conn_->bytes_sent();
  try {
    ch.basic_consume(q, [](message&) {}, {.stream_start = stream_offset::first()});
    FAIL() << "accepted";
  } catch (const stream_consume_error& e) {
    EXPECT_EQ(e.why(), stream_consume_error::reason::prefetch_not_set);
  }
  EXPECT_EQ(conn_->bytes_sent(), sent) << "nothing went to the broker";
  ch.basic_qos(0, 10, true);  // a global prefetch is not a consumer prefetch
  EXPECT_THROW(ch.basic_consume(q, [](message&) {}, {.stream_start = stream_offset::first()}),
               stream_consume_error);
  ch.basic_qos(0, 10, false);
  EXPECT_NO_THROW(ch.basic_consume(q, [](message&) {}, {.stream_start = stream_offset::first()}));
  EXPECT_TRUE(ch.is_open());
}

TEST_F(streams_broker_test, a_no_ack_stream_consume_fails_before_sending_and_the_connection_lives) {
  const std::string q = declare(stream_queue(), "stream");
  channel& ch = conn_->channel();
  ch.basic_qos(0, 10, false);
  try {
    ch.basic_consume(q, [](message&) {}, {.no_ack = true, .stream_start = stream_offset::next()});
    FAIL() << "accepted";
  } catch (const stream_consume_error& e) {
    EXPECT_EQ(e.why(), stream_consume_error::reason::no_ack);
  }
  // The broker would have closed the connection (540); nothing was sent, so it is still here.
  EXPECT_NO_THROW(ch.queue_declare(q, {.passive = true}));
  EXPECT_TRUE(conn_->connected());
}

}  // namespace
}  // namespace warren
