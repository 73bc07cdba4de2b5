#include "engine/workers/dispatcher.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <tbb/parallel_for.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace warren::workers {
namespace {

using namespace std::chrono_literals;
using hosting = worker_pool::hosting;

// Every mailbox test runs on both hostings: TBB's threads (what the engine uses), and std::threads,
// the only ones ThreadSanitizer sees into (tests/tsan.supp hides races with a libtbb frame).
class mailbox_test : public ::testing::TestWithParam<hosting> {
 protected:
  static hosting where() { return GetParam(); }
};

std::string hosting_name(const ::testing::TestParamInfo<hosting>& info) {
  return info.param == hosting::tbb ? "tbb" : "threads";
}

INSTANTIATE_TEST_SUITE_P(hostings, mailbox_test, ::testing::Values(hosting::tbb, hosting::threads),
                         hosting_name);

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Waits until `done` holds or `limit` passes; a lost wake-up then fails the test instead of hanging
// it.
template <class Done>
bool wait_until(Done done, std::chrono::milliseconds limit = 20s) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(100us);
  }
  return true;
}

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
  worker_pool three(3, hosting::threads);
  EXPECT_EQ(three.size(), 3u);
}

TEST_P(mailbox_test, concurrency_one_handles_a_million_items_strictly_in_post_order) {
  worker_pool pool(2, where());
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

TEST_P(mailbox_test, concurrency_one_keeps_order_across_bulk_posts_and_several_mailboxes) {
  worker_pool pool(2, where());
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

TEST_P(mailbox_test, concurrency_four_runs_handlers_at_once_and_never_more_than_four) {
  worker_pool pool(4, where());
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

TEST_P(mailbox_test, concurrency_two_on_a_larger_pool_stays_at_two) {
  worker_pool pool(4, where());
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
TEST_P(mailbox_test, bursts_never_lose_an_item_at_any_concurrency) {
  worker_pool pool(2, where());
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
TEST_P(mailbox_test, a_busy_mailbox_does_not_starve_another_on_the_same_worker) {
  worker_pool pool(1, where());
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

TEST_P(mailbox_test, drain_waits_for_slow_handlers) {
  worker_pool pool(2, where());
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

TEST_P(mailbox_test, handler_exceptions_go_to_on_error_and_handling_continues) {
  worker_pool pool(2, where());
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

TEST_P(mailbox_test, after_batch_counts_every_handled_item_before_drain_returns) {
  for (unsigned concurrency : {1u, 3u}) {
    worker_pool pool(2, where());
    std::atomic<int> handled{0};
    std::atomic<std::uint64_t> batched{0}, runs{0}, empty_runs{0};
    mailbox<int> box(
        pool,
        [&](int& item) {
          handled.fetch_add(1);
          if (item % 7 == 0) throw std::runtime_error("counted all the same");
        },
        concurrency, [](std::exception_ptr) {},
        [&](std::size_t n) {
          if (n == 0) empty_runs.fetch_add(1);
          batched.fetch_add(n);
          runs.fetch_add(1);
        });
    for (int round = 0; round < 20; ++round) {
      std::vector<int> items(500);
      for (int i = 0; i < 500; ++i) items[std::size_t(i)] = round * 500 + i;
      box.post_bulk(items.begin(), items.size());
      if (round % 4 == 0) box.post(7);
      // drain() returns only after the runs that handled these items were counted.
      box.drain();
      const std::uint64_t posted = std::uint64_t(round + 1) * 500 + std::uint64_t(round / 4 + 1);
      EXPECT_EQ(batched.load(), posted) << "concurrency " << concurrency << " round " << round;
    }
    EXPECT_EQ(std::uint64_t(handled.load()), batched.load());
    EXPECT_EQ(empty_runs.load(), 0u);
    EXPECT_GE(runs.load(), 20u);
    EXPECT_LT(runs.load(), batched.load());  // runs, not items
  }
}

TEST_P(mailbox_test, exceptions_without_on_error_and_from_on_error_are_counted) {
  worker_pool pool(2, where());
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

TEST_P(mailbox_test, destruction_handles_every_pending_item_first) {
  worker_pool pool(2, where());
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

TEST_P(mailbox_test, move_only_items_without_default_constructor_are_handled_and_released) {
  worker_pool pool(2, where());
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

TEST_P(mailbox_test, many_short_lived_mailboxes_on_one_pool) {
  worker_pool pool(2, where());
  std::atomic<int> handled{0};
  for (int round = 0; round < 200; ++round) {
    mailbox<int> box(
        pool, [&](int&) { handled.fetch_add(1); }, 1 + round % 3);
    for (int i = 0; i < 10; ++i) box.post(int(i));
  }
  EXPECT_EQ(handled.load(), 2000);
}

// Several producers, each posting to its own mailboxes in bursts of random size with random
// pauses, some long enough for every worker to park: each post then races a worker parking, or a
// worker being claimed, which is where a lost wake-up would strand items (the wait then fails).
TEST_P(mailbox_test, bursts_from_several_producers_with_pauses_never_lose_an_item) {
  for (unsigned threads : {1u, 2u, 3u}) {
    worker_pool pool(threads, where());
    constexpr int producers = 3;
    constexpr int boxes_per_producer = 2;
    constexpr int bursts = 300;
    struct box_state {
      std::unique_ptr<mailbox<std::uint64_t>> box;
      std::atomic<std::uint64_t> handled{0};
      std::uint64_t expected = 0;  // concurrency 1 only: one handler at a time
      std::atomic<std::uint64_t> out_of_order{0};
      unsigned concurrency = 1;
      std::uint64_t posted = 0;  // its producer's
    };
    std::vector<box_state> states(producers * boxes_per_producer);
    for (std::size_t b = 0; b < states.size(); ++b) {
      box_state& st = states[b];
      st.concurrency = b % 3 == 2 ? 2 : 1;
      st.box = std::make_unique<mailbox<std::uint64_t>>(
          pool,
          [&st](std::uint64_t& item) {
            if (st.concurrency == 1) {
              if (item != st.expected) st.out_of_order.fetch_add(1);
              st.expected = item + 1;
            }
            st.handled.fetch_add(1);
          },
          st.concurrency);
    }
    std::vector<std::thread> posting;
    for (int p = 0; p < producers; ++p) {
      posting.emplace_back([&, p] {
        std::mt19937 random(unsigned(p) * 7919u + threads);
        std::vector<std::uint64_t> chunk;
        for (int burst = 0; burst < bursts; ++burst) {
          box_state& st = states[std::size_t(p * boxes_per_producer) + random() % 2];
          const std::size_t n = 1 + random() % 8;
          chunk.clear();
          for (std::size_t i = 0; i < n; ++i) chunk.push_back(st.posted + i);
          if (random() % 2 == 0) {
            st.box->post_bulk(chunk.begin(), n);
          } else {
            for (std::uint64_t& item : chunk) st.box->post(std::uint64_t(item));
          }
          st.posted += n;
          switch (random() % 4) {
            case 0:
              break;
            case 1:
              std::this_thread::yield();
              break;
            default:
              std::this_thread::sleep_for(std::chrono::microseconds(20 + random() % 300));
          }
        }
      });
    }
    for (std::thread& t : posting) t.join();
    for (box_state& st : states) {
      EXPECT_TRUE(wait_until([&] { return st.handled.load() == st.posted; }))
          << "threads " << threads << ": handled " << st.handled.load() << " of " << st.posted;
      EXPECT_EQ(st.out_of_order.load(), 0u) << "threads " << threads;
    }
    for (box_state& st : states) st.box.reset();
  }
}

// Two mailboxes made ready one after the other get two workers: the second submit wakes a second
// worker because one waking worker can take only one mailbox.
TEST_P(mailbox_test, two_ready_mailboxes_get_two_workers) {
  worker_pool pool(2, where());
  overlap_meter meter;
  auto handler = [&](int&) {
    meter.enter();
    wait_until([&] { return meter.peak.load() >= 2; }, 5s);
    meter.leave();
  };
  for (int round = 0; round < 20; ++round) {
    meter.peak.store(0);
    mailbox<int> first(pool, handler);
    mailbox<int> second(pool, handler);
    first.post(1);
    second.post(2);
    first.drain();
    second.drain();
    EXPECT_EQ(meter.peak.load(), 2) << "round " << round;
  }
}

// Items posted one at a time with a pause after each, as a broker's trickle: the workers must
// sleep in between, not spin or yield until the next post (the old TBB hand-off burned most of a
// core per worker here).
TEST_P(mailbox_test, workers_sleep_between_posts_of_a_trickle) {
  worker_pool pool(2, where());
  std::atomic<int> handled{0};
  mailbox<int> box(pool, [&](int&) { handled.fetch_add(1); });
  box.post(0);
  box.drain();
  rusage thread_before{};
  getrusage(RUSAGE_THREAD, &thread_before);
  const double process_before = process_cpu_seconds();
  const auto wall_before = std::chrono::steady_clock::now();
  constexpr int posts = 400;
  for (int i = 0; i < posts; ++i) {
    box.post(int(i));
    std::this_thread::sleep_for(200us);
  }
  box.drain();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_before).count();
  rusage thread_after{};
  getrusage(RUSAGE_THREAD, &thread_after);
  const auto seconds = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  const double posting_thread = seconds(thread_after.ru_utime) + seconds(thread_after.ru_stime) -
                                seconds(thread_before.ru_utime) - seconds(thread_before.ru_stime);
  const double pool_cpu = process_cpu_seconds() - process_before - posting_thread;
  EXPECT_EQ(handled.load(), posts + 1);
  // About 2 us of CPU per post here (2% of the wall time), ten times that under the sanitizers.
  EXPECT_LT(pool_cpu, 0.25 * wall) << "pool CPU " << pool_cpu << " s over " << wall << " s";

  // And an idle pool uses nothing at all.
  const double idle_before = process_cpu_seconds();
  std::this_thread::sleep_for(200ms);
  EXPECT_LT(process_cpu_seconds() - idle_before, 0.02);
}

// A handler that waits inside TBB (a task_group, a parallel_for) finishes: it runs isolated, so
// the wait cannot pick up a worker loop, which would never return.
TEST_P(mailbox_test, handlers_may_use_tbb_themselves) {
  worker_pool pool(2, where());
  std::atomic<int> handled{0};
  std::atomic<int> inner{0};
  mailbox<int> box(pool, [&](int&) {
    tbb::task_group group;
    group.run([&] { inner.fetch_add(1); });
    group.wait();
    tbb::parallel_for(0, 64, [&](int) { inner.fetch_add(1); });
    handled.fetch_add(1);
  });
  for (int i = 0; i < 100; ++i) box.post(int(i));
  EXPECT_TRUE(wait_until([&] { return handled.load() == 100; }));
  box.drain();
  EXPECT_EQ(inner.load(), 100 * 65);
}

// Pools alive at the same time add up: each gets all its threads at once even when together they
// exceed the machine (TBB would otherwise share its default workers among them).
TEST_P(mailbox_test, several_pools_each_get_all_their_threads) {
  constexpr int pools = 3;
  constexpr int threads = 2;
  std::vector<std::unique_ptr<worker_pool>> all;
  for (int i = 0; i < pools; ++i) all.push_back(std::make_unique<worker_pool>(threads, where()));
  overlap_meter meter;
  std::vector<std::unique_ptr<mailbox<int>>> boxes;
  for (auto& pool : all) {
    boxes.push_back(std::make_unique<mailbox<int>>(
        *pool,
        [&](int&) {
          meter.enter();
          wait_until([&] { return meter.peak.load() >= pools * threads; }, 10s);
          meter.leave();
        },
        threads));
  }
  for (auto& box : boxes) {
    for (int i = 0; i < threads; ++i) box->post(int(i));
  }
  for (auto& box : boxes) box->drain();
  EXPECT_EQ(meter.peak.load(), pools * threads);
  boxes.clear();
}

// A pool destroyed straight after construction, before TBB may have started its loops.
TEST_P(mailbox_test, pools_destroyed_at_once_or_after_one_item) {
  for (int round = 0; round < 50; ++round) {
    worker_pool idle(2, where());
    worker_pool used(1 + round % 3, where());
    std::atomic<int> handled{0};
    {
      mailbox<int> box(used, [&](int&) { handled.fetch_add(1); });
      box.post(1);
    }
    EXPECT_EQ(handled.load(), 1);
  }
}

}  // namespace
}  // namespace warren::workers
