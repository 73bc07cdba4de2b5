// The null broker's server, run in-process on an ephemeral port, against warren's blocking
// client (engine/client): the handshake, the sink's counts and confirms, the firehose's
// deliveries, several connections at once; and against bench/compare's peers (the pre-encoded
// writer, the rabbitmq-c and py-amqp drivers), whose counts must agree with the server's.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "engine/client/connection.h"
#include "engine/client/message.h"
#include "engine/errors.h"
#include "tools/null_broker/server.h"

namespace warren::null_broker {
namespace {

connection_options null_broker_options(const server& s) {
  connection_options o;
  o.host = "127.0.0.1:" + std::to_string(s.port());
  o.connect_timeout = seconds_f(5);
  return o;
}

// A read that never ends would hang the test: bounded.
const client_options bounded_reads{.read_timeout = seconds_f(10)};

// The server updates its totals after each read; give it a moment to catch up.
template <class Predicate>
bool eventually(Predicate p) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!p()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

TEST(null_broker, blocking_client_completes_the_handshake_and_sees_the_capabilities) {
  server s({.session = {.mode = mode::sink, .frame_max = 65536}});
  connection c(null_broker_options(s), bounded_reads);
  c.connect();
  EXPECT_TRUE(c.connected());
  const codec::field_value* product = c.server_properties().find("product");
  ASSERT_NE(product, nullptr);
  EXPECT_EQ(*product->as_long_string(), "warren null_broker");
  const codec::field_value* caps = c.server_properties().find("capabilities");
  ASSERT_NE(caps, nullptr);
  ASSERT_NE(caps->as_table(), nullptr);
  EXPECT_NE(caps->as_table()->find("publisher_confirms"), nullptr);
  channel& ch = c.channel();
  EXPECT_EQ(ch.queue_declare("bench").queue, "bench");
  ch.queue_bind("bench", "amq.direct", "bench");
  ch.exchange_declare("ex", "fanout");
  ch.basic_qos(0, 100, false);
  ch.close();
  c.close();
  EXPECT_TRUE(eventually([&] { return s.totals().connections == 1; }));
}

TEST(null_broker, sink_counts_every_publish_and_acks_confirms) {
  server s({.session = {.mode = mode::sink}});
  connection c(null_broker_options(s), bounded_reads);
  c.connect();
  channel& ch = c.channel();
  ch.confirm_select();
  constexpr int n = 20000;
  const message m(std::string(16, 'm'));
  for (int i = 0; i < n; ++i) ch.basic_publish(m, "", "q");
  ch.wait_for_confirms(seconds_f(10));  // throws unless every publish was acked
  EXPECT_EQ(ch.next_publish_seq_no(), std::uint64_t{n} + 1);
  EXPECT_TRUE(eventually([&] { return s.totals().sessions.published == n; }));
  const server_totals t = s.totals();
  // One multiple ack per read batch: far fewer acks than messages, at least one.
  EXPECT_GE(t.sessions.acks_sent, 1u);
  EXPECT_LT(t.sessions.acks_sent, std::uint64_t{n});
  c.close();
}

TEST(null_broker, firehose_delivers_increasing_tags_that_the_blocking_client_decodes) {
  server s({.session = {.mode = mode::firehose, .body_size = 100}});
  connection c(null_broker_options(s), bounded_reads);
  c.connect();
  channel& ch = c.channel();
  std::uint64_t received = 0;
  std::uint64_t last_tag = 0;
  bool in_order = true;
  bool bodies_ok = true;
  const std::string tag =
      ch.basic_consume("q",
                       [&](message& msg) {
                         ++received;
                         in_order = in_order && msg.delivery_tag() == last_tag + 1;
                         last_tag = msg.delivery_tag();
                         bodies_ok = bodies_ok && msg.body() == std::string(100, 'x');
                       },
                       {.no_ack = true});
  while (received < 50000) c.drain_events(seconds_f(10));
  EXPECT_TRUE(in_order);
  EXPECT_TRUE(bodies_ok);
  ch.basic_cancel(tag);
  c.close();
  EXPECT_TRUE(eventually([&] { return s.totals().sessions.delivered >= received; }));
}

TEST(null_broker, firehose_counts_manual_acks) {
  server s({.session = {.mode = mode::firehose}});
  connection c(null_broker_options(s), bounded_reads);
  c.connect();
  channel& ch = c.channel();
  ch.basic_qos(0, 1000, false);
  std::uint64_t received = 0;
  const std::string tag = ch.basic_consume("q", [&](message& msg) {
    if (++received % 100 == 0) ch.basic_ack(msg.delivery_tag(), true);
  });
  while (received < 10000) c.drain_events(seconds_f(10));
  EXPECT_TRUE(eventually([&] { return s.totals().sessions.acks_received >= 90; }));
  // Cancelled before closing: the cancel-ok follows the consumer's last delivery, so no
  // delivery is half-received when the connection goes.
  ch.basic_cancel(tag);
  c.close();
}

TEST(null_broker, serves_several_connections_at_once) {
  server s({.session = {.mode = mode::sink}});
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&s] {
      connection c(null_broker_options(s), bounded_reads);
      c.connect();
      channel& ch = c.channel();
      for (int k = 0; k < 1000; ++k) ch.basic_publish(message(std::string(16, 'm')), "", "q");
      ch.queue_declare("sync");  // a round trip after the publishes
      c.close();
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_TRUE(eventually([&] { return s.totals().sessions.published == 4000; }));
  EXPECT_EQ(s.totals().connections, 4u);
}

TEST(null_broker, heartbeats_are_sent_every_half_interval_when_negotiated) {
  server s({.session = {.mode = mode::sink, .heartbeat = 1}});
  connection_options o = null_broker_options(s);
  o.heartbeat = 1;
  connection c(o, bounded_reads);
  c.connect();
  c.channel();
  const std::uint64_t before = c.bytes_recv();
  // Heartbeats are not events, so this waits the whole time while reading them.
  EXPECT_THROW(c.drain_events(seconds_f(1.6)), amqp_timeout);
  const std::uint64_t received = c.bytes_recv() - before;
  EXPECT_EQ(received % 8, 0u);
  EXPECT_GE(received / 8, 2u);
  c.close();
}

// Runs a shell command from the runfiles root; its stdout, with stderr appended.
std::string run(const std::string& command, int& status) {
  std::string out;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return (status = -1, out);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  status = ::pclose(p);
  return out;
}

std::string address(const server& s) {
  return "127.0.0.1:" + std::to_string(s.port());
}

TEST(null_broker, sink_counts_exactly_what_the_preencoded_writer_wrote) {
  server s({.session = {.mode = mode::sink}});
  int status = 0;
  const std::string out =
      run("bench/preencoded_writer --uri " + address(s) + " --count 250001", status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\"client\": \"preencoded\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"msgs\": 250001,"), std::string::npos) << out;
  EXPECT_TRUE(eventually([&] { return s.totals().sessions.published == 250001; }))
      << s.totals().sessions.published;
}

// One bench/compare driver (rabbitmq-c's or py-amqp's, same options and JSON): `n` publishes
// with confirms into a sink, then `n` deliveries from a firehose, acked one by one with --ack.
void check_driver(const std::string& driver, long n, const char* ack) {
  server sink({.session = {.mode = mode::sink}});
  int status = 0;
  const std::string count = std::to_string(n);
  std::string out = run(driver + " --mode publish --uri " + address(sink) + " --queue q --count " +
                            count + " --confirm 100",
                        status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\"msgs\": " + count + ", \"confirmed\": " + count + ","), std::string::npos)
      << out;
  EXPECT_TRUE(eventually([&] { return sink.totals().sessions.published == std::uint64_t(n); }));

  server firehose({.session = {.mode = mode::firehose}});
  out = run(driver + " --mode consume --uri " + address(firehose) + " --queue q --count " + count +
                " " + ack,
            status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\"msgs\": " + count + ","), std::string::npos) << out;
  const std::uint64_t acks = std::string_view(ack) == "--ack" ? std::uint64_t(n) : 0;
  EXPECT_TRUE(eventually([&] { return firehose.totals().sessions.acks_received == acks; }))
      << firehose.totals().sessions.acks_received;
}

TEST(null_broker, rabbitmq_c_driver_gets_its_confirms_and_acks_what_the_firehose_sends) {
  check_driver("bench/rabbitmq_c_perf", 20000, "--ack");
}

TEST(null_broker, py_amqp_driver_gets_its_confirms_and_reads_the_firehose) {
  check_driver("/usr/bin/python3 bench/peers/py_amqp_perf.py", 3000, "--no-ack");
}

}  // namespace
}  // namespace warren::null_broker
