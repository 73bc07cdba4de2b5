#include "engine/protocol/consumer_table.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace warren::protocol {
namespace {

using verdict = consumer_table::unknown_verdict;

std::unique_ptr<consumer> make(std::string tag, bool no_ack = false) {
  auto c = std::make_unique<consumer>();
  c->tag = std::move(tag);
  c->no_ack = no_ack;
  return c;
}

TEST(consumer_table, finds_consumers_by_tag) {
  consumer_table t;
  consumer* a = make("a").release();
  t.add(std::unique_ptr<consumer>(a));
  t.add(make("b"));
  EXPECT_EQ(t.find("a"), a);
  EXPECT_EQ(t.find("a"), a) << "cached";
  EXPECT_NE(t.find("b"), nullptr);
  EXPECT_EQ(t.find("c"), nullptr);
  EXPECT_EQ(t.size(), 2u);
}

TEST(consumer_table, a_tag_added_again_returns_the_consumer_it_replaces) {
  consumer_table t;
  consumer* first = make("a").release();
  EXPECT_EQ(t.add(std::unique_ptr<consumer>(first)), nullptr);
  std::unique_ptr<consumer> replaced = t.add(make("a"));
  EXPECT_EQ(replaced.get(), first);
  EXPECT_NE(t.find("a"), first);
}

TEST(consumer_table, remove_hands_the_consumer_back_and_the_cache_forgets_it) {
  consumer_table t;
  t.add(make("a"));
  ASSERT_NE(t.find("a"), nullptr);
  std::unique_ptr<consumer> c = t.remove("a");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->tag, "a");
  EXPECT_EQ(t.find("a"), nullptr);
  EXPECT_EQ(t.remove("a"), nullptr);
}

TEST(consumer_table, an_unknown_tag_is_rejected_unless_a_no_ack_consumer_had_it) {
  consumer_table t;
  t.add(make("acked"));
  t.add(make("free", true));
  t.remove("acked");
  t.remove("free");
  EXPECT_EQ(t.on_unknown("acked"), verdict::reject);
  EXPECT_EQ(t.on_unknown("free"), verdict::drop);
  EXPECT_EQ(t.on_unknown("never"), verdict::reject);
}

TEST(consumer_table, a_pending_server_named_consume_drops_unknown_deliveries) {
  consumer_table t;
  t.named_consume_pending(+1);
  EXPECT_EQ(t.on_unknown("amq.ctag-1"), verdict::drop);
  t.named_consume_pending(-1);
  EXPECT_EQ(t.on_unknown("amq.ctag-1"), verdict::reject);
}

TEST(consumer_table, a_cancelled_tag_registered_again_is_no_longer_remembered) {
  consumer_table t;
  t.add(make("x", true));
  t.remove("x");
  t.add(make("x"));
  t.remove("x");  // not no-ack this time
  EXPECT_EQ(t.on_unknown("x"), verdict::reject);
}

TEST(consumer_table, cancelled_tags_are_remembered_up_to_the_bound_oldest_first_out) {
  consumer_table t(4);
  for (int i = 0; i < 100000; ++i) {
    t.add(make("t" + std::to_string(i), true));
    t.remove("t" + std::to_string(i));
  }
  EXPECT_EQ(t.cancelled_remembered(), 4u);
  EXPECT_EQ(t.on_unknown("t99999"), verdict::drop);
  EXPECT_EQ(t.on_unknown("t99996"), verdict::drop);
  EXPECT_EQ(t.on_unknown("t99995"), verdict::reject) << "beyond the memory";
}

TEST(consumer_table, clear_hands_back_every_consumer_and_forgets_everything) {
  consumer_table t;
  t.add(make("b"));
  t.add(make("a"));
  t.remember_cancelled("gone");
  t.named_consume_pending(+1);
  std::vector<std::string> seen;
  t.clear([&](std::unique_ptr<consumer> c) { seen.push_back(c->tag); });
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.cancelled_remembered(), 0u);
  EXPECT_EQ(t.named_consumes_pending(), 0);
}

}  // namespace
}  // namespace warren::protocol
