// The blocking connection against a scripted broker (tests/engine/client/scripted_broker.h):
// what RabbitMQ cannot be made to do on demand, or not without disturbing every other test on
// the shared broker (a SASL challenge, connection.blocked while the client only publishes, a
// silent peer), and exactly what goes over the wire when the client closes.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include "engine/client/connection.h"
#include "tests/engine/client/scripted_broker.h"

namespace warren {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using test::broker_session;
using test::client_frame;
using test::scripted_broker;
using test::scripted_peer;
using test::wait_until;

// Bounds every wait, so a script that stops early fails the test instead of hanging it.
client_options scripted_client() {
  client_options c;
  c.read_timeout = seconds_f(10);
  return c;
}

connection_options scripted_options(const scripted_broker& b) {
  connection_options o;
  o.host = b.host();
  o.connect_timeout = seconds_f(10);
  // The broker is a thread, which a loaded machine (sanitizers, other builds) may starve for
  // over a second while the client's writes wait for window: py-amqp's default TCP_USER_TIMEOUT
  // (1 s) would let the client's kernel abort the connection then.
  o.socket_settings = {{IPPROTO_TCP, TCP_USER_TIMEOUT, 0}};
  return o;
}

codec::field_table blocked_capability() {
  return scripted_peer::capabilities({"connection.blocked"});
}

bool readable_within(int fd, milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

// py-amqp's Channel._basic_publish reads what is pending (drain_events(timeout=0)) before it
// writes when connection.blocked was negotiated. The client's first publish checks: the
// notification, already in the socket, runs on_blocked inside that publish.
TEST(connection_scripted_test, publish_reads_a_pending_connection_blocked_first) {
  std::atomic<bool> channel_opened{false}, blocked_sent{false};
  scripted_broker b([&](broker_session& s) {
    s.handshake("PLAIN AMQPLAIN", blocked_capability());
    s.open_channel();
    // Only once channel() has returned: sent with open-ok, connection.blocked could be read
    // (and on_blocked run) by channel()'s own wait.
    if (!wait_until([&] { return channel_opened.load(); })) {
      throw test::script_failure("channel() did not return");
    }
    scripted_peer p;
    s.send(p.method(0, codec::connection_blocked{"low on memory"}));
    blocked_sent = true;
    s.serve_close();
  });
  connection_options o = scripted_options(b);
  client_options co = scripted_client();
  std::vector<std::string> events;
  bool in_publish = false, fired_in_publish = false;
  co.on_blocked = [&](std::string_view reason) {
    events.emplace_back(reason);
    fired_in_publish = in_publish;
  };
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  channel_opened = true;
  ASSERT_TRUE(wait_until([&] { return blocked_sent.load(); }));
  // The notification has reached the client's socket: nothing but the publish reads it.
  ASSERT_TRUE(readable_within(c.sock(), milliseconds(10000)));
  EXPECT_FALSE(c.blocked());
  in_publish = true;
  ch.basic_publish(message("m"), "", "q");
  in_publish = false;
  EXPECT_EQ(events, std::vector<std::string>{"low on memory"});
  EXPECT_TRUE(fired_in_publish);
  EXPECT_TRUE(c.blocked());
}

// A publish-only loop (nothing else reads the socket) hears connection.blocked while it
// publishes: its publishes look for pending frames at least once per millisecond. The broker
// here goes on reading after the notification: RabbitMQ stops reading from a blocked publisher,
// but then whether the socket buffers fill before the notification is read depends on how far
// the writes ran ahead of the broker, which is scheduling, not a cause a test may rely on (and
// a zero window for a second lets the client's kernel abort the connection: py-amqp's
// TCP_USER_TIMEOUT). publish_reads_a_pending_connection_blocked_first covers the publish that
// would be the one to stall.
TEST(connection_scripted_test, publish_only_loop_hears_connection_blocked) {
  constexpr int before_blocked = 1000;
  std::atomic<bool> blocked_sent{false};
  scripted_broker b([&](broker_session& s) {
    s.handshake("PLAIN AMQPLAIN", blocked_capability());
    s.open_channel();
    for (int i = 0; i < before_blocked; ++i) s.skip_until<codec::basic_publish>();
    scripted_peer p;
    s.send(p.method(0, codec::connection_blocked{"low on memory"}));
    blocked_sent = true;
    s.serve_close();
  });
  connection_options o = scripted_options(b);
  client_options co = scripted_client();
  int blocked_events = 0;
  co.on_blocked = [&](std::string_view reason) {
    EXPECT_EQ(reason, "low on memory");
    ++blocked_events;
  };
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  long published = 0;
  // The check runs at least once per millisecond of publishing: 5 s after the notification was
  // sent is a margin of thousands, for a loaded machine and sanitizers. Without the check the
  // loop would never stop by itself.
  const auto start = steady_clock::now();
  std::optional<steady_clock::time_point> sent_seen;
  while (!c.blocked()) {
    const auto now = steady_clock::now();
    if (!sent_seen && blocked_sent.load()) sent_seen = now;
    if (sent_seen ? now - *sent_seen > std::chrono::seconds(5)
                  : now - start > std::chrono::seconds(30)) {
      break;
    }
    ch.basic_publish(message("m"), "", "q", {.timeout = seconds_f(10)});
    ++published;
  }
  EXPECT_TRUE(blocked_sent.load());
  EXPECT_EQ(blocked_events, 1);
  EXPECT_TRUE(c.blocked());
  EXPECT_GE(published, before_blocked);
}

TEST(connection_scripted_test, no_common_sasl_mechanism_is_a_connection_error_as_in_py_amqp) {
  scripted_broker b([&](broker_session& s) {
    scripted_peer p;
    s.send(p.start("GSSAPI"));
    s.wait_for_eof();
  });
  connection c(scripted_options(b), scripted_client());
  try {
    c.connect();
    ADD_FAILURE() << "connect must fail without a common mechanism";
  } catch (const amqp_error& e) {
    // py-amqp raises ConnectionError itself (no reply code): not a channel-class
    // access_refused.
    EXPECT_EQ(typeid(e), typeid(connection_error)) << typeid(e).name() << ": " << e.what();
    EXPECT_EQ(e.reply_code(), 0);
    EXPECT_STREQ(e.what(),
                 "Couldn't find appropriate auth mechanism (can offer: AMQPLAIN, PLAIN; "
                 "available: GSSAPI)");
  }
  EXPECT_FALSE(c.connected());
  EXPECT_TRUE(b.join());
}

// connection_options::on_challenge answers the broker's connection.secure, round after round.
TEST(connection_scripted_test, sasl_challenges_are_answered_by_on_challenge) {
  std::string mechanism, initial_response;
  std::vector<std::string> responses;
  scripted_broker b([&](broker_session& s) {
    scripted_peer p;
    s.send(p.start("X-TOKEN PLAIN"));
    const client_frame start_ok = s.expect<codec::connection_start_ok>();
    if (const auto m = start_ok.as<codec::connection_start_ok>()) {
      mechanism = std::string(m->mechanism);
      initial_response = std::string(m->response);
    }
    for (const char* challenge : {"nonce-1", "nonce-2"}) {
      s.send(p.secure(challenge));
      const client_frame ok = s.expect<codec::connection_secure_ok>();
      if (const auto m = ok.as<codec::connection_secure_ok>()) {
        responses.emplace_back(m->response);
      }
    }
    s.finish_handshake();
    s.serve_close();
  });
  connection_options o = scripted_options(b);
  client_options co = scripted_client();
  o.authentication = {protocol::sasl_raw("X-TOKEN", "first")};
  std::vector<std::string> challenges;
  o.on_challenge = [&](std::string_view challenge) {
    challenges.emplace_back(challenge);
    return "answer to " + std::string(challenge);
  };
  {
    connection c(o, co);
    c.connect();
    EXPECT_TRUE(c.connected());
    EXPECT_EQ(c.chosen_mechanism(), "X-TOKEN");
  }
  ASSERT_TRUE(b.join());
  EXPECT_EQ(mechanism, "X-TOKEN");
  EXPECT_EQ(initial_response, "first");
  EXPECT_EQ(challenges, (std::vector<std::string>{"nonce-1", "nonce-2"}));
  EXPECT_EQ(responses, (std::vector<std::string>{"answer to nonce-1", "answer to nonce-2"}));
}

// heartbeat_tick, as py-amqp's, raises connection_forced after two intervals without a byte
// received. warren also closes the connection, politely: connection.close (320) goes out
// before the socket is closed (py-amqp leaves the dead connection to its caller).
TEST(connection_scripted_test, heartbeat_tick_on_a_silent_peer_raises_and_closes_politely) {
  std::uint16_t close_code = 0;
  std::string close_text;
  scripted_broker b([&](broker_session& s) {
    s.handshake("PLAIN AMQPLAIN", {}, /*heartbeat=*/1);
    // Silent from here on: reads, never writes.
    const client_frame close = s.skip_until<codec::connection_close>();
    const auto m = close.as<codec::connection_close>();
    if (!m) throw test::script_failure("undecodable connection.close");
    close_code = m->reply_code;
    close_text = std::string(m->reply_text);
    s.wait_for_eof();
  });
  connection_options o = scripted_options(b);
  client_options co = scripted_client();
  o.heartbeat = 1;
  connection c(o, co);
  c.connect();
  ASSERT_EQ(c.heartbeat(), 1);
  const auto start = steady_clock::now();
  bool forced = false;
  try {
    while (steady_clock::now() - start < std::chrono::seconds(10)) {
      c.heartbeat_tick();
      std::this_thread::sleep_for(milliseconds(100));
    }
  } catch (const connection_forced& e) {
    forced = true;
    EXPECT_EQ(e.reply_code(), 320);
    EXPECT_NE(std::string(e.what()).find("Too many heartbeats missed"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(forced);
  // The first tick starts the clock; two intervals (2 s) of silence must pass after it.
  EXPECT_GE(steady_clock::now() - start, milliseconds(1900));
  EXPECT_FALSE(c.connected());
  ASSERT_TRUE(b.join());
  EXPECT_EQ(close_code, 320);
  EXPECT_EQ(close_text, "CONNECTION_FORCED - Too many heartbeats missed");
}

// connection::close() is py-amqp's Connection.close: connection.close straight away (the
// broker closes every channel with the connection), no channel.close per channel; the channels
// are then closed on this side too.
TEST(connection_scripted_test, close_sends_only_connection_close_and_closes_every_channel) {
  std::vector<std::uint32_t> after_opens;
  std::uint16_t close_code = 0;
  std::string close_text;
  scripted_broker b([&](broker_session& s) {
    s.handshake();
    s.open_channel();
    s.open_channel();
    for (;;) {
      const client_frame f = s.next_frame();
      if (f.type == codec::frame_heartbeat) continue;
      after_opens.push_back(f.method_id());
      if (const auto m = f.as<codec::connection_close>()) {
        close_code = m->reply_code;
        close_text = std::string(m->reply_text);
        break;
      }
    }
    scripted_peer p;
    s.send(p.connection_close_ok());
    s.wait_for_eof();
  });
  connection c(scripted_options(b), scripted_client());
  c.connect();
  channel& one = c.channel();
  channel& two = c.channel();
  c.close(200, "bye");
  EXPECT_FALSE(c.connected());
  EXPECT_FALSE(one.is_open());
  EXPECT_FALSE(two.is_open());
  EXPECT_THROW(one.queue_declare("q"), recoverable_connection_error);
  ASSERT_TRUE(b.join());
  EXPECT_EQ(after_opens, std::vector<std::uint32_t>{codec::connection_close::id});
  EXPECT_EQ(close_code, 200);
  EXPECT_EQ(close_text, "bye");
}

}  // namespace
}  // namespace warren
