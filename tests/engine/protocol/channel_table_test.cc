#include "engine/protocol/channel_table.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "tests/engine/protocol/channel_harness.h"

namespace warren::protocol {
namespace {

using test::recording_handler;
using test::test_waiter;

TEST(channel_table_ids, allocate_gives_the_lowest_free_id) {
  channel_table t;
  EXPECT_EQ(t.allocate(), 1);
  EXPECT_EQ(t.allocate(), 2);
  EXPECT_TRUE(t.take(4));
  EXPECT_EQ(t.allocate(), 3);
  EXPECT_EQ(t.allocate(), 5);
  t.release(2);
  EXPECT_EQ(t.allocate(), 2);
}

TEST(channel_table_ids, ids_stop_at_channel_max) {
  channel_table t(2);
  EXPECT_EQ(t.allocate(), 1);
  EXPECT_EQ(t.allocate(), 2);
  EXPECT_EQ(t.allocate(), 0);
  EXPECT_FALSE(t.take(3));
  EXPECT_FALSE(t.take(0));
  channel_table unlimited(0);
  EXPECT_EQ(unlimited.channel_max(), 65535);
  EXPECT_TRUE(unlimited.take(65535));
}

TEST(channel_table_ids, a_taken_id_cannot_be_taken_twice) {
  channel_table t;
  EXPECT_TRUE(t.take(7));
  EXPECT_FALSE(t.take(7));
  EXPECT_TRUE(t.taken(7));
  t.release(7);
  EXPECT_FALSE(t.taken(7));
}

class channel_table_test : public ::testing::Test, public test::connection_harness {
 protected:
  void SetUp() override { connect(); }

  // An open channel on the lowest free id.
  channel_core& open_one(recording_handler& h) {
    const std::uint16_t id = table.allocate();
    cores.push_back(std::make_unique<channel_core>(id, *this, h));
    channel_core& c = *cores.back();
    table.attach(c);
    c.open(nullptr);
    feed(peer.channel_open_ok(id));
    written();
    return c;
  }

  std::vector<std::unique_ptr<channel_core>> cores;
};

TEST_F(channel_table_test, commands_reach_the_channel_they_name) {
  recording_handler h1, h2;
  channel_core& one = open_one(h1);
  channel_core& two = open_one(h2);
  EXPECT_EQ(one.id(), 1);
  EXPECT_EQ(two.id(), 2);
  feed(peer.method(2, codec::channel_flow{false}));
  EXPECT_TRUE(h1.flows.empty());
  EXPECT_EQ(h2.flows, (std::vector<bool>{false}));
  EXPECT_EQ(table.find(2), &two);
}

TEST_F(channel_table_test, a_peer_close_ends_only_its_channel) {
  recording_handler h1, h2;
  open_one(h1);
  channel_core& two = open_one(h2);
  feed(peer.channel_close(2, 404, "NOT_FOUND"));
  EXPECT_TRUE(h1.ended.empty());
  ASSERT_EQ(h2.ended.size(), 1u);
  EXPECT_EQ(two.state(), channel_state::closed);
}

TEST_F(channel_table_test, connection_loss_ends_every_channel_exactly_once) {
  recording_handler h1, h2, h3;
  channel_core& one = open_one(h1);
  open_one(h2);
  open_one(h3);
  auto waiting = std::make_shared<test_waiter>();
  one.expect(codec::queue_declare_ok::id, waiting);
  feed(peer.channel_close(3, 406, "PRECONDITION_FAILED"));  // already over
  machine->transport_closed("reset");
  machine->transport_closed("reset again");
  EXPECT_EQ(h1.ended.size(), 1u);
  EXPECT_EQ(h2.ended.size(), 1u);
  ASSERT_EQ(h3.ended.size(), 1u);
  EXPECT_EQ(h3.ended[0].first, end_cause::closed_by_peer);
  EXPECT_EQ(h1.ended[0].first, end_cause::connection_lost);
  EXPECT_EQ(waiting->failed, end_cause::connection_lost);
  EXPECT_EQ(waiting->calls, 1);
}

TEST_F(channel_table_test, a_released_channel_is_no_longer_reached) {
  recording_handler h;
  channel_core& c = open_one(h);
  table.release(c.id());
  EXPECT_EQ(table.find(c.id()), nullptr);
  machine->transport_closed("reset");
  EXPECT_TRUE(h.ended.empty());
}

TEST_F(channel_table_test, a_channel_released_during_the_fan_out_is_skipped) {
  recording_handler h1, h2;
  open_one(h1);
  channel_core& two = open_one(h2);
  h1.on_end = [&](end_cause) { table.release(two.id()); };
  machine->transport_closed("reset");
  EXPECT_EQ(h1.ended.size(), 1u);
  EXPECT_TRUE(h2.ended.empty());
}

}  // namespace
}  // namespace warren::protocol
