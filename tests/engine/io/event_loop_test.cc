#include "engine/io/event_loop.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace warren::io {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

struct pair {
  unique_fd a, b;
};

pair make_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

TEST(event_loop, a_readable_socket_is_reported_with_its_tag) {
  event_loop loop;
  pair p = make_pair();
  int tag = 0;
  ASSERT_FALSE(loop.add(p.a.get(), event_loop::readable, &tag));
  event_loop::event ev[4];
  EXPECT_EQ(loop.wait(ev, 4, clock::now()), 0) << "nothing to read yet";
  ASSERT_EQ(::write(p.b.get(), "x", 1), 1);
  ASSERT_EQ(loop.wait(ev, 4, clock::now() + 10s), 1);
  EXPECT_EQ(ev[0].tag, &tag);
  EXPECT_TRUE(ev[0].readable);
  EXPECT_FALSE(ev[0].writable);
}

TEST(event_loop, a_hangup_reads_as_readable) {
  event_loop loop;
  pair p = make_pair();
  int tag = 0;
  loop.add(p.a.get(), event_loop::readable, &tag);
  p.b.reset();
  event_loop::event ev[4];
  ASSERT_EQ(loop.wait(ev, 4, clock::now() + 10s), 1);
  EXPECT_TRUE(ev[0].readable) << "a read will report the EOF";
}

TEST(event_loop, interest_can_change_to_writable_and_to_none) {
  event_loop loop;
  pair p = make_pair();
  int tag = 0;
  loop.add(p.a.get(), event_loop::none, &tag);
  event_loop::event ev[4];
  EXPECT_EQ(loop.wait(ev, 4, clock::now()), 0);
  ASSERT_FALSE(loop.modify(p.a.get(), event_loop::writable, &tag));
  ASSERT_EQ(loop.wait(ev, 4, clock::now() + 10s), 1);
  EXPECT_TRUE(ev[0].writable);
  loop.modify(p.a.get(), event_loop::none, &tag);
  EXPECT_EQ(loop.wait(ev, 4, clock::now()), 0);
  loop.remove(p.a.get());
  EXPECT_TRUE(loop.modify(p.a.get(), event_loop::readable, &tag)) << "no longer watched";
}

TEST(event_loop, wake_from_another_thread_ends_a_wait_without_an_event) {
  event_loop loop;
  std::thread waker([&] {
    std::this_thread::sleep_for(20ms);
    loop.wake();
  });
  event_loop::event ev[4];
  const auto start = clock::now();
  EXPECT_EQ(loop.wait(ev, 4, time_point::max()), 0) << "ends because of the wake-up";
  EXPECT_LT(clock::now() - start, 60s);
  waker.join();
  EXPECT_EQ(loop.wait(ev, 4, clock::now()), 0) << "the wake-up was consumed";
}

TEST(event_loop, several_wakes_before_a_wait_cost_one_wake_up) {
  event_loop loop;
  loop.wake();
  loop.wake();
  event_loop::event ev[4];
  EXPECT_EQ(loop.wait(ev, 4, clock::now() + 10s), 0);
  const auto start = clock::now();
  EXPECT_EQ(loop.wait(ev, 4, clock::now() + 30ms), 0);
  EXPECT_GE(clock::now() - start, 30ms) << "nothing left to wake the second wait early";
}

TEST(event_loop, a_deadline_ends_a_wait_no_earlier_than_it_says) {
  event_loop loop;
  event_loop::event ev[4];
  const auto start = clock::now();
  EXPECT_EQ(loop.wait(ev, 4, start + 2500us), 0);
  EXPECT_GE(clock::now() - start, 2500us);
}

TEST(event_loop, no_more_events_than_asked_for) {
  event_loop loop;
  pair p1 = make_pair(), p2 = make_pair();
  int t1 = 0, t2 = 0;
  loop.add(p1.a.get(), event_loop::writable, &t1);
  loop.add(p2.a.get(), event_loop::writable, &t2);
  event_loop::event ev[1];
  EXPECT_EQ(loop.wait(ev, 1, clock::now() + 10s), 1);
}

}  // namespace
}  // namespace warren::io
