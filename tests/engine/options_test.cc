#include "engine/options.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "engine/uri.h"

namespace warren {
namespace {

// from_uri ---------------------------------------------------------------------------------------

TEST(connection_options, from_uri_maps_every_component_and_query_key) {
  const connection_options o = connection_options::from_uri(
      "amqp://bob:s%40cret@example.com:5673/my%2Fvhost?heartbeat=7&channel_max=9&frame_max=8192"
      "&connection_timeout=2500&auth_mechanism=amqplain&auth_mechanism=plain");
  EXPECT_EQ(o.host, "example.com:5673");
  EXPECT_EQ(o.userid, "bob");
  EXPECT_EQ(o.password, "s@cret");
  EXPECT_EQ(o.virtual_host, "my/vhost");
  EXPECT_EQ(o.heartbeat, 7);
  EXPECT_EQ(o.channel_max, 9);
  EXPECT_EQ(o.frame_max, 8192u);
  ASSERT_TRUE(o.connect_timeout);
  EXPECT_DOUBLE_EQ(o.connect_timeout->count(), 2.5);
  EXPECT_FALSE(o.ssl);
  ASSERT_EQ(o.authentication.size(), 2u);
  EXPECT_EQ(o.authentication[0].mechanism, "AMQPLAIN");
  EXPECT_EQ(o.authentication[1].mechanism, "PLAIN");
  EXPECT_EQ(o.authentication[1].response, std::string("\0bob\0s@cret", 11));

  const connection_options d = connection_options::from_uri("amqp://[::1]");
  EXPECT_EQ(d.host, "[::1]:5672");
  EXPECT_EQ(d.userid, "guest");
  EXPECT_EQ(d.virtual_host, "/");
  EXPECT_EQ(d.heartbeat, 0);
  EXPECT_FALSE(d.connect_timeout);
  EXPECT_TRUE(d.authentication.empty());
}

TEST(connection_options, endpoint_hosts_are_the_endpoints_or_the_host_alone) {
  connection_options o;
  o.host = "broker:5673";
  EXPECT_EQ(o.endpoint_hosts(), (std::vector<std::string>{"broker:5673"}));
  o.endpoints = {"a:5672", "amqp://bob:secret@b.example:5680/vh", "amqps://[::1]", "c"};
  EXPECT_EQ(o.endpoint_hosts(),
            (std::vector<std::string>{"a:5672", "b.example:5680", "[::1]:5671", "c"}));
  o.endpoints = {"amqp://bad host"};
  EXPECT_THROW(o.endpoint_hosts(), uri_error);
}

TEST(connection_options, from_uri_tls_keys_fill_the_tls_options) {
  const connection_options o = connection_options::from_uri(
      "amqps://h?cacertfile=/ca.pem&certfile=/c.pem&keyfile=/k.pem&verify=verify_none"
      "&server_name_indication=disable&auth_mechanism=external");
  EXPECT_EQ(o.host, "h:5671");
  ASSERT_TRUE(o.ssl);
  EXPECT_EQ(o.ssl->ca_file, "/ca.pem");
  EXPECT_EQ(o.ssl->cert_file, "/c.pem");
  EXPECT_EQ(o.ssl->key_file, "/k.pem");
  EXPECT_FALSE(o.ssl->verify_peer);
  EXPECT_EQ(o.ssl->server_name, "");
  ASSERT_EQ(o.authentication.size(), 1u);
  EXPECT_EQ(o.authentication[0].mechanism, "EXTERNAL");

  const connection_options sni = connection_options::from_uri("amqps://h?server_name_indication=x");
  ASSERT_TRUE(sni.ssl);
  EXPECT_TRUE(sni.ssl->verify_peer);
  EXPECT_EQ(sni.ssl->server_name, "x");
}

TEST(connection_options, from_uri_errors_never_quote_the_password) {
  try {
    connection_options::from_uri("amqp://u:Pa55w0rd@h?auth_mechanism=gssapi");
    FAIL() << "an unsupported mechanism must be refused";
  } catch (const uri_error& e) {
    EXPECT_NE(std::string(e.what()).find("GSSAPI"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("Pa55w0rd"), std::string::npos) << e.what();
  }
  try {
    connection_options::from_uri("amqp://u:Pa55w0rd@h?heartbeat=x");
    FAIL() << "a bad heartbeat must be refused";
  } catch (const uri_error& e) {
    EXPECT_EQ(std::string(e.what()).find("Pa55w0rd"), std::string::npos) << e.what();
  }
}

// machine_config ---------------------------------------------------------------------------------

TEST(connection_options, machine_config_carries_the_negotiation_values) {
  connection_options o;
  o.virtual_host = "v";
  o.locale = "de_DE";
  o.channel_max = 10;
  o.frame_max = 8192;
  o.heartbeat = 5;
  o.negotiate_capabilities = {"basic.nack"};
  o.client_properties.set("app", codec::field_value::long_string("x"));
  const protocol::connection_config c = o.machine_config();
  EXPECT_EQ(c.virtual_host, "v");
  EXPECT_EQ(c.locale, "de_DE");
  EXPECT_EQ(c.channel_max, 10);
  EXPECT_EQ(c.frame_max, 8192u);
  EXPECT_EQ(c.heartbeat, 5);
  EXPECT_EQ(c.capabilities, (std::vector<std::string>{"basic.nack"}));
  EXPECT_NE(c.client_properties.find("app"), nullptr);
}

TEST(connection_options, without_a_method_amqplain_then_plain_and_external_only_with_a_cert) {
  connection_options o;
  std::vector<protocol::sasl_credentials> a = o.machine_config().authentication;
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].mechanism, "AMQPLAIN");
  EXPECT_EQ(a[1].mechanism, "PLAIN");
  o.ssl = io::tls_options{};
  EXPECT_EQ(o.machine_config().authentication.size(), 2u) << "TLS without a client certificate";
  o.ssl->cert_file = "/c.pem";
  a = o.machine_config().authentication;
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].mechanism, "EXTERNAL");
}

TEST(connection_options, login_method_picks_one_mechanism_and_an_unknown_one_needs_a_response) {
  connection_options o;
  o.login_method = "PLAIN";
  ASSERT_EQ(o.machine_config().authentication.size(), 1u);
  EXPECT_EQ(o.machine_config().authentication[0].mechanism, "PLAIN");
  o.login_method = "RABBIT-CR-DEMO";
  EXPECT_THROW(o.machine_config(), std::invalid_argument);
  o.login_response = "secret";
  ASSERT_EQ(o.machine_config().authentication.size(), 1u);
  EXPECT_EQ(o.machine_config().authentication[0].response, "secret");
  o.authentication = {protocol::sasl_external()};
  EXPECT_EQ(o.machine_config().authentication[0].mechanism, "EXTERNAL")
      << "an explicit list wins over login_method";
}

// The methods ------------------------------------------------------------------------------------

TEST(options_methods, declare_methods_carry_every_option) {
  const std::string args = encode_arguments({});
  const codec::exchange_declare x = exchange_declare_method(
      "x", "topic", {.passive = true, .durable = true, .auto_delete = false, .internal = true},
      args);
  EXPECT_EQ(x.exchange, "x");
  EXPECT_EQ(x.type, "topic");
  EXPECT_TRUE(x.passive && x.durable && x.internal);
  EXPECT_FALSE(x.auto_delete || x.nowait);
  const codec::queue_declare q =
      queue_declare_method("q", {.durable = true, .exclusive = true, .nowait = true}, args);
  EXPECT_EQ(q.queue, "q");
  EXPECT_TRUE(q.durable && q.exclusive && q.auto_delete && q.nowait);
  EXPECT_FALSE(q.passive);
}

TEST(options_methods, bind_and_consume_methods_carry_their_names_and_arguments) {
  codec::field_table t;
  t.set("x-match", codec::field_value::long_string("all"));
  const std::string args = encode_arguments(t);
  const codec::queue_bind b = queue_bind_method("q", "x", "rk", {.nowait = true}, args);
  EXPECT_EQ(b.queue, "q");
  EXPECT_EQ(b.exchange, "x");
  EXPECT_EQ(b.routing_key, "rk");
  EXPECT_TRUE(b.nowait);
  EXPECT_EQ(b.arguments.raw, args);
  const codec::queue_unbind u = queue_unbind_method("q", "x", "rk", args);
  EXPECT_EQ(u.routing_key, "rk");
  const codec::exchange_bind eb = exchange_bind_method("d", "s", "k", {}, args);
  EXPECT_EQ(eb.destination, "d");
  EXPECT_EQ(eb.source, "s");
  EXPECT_FALSE(eb.nowait);
  const codec::exchange_unbind eu = exchange_unbind_method("d", "s", "k", {.nowait = true}, args);
  EXPECT_TRUE(eu.nowait);
  // The method views the options' tag: they outlive it.
  const consume_options co{
      .consumer_tag = "t", .no_local = true, .no_ack = true, .exclusive = true};
  const codec::basic_consume c = consume_method("q", co, args);
  EXPECT_EQ(c.queue, "q");
  EXPECT_EQ(c.consumer_tag, "t");
  EXPECT_TRUE(c.no_local && c.no_ack && c.exclusive);
  EXPECT_FALSE(c.nowait);
  const codec::queue_delete d = queue_delete_method("q", {.if_unused = true, .if_empty = true});
  EXPECT_TRUE(d.if_unused && d.if_empty);
  EXPECT_FALSE(d.nowait);
}

TEST(options_methods, an_arguments_table_that_cannot_be_encoded_is_refused) {
  codec::field_table t;
  t.set(std::string(300, 'k'), codec::field_value::boolean(true));  // a key over 255 octets
  EXPECT_THROW(encode_arguments(t), std::invalid_argument);
}

// Quorum queues and streams -------------------------------------------------------------------

TEST(queue_types, quorum_queue_is_durable_not_auto_delete_with_its_typed_arguments) {
  const queue_declare_options q = quorum_queue(
      {.delivery_limit = 5,
       .initial_group_size = 3,
       .arguments = {{"x-dead-letter-exchange", codec::field_value::long_string("dlx")}}});
  EXPECT_TRUE(q.durable);
  EXPECT_FALSE(q.auto_delete);
  EXPECT_FALSE(q.exclusive);
  ASSERT_NE(q.arguments.find("x-queue-type"), nullptr);
  EXPECT_EQ(*q.arguments.find("x-queue-type")->as_long_string(), "quorum");
  EXPECT_EQ(*q.arguments.find("x-delivery-limit"), codec::field_value::i64(5));
  EXPECT_EQ(*q.arguments.find("x-quorum-initial-group-size"), codec::field_value::i64(3));
  EXPECT_EQ(q.arguments.find("x-max-length"), nullptr) << "unset options send nothing";
  EXPECT_NE(q.arguments.find("x-dead-letter-exchange"), nullptr) << "extra arguments kept";
}

TEST(queue_types, stream_queue_sends_its_retention_and_segment_size_as_longs) {
  const queue_declare_options q = stream_queue(
      {.max_length_bytes = 20'000'000'000, .max_segment_size_bytes = 500'000'000, .max_age = "7D"});
  EXPECT_TRUE(q.durable);
  EXPECT_FALSE(q.auto_delete);
  EXPECT_EQ(*q.arguments.find("x-queue-type")->as_long_string(), "stream");
  EXPECT_EQ(*q.arguments.find("x-max-length-bytes"), codec::field_value::i64(20'000'000'000));
  EXPECT_EQ(*q.arguments.find("x-stream-max-segment-size-bytes"),
            codec::field_value::i64(500'000'000));
  EXPECT_EQ(*q.arguments.find("x-max-age"), codec::field_value::long_string("7D"));
  // The result encodes (both faces send encode_arguments of it).
  EXPECT_FALSE(encode_arguments(q.arguments).empty());
}

TEST(queue_types, values_the_broker_cannot_read_are_refused_before_sending) {
  EXPECT_THROW((void)stream_queue({.max_age = "a week"}), std::invalid_argument);
  EXPECT_THROW((void)stream_queue({.max_length_bytes = std::uint64_t{1} << 63}),
               std::invalid_argument);
  EXPECT_THROW((void)quorum_queue({.delivery_limit = ~std::uint64_t{0}}), std::invalid_argument);
}

TEST(stream_consume, stream_start_becomes_the_x_stream_offset_argument) {
  consume_options o;
  o.arguments.set("x-priority", codec::field_value::i32(5));
  o.stream_start = stream_offset::at(42);
  const codec::field_table t = consume_arguments(o);
  EXPECT_EQ(*t.find("x-stream-offset"), codec::field_value::i64(42));
  EXPECT_EQ(*t.find("x-priority"), codec::field_value::i32(5));
  o.arguments.set("x-stream-offset", codec::field_value::long_string("first"));
  EXPECT_EQ(*consume_arguments(o).find("x-stream-offset"), codec::field_value::i64(42))
      << "the typed option wins over an argument of the same name";
  EXPECT_EQ(consume_arguments(consume_options{}).size(), 0u);
}

TEST(stream_consume, a_stream_consume_is_told_by_stream_start_or_the_argument) {
  EXPECT_FALSE(is_stream_consume(consume_options{}));
  EXPECT_TRUE(is_stream_consume(consume_options{.stream_start = stream_offset::next()}));
  EXPECT_TRUE(is_stream_consume(
      consume_options{.arguments = {{"x-stream-offset", codec::field_value::i64(0)}}}));
}

TEST(stream_consume, no_ack_on_a_stream_is_refused_before_sending) {
  const consume_options o{.no_ack = true, .stream_start = stream_offset::first()};
  try {
    check_consume("s", o, std::uint16_t{10});
    FAIL() << "accepted";
  } catch (const stream_consume_error& e) {
    EXPECT_EQ(e.why(), stream_consume_error::reason::no_ack);
    EXPECT_NE(std::string(e.what()).find("no_ack"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'s'"), std::string::npos) << e.what();
  }
}

TEST(stream_consume, a_stream_consume_without_consumer_prefetch_is_refused_before_sending) {
  const consume_options o{.stream_start = stream_offset::first()};
  for (std::optional<std::uint16_t> prefetch :
       {std::optional<std::uint16_t>{}, std::optional<std::uint16_t>{0}}) {
    try {
      check_consume("s", o, prefetch);
      ADD_FAILURE() << "accepted";
    } catch (const stream_consume_error& e) {
      EXPECT_EQ(e.why(), stream_consume_error::reason::prefetch_not_set);
      EXPECT_NE(std::string(e.what()).find("basic_qos"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(check_consume("s", o, std::uint16_t{1}));
  // Not a stream consume: nothing to check (the broker judges classic and quorum consumers).
  EXPECT_NO_THROW(check_consume("q", consume_options{.no_ack = true}, std::nullopt));
}

}  // namespace
}  // namespace warren
