// Stress for ThreadSanitizer against the real broker: many publisher threads on one channel and
// on several, many consumers with acks from worker threads, and channels closed while threads
// publish on them. Counts are modest so the test stays quick under TSan; what matters is that
// every operation crosses threads.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "engine/async/engine.h"
#include "tests/broker_env.h"
#include "tests/engine/client/test_support.h"

namespace warren::async {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using test::broker_options;
using test::unique_name;

class engine_stress_test : public test::broker_test {
 protected:
  void TearDown() override {
    for (const auto& q : queues_) test::delete_queue_quietly(q);
  }
  std::vector<std::string> queues_;
};

TEST_F(engine_stress_test, many_publishers_many_consumers_acks_from_workers) {
  engine e({.io_threads = 2, .workers = 4});
  auto pub = e.connect(broker_options());
  auto sub = e.connect(broker_options());
  auto setup = pub->open_channel();
  constexpr int queue_count = 4, consumers_per_queue = 2;
  for (int i = 0; i < queue_count; ++i) {
    queues_.push_back(unique_name("stress"));
    warren::queue_declare_options o;
    o.auto_delete = false;
    setup->queue_declare(queues_.back(), o);
  }
  std::atomic<int> received{0};
  std::vector<std::shared_ptr<channel>> consumer_channels;
  for (int i = 0; i < queue_count * consumers_per_queue; ++i) {
    auto ch = sub->open_channel();
    ch->basic_qos(0, 50, false);
    ch->basic_consume(
        queues_[i % queue_count],
        [&](delivery& d) {
          // Half the acks from a copy that outlives the handler.
          if (d.delivery_tag() % 2 == 0) {
            delivery copy = d;
            copy.ack();
          } else {
            d.ack();
          }
          ++received;
        },
        {}, {}, (i % 2 == 0) ? 1u : 3u);
    consumer_channels.push_back(ch);
  }
  auto shared = pub->open_channel();
  shared->confirm_select(200);
  constexpr int threads = 6, per_thread = 400;
  std::atomic<int> acked{0}, bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      // Even threads share one channel; odd ones have their own.
      std::shared_ptr<channel> ch = shared;
      if (t % 2 == 1) {
        ch = pub->open_channel();
        ch->confirm_select(100);
      }
      codec::basic_properties props;
      for (int i = 0; i < per_thread; ++i) {
        const auto s = ch->publish("", queues_[(t + i) % queue_count], props, "stress",
                                   clock_type::now() + 30s, {}, [&](const confirm_result& r) {
                                     (r.what == confirm_result::outcome::ack ? acked : bad)++;
                                   });
        if (s != publish_status::ok) ++bad;
      }
      EXPECT_TRUE(ch->wait_for_confirms(clock_type::now() + 60s));
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(acked.load(), threads * per_thread);
  EXPECT_EQ(bad.load(), 0);
  const auto until = clock_type::now() + 60s;
  while (received.load() < threads * per_thread && clock_type::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(received.load(), threads * per_thread);
  for (auto& ch : consumer_channels) ch->close();
  sub->close();
  pub->close();
}

TEST_F(engine_stress_test, closing_a_channel_while_threads_publish_completes_everything) {
  engine e({.io_threads = 1, .workers = 2});
  auto c = e.connect(broker_options());
  auto setup = c->open_channel();
  queues_.push_back(unique_name("stress"));
  warren::queue_declare_options o;
  o.auto_delete = false;
  setup->queue_declare(queues_.back(), o);
  for (int round = 0; round < 5; ++round) {
    auto ch = c->open_channel();
    ch->confirm_select(10000);
    std::atomic<int> accepted{0}, completed{0}, wrong{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&] {
        codec::basic_properties props;
        while (true) {
          const auto s =
              ch->try_publish("", queues_.back(), props, "x", {}, [&](const confirm_result& r) {
                if (r.what == confirm_result::outcome::timeout ||
                    r.what == confirm_result::outcome::in_doubt) {
                  ++wrong;
                }
                ++completed;
              });
          if (s == publish_status::ok) ++accepted;
          if (s == publish_status::closed) return;
          if (s != publish_status::ok) std::this_thread::yield();
        }
      });
    }
    while (accepted.load() < 300) std::this_thread::sleep_for(1ms);
    ch->close();
    for (auto& t : ts) t.join();
    EXPECT_FALSE(ch->is_open());
    EXPECT_EQ(completed.load(), accepted.load()) << "round " << round;
    EXPECT_EQ(wrong.load(), 0);
  }
  EXPECT_TRUE(c->is_open());
  c->close();
}

}  // namespace
}  // namespace warren::async
