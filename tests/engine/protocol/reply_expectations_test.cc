#include "engine/protocol/reply_expectations.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace warren::protocol {
namespace {

struct waiter : reply_waiter {
  int replies = 0;
  int failures = 0;
  void on_reply(command&) override { ++replies; }
  void on_failed(end_cause, const close_reason&) override { ++failures; }
};

using fifo = reply_expectations<int>;
constexpr std::uint32_t a_ok = 0x0032000B;  // queue.declare-ok
constexpr std::uint32_t b_ok = 0x00320015;  // queue.bind-ok

TEST(reply_expectations, the_oldest_expectation_owns_the_next_reply) {
  fifo f;
  auto w1 = std::make_shared<waiter>(), w2 = std::make_shared<waiter>();
  f.push(a_ok, w1, 1);
  f.push(a_ok, w2, 2);
  fifo::entry e;
  ASSERT_EQ(f.take(a_ok, e), fifo::match::answered);
  EXPECT_EQ(e.waiter, w1);
  EXPECT_EQ(e.effect, 1);
  ASSERT_EQ(f.take(a_ok, e), fifo::match::answered);
  EXPECT_EQ(e.waiter, w2);
  EXPECT_TRUE(f.empty());
}

TEST(reply_expectations, a_reply_that_answers_not_the_oldest_changes_nothing) {
  fifo f;
  auto w = std::make_shared<waiter>();
  f.push(a_ok, w);
  fifo::entry e;
  EXPECT_EQ(f.take(b_ok, e), fifo::match::none);
  EXPECT_EQ(f.size(), 1u);
  fifo empty;
  EXPECT_EQ(empty.take(a_ok, e), fifo::match::none);
}

TEST(reply_expectations, an_alternative_reply_id_answers_too) {
  fifo f;
  f.push(0x003C0047, std::make_shared<waiter>(), 0, 0x003C0048);  // get-ok or get-empty
  fifo::entry e;
  EXPECT_EQ(f.take(0x003C0048, e), fifo::match::answered);
}

TEST(reply_expectations, an_abandoned_call_keeps_its_place_and_its_reply_is_dropped) {
  fifo f;
  auto gave_up = std::make_shared<waiter>(), later = std::make_shared<waiter>();
  f.push(a_ok, gave_up, 1);
  f.push(a_ok, later, 2);
  EXPECT_TRUE(f.abandon(gave_up.get()));
  EXPECT_EQ(gave_up.use_count(), 1) << "the waiter is released at once";
  EXPECT_EQ(f.waiting(), 1u);
  fifo::entry e;
  ASSERT_EQ(f.take(a_ok, e), fifo::match::dropped);
  EXPECT_EQ(e.waiter, nullptr);
  EXPECT_EQ(e.effect, 1) << "the effect comes back, for the late reply's bookkeeping";
  ASSERT_EQ(f.take(a_ok, e), fifo::match::answered);
  EXPECT_EQ(e.waiter, later);
}

TEST(reply_expectations, abandoning_an_unknown_or_answered_waiter_is_refused) {
  fifo f;
  auto w = std::make_shared<waiter>();
  EXPECT_FALSE(f.abandon(w.get()));
  f.push(a_ok, w);
  fifo::entry e;
  f.take(a_ok, e);
  EXPECT_FALSE(f.abandon(w.get()));
}

TEST(reply_expectations, fail_all_pops_every_expectation_oldest_first_and_keeps_new_ones) {
  fifo f;
  f.push(a_ok, std::make_shared<waiter>(), 1);
  f.push(b_ok, std::make_shared<waiter>(), 2);
  std::vector<int> seen;
  f.fail_all([&](fifo::entry& e) {
    seen.push_back(e.effect);
    if (e.effect == 2) f.push(a_ok, nullptr, 3);  // a new life's call, pushed meanwhile
  });
  EXPECT_EQ(seen, (std::vector<int>{1, 2}));
  EXPECT_EQ(f.size(), 1u);
}

}  // namespace
}  // namespace warren::protocol
