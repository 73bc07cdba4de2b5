// Proves the sanitizer configurations build and run threaded code that uses the two concurrency
// libraries warren depends on (Debian's libtbb and moodycamel's ConcurrentQueue), and that
// tests/tsan.supp silences only what comes from the uninstrumented libtbb.
#include <concurrentqueue/concurrentqueue.h>
#include <gtest/gtest.h>
#include <tbb/parallel_for.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <thread>
#include <vector>

namespace {

constexpr int producers = 4;
constexpr int per_producer = 20000;

TEST(tsan_smoke, moodycamel_queue_delivers_every_item_once_across_threads) {
  moodycamel::ConcurrentQueue<std::uint64_t> queue;
  std::atomic<int> producers_done{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) queue.enqueue(std::uint64_t(p) * per_producer + i);
      producers_done.fetch_add(1, std::memory_order_release);
    });
  }
  std::vector<int> seen(producers * per_producer, 0);
  std::uint64_t item = 0;
  std::size_t received = 0;
  for (;;) {
    // Read before dequeuing: once every producer had finished, an empty queue means all is drained.
    bool finished = producers_done.load(std::memory_order_acquire) == producers;
    if (queue.try_dequeue(item)) {
      // An out-of-range item shows up below as a missing one.
      if (item < seen.size()) ++seen[item];
      ++received;
    } else if (finished) {
      break;
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(received, seen.size());
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<long>(seen.size()));
}

TEST(tsan_smoke, tbb_task_group_results_are_visible_after_wait) {
  std::vector<std::uint64_t> partial(8, 0);
  tbb::task_group group;
  for (std::size_t t = 0; t < partial.size(); ++t) {
    group.run([&partial, t] {
      std::uint64_t sum = 0;
      for (std::uint64_t i = t * 1000; i < (t + 1) * 1000; ++i) sum += i;
      partial[t] = sum;
    });
  }
  group.wait();
  EXPECT_EQ(std::accumulate(partial.begin(), partial.end(), std::uint64_t{0}), 7999ull * 8000 / 2);
}

TEST(tsan_smoke, tbb_parallel_for_feeds_a_shared_moodycamel_queue) {
  moodycamel::ConcurrentQueue<int> queue;
  tbb::parallel_for(0, 10000, [&queue](int i) { queue.enqueue(i); });
  long long sum = 0;
  int v = 0;
  while (queue.try_dequeue(v)) sum += v;
  EXPECT_EQ(sum, 9999LL * 10000 / 2);
}

}  // namespace
