#include "engine/async/publish_staging.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

namespace warren::async::detail {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

void stage(publish_staging& s, std::string_view bytes) {
  std::lock_guard lock(s.lock());
  std::memcpy(s.reserve(bytes.size()), bytes.data(), bytes.size());
  s.staged();
}

TEST(publish_staging, the_first_publish_into_an_empty_staging_asks_for_a_wake_up) {
  publish_staging s(1 << 20);
  EXPECT_FALSE(s.pending());
  std::lock_guard lock(s.lock());
  s.reserve(10);
  EXPECT_TRUE(s.staged());
  s.reserve(10);
  EXPECT_FALSE(s.staged()) << "already scheduled";
  EXPECT_TRUE(s.pending());
}

TEST(publish_staging, take_hands_over_the_staged_bytes_and_counts_them_unsent) {
  publish_staging s(1 << 20);
  out_buffer out;
  EXPECT_FALSE(s.take(out)) << "nothing staged";
  stage(s, "abc");
  stage(s, "def");
  ASSERT_TRUE(s.take(out));
  EXPECT_EQ(out.view(), "abcdef");
  EXPECT_FALSE(s.pending());
  EXPECT_EQ(s.outgoing(), 6u);
  s.written(6);
  EXPECT_EQ(s.outgoing(), 0u);
}

TEST(publish_staging, a_taken_spare_becomes_the_next_staging) {
  publish_staging s(1 << 20);
  stage(s, "x");
  out_buffer spare;
  spare.grow(8192);
  spare.size = 0;
  const char* spare_memory = spare.data.get();
  ASSERT_TRUE(s.take(spare));
  EXPECT_EQ(spare.view(), "x");
  stage(s, "y");
  out_buffer out;
  ASSERT_TRUE(s.take(out));
  EXPECT_EQ(out.data.get(), spare_memory) << "the producer reused the spare's memory";
}

TEST(publish_staging, room_is_refused_above_the_limit_unless_nothing_waits) {
  publish_staging s(100);
  std::lock_guard lock(s.lock());
  EXPECT_TRUE(s.has_room(1000)) << "one message larger than the limit goes when nothing waits";
  s.reserve(60);
  EXPECT_TRUE(s.has_room(40));
  EXPECT_FALSE(s.has_room(41));
  s.add_unsent(30);
  EXPECT_FALSE(s.has_room(20)) << "bytes in segments count too";
}

TEST(publish_staging, a_waiting_publisher_is_woken_by_notify_room) {
  publish_staging s(1 << 20);
  std::atomic<bool> woke{false};
  std::thread waiter([&] {
    std::unique_lock lock(s.lock());
    // Slices of at most 10 ms: loop until notified or the generous deadline.
    const auto deadline = clock::now() + 30s;
    while (!woke.load() && clock::now() < deadline) s.wait_for_room(lock, deadline);
  });
  std::this_thread::sleep_for(5ms);
  woke.store(true);
  s.notify_room();
  waiter.join();
  EXPECT_TRUE(woke.load());
}

TEST(publish_staging, clear_drops_what_is_staged_and_unsent) {
  publish_staging s(1 << 20);
  stage(s, "abc");
  s.add_unsent(7);
  s.clear();
  EXPECT_EQ(s.outgoing(), 0u);
  EXPECT_FALSE(s.pending());
}

TEST(publish_staging, blocked_is_readable_from_any_thread) {
  publish_staging s(1 << 20);
  EXPECT_FALSE(s.blocked());
  s.set_blocked(true);
  EXPECT_TRUE(s.blocked());
}

}  // namespace
}  // namespace warren::async::detail
