#include "engine/protocol/topology.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace warren::protocol {
namespace {

using kind = binding_record::kind;

codec::field_table args(std::string_view key, std::int64_t v) {
  codec::field_table t;
  t.set(std::string(key), codec::field_value::i64(v));
  return t;
}

std::vector<std::string> exchange_names(const topology_record& r) {
  std::vector<std::string> v;
  for (const auto& x : r.exchanges) v.push_back(x.name);
  return v;
}
std::vector<std::string> queue_names(const topology_record& r) {
  std::vector<std::string> v;
  for (const auto& q : r.queues) v.push_back(q.name);
  return v;
}
std::vector<std::string> binding_names(const topology_record& r) {
  std::vector<std::string> v;
  for (const auto& b : r.bindings)
    v.push_back(b.source + ">" + b.destination + ":" + b.routing_key);
  return v;
}

TEST(topology, keeps_each_kind_in_declaration_order_and_a_redeclaration_moves_to_the_end) {
  topology t;
  t.declare_exchange("x1", "direct", {});
  t.declare_exchange("x2", "fanout", {});
  t.declare_exchange("x1", "direct", {.durable = true});
  EXPECT_EQ(exchange_names(t.record()), (std::vector<std::string>{"x2", "x1"}));
  EXPECT_TRUE(t.record().exchanges[1].options.durable);
  t.declare_queue("q1", {}, false);
  t.declare_queue("amq.gen-1", {.exclusive = true}, true);
  EXPECT_EQ(queue_names(t.record()), (std::vector<std::string>{"q1", "amq.gen-1"}));
  EXPECT_TRUE(t.record().queues[1].server_named);
}

TEST(topology, passive_declares_and_unnamed_queues_are_not_recorded_nor_is_nowait) {
  topology t;
  t.declare_exchange("x", "direct", {.passive = true});
  t.declare_queue("q", {.passive = true}, false);
  t.declare_queue("", {.nowait = true}, true);
  EXPECT_TRUE(t.empty());
  t.declare_queue("q", {.nowait = true}, false);
  ASSERT_EQ(t.record().queues.size(), 1u);
  EXPECT_FALSE(t.record().queues[0].options.nowait) << "a replay waits for its -ok";
}

TEST(topology, a_binding_is_recorded_once_and_unbind_matches_its_arguments) {
  topology t;
  t.bind(kind::queue, "q", "x", "rk", args("a", 1));
  t.bind(kind::queue, "q", "x", "rk", args("a", 1));
  t.bind(kind::queue, "q", "x", "rk", args("a", 2));
  EXPECT_EQ(t.record().bindings.size(), 2u);
  t.unbind(kind::queue, "q", "x", "rk", args("a", 1));
  ASSERT_EQ(t.record().bindings.size(), 1u);
  EXPECT_EQ(t.record().bindings[0].arguments, args("a", 2));
  t.unbind(kind::exchange, "q", "x", "rk", args("a", 2));  // another kind: not this binding
  EXPECT_EQ(t.record().bindings.size(), 1u);
}

TEST(topology, deleting_a_queue_removes_its_bindings_and_consumers) {
  topology t;
  t.declare_queue("q", {}, false);
  t.declare_queue("other", {}, false);
  t.bind(kind::queue, "q", "x", "rk", {});
  t.bind(kind::queue, "other", "x", "rk", {});
  t.bind(kind::exchange, "q", "x", "rk", {});  // an exchange named like the queue
  t.consume({1, "q", "c1"});
  t.consume({1, "other", "c2"});
  t.delete_queue("q");
  EXPECT_EQ(queue_names(t.record()), (std::vector<std::string>{"other"}));
  EXPECT_EQ(binding_names(t.record()), (std::vector<std::string>{"x>other:rk", "x>q:rk"}));
  ASSERT_EQ(t.record().consumers.size(), 1u);
  EXPECT_EQ(t.record().consumers[0].consumer_tag, "c2");
}

TEST(topology, deleting_an_exchange_removes_the_bindings_naming_it) {
  topology t;
  t.declare_exchange("x", "topic", {});
  t.bind(kind::queue, "q", "x", "a", {});
  t.bind(kind::exchange, "x", "up", "b", {});
  t.bind(kind::exchange, "down", "x", "c", {});
  t.bind(kind::queue, "x", "y", "d", {});  // a queue named x: stays
  t.delete_exchange("x");
  EXPECT_TRUE(t.record().exchanges.empty());
  EXPECT_EQ(binding_names(t.record()), (std::vector<std::string>{"y>x:d"}));
}

TEST(topology, consumers_are_per_channel_and_leave_with_cancel_or_their_channel) {
  topology t;
  t.consume({1, "q", "c"});
  t.consume({2, "q", "c"});
  t.consume({2, "q", "d"});
  t.consume({1, "q", "c"});  // recorded again: once
  EXPECT_EQ(t.record().consumers.size(), 3u);
  t.cancel(2, "c");
  EXPECT_EQ(t.record().consumers.size(), 2u);
  t.close_channel(2);
  ASSERT_EQ(t.record().consumers.size(), 1u);
  EXPECT_EQ(t.record().consumers[0].channel, 1);
}

TEST(topology, a_renamed_server_named_queue_takes_its_bindings_and_consumers_along) {
  topology t;
  t.declare_queue("amq.gen-old", {.exclusive = true}, true);
  t.bind(kind::queue, "amq.gen-old", "x", "rk", {});
  t.bind(kind::exchange, "amq.gen-old", "x", "rk", {});  // an exchange: does not follow
  t.consume({1, "amq.gen-old", "c"});
  // A view of the record's own string, as a recovery might pass it.
  const std::string_view old_name = t.record().queues[0].name;
  EXPECT_TRUE(t.rename_queue(old_name, "amq.gen-new"));
  EXPECT_EQ(queue_names(t.record()), (std::vector<std::string>{"amq.gen-new"}));
  EXPECT_EQ(binding_names(t.record()),
            (std::vector<std::string>{"x>amq.gen-new:rk", "x>amq.gen-old:rk"}));
  EXPECT_EQ(t.record().consumers[0].queue, "amq.gen-new");
  EXPECT_FALSE(t.rename_queue("nothing", "x"));
}

TEST(topology, a_snapshot_leaves_out_what_the_filter_rejects) {
  topology t;
  t.declare_exchange("keep", "direct", {});
  t.declare_exchange("skip", "direct", {});
  t.declare_queue("q", {}, false);
  t.consume({1, "q", "c"});
  topology_filter f;
  f.exchanges = [](const exchange_record& x) { return x.name != "skip"; };
  f.consumers = [](const consumer_record&) { return false; };
  const topology_record s = t.snapshot(f);
  EXPECT_EQ(exchange_names(s), (std::vector<std::string>{"keep"}));
  EXPECT_EQ(queue_names(s), (std::vector<std::string>{"q"}));
  EXPECT_TRUE(s.consumers.empty());
  EXPECT_EQ(t.snapshot().exchanges.size(), 2u) << "no filter: everything";
}

TEST(topology, a_stream_consumers_replay_resumes_after_its_last_handled_offset) {
  topology t;
  t.declare_queue("s", {}, false);
  t.consume({1,
             "s",
             "c",
             false,
             false,
             false,
             {{"x-stream-offset", codec::field_value::long_string("first")},
              {"x-priority", codec::field_value::i32(3)}}});
  const consumer_record& before = t.record().consumers[0];
  EXPECT_EQ(replay_arguments(before), before.arguments) << "nothing handled: the original start";
  EXPECT_FALSE(t.stream_handled(2, "c", 41)) << "another channel's tag";
  EXPECT_TRUE(t.stream_handled(1, "c", 41));
  const consumer_record& r = t.record().consumers[0];
  EXPECT_EQ(r.stream_last_handled, 41u);
  const codec::field_table replay = replay_arguments(r);
  EXPECT_EQ(*replay.find("x-stream-offset"), codec::field_value::i64(42));
  EXPECT_EQ(*replay.find("x-priority"), codec::field_value::i32(3)) << "the others as sent";
  EXPECT_EQ(*r.arguments.find("x-stream-offset"), codec::field_value::long_string("first"))
      << "the record keeps what was sent";
  t.cancel(1, "c");
  EXPECT_FALSE(t.stream_handled(1, "c", 50)) << "a cancelled consumer has no record";
}

}  // namespace
}  // namespace warren::protocol
