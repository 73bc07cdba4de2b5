// The connection of the blocking API against the real broker: login, negotiation, errors,
// heartbeats, byte counters, large and empty bodies, many channels.
#include "engine/client/connection.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/broker_env.h"
#include "tests/engine/client/test_support.h"
#include "tests/support/rabbit_node.h"

namespace warren {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using test::broker_options;
using test::drain_until;
using test::unique_name;

class connection_test : public test::broker_test {};

// A TCP socket on 127.0.0.1 bound to a free port; listening (the kernel completes handshakes,
// nobody ever answers) or not (connections are refused).
class local_socket {
 public:
  explicit local_socket(bool listening) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    if (listening) ::listen(fd_, 16);
  }
  ~local_socket() { ::close(fd_); }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

double seconds_since(steady_clock::time_point t) {
  return std::chrono::duration<double>(steady_clock::now() - t).count();
}

TEST_F(connection_test, plain_and_amqplain_logins_both_work) {
  for (const char* method : {"PLAIN", "AMQPLAIN"}) {
    connection_options o = broker_options();
    o.login_method = method;
    connection c(o);
    ASSERT_NO_THROW(c.connect()) << method;
    EXPECT_TRUE(c.connected());
    EXPECT_FALSE(c.channel().queue_declare("", {.exclusive = true}).queue.empty());
    c.close();
    EXPECT_FALSE(c.connected());
  }
}

TEST_F(connection_test, version_and_chosen_mechanism_come_from_the_handshake) {
  connection before(broker_options());
  EXPECT_EQ(before.version_major(), 0);
  EXPECT_EQ(before.version_minor(), 0);
  EXPECT_EQ(before.chosen_mechanism(), "");

  // Default mechanisms without a client certificate: AMQPLAIN, then PLAIN (py-amqp's order).
  connection by_default(broker_options());
  by_default.connect();
  EXPECT_EQ(by_default.version_major(), 0);
  EXPECT_EQ(by_default.version_minor(), 9);
  EXPECT_EQ(by_default.chosen_mechanism(), "AMQPLAIN");

  // The first configured mechanism the broker does not offer is skipped.
  connection_options o = broker_options();
  o.authentication = {protocol::sasl_raw("NOT-OFFERED", "x"),
                      protocol::sasl_plain(o.userid, o.password)};
  connection fallback(o);
  fallback.connect();
  EXPECT_EQ(fallback.chosen_mechanism(), "PLAIN");
}

TEST_F(connection_test, server_properties_and_capabilities_are_populated) {
  connection c(broker_options());
  c.connect();
  const codec::field_value* product = c.server_properties().find("product");
  ASSERT_NE(product, nullptr);
  ASSERT_NE(product->as_long_string(), nullptr);
  EXPECT_EQ(*product->as_long_string(), "RabbitMQ");
  for (const char* cap : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                          "consumer_cancel_notify", "connection.blocked"}) {
    const codec::field_value* v = c.server_capabilities().find(cap);
    ASSERT_NE(v, nullptr) << cap;
    ASSERT_NE(v->as_boolean(), nullptr) << cap;
    EXPECT_TRUE(*v->as_boolean()) << cap;
  }
  EXPECT_NE(std::find(c.mechanisms().begin(), c.mechanisms().end(), "PLAIN"), c.mechanisms().end());
  EXPECT_NE(std::find(c.locales().begin(), c.locales().end(), "en_US"), c.locales().end());
  EXPECT_GT(c.channel_max(), 0);
  EXPECT_EQ(c.frame_max(), 131072u);
  EXPECT_GE(c.sock(), 0);
}

TEST_F(connection_test, channel_max_is_negotiated_and_enforced) {
  connection_options o = broker_options();
  client_options co;
  o.channel_max = 3;
  bool tuned = false;
  co.on_tune_ok = [&] { tuned = true; };
  connection c(o, co);
  c.connect();
  EXPECT_TRUE(tuned);
  EXPECT_EQ(c.channel_max(), 3);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(c.channel().channel_id(), i);
  EXPECT_THROW(c.channel(), resource_error);
  EXPECT_THROW(c.channel(4), resource_error);
  EXPECT_EQ(c.channels().size(), 3u);
}

TEST_F(connection_test, on_open_is_called_once_connected) {
  connection_options o = broker_options();
  client_options co;
  int opened = 0;
  co.on_open = [&](connection& c) {
    EXPECT_TRUE(c.connected());
    ++opened;
  };
  connection c(o, co);
  c.connect();
  c.connect();  // a no-op when connected
  EXPECT_EQ(opened, 1);
}

TEST_F(connection_test, wrong_password_is_access_refused_quickly_and_never_shows_the_password) {
  const std::string password = "Wr0ng-Pa55word-xyzzy";
  for (const char* method : {"PLAIN", "AMQPLAIN"}) {
    connection_options o = broker_options();
    o.password = password;
    o.login_method = method;
    connection c(o);
    const auto start = steady_clock::now();
    try {
      c.connect();
      FAIL() << "login with a wrong password must fail";
    } catch (const access_refused& e) {
      EXPECT_EQ(e.reply_code(), 403);
      EXPECT_EQ(std::string(e.what()).find(password), std::string::npos) << e.what();
      EXPECT_EQ(e.reply_text().find(password), std::string::npos);
      EXPECT_TRUE(is_connection_error(e) || is_channel_error(e));
    }
    EXPECT_LT(seconds_since(start), 5.0);
    EXPECT_FALSE(c.connected());
  }
}

TEST_F(connection_test, unknown_vhost_is_not_allowed) {
  connection_options o = broker_options();
  o.virtual_host = unique_name("no-such-vhost");
  connection c(o);
  try {
    c.connect();
    FAIL() << "opening a missing vhost must fail";
  } catch (const not_allowed& e) {
    EXPECT_EQ(e.reply_code(), 530);
    EXPECT_EQ(e.method_name(), "connection.open");
  }
  EXPECT_FALSE(c.connected());
}

TEST_F(connection_test, test_vhost_is_usable) {
  connection_options o = broker_options();
  o.virtual_host = std::string(test::test_vhost);
  connection c(o);
  c.connect();
  EXPECT_FALSE(c.channel().queue_declare("", {.exclusive = true}).queue.empty());
}

TEST_F(connection_test, closed_port_is_a_clear_connection_error) {
  local_socket closed(/*listening=*/false);
  connection_options o = broker_options();
  o.host = closed.host();
  connection c(o);
  const auto start = steady_clock::now();
  try {
    c.connect();
    FAIL() << "connecting to a closed port must fail";
  } catch (const recoverable_connection_error& e) {
    EXPECT_NE(std::string(e.what()).find("refused"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(closed.host()), std::string::npos) << e.what();
  }
  EXPECT_LT(seconds_since(start), 2.0);
  EXPECT_FALSE(c.connected());
  EXPECT_THROW(c.channel(), connection_error);
}

TEST_F(connection_test, connect_timeout_bounds_a_server_that_never_speaks) {
  local_socket silent(/*listening=*/true);
  connection_options o = broker_options();
  o.host = silent.host();
  o.connect_timeout = seconds_f(0.5);
  connection c(o);
  const auto start = steady_clock::now();
  EXPECT_THROW(c.connect(), amqp_timeout);
  const double took = seconds_since(start);
  EXPECT_GE(took, 0.45);
  EXPECT_LT(took, 2.0);
  EXPECT_FALSE(c.connected());
}

TEST_F(connection_test, close_ends_the_connection_and_later_calls_fail) {
  connection c(broker_options());
  c.connect();
  channel& ch = c.channel();
  c.close();
  EXPECT_FALSE(c.connected());
  EXPECT_FALSE(ch.is_open());
  EXPECT_FALSE(c.is_alive());
  EXPECT_THROW(c.drain_events(seconds_f(0.1)), connection_error);
  EXPECT_THROW(ch.queue_declare(""), connection_error);
  c.close();  // idempotent
}

TEST_F(connection_test, byte_counters_count_exact_frame_sizes) {
  connection c(broker_options());  // no heartbeats: nothing else crosses the socket
  c.connect();
  channel& ch = c.channel();
  const std::string q = unique_name("q");
  ch.queue_declare(q, {.exclusive = true});

  std::uint64_t sent = c.bytes_sent(), recv = c.bytes_recv();
  c.send_heartbeat();
  EXPECT_EQ(c.bytes_sent() - sent, 8u);  // type, channel, size, end octet
  EXPECT_EQ(c.bytes_recv(), recv);

  sent = c.bytes_sent();
  ch.queue_declare(q, {.passive = true, .exclusive = true});
  // 7 header + class/method 4 + ticket 2 + shortstr + flags 1 + empty table 4 + end 1
  EXPECT_EQ(c.bytes_sent() - sent, 7u + 4 + 2 + 1 + q.size() + 1 + 4 + 1);
  // 7 header + class/method 4 + shortstr + message count 4 + consumer count 4 + end 1
  EXPECT_EQ(c.bytes_recv() - recv, 7u + 4 + 1 + q.size() + 4 + 4 + 1);
}

TEST_F(connection_test, heartbeats_keep_an_idle_connection_alive_while_draining) {
  connection_options o = broker_options();
  o.heartbeat = 1;
  connection c(o);
  c.connect();
  EXPECT_EQ(c.heartbeat(), 1);
  const std::uint64_t recv = c.bytes_recv();
  const auto until = steady_clock::now() + milliseconds(3500);
  while (steady_clock::now() < until) {
    try {
      c.drain_events(seconds_f(0.3));
    } catch (const amqp_timeout&) {
    }
    c.heartbeat_tick();
  }
  EXPECT_TRUE(c.is_alive());
  // The broker's own heartbeats (8 octets each) arrived while we waited.
  EXPECT_GE(c.bytes_recv() - recv, 16u);
  EXPECT_EQ((c.bytes_recv() - recv) % 8, 0u);
  EXPECT_FALSE(c.channel().queue_declare("", {.exclusive = true}).queue.empty());
}

TEST_F(connection_test, background_heartbeat_keeps_a_sleeping_owner_connected) {
  connection_options o = broker_options();
  client_options co;
  o.heartbeat = 1;
  co.background_heartbeat = true;
  connection c(o, co);
  c.connect();
  const std::uint64_t sent = c.bytes_sent();
  std::this_thread::sleep_for(milliseconds(3500));
  EXPECT_GE(c.bytes_sent() - sent, 16u);
  EXPECT_TRUE(c.is_alive());
  EXPECT_FALSE(c.channel().queue_declare("", {.exclusive = true}).queue.empty());
}

// The control for the two tests above: without heartbeats from us the broker gives up.
TEST_F(connection_test, broker_closes_a_connection_that_sends_no_heartbeats) {
  connection_options o = broker_options();
  o.heartbeat = 1;
  connection c(o);
  c.connect();
  std::this_thread::sleep_for(milliseconds(4000));
  EXPECT_THROW(c.channel().queue_declare("", {.exclusive = true}), connection_error);
  EXPECT_FALSE(c.connected());
}

TEST_F(connection_test, heartbeat_tick_without_reading_reports_a_silent_peer) {
  connection_options o = broker_options();
  o.heartbeat = 1;
  connection c(o);
  c.connect();
  // heartbeat_tick sends but never reads: after two intervals of apparent silence it gives up,
  // as py-amqp's does.
  EXPECT_THROW(
      {
        for (int i = 0; i < 20; ++i) {
          c.heartbeat_tick();
          std::this_thread::sleep_for(milliseconds(250));
        }
      },
      connection_forced);
}

TEST_F(connection_test, connection_from_a_uri_talks_to_the_broker) {
  connection c(
      "amqp://guest:guest@127.0.0.1:5672/warren-test?heartbeat=5&channel_max=20"
      "&frame_max=16384&auth_mechanism=amqplain");
  c.connect();
  EXPECT_EQ(c.heartbeat(), 5);
  EXPECT_EQ(c.channel_max(), 20);
  EXPECT_EQ(c.frame_max(), 16384u);
  EXPECT_EQ(c.options().virtual_host, "warren-test");
  EXPECT_FALSE(c.channel().queue_declare("", {.exclusive = true}).queue.empty());
}

class frame_max_test : public test::broker_test {
 protected:
  void SetUp() override {
    test::broker_test::SetUp();
    connection_options o = broker_options();
    o.frame_max = 4096;
    conn_ = std::make_unique<connection>(o);
    conn_->connect();
    ch_ = &conn_->channel();
    q_ = ch_->queue_declare("", {.exclusive = true}).queue;
  }
  std::unique_ptr<connection> conn_;
  channel* ch_ = nullptr;
  std::string q_;
};

std::string pattern_body(std::size_t n) {
  std::string body(n, '\0');
  for (std::size_t i = 0; i < n; ++i) body[i] = static_cast<char>((i * 131 + i / 4093) & 0xFF);
  return body;
}

TEST_F(frame_max_test, one_mebibyte_body_round_trips_byte_exact) {
  EXPECT_EQ(conn_->frame_max(), 4096u);
  const std::string body = pattern_body(1 << 20);
  ch_->basic_publish(message(body), "", q_);
  std::optional<message> got = ch_->basic_get(q_, true);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->body_size(), body.size());
  EXPECT_TRUE(got->body() == body);

  // And through a consumer, twice in a row.
  std::vector<message> delivered;
  ch_->basic_consume(q_, [&](message& m) { delivered.push_back(m); }, {.no_ack = true});
  ch_->basic_publish(message(body), "", q_);
  ch_->basic_publish(message(body.substr(1)), "", q_);
  ASSERT_TRUE(drain_until(*conn_, [&] { return delivered.size() == 2; }));
  EXPECT_TRUE(delivered[0].body() == body);
  EXPECT_TRUE(delivered[1].body() == body.substr(1));
}

TEST_F(frame_max_test, empty_body_round_trips) {
  ch_->basic_publish(message("", {.content_type = "application/octet-stream"}), "", q_);
  std::optional<message> got = ch_->basic_get(q_, true);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->body_size(), 0u);
  EXPECT_EQ(got->content_type(), "application/octet-stream");
}

TEST_F(connection_test, a_thousand_channels_on_one_connection) {
  connection c(broker_options());
  c.connect();
  const std::string q = c.channel().queue_declare("", {.exclusive = true}).queue;
  std::vector<channel*> chans;
  for (int i = 0; i < 1000; ++i) chans.push_back(&c.channel());
  EXPECT_EQ(c.channels().size(), 1001u);
  for (std::size_t i = 0; i < chans.size(); ++i) {
    ASSERT_TRUE(chans[i]->is_open());
    chans[i]->basic_publish(message(std::to_string(chans[i]->channel_id())), "", q);
  }
  // Each channel takes one message: every id comes back once, and no channel lost its state.
  std::vector<bool> seen(1002, false);
  for (channel* ch : chans) {
    std::optional<message> m = ch->basic_get(q, true);
    ASSERT_TRUE(m);
    const int id = std::stoi(m->body_copy());
    ASSERT_TRUE(id >= 2 && id <= 1001) << id;
    EXPECT_FALSE(seen[id]) << id;
    seen[id] = true;
  }
  for (channel* ch : chans) ch->close();
  for (channel* ch : chans) EXPECT_FALSE(ch->is_open());
  EXPECT_TRUE(c.is_alive());
  // The ids are free again.
  EXPECT_TRUE(c.channel(500).is_open());
}

// connection.blocked / unblocked via the memory alarm, on a RabbitMQ node of this test's own
// (tests/support/rabbit_node.h): the alarm is node-wide and must never block the shared broker
// other tests use. One node serves the suite; the fixture always clears the alarm after a test.
class blocked_test : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { node_.reset(); }
  void SetUp() override {
    if (!node_) node_ = std::make_unique<test::rabbit_node>();
  }
  void TearDown() override { node_->clear_memory_alarm(); }
  // Options for a plain connection to the suite's node as guest on vhost "/".
  static connection_options node_options() {
    connection_options o = broker_options();
    o.host = node_->host();
    return o;
  }
  // RabbitMQ blocks (and notifies) only connections that publish while the alarm is up, so
  // this publishes one small unroutable message after raising it.
  void raise_alarm(channel& ch) {
    node_->raise_memory_alarm();
    ch.basic_publish(message("trigger"), "", unique_name("nowhere"));
  }
  void clear_alarm() { node_->clear_memory_alarm(); }

  static inline std::unique_ptr<test::rabbit_node> node_;
};

TEST_F(blocked_test, memory_alarm_calls_on_blocked_and_a_publish_times_out) {
  connection_options o = node_options();
  client_options co;
  std::vector<std::string> events;
  co.on_blocked = [&](std::string_view reason) {
    events.push_back("blocked:" + std::string(reason));
  };
  co.on_unblocked = [&] { events.push_back("unblocked"); };
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();

  raise_alarm(ch);
  ASSERT_TRUE(drain_until(
      c, [&] { return !events.empty(); }, std::chrono::seconds(10)));
  EXPECT_EQ(events[0].rfind("blocked:", 0), 0u) << events[0];
  EXPECT_TRUE(c.blocked());

  // The broker stops reading: once the socket buffers are full a publish gives up at its
  // timeout instead of hanging, with py-amqp's RecoverableChannelError.
  const std::string big(1 << 20, 'x');
  const std::string nowhere = unique_name("nowhere");
  const auto start = steady_clock::now();
  bool timed_out = false;
  for (int i = 0; i < 256 && !timed_out; ++i) {
    try {
      ch.basic_publish(message(big), "", nowhere, {.timeout = seconds_f(0.5)});
    } catch (const recoverable_channel_error& e) {
      timed_out = true;
      EXPECT_NE(std::string(e.what()).find("blocked"), std::string::npos) << e.what();
      EXPECT_EQ(e.method_name(), "basic.publish");
      EXPECT_TRUE(is_recoverable_channel_error(e));
      EXPECT_FALSE(is_connection_error(e));
    }
  }
  EXPECT_TRUE(timed_out);
  EXPECT_LT(seconds_since(start), 30.0);
  // Part of a frame may have gone out: the connection cannot be used any more.
  EXPECT_FALSE(c.connected());
  clear_alarm();
}

TEST_F(blocked_test, confirm_wait_without_confirm_timeout_is_bounded_by_the_publish_timeout) {
  connection_options o = node_options();
  client_options co;
  co.confirm_publish = true;
  // Only so that a wait the publish timeout does not bound fails in seconds, not hangs.
  co.read_timeout = seconds_f(10);
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  // Another connection shows when the alarm is in force.
  connection probe(node_options());
  probe.connect();
  raise_alarm(probe.channel());
  ASSERT_TRUE(drain_until(
      probe, [&] { return probe.blocked(); }, std::chrono::seconds(10)));

  // The broker blocks this connection at the publish and never confirms it: py-amqp waits
  // `confirm_timeout or timeout`.
  const auto start = steady_clock::now();
  try {
    ch.basic_publish(message("unconfirmed"), "", unique_name("nowhere"),
                     {.timeout = seconds_f(0.5)});
    ADD_FAILURE() << "a publish the blocked broker never read was confirmed";
  } catch (const amqp_timeout& e) {
    EXPECT_NE(std::string(e.what()).find("no publisher confirm"), std::string::npos) << e.what();
  }
  EXPECT_LT(seconds_since(start), 5.0);
  clear_alarm();
}

// Issue 9 item 3: an application that only publishes (no drain_events, no RPC) must still hear
// connection.blocked, as py-amqp's basic_publish reads pending frames first. Without that the
// broker's notice sits unread in the socket until the writes stall and a publish times out.
TEST_F(blocked_test, publish_only_loop_hears_on_blocked_before_a_publish_times_out) {
  connection_options o = node_options();
  client_options co;
  int blocked = 0;
  co.on_blocked = [&](std::string_view) { ++blocked; };
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  node_->raise_memory_alarm();
  const std::string body(64 * 1024, 'x');
  const std::string nowhere = unique_name("nowhere");
  const auto start = steady_clock::now();
  // Bounded by count and time; the broker stops reading this connection at its first publish
  // under the alarm, so the socket buffers fill within a few hundred of these publishes. The
  // loop stops at on_blocked, as an application would. A publish that was already stalled when
  // connection.blocked arrived may still fail (py-amqp's TCP_USER_TIMEOUT of 1 s aborts a
  // connection whose peer keeps its window shut), but only after on_blocked has run.
  for (int i = 0; i < 20000 && blocked == 0 && seconds_since(start) < 60.0; ++i) {
    try {
      ch.basic_publish(message(body), "", nowhere, {.timeout = seconds_f(5)});
    } catch (const std::exception& e) {
      EXPECT_EQ(blocked, 1) << "publish " << i << " failed before on_blocked ran: " << e.what();
      break;
    }
  }
  EXPECT_EQ(blocked, 1);
  clear_alarm();
}

TEST_F(blocked_test, on_unblocked_is_called_when_the_alarm_clears) {
  connection_options o = node_options();
  client_options co;
  int blocked = 0, unblocked = 0;
  co.on_blocked = [&](std::string_view) { ++blocked; };
  co.on_unblocked = [&] { ++unblocked; };
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  raise_alarm(ch);
  ASSERT_TRUE(drain_until(
      c, [&] { return blocked == 1; }, std::chrono::seconds(10)));
  clear_alarm();
  ASSERT_TRUE(drain_until(
      c, [&] { return unblocked == 1; }, std::chrono::seconds(10)));
  EXPECT_FALSE(c.blocked());
  // Publishing works again.
  const std::string q = ch.queue_declare("", {.exclusive = true}).queue;
  ch.basic_publish(message("after"), "", q, {.timeout = seconds_f(5)});
  EXPECT_TRUE(ch.basic_get(q, true));
}

}  // namespace
}  // namespace warren
