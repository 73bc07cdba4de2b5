// The async engine against the real broker (tools/setup.sh): threaded publishing with confirms,
// consuming with acks from workers, returns, nacks, channel errors, connection loss, the memory
// alarm (on a node of the test's own), the topology record, basic.get, transactions, recover,
// channel.flow, update-secret and nowait.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/async/engine.h"
#include "tests/broker_env.h"
#include "tests/engine/async/wait.h"
#include "tests/engine/client/test_support.h"
#include "tests/support/rabbit_node.h"

namespace warren::async {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using test::broker_options;
using test::unique_name;
using test::wait_until;

// Fills `q` with `total` messages whose bodies are their indexes, and waits until the broker
// counts them ready.
void fill_queue(channel& ch, const std::string& q, int total) {
  codec::basic_properties props;
  for (int i = 0; i < total; ++i) {
    ASSERT_EQ(ch.publish("", q, props, std::to_string(i), clock_type::now() + 10s),
              publish_status::ok);
  }
  ASSERT_TRUE(wait_until([&] {
    return ch.queue_declare(q, {.passive = true}).message_count == std::uint32_t(total);
  }));
}

class engine_broker_test : public test::broker_test {
 protected:
  void SetUp() override {
    test::broker_test::SetUp();
    engine_ = std::make_unique<engine>(engine_options{.io_threads = 2, .workers = 2});
  }
  void TearDown() override {
    for (const auto& q : queues_) test::delete_queue_quietly(q);
    engine_.reset();
  }
  std::string declare_queue(channel& ch, codec::field_table args = {}) {
    std::string q = unique_name("async");
    warren::queue_declare_options o;
    o.auto_delete = false;
    o.arguments = std::move(args);
    ch.queue_declare(q, o);
    queues_.push_back(q);
    return q;
  }
  // Messages ready in `q`, read through a channel of its own (so the channels under test keep
  // their state).
  static std::uint32_t ready_count(connection& c, const std::string& q) {
    return c.open_channel()->queue_declare(q, {.passive = true}).message_count;
  }
  // Replaces the engine with one whose connections batch their reads; a connection, a channel
  // on it, and a queue filled with `fill` messages (see fill_queue).
  struct batching_setup {
    std::shared_ptr<connection> c;
    std::shared_ptr<channel> ch;
    std::string q;
  };
  batching_setup batching_engine(receive_batching rx, int fill) {
    engine_ = std::make_unique<engine>(engine_options{.workers = 2, .rx_batching = rx});
    batching_setup b{engine_->connect(broker_options()), nullptr, {}};
    b.ch = b.c->open_channel();
    b.q = declare_queue(*b.ch);
    fill_queue(*b.ch, b.q, fill);
    return b;
  }
  std::unique_ptr<engine> engine_;
  std::vector<std::string> queues_;
};

TEST_F(engine_broker_test, threads_publish_with_confirms_and_consumers_get_each_once_in_order) {
  constexpr int producers = 4, queues = 3, per_producer = 3000;
  auto pub = engine_->connect(broker_options());
  auto sub = engine_->connect(broker_options());
  auto setup = pub->open_channel();
  std::vector<std::string> names;
  for (int q = 0; q < queues; ++q) names.push_back(declare_queue(*setup));

  std::mutex mu;
  std::map<std::string, std::map<int, int>> last;  // queue -> producer -> last index seen
  std::map<std::string, int> counts;
  std::atomic<int> received{0}, out_of_order{0};
  auto cch = sub->open_channel();
  cch->basic_qos(0, 500, false);
  for (const auto& q : names) {
    cch->basic_consume(q,
                       [&, q](delivery& d) {
                         const std::string body(d.body());
                         const auto colon = body.find(':');
                         const int p = std::stoi(body.substr(0, colon));
                         const int i = std::stoi(body.substr(colon + 1));
                         {
                           std::lock_guard lock(mu);
                           auto it = last[q].find(p);
                           if (it != last[q].end() && it->second >= i) ++out_of_order;
                           last[q][p] = i;
                           ++counts[q];
                         }
                         d.ack();
                         ++received;
                       },
                       {}, {.max_count = 32, .max_delay = 2000us});
  }

  std::atomic<int> acked{0}, failed{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      auto ch = pub->open_channel();
      ch->confirm_select(500);
      codec::basic_properties props;
      for (int i = 0; i < per_producer; ++i) {
        const std::string body = std::to_string(p) + ":" + std::to_string(i);
        const auto s = ch->publish("", names[i % queues], props, body, clock_type::now() + 30s, {},
                                   [&](const confirm_result& r) {
                                     (r.what == confirm_result::outcome::ack ? acked : failed)++;
                                   });
        if (s != publish_status::ok) {
          ++failed;
          ADD_FAILURE() << to_string(s);
        }
      }
      EXPECT_TRUE(ch->wait_for_confirms(clock_type::now() + 30s));
      ch->close();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(acked.load(), producers * per_producer);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_TRUE(wait_until([&] { return received.load() >= producers * per_producer; }));
  std::this_thread::sleep_for(100ms);  // a duplicate would arrive now
  EXPECT_EQ(received.load(), producers * per_producer);
  EXPECT_EQ(out_of_order.load(), 0);
  {
    std::lock_guard lock(mu);
    for (const auto& q : names) EXPECT_EQ(counts[q], producers * per_producer / queues) << q;
  }
  // Every ack reached the broker: nothing is left unacknowledged or ready.
  cch->close();
  auto check = pub->open_channel();
  for (const auto& q : names) {
    warren::queue_declare_options passive;
    passive.passive = true;
    EXPECT_EQ(check->queue_declare(q, passive).message_count, 0u) << q;
  }
}

TEST_F(engine_broker_test, mandatory_unroutable_publish_is_returned_before_its_ack) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  ch->confirm_select(10);
  std::mutex mu;
  std::vector<std::string> events;
  ch->on_return([&](const returned_message& r) {
    std::lock_guard lock(mu);
    events.push_back("return:" + std::to_string(r.reply_code) + ":" + std::string(r.body));
  });
  codec::basic_properties props;
  auto f = ch->publish_confirmed("", unique_name("nowhere"), props, "lost", {.mandatory = true});
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  const confirm_result r = f.get();
  {
    std::lock_guard lock(mu);
    events.push_back("confirm");
  }
  EXPECT_EQ(r.what, confirm_result::outcome::ack);
  EXPECT_TRUE(r.returned);
  EXPECT_EQ(r.reply_code, 312);
  EXPECT_EQ(r.sequence, 1u);
  std::lock_guard lock(mu);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], "return:312:lost");
  EXPECT_EQ(events[1], "confirm");
}

TEST_F(engine_broker_test, reject_publish_overflow_queue_completes_with_nack) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  codec::field_table args{{"x-max-length", codec::field_value::i32(1)},
                          {"x-overflow", codec::field_value::long_string("reject-publish")}};
  const std::string q = declare_queue(*ch, args);
  ch->confirm_select(10);
  codec::basic_properties props;
  auto first = ch->publish_confirmed("", q, props, "fits");
  auto second = ch->publish_confirmed("", q, props, "does not fit");
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(second.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(first.get().what, confirm_result::outcome::ack);
  const confirm_result r = second.get();
  EXPECT_EQ(r.what, confirm_result::outcome::nack);
  EXPECT_EQ(r.sequence, 2u);
}

TEST_F(engine_broker_test, channel_error_throws_not_found_and_closes_only_that_channel) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  warren::queue_declare_options passive;
  passive.passive = true;
  EXPECT_THROW(ch->queue_declare(unique_name("missing"), passive), not_found);
  EXPECT_FALSE(ch->is_open());
  EXPECT_NE(ch->error(), nullptr);
  EXPECT_THROW(ch->queue_declare("x"), not_found);  // the error that closed it, again
  codec::basic_properties props;
  EXPECT_EQ(ch->try_publish("", "x", props, "m"), publish_status::closed);
  EXPECT_TRUE(c->is_open());
  auto other = c->open_channel();
  EXPECT_TRUE(other->is_open());
  declare_queue(*other);
}

TEST_F(engine_broker_test, connection_close_mid_flight_completes_every_publish) {
  auto c = engine_->connect(broker_options());
  auto setup = c->open_channel();
  const std::string q = declare_queue(*setup);
  auto ch = c->open_channel();
  ch->confirm_select(100000);
  std::atomic<int> acked{0}, lost{0}, other{0}, accepted{0};
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    codec::basic_properties props;
    const std::string body(256, 'b');
    while (!stop.load()) {
      const auto s = ch->try_publish("", q, props, body, {}, [&](const confirm_result& r) {
        if (r.what == confirm_result::outcome::ack) {
          ++acked;
        } else if (r.what == confirm_result::outcome::in_doubt) {
          ++lost;
        } else {
          ++other;
        }
      });
      if (s == publish_status::ok) ++accepted;
      if (s == publish_status::closed) break;
    }
  });
  ASSERT_TRUE(wait_until([&] { return accepted.load() > 2000; }));
  c->close();
  stop.store(true);
  publisher.join();
  EXPECT_FALSE(c->is_open());
  EXPECT_EQ(acked.load() + lost.load() + other.load(), accepted.load());
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ch->outstanding_confirms(), 0u);
}

TEST_F(engine_broker_test, topology_record_follows_declares_binds_and_deletes) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string x1 = unique_name("x1"), x2 = unique_name("x2");
  ch->exchange_declare(x1, "direct");
  ch->exchange_declare(x2, "fanout");
  const std::string q = declare_queue(*ch);
  ch->queue_bind(q, x1, "rk");
  ch->exchange_bind(x2, x1, "rk2");
  const std::string tag = ch->basic_consume(q, [](delivery&) {});
  topology_record t = c->topology();
  EXPECT_EQ(t.exchanges.size(), 2u);
  EXPECT_EQ(t.queues.size(), 1u);
  ASSERT_EQ(t.bindings.size(), 2u);
  EXPECT_EQ(t.bindings[0].what, binding_record::kind::queue);
  EXPECT_EQ(t.bindings[1].what, binding_record::kind::exchange);
  ASSERT_EQ(t.consumers.size(), 1u);
  EXPECT_EQ(t.consumers[0].consumer_tag, tag);
  ch->basic_cancel(tag);
  ch->exchange_delete(x2);
  t = c->topology();
  EXPECT_EQ(t.exchanges.size(), 1u);
  EXPECT_EQ(t.bindings.size(), 1u);
  EXPECT_TRUE(t.consumers.empty());
  ch->queue_delete(q);
  ch->exchange_delete(x1);
  t = c->topology();
  EXPECT_TRUE(t.exchanges.empty());
  EXPECT_TRUE(t.queues.empty());
  EXPECT_TRUE(t.bindings.empty());
}

TEST_F(engine_broker_test, wrong_password_throws_access_refused_from_connect) {
  warren::connection_options o = broker_options();
  o.password = "not the password";
  EXPECT_THROW(engine_->connect(o), access_refused);
}

TEST_F(engine_broker_test, tls_connection_publishes_and_consumes) {
  ASSERT_TRUE(test::broker_answers(test::amqps_port));
  warren::connection_options o = broker_options();
  o.host = std::string(test::broker_host) + ":" + std::to_string(test::amqps_port);
  o.ssl = io::tls_options{.ca_file = test::ca_pem, .server_name = "localhost"};
  auto c = engine_->connect(o);
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  ch->confirm_select(10);
  codec::basic_properties props;
  const std::string big(300 * 1024, 'z');  // several frames, several TLS records
  auto f = ch->publish_confirmed("", q, props, big);
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get().what, confirm_result::outcome::ack);
  std::promise<std::string> got;
  ch->basic_consume(q, [&](delivery& d) {
    got.set_value(std::string(d.body()));
    d.ack();
  });
  auto body = got.get_future();
  ASSERT_EQ(body.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(body.get(), big);
}

TEST_F(engine_broker_test, idle_connection_keeps_heartbeating_while_a_handler_is_slow) {
  warren::connection_options o = broker_options();
  o.heartbeat = 1;
  auto c = engine_->connect(o);
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  std::atomic<bool> handled{false};
  ch->basic_consume(q, [&](delivery& d) {
    std::this_thread::sleep_for(3500ms);  // longer than two heartbeat intervals
    d.ack();
    handled.store(true);
  });
  codec::basic_properties props;
  ASSERT_EQ(ch->try_publish("", q, props, "slow"), publish_status::ok);
  EXPECT_TRUE(wait_until([&] { return handled.load(); }, 10s));
  EXPECT_TRUE(c->is_open());
  EXPECT_TRUE(ch->is_open());
  EXPECT_EQ(ch->queue_declare(q, {.passive = true}).message_count, 0u);
}

TEST_F(engine_broker_test, deleting_the_queue_cancels_the_consumer_through_on_cancel) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  std::promise<std::string> cancelled;
  consumer_options co;
  co.on_cancel = [&](std::string_view tag) { cancelled.set_value(std::string(tag)); };
  const std::string tag = ch->basic_consume(
      q, [](delivery&) {}, co);
  auto other = c->open_channel();
  other->queue_delete(q);
  auto f = cancelled.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), tag);
  EXPECT_TRUE(c->topology().consumers.empty());
}

TEST_F(engine_broker_test, reading_pauses_while_handlers_hold_too_many_deliveries) {
  engine_options eo;
  eo.max_pending_deliveries = 200;
  eo.rx_buffer_size = 16 * 1024;
  eo.workers = 2;
  engine_ = std::make_unique<engine>(eo);
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  constexpr int total = 3000;
  fill_queue(*ch, q, total);
  std::atomic<int> handled{0};
  std::atomic<std::size_t> max_pending{0};
  consumer_options co;
  co.no_ack = true;  // no prefetch limit: only the engine's bound holds the broker back
  auto cch = c->open_channel();
  cch->basic_consume(
      q,
      [&](delivery&) {
        const std::size_t p = c->pending_deliveries();
        std::size_t m = max_pending.load();
        while (p > m && !max_pending.compare_exchange_weak(m, p)) {
        }
        std::this_thread::sleep_for(50us);
        ++handled;
      },
      co);
  EXPECT_TRUE(wait_until([&] { return handled.load() == total; }, 60s));
  // One read's worth (16 KiB of ~40-octet deliveries) may land after the bound is crossed.
  EXPECT_LE(max_pending.load(), eo.max_pending_deliveries + 16 * 1024 / 40);
  EXPECT_GT(max_pending.load(), 0u);
}

TEST_F(engine_broker_test, receive_batching_reads_a_stream_whole_and_an_idle_socket_at_once) {
  // A low-water mark the stream's tail never reaches and a long max_wait, so that a socket
  // left busy (or a lost timer) would show as seconds of delay.
  const receive_batching rx{.min_bytes = 256 * 1024, .max_wait = 2s};
  constexpr int total = 20000;
  auto [c, ch, q] = batching_engine(rx, total);

  std::mutex mu;
  int next = 0, out_of_order = 0;
  std::optional<clock_type::time_point> lone_arrived;
  consumer_options co;
  co.no_ack = true;
  auto cch = c->open_channel();
  cch->basic_consume(
      q,
      [&](delivery& d) {
        std::lock_guard lock(mu);
        if (d.body() == "lone") {
          lone_arrived = clock_type::now();
          return;
        }
        if (d.body() != std::to_string(next)) ++out_of_order;
        ++next;
      },
      co);
  // The tail below the mark is read by the timer, max_wait after the read before it.
  EXPECT_TRUE(wait_until(
      [&] {
        std::lock_guard lock(mu);
        return next == total;
      },
      30s));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(out_of_order, 0);
  }
  // A read that finds nothing (max_wait after the last one) makes the socket idle again, and
  // an idle socket is read as soon as anything arrives: far sooner than max_wait.
  std::this_thread::sleep_for(rx.max_wait * 2);
  codec::basic_properties props;
  const auto sent = clock_type::now();
  ASSERT_EQ(ch->publish("", q, props, "lone", sent + 10s), publish_status::ok);
  ASSERT_TRUE(wait_until(
      [&] {
        std::lock_guard lock(mu);
        return lone_arrived.has_value();
      },
      10s));
  std::lock_guard lock(mu);
  EXPECT_LT(*lone_arrived - sent, rx.max_wait / 2);
  EXPECT_EQ(next, total);
}

TEST_F(engine_broker_test, receive_batching_never_holds_back_a_reply) {
  // Prefetch 10 with acks: the broker sends ten deliveries per ack round, far below min_bytes,
  // so the busy socket is read by the 1 s timer alone. A reply left to that timer would take
  // up to 1 s (half the time more than 500 ms); read at once, it takes milliseconds.
  const receive_batching rx{.min_bytes = 256 * 1024, .max_wait = 1s};
  auto [c, ch, q] = batching_engine(rx, 1000);
  std::atomic<int> handled{0};
  auto cch = c->open_channel();
  cch->basic_qos(0, 10, false);
  cch->basic_consume(q, [&](delivery& d) {
    ++handled;
    d.ack();
  });
  ASSERT_TRUE(wait_until([&] { return handled.load() >= 20; }));  // two reads: busy
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(300ms);  // the deliveries after the last reply: busy again
    const auto t0 = clock_type::now();
    EXPECT_EQ(ch->queue_declare(q, {.passive = true}).consumer_count, 1u);
    EXPECT_LT(clock_type::now() - t0, 500ms) << "call " << i;
  }
  EXPECT_GT(handled.load(), 20);
  // The handler counts into `handled`, a local of this test, and the queue still holds hundreds
  // of messages: the consumer must stop (its handlers in flight finish) before the test returns.
  cch->close();
}

TEST_F(engine_broker_test, receive_batching_keeps_acks_flowing_under_a_small_prefetch) {
  // 50 unacknowledged deliveries are far below min_bytes: the broker stops sending until the
  // acks come, so only the max_wait timer can read them. Nothing may stall or be lost.
  const receive_batching rx{.min_bytes = 64 * 1024, .max_wait = 1ms};
  constexpr int total = 5000;
  auto [c, ch, q] = batching_engine(rx, total);

  std::atomic<int> next{0}, out_of_order{0};
  auto cch = c->open_channel();
  cch->basic_qos(0, 50, false);
  cch->basic_consume(q, [&](delivery& d) {
    if (d.body() != std::to_string(next.load())) ++out_of_order;
    d.ack();  // before the count: the close below must come after the last ack
    ++next;
  });
  EXPECT_TRUE(wait_until([&] { return next.load() == total; }, 60s));
  EXPECT_EQ(out_of_order.load(), 0);
  // Every ack reached the broker: nothing is left ready or unacknowledged.
  cch->close();
  EXPECT_EQ(ready_count(*c, q), 0u);
}

TEST_F(engine_broker_test, paused_reading_is_not_taken_for_a_dead_peer) {
  engine_options eo;
  eo.max_pending_deliveries = 4;
  engine_ = std::make_unique<engine>(eo);
  warren::connection_options o = broker_options();
  o.heartbeat = 1;
  auto c = engine_->connect(o);
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  codec::basic_properties props;
  for (int i = 0; i < 8; ++i) ASSERT_EQ(ch->try_publish("", q, props, "p"), publish_status::ok);
  std::atomic<int> handled{0};
  consumer_options co;
  co.no_ack = true;
  auto cch = c->open_channel();
  cch->basic_consume(
      q,
      [&](delivery&) {
        // Reading resumes at 2 pending: each pause lasts two handlers, 2.4 s, longer than the
        // two heartbeat intervals after which a peer not heard from counts as dead.
        std::this_thread::sleep_for(1200ms);
        ++handled;
      },
      co);
  EXPECT_TRUE(wait_until([&] { return handled.load() == 8; }, 30s));
  EXPECT_TRUE(c->is_open()) << c->close_reason().reply_text;
}

TEST_F(engine_broker_test, publishes_staged_before_an_rpc_reach_the_broker_before_it) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  codec::basic_properties props;
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 500; ++i) {
      ASSERT_EQ(ch->publish("", q, props, "m", clock_type::now() + 10s), publish_status::ok);
    }
    // Same channel, same thread: the purge must see every publish made before it.
    EXPECT_EQ(ch->queue_purge(q), 500u) << "round " << round;
  }
}

TEST_F(engine_broker_test, basic_get_returns_deliveries_settled_like_consumed_ones) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  EXPECT_FALSE(ch->basic_get(q).has_value());  // get-empty
  codec::basic_properties props;
  for (const char* body : {"a", "b", "c"}) {
    ASSERT_EQ(ch->publish("", q, props, body, clock_type::now() + 10s), publish_status::ok);
  }
  // The publishes staged before the get reach the broker before it: no wait needed.
  std::optional<delivery> a = ch->basic_get(q);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->body(), "a");
  EXPECT_EQ(a->exchange(), "");
  EXPECT_EQ(a->routing_key(), q);
  EXPECT_EQ(a->message_count(), 2u);
  EXPECT_FALSE(a->redelivered());
  EXPECT_TRUE(a->consumer_tag().empty());
  EXPECT_EQ(a->channel_id(), ch->id());
  EXPECT_TRUE(a->ack());
  std::optional<delivery> b = ch->basic_get(q);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->body(), "b");
  EXPECT_EQ(b->message_count(), 1u);
  std::thread([&] { EXPECT_TRUE(b->reject(/*requeue=*/true)); }).join();
  // The reject, made before this get, reaches the broker before it: b is back at the head.
  std::optional<delivery> again = ch->basic_get(q, /*no_ack=*/true);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->body(), "b");
  EXPECT_TRUE(again->redelivered());
  EXPECT_FALSE(again->ack());    // no_ack: nothing to settle
  const delivery kept = *again;  // a copy keeps the receive buffer its views point into
  again.reset();
  EXPECT_EQ(kept.body(), "b");
  std::optional<delivery> last = ch->basic_get(q, /*no_ack=*/true);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->body(), "c");
  EXPECT_EQ(last->message_count(), 0u);
  EXPECT_FALSE(ch->basic_get(q).has_value());
  // Had a's ack not reached the broker, recover would requeue a, and the get would return it.
  ch->basic_recover(/*requeue=*/true);
  EXPECT_FALSE(ch->basic_get(q).has_value());
}

TEST_F(engine_broker_test, tx_commit_covers_publishes_and_acks_and_rollback_discards) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  ch->tx_select();
  codec::basic_properties props;
  ASSERT_EQ(ch->try_publish("", q, props, "rolled back"), publish_status::ok);
  ch->tx_rollback();
  EXPECT_FALSE(ch->basic_get(q, /*no_ack=*/true).has_value());
  ASSERT_EQ(ch->try_publish("", q, props, "committed"), publish_status::ok);
  EXPECT_EQ(ready_count(*c, q), 0u);  // not yet
  ch->tx_commit();
  std::optional<delivery> d = ch->basic_get(q);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->body(), "committed");
  EXPECT_TRUE(d->ack());
  // The ack was made before the commit, so it is inside it. Had it gone after, closing the
  // channel would roll it back and requeue the message.
  ch->tx_commit();
  ch->close();
  EXPECT_EQ(ready_count(*c, q), 0u);
}

TEST_F(engine_broker_test, tx_and_confirm_modes_exclude_each_other_with_precondition_failed) {
  auto c = engine_->connect(broker_options());
  auto confirming = c->open_channel();
  confirming->confirm_select(10);
  EXPECT_THROW(confirming->tx_select(), precondition_failed);
  EXPECT_FALSE(confirming->is_open());
  EXPECT_THROW(std::rethrow_exception(confirming->error()), precondition_failed);
  auto transacted = c->open_channel();
  transacted->tx_select();
  EXPECT_THROW(transacted->confirm_select(10), precondition_failed);
  EXPECT_FALSE(transacted->is_open());
  auto plain = c->open_channel();
  EXPECT_THROW(plain->tx_commit(), precondition_failed);  // not transactional
  EXPECT_TRUE(c->is_open());
}

TEST_F(engine_broker_test, basic_recover_redelivers_and_drops_decisions_on_the_given_back) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  codec::basic_properties props;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(ch->try_publish("", q, props, "m"), publish_status::ok);
  std::mutex mu;
  std::vector<delivery> held;  // first deliveries, left unsettled
  std::atomic<int> redelivered{0};
  ch->basic_consume(q, [&](delivery& d) {
    if (d.redelivered()) {
      d.ack();
      ++redelivered;
      return;
    }
    std::lock_guard lock(mu);
    held.push_back(d);
  });
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(mu);
    return held.size() == 3;
  }));
  ch->basic_recover(/*requeue=*/true);
  EXPECT_TRUE(wait_until([&] { return redelivered.load() == 3; }));
  // The broker took these back: their acks are dropped on the I/O thread, since the broker
  // would close the channel (406) for tags it no longer knows.
  {
    std::lock_guard lock(mu);
    for (delivery& d : held) EXPECT_TRUE(d.ack());
  }
  ch->basic_qos(0, 10, false);  // goes after those acks: a 406 would fail it
  EXPECT_TRUE(ch->is_open());
  ch->close();
  held.clear();
  EXPECT_EQ(ready_count(*c, q), 0u);
}

TEST_F(engine_broker_test, basic_recover_async_requeues_without_waiting) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  codec::basic_properties props;
  ASSERT_EQ(ch->try_publish("", q, props, "x"), publish_status::ok);
  std::optional<delivery> first = ch->basic_get(q);
  ASSERT_TRUE(first.has_value());
  ch->basic_recover_async(/*requeue=*/true);
  // No reply to wait for: poll until the broker has requeued it.
  std::optional<delivery> again;
  EXPECT_TRUE(wait_until([&] {
    again = ch->basic_get(q, /*no_ack=*/true);
    return again.has_value();
  }));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->body(), "x");
  EXPECT_TRUE(again->redelivered());
  EXPECT_TRUE(first->ack());    // given back: dropped, not sent
  ch->basic_qos(0, 10, false);  // a 406 for it would fail this call
  EXPECT_TRUE(ch->is_open());
}

TEST_F(engine_broker_test, rabbitmq_refuses_recover_without_requeue_and_flow_false_with_540) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  EXPECT_TRUE(ch->flow(true));
  EXPECT_TRUE(ch->is_open());
  EXPECT_THROW(ch->flow(false), amqp_not_implemented_error);
  EXPECT_FALSE(c->is_open());
  auto c2 = engine_->connect(broker_options());
  auto ch2 = c2->open_channel();
  EXPECT_THROW(ch2->basic_recover(/*requeue=*/false), amqp_not_implemented_error);
  EXPECT_FALSE(c2->is_open());
}

TEST_F(engine_broker_test, update_secret_with_the_same_password_is_accepted) {
  auto c = engine_->connect(broker_options());
  c->update_secret(test::guest_password, "rotated");
  EXPECT_TRUE(c->is_open());
  auto ch = c->open_channel();
  declare_queue(*ch);
}

TEST_F(engine_broker_test, nowait_declares_bind_and_consume_take_effect_without_a_reply) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string x = unique_name("x-nowait"), q = unique_name("async-nowait");
  queues_.push_back(q);
  ch->exchange_declare(x, "direct", {.auto_delete = false, .nowait = true});
  const warren::queue_declare_ok ok = ch->queue_declare(q, {.auto_delete = false, .nowait = true});
  EXPECT_EQ(ok.queue, q);
  EXPECT_EQ(ok.message_count, 0u);
  ch->queue_bind(q, x, "rk", {.nowait = true});
  std::promise<std::string> got;
  const std::string tag = ch->basic_consume(q,
                                            [&](delivery& d) {
                                              got.set_value(std::string(d.body()));
                                              d.ack();
                                            },
                                            {.consumer_tag = "nowait-consumer", .nowait = true});
  EXPECT_EQ(tag, "nowait-consumer");
  topology_record t = c->topology();
  EXPECT_EQ(t.exchanges.size(), 1u);
  EXPECT_EQ(t.queues.size(), 1u);
  EXPECT_EQ(t.bindings.size(), 1u);
  ASSERT_EQ(t.consumers.size(), 1u);
  EXPECT_EQ(t.consumers[0].consumer_tag, tag);
  codec::basic_properties props;
  ASSERT_EQ(ch->try_publish(x, "rk", props, "routed"), publish_status::ok);
  auto f = got.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), "routed");

  ch->basic_cancel(tag, /*nowait=*/true);
  EXPECT_TRUE(c->topology().consumers.empty());
  // The cancel went before this publish: the message stays in the queue. (basic.get rather than
  // a passive declare, which RabbitMQ's queue answers ahead of the publishes it has queued.)
  ASSERT_EQ(ch->try_publish(x, "rk", props, "kept"), publish_status::ok);
  std::optional<delivery> kept = ch->basic_get(q);
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->body(), "kept");
  EXPECT_TRUE(kept->reject(/*requeue=*/true));
  EXPECT_EQ(ch->queue_purge(q, /*nowait=*/true), 0u);  // after the reject: it goes too
  EXPECT_FALSE(ch->basic_get(q).has_value());
  EXPECT_EQ(ch->queue_delete(q, {.nowait = true}), 0u);
  ch->exchange_delete(x, /*if_unused=*/false, /*nowait=*/true);
  t = c->topology();
  EXPECT_TRUE(t.queues.empty());
  EXPECT_TRUE(t.exchanges.empty());
  EXPECT_TRUE(t.bindings.empty());
  // Checked on the same channel, which the broker serves in order (another channel could be
  // answered before the deletes are done); the 404 closes it after both.
  EXPECT_THROW(ch->queue_declare(q, {.passive = true}), not_found);
  auto check = c->open_channel();
  EXPECT_THROW(check->exchange_declare(x, "direct", {.passive = true}), not_found);
}

TEST_F(engine_broker_test, nowait_cancel_returns_after_the_handler_in_flight_finished) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  const std::string q = declare_queue(*ch);
  std::atomic<bool> started{false}, finished{false};
  const std::string tag = ch->basic_consume(q, [&](delivery& d) {
    started.store(true);
    std::this_thread::sleep_for(300ms);
    d.ack();
    finished.store(true);
  });
  codec::basic_properties props;
  ASSERT_EQ(ch->try_publish("", q, props, "slow"), publish_status::ok);
  ASSERT_TRUE(wait_until([&] { return started.load(); }));
  ch->basic_cancel(tag, /*nowait=*/true);
  EXPECT_TRUE(finished.load());
  EXPECT_TRUE(ch->is_open());
}

TEST_F(engine_broker_test, nowait_error_closes_the_channel_and_the_next_call_throws_it) {
  auto c = engine_->connect(broker_options());
  auto ch = c->open_channel();
  ch->queue_declare(unique_name("missing"), {.passive = true, .nowait = true});  // returns
  EXPECT_THROW(ch->basic_qos(0, 1, false), not_found);
  EXPECT_FALSE(ch->is_open());
  EXPECT_TRUE(c->is_open());
}

// Raises the memory alarm on a RabbitMQ node of the test's own (tests/support/rabbit_node.h):
// the alarm is node-wide and must never block the shared broker other tests use. The node is
// deleted after the test, alarm and queues with it.
class engine_blocked_test : public ::testing::Test {
 protected:
  void SetUp() override { node_ = std::make_unique<test::rabbit_node>(); }
  void TearDown() override {
    engine_.reset();  // its connections close while the node still answers
    node_.reset();
  }
  connection_options node_options() const {
    connection_options o = broker_options();
    o.host = node_->host();
    return o;
  }

  std::unique_ptr<test::rabbit_node> node_;
  std::unique_ptr<engine> engine_;
};

TEST_F(engine_blocked_test, memory_alarm_blocks_publishers_with_bounded_memory_then_resumes) {
  engine_options eo;
  eo.max_outgoing_bytes = 256 * 1024;
  engine_ = std::make_unique<engine>(eo);
  auto c = engine_->connect(node_options());
  std::atomic<int> blocked_events{0}, unblocked_events{0};
  c->on_blocked([&](std::string_view) { ++blocked_events; });
  c->on_unblocked([&] { ++unblocked_events; });
  auto setup = c->open_channel();
  const std::string q = unique_name("async");
  setup->queue_declare(q, {.auto_delete = false});
  auto ch = c->open_channel();
  ch->confirm_select(100000);
  node_->raise_memory_alarm();
  codec::basic_properties props;
  const std::string body(1024, 'm');
  std::atomic<int> acked{0}, failed{0};
  auto on_confirm = [&](const confirm_result& r) {
    (r.what == confirm_result::outcome::ack ? acked : failed)++;
  };
  int accepted = 0;
  std::size_t max_outgoing = 0;
  // RabbitMQ blocks a connection when it publishes during the alarm.
  publish_status s = publish_status::ok;
  const auto give_up = clock_type::now() + 30s;
  while (clock_type::now() < give_up) {
    s = ch->publish("", q, props, body, clock_type::now() + 100ms, {}, on_confirm);
    if (s == publish_status::ok) ++accepted;
    max_outgoing = std::max(max_outgoing, c->outgoing_bytes());
    if (s == publish_status::blocked || s == publish_status::timeout) break;
  }
  EXPECT_TRUE(s == publish_status::blocked || s == publish_status::timeout) << to_string(s);
  EXPECT_LE(max_outgoing, eo.max_outgoing_bytes + 2 * body.size());
  EXPECT_TRUE(wait_until([&] { return c->blocked(); }, 10s));
  EXPECT_EQ(ch->try_publish("", q, props, body), publish_status::blocked);
  const auto t0 = clock_type::now();
  EXPECT_EQ(ch->publish("", q, props, body, t0 + 200ms), publish_status::timeout);
  EXPECT_GE(clock_type::now() - t0, 200ms);
  EXPECT_GE(blocked_events.load(), 1);

  node_->clear_memory_alarm();
  EXPECT_TRUE(wait_until([&] { return !c->blocked(); }, 30s));
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(ch->publish("", q, props, body, clock_type::now() + 10s, {}, on_confirm),
              publish_status::ok);
    ++accepted;
  }
  EXPECT_TRUE(ch->wait_for_confirms(clock_type::now() + 30s));
  EXPECT_EQ(acked.load(), accepted);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GE(unblocked_events.load(), 1);
}

}  // namespace
}  // namespace warren::async
