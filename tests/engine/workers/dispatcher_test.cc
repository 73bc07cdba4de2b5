#include "engine/workers/dispatcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace warren::workers {
namespace {

using namespace std::chrono_literals;

// Raises `peak` to the number of handlers running at once.
struct overlap_meter {
  std::atomic<int> active{0};
  std::atomic<int> peak{0};
  void enter() {
    const int now = active.fetch_add(1) + 1;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  void leave() { active.fetch_sub(1); }
};

TEST(worker_pool, has_the_requested_size_or_the_hardware_concurrency) {
  worker_pool two(2);
  EXPECT_EQ(two.size(), 2u);
  worker_pool automatic;
  EXPECT_EQ(automatic.size(), std::max(1u, std::thread::hardware_concurrency()));
}

TEST(mailbox, concurrency_one_handles_a_million_items_strictly_in_post_order) {
  worker_pool pool(2);
  constexpr std::uint64_t items = 1'000'000;
  // Plain variables: only ever touched by one handler at a time, which TSan checks.
  std::uint64_t expected = 0;
  std::uint64_t out_of_order = 0;
  overlap_meter meter;
  {
    mailbox<std::uint64_t> box(pool, [&](std::uint64_t& item) {
      meter.enter();
      if (item != expected) ++out_of_order;
      expected = item + 1;
      meter.leave();
    });
    for (std::uint64_t i = 0; i < items; ++i) box.post(std::uint64_t(i));
    box.drain();
    EXPECT_EQ(box.pending(), 0u);
  }
  EXPECT_EQ(expected, items);
  EXPECT_EQ(out_of_order, 0u);
  EXPECT_EQ(meter.peak.load(), 1);
}

TEST(mailbox, concurrency_one_keeps_order_across_bulk_posts_and_several_mailboxes) {
  worker_pool pool(2);
  constexpr int boxes = 4;
  constexpr std::uint64_t per_box = 50'000;
  std::vector<std::uint64_t> expected(boxes, 0);
  std::vector<std::uint64_t> wrong(boxes, 0);
  std::vector<std::unique_ptr<mailbox<std::uint64_t>>> mailboxes;
  for (int b = 0; b < boxes; ++b) {
    mailboxes.push_back(std::make_unique<mailbox<std::uint64_t>>(pool, [&, b](std::uint64_t& item) {
      if (item != expected[b]) ++wrong[b];
      expected[b] = item + 1;
    }));
  }
  std::vector<std::uint64_t> chunk(100);
  for (std::uint64_t first = 0; first < per_box; first += chunk.size()) {
    for (int b = 0; b < boxes; ++b) {
      for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = first + i;
      mailboxes[b]->post_bulk(chunk.begin(), chunk.size());
    }
  }
  for (auto& box : mailboxes) box->drain();
  for (int b = 0; b < boxes; ++b) {
    EXPECT_EQ(expected[b], per_box) << "mailbox " << b;
    EXPECT_EQ(wrong[b], 0u) << "mailbox " << b;
  }
}

TEST(mailbox, concurrency_four_runs_handlers_at_once_and_never_more_than_four) {
  worker_pool pool(4);
  overlap_meter meter;
  std::atomic<int> handled{0};
  mailbox<int> box(
      pool,
      [&](int&) {
        meter.enter();
        // Hold the worker until a second handler has started (or give up after a while: the
        // assertion below then fails instead of the test hanging).
        const auto give_up = std::chrono::steady_clock::now() + 5s;
        while (meter.peak.load() < 2 && std::chrono::steady_clock::now() < give_up) {
          std::this_thread::sleep_for(100us);
        }
        std::this_thread::sleep_for(200us);
        meter.leave();
        handled.fetch_add(1);
      },
      4);
  for (int i = 0; i < 200; ++i) box.post(int(i));
  box.drain();
  EXPECT_EQ(handled.load(), 200);
  EXPECT_GE(meter.peak.load(), 2);
  EXPECT_LE(meter.peak.load(), 4);
}

TEST(mailbox, concurrency_two_on_a_larger_pool_stays_at_two) {
  worker_pool pool(4);
  overlap_meter meter;
  mailbox<int> box(
      pool,
      [&](int&) {
        meter.enter();
        std::this_thread::sleep_for(100us);
        meter.leave();
      },
      2);
  for (int i = 0; i < 400; ++i) box.post(int(i));
  box.drain();
  EXPECT_LE(meter.peak.load(), 2);
}

// Bursts with pauses make tasks run out of work and stop while the producer posts: the race a
// lost wake-up would lose items (drain would then hang, and the test time out).
TEST(mailbox, bursts_never_lose_an_item_at_any_concurrency) {
  worker_pool pool(2);
  for (unsigned concurrency : {1u, 2u, 3u}) {
    std::atomic<std::uint64_t> handled{0};
    mailbox<int> box(
        pool, [&](int&) { handled.fetch_add(1); }, concurrency);
    std::uint64_t posted = 0;
    for (int burst = 0; burst < 2000; ++burst) {
      for (int i = 0; i <= burst % 7; ++i, ++posted) box.post(int(i));
      if (burst % 3 == 0) std::this_thread::yield();
    }
    box.drain();
    EXPECT_EQ(handled.load(), posted) << "concurrency " << concurrency;
  }
}

// A mailbox with a long backlog goes to the back of the pool's queue after each batch, so a
// mailbox posted to later is served long before the backlog is done, even on one worker.
TEST(mailbox, a_busy_mailbox_does_not_starve_another_on_the_same_worker) {
  worker_pool pool(1);
  constexpr int backlog = 4000;
  std::atomic<int> busy_handled{0};
  std::atomic<int> busy_handled_when_other_ran{-1};
  mailbox<int> busy(pool, [&](int&) {
    std::this_thread::sleep_for(20us);
    busy_handled.fetch_add(1);
  });
  mailbox<int> other(pool, [&](int&) { busy_handled_when_other_ran.store(busy_handled.load()); });
  for (int i = 0; i < backlog; ++i) busy.post(int(i));
  other.post(0);
  other.drain();
  EXPECT_GE(busy_handled_when_other_ran.load(), 0);
  EXPECT_LT(busy_handled_when_other_ran.load(), 1024);  // a few batches of 256
  busy.drain();
  EXPECT_EQ(busy_handled.load(), backlog);
}

TEST(mailbox, drain_waits_for_slow_handlers) {
  worker_pool pool(2);
  std::atomic<int> handled{0};
  mailbox<int> box(pool, [&](int&) {
    std::this_thread::sleep_for(1ms);
    handled.fetch_add(1);
  });
  for (int i = 0; i < 50; ++i) box.post(int(i));
  EXPECT_GT(box.pending(), 0u);
  box.drain();
  EXPECT_EQ(handled.load(), 50);
  EXPECT_EQ(box.pending(), 0u);
  box.drain();  // nothing left: returns at once
  box.post(1);
  box.drain();
  EXPECT_EQ(handled.load(), 51);
}

TEST(mailbox, handler_exceptions_go_to_on_error_and_handling_continues) {
  worker_pool pool(2);
  std::mutex mutex;
  std::vector<std::string> errors;
  std::atomic<int> handled{0};
  mailbox<int> box(
      pool,
      [&](int& item) {
        handled.fetch_add(1);
        if (item % 10 == 0) throw std::runtime_error("bad item " + std::to_string(item));
      },
      1,
      [&](std::exception_ptr error) {
        try {
          std::rethrow_exception(error);
        } catch (const std::runtime_error& e) {
          std::lock_guard<std::mutex> lock(mutex);
          errors.push_back(e.what());
        }
      });
  for (int i = 0; i < 100; ++i) box.post(int(i));
  box.drain();
  EXPECT_EQ(handled.load(), 100);
  std::lock_guard<std::mutex> lock(mutex);
  ASSERT_EQ(errors.size(), 10u);
  EXPECT_EQ(errors.front(), "bad item 0");
  EXPECT_EQ(errors.back(), "bad item 90");
  EXPECT_EQ(box.failures(), 0u);
}

TEST(mailbox, exceptions_without_on_error_and_from_on_error_are_counted) {
  worker_pool pool(2);
  mailbox<int> quiet(
      pool, [](int&) { throw 42; }, 3);
  mailbox<int> loud(
      pool, [](int&) { throw std::logic_error("x"); }, 1,
      [](std::exception_ptr) { throw std::runtime_error("on_error failed too"); });
  for (int i = 0; i < 30; ++i) {
    quiet.post(int(i));
    loud.post(int(i));
  }
  quiet.drain();
  loud.drain();
  EXPECT_EQ(quiet.failures(), 30u);
  EXPECT_EQ(loud.failures(), 30u);
}

TEST(mailbox, destruction_handles_every_pending_item_first) {
  worker_pool pool(2);
  auto handled = std::make_shared<std::atomic<int>>(0);
  auto after_destruction = std::make_shared<std::atomic<bool>>(false);
  auto called_late = std::make_shared<std::atomic<int>>(0);
  {
    mailbox<std::string> box(pool, [=](std::string& item) {
      if (after_destruction->load()) called_late->fetch_add(1);
      if (!item.empty()) std::this_thread::sleep_for(20us);
      handled->fetch_add(1);
    });
    for (int i = 0; i < 2000; ++i) box.post(std::string(64, 'x'));
  }
  after_destruction->store(true);
  EXPECT_EQ(handled->load(), 2000);
  std::this_thread::sleep_for(5ms);
  EXPECT_EQ(called_late->load(), 0);
}

// Like a delivery holding its receive buffer: move-only, no default constructor.
class owned_item {
 public:
  explicit owned_item(int value) : value_(std::make_unique<int>(value)) {}
  int value() const { return *value_; }

 private:
  std::unique_ptr<int> value_;
};

TEST(mailbox, move_only_items_without_default_constructor_are_handled_and_released) {
  worker_pool pool(2);
  std::uint64_t sum = 0;
  {
    mailbox<owned_item> box(pool, [&](owned_item& item) { sum += std::uint64_t(item.value()); });
    for (int i = 1; i <= 1000; ++i) box.post(owned_item(i));
    std::vector<owned_item> bulk;
    for (int i = 1001; i <= 1100; ++i) bulk.emplace_back(i);
    box.post_bulk(bulk.begin(), bulk.size());
  }
  EXPECT_EQ(sum, 1100u * 1101u / 2);  // ASan reports any item not released
}

TEST(mailbox, many_short_lived_mailboxes_on_one_pool) {
  worker_pool pool(2);
  std::atomic<int> handled{0};
  for (int round = 0; round < 200; ++round) {
    mailbox<int> box(
        pool, [&](int&) { handled.fetch_add(1); }, 1 + round % 3);
    for (int i = 0; i < 10; ++i) box.post(int(i));
  }
  EXPECT_EQ(handled.load(), 2000);
}

}  // namespace
}  // namespace warren::workers
