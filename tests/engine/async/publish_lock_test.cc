// The publish lock: mutual exclusion under contention (TSan checks the happens-before its
// release store gives), try_lock, and waiting on it with std::condition_variable_any as the
// engine's publish(deadline) and wait_for_confirms do.
#include "engine/async/publish_lock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace warren::async::detail {
namespace {

TEST(publish_lock, excludes_more_threads_than_cores) {
  // More threads than the machine's cores, so that holders are preempted while holding it and
  // waiters take the yielding path.
  constexpr int threads = 8;
  constexpr int rounds = 20000;
  publish_lock lock;
  long counter = 0;  // plain: only the lock protects it
  std::vector<long> seen;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < rounds; ++i) {
        std::lock_guard g(lock);
        const long before = counter;
        counter = before + 1;
        if (i % 5000 == 0) seen.push_back(counter);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter, long{threads} * rounds);
  EXPECT_EQ(seen.size(), std::size_t{threads} * (rounds / 5000));
}

TEST(publish_lock, try_lock_fails_while_held_and_succeeds_after) {
  publish_lock lock;
  lock.lock();
  bool got = true;
  std::thread([&] { got = lock.try_lock(); }).join();
  EXPECT_FALSE(got);
  lock.unlock();
  std::thread([&] {
    got = lock.try_lock();
    if (got) lock.unlock();
  }).join();
  EXPECT_TRUE(got);
}

TEST(publish_lock, condition_variable_any_waits_without_holding_it) {
  publish_lock lock;
  std::condition_variable_any cv;
  bool ready = false;
  std::thread waiter([&] {
    std::unique_lock g(lock);
    const bool woke = cv.wait_for(g, std::chrono::seconds(30), [&] { return ready; });
    EXPECT_TRUE(woke);
  });
  // The waiter must release the lock while it waits, or this would never get it.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  {
    std::lock_guard g(lock);
    ready = true;
  }
  cv.notify_all();
  waiter.join();
}

}  // namespace
}  // namespace warren::async::detail
