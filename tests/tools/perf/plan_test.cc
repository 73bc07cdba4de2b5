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
  EXPECT_FALSE(shared_queue_options(parse({"--auto-delete", "false"})).auto_delete);
}

TEST(shared_queue_options, perftests_queue_type_flags_declare_durable_typed_queues) {
  for (const char* flag : {"--quorum-queue", "--stream-queue"}) {
    const queue_declare_options q = shared_queue_options(parse({flag, "-u", "q"}));
    EXPECT_TRUE(q.durable) << flag;
    EXPECT_FALSE(q.auto_delete) << flag;
    EXPECT_FALSE(q.exclusive) << flag;
    ASSERT_NE(q.arguments.find("x-queue-type"), nullptr) << flag;
  }
  const queue_declare_options s = shared_queue_options(parse({"--stream-queue", "-u", "s"}));
  EXPECT_EQ(*s.arguments.find("x-queue-type")->as_long_string(), "stream");
  EXPECT_EQ(*s.arguments.find("x-max-length-bytes")->as_i64(), std::int64_t{20} << 30);
}

TEST(plan, random_allocation_spreads_connections_over_every_uri) {
  const perf_options o = parse({"-x", "50", "-y", "50", "-H", "amqp://a,amqp://b,amqp://c",
                                "--connection-allocation", "random"});
  const topology_plan p = make_plan(o, "k", 7);
  std::vector<int> per_uri(3);
  for (const producer_plan& pp : p.producers) ++per_uri.at(pp.uri);
  for (const consumer_plan& cp : p.consumers) ++per_uri.at(cp.uri);
  // 100 connections over 3 URIs: each gets some (for this seed; any seed gives the same plan).
  for (int n : per_uri) EXPECT_GT(n, 10);
  EXPECT_EQ(make_plan(o, "k", 7).producers[17].uri, p.producers[17].uri);
  // Not in turn: some neighbours share a URI.
  int same = 0;
  for (std::size_t i = 1; i < p.producers.size(); ++i) {
    same += p.producers[i].uri == p.producers[i - 1].uri;
  }
  EXPECT_GT(same, 0);
}

TEST(plan, the_run_tag_comes_from_the_seed) {
  EXPECT_EQ(make_plan(parse({}), "k", 1).run_tag, make_plan(parse({}), "k", 1).run_tag);
  EXPECT_NE(make_plan(parse({}), "k", 1).run_tag, make_plan(parse({}), "k", 2).run_tag);
}

TEST(connection_name, names_the_role_and_number_and_the_id_when_given) {
  EXPECT_EQ(connection_name(parse({}), "producer", 0), "perf-producer-1");
  EXPECT_EQ(connection_name(parse({"--id", "run-7"}), "consumer", 2), "run-7-consumer-3");
  const connection_options c = connection_for(parse({}), 0, "perf-consumer-1");
  EXPECT_EQ(*c.client_properties.find("connection_name")->as_long_string(), "perf-consumer-1");
}

TEST(consumer_arguments_table, holds_the_consumer_args_and_the_stream_offset) {
  const codec::field_table t =
      consumer_arguments_table(parse({"--consumer-args", "x-priority=5", "--stream-queue", "-u",
                                      "s", "--stream-consumer-offset", "first"}));
  EXPECT_EQ(*t.find("x-priority")->as_i64(), 5);
  EXPECT_EQ(*t.find("x-stream-offset")->as_long_string(), "first");
  auto offset_of = [](const std::string& v) {
    return *consumer_arguments_table(
                parse({"--stream-queue", "-u", "s", "--stream-consumer-offset", v}))
                .find("x-stream-offset");
  };
  EXPECT_EQ(*offset_of("42").as_i64(), 42);
  EXPECT_EQ(*offset_of("1h").as_long_string(), "1h");
  // An AMQP timestamp (type T), in seconds: what RabbitMQ needs for a point in time.
  const codec::field_value ts = offset_of("2022-06-03T07:45:54Z");
  EXPECT_EQ(ts.type(), codec::field_type::timestamp);
  EXPECT_EQ(*ts.as_timestamp(), 1654242354u);
  EXPECT_TRUE(consumer_arguments_table(parse({})).empty());
}

}  // namespace
}  // namespace warren::perf
