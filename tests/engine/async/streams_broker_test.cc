// Quorum queues and streams through the async engine against the real broker (RabbitMQ 3.10):
// typed declares, x-delivery-count on quorum redeliveries, the broker's basic.cancel reaching
// on_cancel when a queue is deleted, stream consumers from each kind of x-stream-offset with the
// offsets of what they get, the checks made before sending, the last handled offset, and the
// topology record keeping the consumer's x-stream-offset.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/async/engine.h"
#include "tests/broker_env.h"
#include "tests/engine/async/wait.h"
#include "tests/engine/client/test_support.h"

namespace warren::async {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using test::broker_options;
using test::unique_name;
using test::wait_until;

struct received {
  std::uint64_t offset = 0;
  std::string body;
};

// Deliveries collected from worker threads.
struct collector {
  std::mutex mu;
  std::vector<received> got;
  std::size_t size() {
    std::lock_guard lock(mu);
    return got.size();
  }
  std::vector<received> snapshot() {
    std::lock_guard lock(mu);
    return got;
  }
  delivery_handler acking() {
    return [this](delivery& d) {
      {
        std::lock_guard lock(mu);
        got.push_back({d.stream_offset().value_or(UINT64_MAX), std::string(d.body())});
      }
      d.ack();
    };
  }
};

class streams_async_broker_test : public test::broker_test {
 protected:
  void SetUp() override {
    test::broker_test::SetUp();
    engine_ = std::make_unique<engine>(engine_options{.io_threads = 1, .workers = 2});
    conn_ = engine_->connect(broker_options());
    ch_ = conn_->open_channel();
  }
  void TearDown() override {
    conn_.reset();
    ch_.reset();
    engine_.reset();
    for (const auto& q : queues_) test::delete_queue_quietly(q);
  }
  std::string declare(const warren::queue_declare_options& o, std::string_view prefix) {
    std::string q = unique_name(prefix);
    queues_.push_back(q);
    ch_->queue_declare(q, o);
    return q;
  }
  // Publishes bodies "<first>".."<first + n - 1>" and waits for every confirm: confirmed
  // messages are in the stream.
  void publish_confirmed(const std::string& q, int first, int n) {
    if (!confirming_) {
      ch_->confirm_select();
      confirming_ = true;
    }
    std::atomic<int> acked{0};
    for (int i = first; i < first + n; ++i) {
      ASSERT_EQ(ch_->publish("", q, {}, std::to_string(i), clock_type::now() + 10s, {},
                             [&](const confirm_result& r) {
                               if (r.what == confirm_result::outcome::ack) ++acked;
                             }),
                publish_status::ok);
    }
    ASSERT_TRUE(ch_->wait_for_confirms(clock_type::now() + 20s));
    ASSERT_EQ(acked.load(), n);
  }
  // A channel with a consumer prefetch consuming `q` from `start` into `c`; its tag in *tag.
  std::shared_ptr<channel> consume(const std::string& q, const stream_offset& start, collector& c,
                                   std::string* tag = nullptr) {
    auto ch = conn_->open_channel();
    ch->basic_qos(0, 100, false);
    const std::string t =
        ch->basic_consume(q, c.acking(), {.stream_start = start}, {.max_count = 8});
    if (tag) *tag = t;
    return ch;
  }

  // Handlers may still run after a test body returns (a stream keeps delivering to a consumer
  // nobody cancelled): what they write to lives in the fixture, until TearDown has destroyed the
  // engine, which waits for handlers in flight.
  collector& new_collector() { return collectors_.emplace_back(); }

  std::deque<collector> collectors_;
  std::unique_ptr<engine> engine_;
  std::shared_ptr<connection> conn_;
  std::shared_ptr<channel> ch_;
  bool confirming_ = false;
  std::vector<std::string> queues_;
};

// Quorum queues ---------------------------------------------------------------------------------

TEST_F(streams_async_broker_test, quorum_queue_declares_a_quorum_queue) {
  const std::string q = declare(warren::quorum_queue({.max_length = 100}), "quorum");
  const std::string info = test::management_get("/api/queues/%2F/" + q);
  EXPECT_NE(info.find("\"type\":\"quorum\""), std::string::npos) << info;
  const topology_record t = conn_->topology();
  ASSERT_EQ(t.queues.size(), 1u);
  EXPECT_EQ(*t.queues[0].options.arguments.find("x-queue-type")->as_long_string(), "quorum")
      << "recorded as sent, for a recovery to declare the same";
}

TEST_F(streams_async_broker_test, a_quorum_redelivery_counts_up_in_x_delivery_count) {
  const std::string q = declare(warren::quorum_queue(), "quorum");
  publish_confirmed(q, 0, 1);
  auto ch = conn_->open_channel();
  ch->basic_qos(0, 1, false);
  std::mutex mu;
  std::vector<std::optional<std::uint64_t>> counts;
  ch->basic_consume(q, [&](delivery& d) {
    std::size_t n = 0;
    {
      std::lock_guard lock(mu);
      counts.push_back(d.delivery_count());
      n = counts.size();
    }
    if (n < 3) {
      d.reject(true);
    } else {
      d.ack();
    }
  });
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(mu);
    return counts.size() >= 3;
  }));
  std::lock_guard lock(mu);
  EXPECT_EQ(counts[0], std::nullopt) << "a first delivery carries no count";
  EXPECT_EQ(counts[1], 1u);
  EXPECT_EQ(counts[2], 2u);
}

TEST_F(streams_async_broker_test, deleting_a_quorum_queue_cancels_its_consumer_through_on_cancel) {
  const std::string q = declare(warren::quorum_queue(), "quorum");
  std::mutex mu;
  std::vector<std::string> cancelled;
  auto ch = conn_->open_channel();
  const std::string tag =
      ch->basic_consume(q, [](delivery&) {}, {.on_cancel = [&](std::string_view t) {
                          std::lock_guard lock(mu);
                          cancelled.emplace_back(t);
                        }});
  ASSERT_EQ(conn_->topology().consumers.size(), 1u);
  test::delete_queue_quietly(q);  // another connection: the broker tells the consumer
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(mu);
    return !cancelled.empty();
  }));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(cancelled, std::vector<std::string>{tag});
  }
  EXPECT_TRUE(ch->is_open());
  EXPECT_NO_THROW(ch->basic_qos(0, 5, false)) << "the channel still works";
}

// Streams ---------------------------------------------------------------------------------------

TEST_F(streams_async_broker_test, stream_queue_declares_a_stream_with_its_retention) {
  const std::string q = declare(
      warren::stream_queue({.max_length_bytes = 10'000'000, .max_segment_size_bytes = 1'000'000}),
      "stream");
  const std::string info = test::management_get("/api/queues/%2F/" + q);
  EXPECT_NE(info.find("\"type\":\"stream\""), std::string::npos) << info;
  EXPECT_NE(info.find("\"x-max-length-bytes\":10000000"), std::string::npos) << info;
  EXPECT_NE(info.find("\"x-stream-max-segment-size-bytes\":1000000"), std::string::npos) << info;
}

TEST_F(streams_async_broker_test, a_stream_read_from_first_gives_every_offset_in_order) {
  const std::string q = declare(warren::stream_queue(), "stream");
  publish_confirmed(q, 0, 50);
  collector& c = new_collector();
  std::string tag;
  auto ch = consume(q, stream_offset::first(), c, &tag);
  ASSERT_TRUE(wait_until([&] { return c.size() >= 50; }));
  const auto got = c.snapshot();
  ASSERT_EQ(got.size(), 50u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].offset, i);
    EXPECT_EQ(got[i].body, std::to_string(i));
  }
  // Every handler acked: the watermark reaches the last offset once the I/O thread took the acks.
  EXPECT_TRUE(wait_until([&] {
    return ch->stream_last_handled(tag) == std::optional<std::uint64_t>(49);
  })) << "last handled: "
      << ch->stream_last_handled(tag).value_or(UINT64_MAX);
  // The topology record keeps the x-stream-offset that was sent.
  const topology_record t = conn_->topology();
  ASSERT_EQ(t.consumers.size(), 1u);
  EXPECT_EQ(*t.consumers[0].arguments.find("x-stream-offset"),
            codec::field_value::long_string("first"));
}

TEST_F(streams_async_broker_test, a_stream_read_from_a_numeric_offset_starts_there) {
  const std::string q = declare(warren::stream_queue(), "stream");
  publish_confirmed(q, 0, 20);
  collector& c = new_collector();
  auto ch = consume(q, stream_offset::at(15), c);
  ASSERT_TRUE(wait_until([&] { return c.size() >= 5; }));
  const auto got = c.snapshot();
  ASSERT_EQ(got.size(), 5u);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].offset, 15 + i);
}

TEST_F(streams_async_broker_test, a_stream_read_from_a_timestamp_skips_what_was_written_before_it) {
  const std::string q = declare(warren::stream_queue(), "stream");
  publish_confirmed(q, 0, 10);
  // The next whole second: everything confirmed so far was written before it (see the blocking
  // face's test of the same).
  const auto from = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()) + 1s;
  std::this_thread::sleep_until(from + 10ms);
  publish_confirmed(q, 10, 10);
  collector& c = new_collector();
  auto ch = consume(q, stream_offset::at_time(from), c);
  ASSERT_TRUE(wait_until([&] { return c.size() >= 10; }));
  const auto got = c.snapshot();
  EXPECT_EQ(got.front().offset, 10u);
  EXPECT_EQ(got.back().offset, 19u);
}

TEST_F(streams_async_broker_test, a_stream_read_from_last_starts_at_the_last_chunk) {
  const std::string q = declare(warren::stream_queue(), "stream");
  publish_confirmed(q, 0, 10);
  publish_confirmed(q, 10, 10);
  collector& c = new_collector();
  auto ch = consume(q, stream_offset::last(), c);
  ASSERT_TRUE(wait_until([&] { return c.size() >= 1; }));
  const auto got = c.snapshot();
  EXPECT_GE(got.front().offset, 10u) << "not from the start of the stream";
  EXPECT_LE(got.front().offset, 19u);
}

TEST_F(streams_async_broker_test, a_stream_read_from_next_gets_only_what_is_published_after) {
  const std::string q = declare(warren::stream_queue(), "stream");
  publish_confirmed(q, 0, 10);
  collector& c = new_collector();
  auto ch = consume(q, stream_offset::next(), c);
  publish_confirmed(q, 10, 3);
  ASSERT_TRUE(wait_until([&] { return c.size() >= 3; }));
  const auto got = c.snapshot();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].offset, 10u);
  EXPECT_EQ(got[2].offset, 12u);
}

TEST_F(streams_async_broker_test, a_channels_end_records_the_last_handled_offset_for_a_replay) {
  const std::string q = declare(warren::stream_queue(), "stream");
  publish_confirmed(q, 0, 10);
  collector& c = new_collector();
  std::string tag;
  auto ch = consume(q, stream_offset::first(), c, &tag);
  ASSERT_TRUE(wait_until([&] { return c.size() >= 10; }));
  ASSERT_TRUE(
      wait_until([&] { return ch->stream_last_handled(tag) == std::optional<std::uint64_t>(9); }));
  // The broker ends the channel (404 on a passive declare): its consumer leaves the table.
  EXPECT_THROW(ch->queue_declare(unique_name("missing"), {.passive = true}), not_found);
  const topology_record t = conn_->topology();
  ASSERT_EQ(t.consumers.size(), 1u) << "a channel the broker closed keeps its consumer records";
  EXPECT_EQ(t.consumers[0].stream_last_handled, 9u);
  EXPECT_EQ(*protocol::replay_arguments(t.consumers[0]).find("x-stream-offset"),
            codec::field_value::i64(10))
      << "a replay resumes after the last handled offset, not from first";
}

TEST_F(streams_async_broker_test, a_stream_consume_without_prefetch_fails_before_sending) {
  const std::string q = declare(warren::stream_queue(), "stream");
  auto ch = conn_->open_channel();
  try {
    ch->basic_consume(q, [](delivery&) {}, {.stream_start = stream_offset::first()});
    FAIL() << "accepted";
  } catch (const stream_consume_error& e) {
    EXPECT_EQ(e.why(), stream_consume_error::reason::prefetch_not_set);
  }
  ch->basic_qos(0, 10, true);  // a global prefetch is not a consumer prefetch
  EXPECT_THROW(ch->basic_consume(q, [](delivery&) {}, {.stream_start = stream_offset::first()}),
               stream_consume_error);
  EXPECT_TRUE(ch->is_open()) << "nothing was sent: the broker would have closed it (406)";
  EXPECT_TRUE(conn_->topology().consumers.empty());
  ch->basic_qos(0, 10, false);
  EXPECT_NO_THROW(ch->basic_consume(q, [](delivery&) {}, {.stream_start = stream_offset::first()}));
}

TEST_F(streams_async_broker_test,
       a_no_ack_stream_consume_fails_before_sending_and_the_connection_lives) {
  const std::string q = declare(warren::stream_queue(), "stream");
  auto ch = conn_->open_channel();
  ch->basic_qos(0, 10, false);
  try {
    ch->basic_consume(q, [](delivery&) {}, {.no_ack = true, .stream_start = stream_offset::next()});
    FAIL() << "accepted";
  } catch (const stream_consume_error& e) {
    EXPECT_EQ(e.why(), stream_consume_error::reason::no_ack);
  }
  // The broker would have closed the whole connection (540); nothing was sent.
  EXPECT_NO_THROW(ch->queue_declare(q, {.passive = true}));
  EXPECT_TRUE(conn_->is_open());
}

}  // namespace
}  // namespace warren::async
