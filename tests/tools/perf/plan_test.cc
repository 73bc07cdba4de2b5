#include "tools/perf/plan.h"

#include <gtest/gtest.h>

namespace warren::perf {
namespace {

perf_options parse(std::vector<std::string> args) {
  return parse_options(args);
}

TEST(plan, default_gives_each_consumer_channel_its_own_queue_bound_with_the_run_key) {
  const topology_plan p = make_plan(parse({"-x", "2", "-y", "2", "-Y", "3"}), "perf-key");
  EXPECT_TRUE(p.declare);
  EXPECT_TRUE(p.declare_exchange);
  EXPECT_EQ(p.exchange, "direct");
  EXPECT_EQ(p.routing_key, "perf-key");
  EXPECT_TRUE(p.shared_queues.empty());
  ASSERT_EQ(p.consumers.size(), 2u);
  EXPECT_EQ(p.consumers[1].queues, (std::vector<std::string>{"", "", ""}));
  ASSERT_EQ(p.producers.size(), 2u);
  EXPECT_EQ(p.producers[0].routing_keys, (std::vector<std::string>{"perf-key"}));
}

TEST(plan, routing_key_option_wins_over_the_run_key) {
  EXPECT_EQ(make_plan(parse({"-k", "mine"}), "perf-key").routing_key, "mine");
}

TEST(plan, named_queue_is_shared_and_on_the_default_exchange_reached_by_name) {
  const topology_plan p = make_plan(parse({"-u", "q", "-y", "2"}), "k");
  EXPECT_EQ(p.shared_queues, (std::vector<std::string>{"q"}));
  EXPECT_EQ(p.consumers[1].queues, (std::vector<std::string>{"q"}));
  EXPECT_EQ(p.routing_key, "k");
  const topology_plan d = make_plan(parse({"-u", "q", "-e", ""}), "k");
  EXPECT_FALSE(d.declare_exchange);
  EXPECT_EQ(d.producers[0].routing_keys, (std::vector<std::string>{"q"}));
}

TEST(plan, pattern_queues_are_spread_over_producer_and_consumer_channels) {
  const topology_plan p =
      make_plan(parse({"-x", "2", "-X", "2", "-y", "3", "--queue-pattern", "p-%d",
                       "--queue-pattern-from", "1", "--queue-pattern-to", "3"}),
                "k");
  EXPECT_TRUE(p.bind_shared_by_name);
  EXPECT_EQ(p.shared_queues, (std::vector<std::string>{"p-1", "p-2", "p-3"}));
  EXPECT_EQ(p.producers[0].routing_keys, (std::vector<std::string>{"p-1", "p-2"}));
  EXPECT_EQ(p.producers[1].routing_keys, (std::vector<std::string>{"p-3", "p-1"}));
  EXPECT_EQ(p.consumers[2].queues, (std::vector<std::string>{"p-3"}));
}

TEST(plan, connections_take_the_uris_in_turn_producers_first) {
  const topology_plan p =
      make_plan(parse({"-x", "2", "-y", "3", "-H", "amqp://a,amqp://b,amqp://c"}), "k");
  EXPECT_EQ(p.producers[0].uri, 0u);
  EXPECT_EQ(p.producers[1].uri, 1u);
  EXPECT_EQ(p.consumers[0].uri, 2u);
  EXPECT_EQ(p.consumers[1].uri, 0u);
  EXPECT_EQ(p.consumers[2].uri, 1u);
}

TEST(plan, null_broker_modes_declare_nothing) {
  EXPECT_FALSE(make_plan(parse({"--sink", "amqp://h:5699"}), "k").declare);
  const topology_plan f = make_plan(parse({"--firehose", "amqp://h:5699"}), "k");
  EXPECT_FALSE(f.declare);
  EXPECT_FALSE(f.declare_exchange);
  EXPECT_EQ(f.consumers[0].queues, (std::vector<std::string>{"perf-firehose"}));
}

TEST(plan, predeclared_exchanges_are_not_declared) {
  EXPECT_FALSE(make_plan(parse({"-e", "amq.topic", "-t", "topic"}), "k").declare_exchange);
}

TEST(plan, random_routing_keys_differ) {
  const std::string a = random_routing_key(), b = random_routing_key();
  EXPECT_TRUE(a.starts_with("perf-"));
  EXPECT_EQ(a.size(), 21u);
  EXPECT_NE(a, b);
}

TEST(connection_for, applies_frame_max_heartbeat_tls_and_a_connect_timeout) {
  const perf_options o = parse({"-M", "8192", "-b", "15", "--tls-ca", "/ca.pem", "--tls-no-verify",
                                "-H", "amqp://bob:pw@h1:5673/v,amqp://h2"});
  const connection_options c = connection_for(o, 0, "perf-producer-1");
  EXPECT_EQ(c.host, "h1:5673");
  EXPECT_EQ(c.userid, "bob");
  EXPECT_EQ(c.virtual_host, "v");
  EXPECT_EQ(c.frame_max, 8192u);
  EXPECT_EQ(c.heartbeat, 15);
  ASSERT_TRUE(c.ssl.has_value());
  EXPECT_EQ(c.ssl->ca_file, "/ca.pem");
  EXPECT_FALSE(c.ssl->verify_peer);
  ASSERT_TRUE(c.connect_timeout.has_value());
  EXPECT_DOUBLE_EQ(c.connect_timeout->count(), 5.0);
  EXPECT_EQ(connection_for(o, 1, "x").host, "h2:5672");
  EXPECT_EQ(connection_for(o, 2, "x").host, "h1:5673");  // in turn
}

TEST(connection_for, keeps_the_uri_connect_timeout) {
  const perf_options o = parse({"-H", "amqp://h?connection_timeout=1500"});
  EXPECT_DOUBLE_EQ(connection_for(o, 0, "x").connect_timeout->count(), 1.5);
}

TEST(shared_queue_options, quorum_queues_are_durable_and_not_auto_delete) {
  const queue_declare_options q = shared_queue_options(parse({"-qa", "x-queue-type=quorum"}));
  EXPECT_TRUE(q.durable);
  EXPECT_FALSE(q.auto_delete);
  EXPECT_TRUE(shared_queue_options(parse({})).auto_delete);
}

}  // namespace
}  // namespace warren::perf
