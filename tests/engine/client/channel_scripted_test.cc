// The blocking channel against a scripted broker (tests/engine/client/scripted_broker.h): what
// RabbitMQ cannot be made to do on demand.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <atomic>
#include <chrono>
#include <string>

#include "engine/client/connection.h"
#include "tests/engine/client/scripted_broker.h"

namespace warren {
namespace {

using protocol::test::scripted_peer;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using test::broker_session;
using test::scripted_broker;

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
  // A starved broker thread must not let the client's kernel abort the connection (py-amqp's
  // default TCP_USER_TIMEOUT is 1 s).
  o.socket_settings = {{IPPROTO_TCP, TCP_USER_TIMEOUT, 0}};
  return o;
}

// With confirm_publish the first publish on a channel selects confirms; confirm_timeout bounds
// the whole publish, that confirm.select included (the header promises amqp_timeout when it
// passes), not only the wait for the ack.
TEST(channel_scripted_test, confirm_timeout_bounds_the_confirm_select_of_a_first_publish) {
  scripted_broker b([&](broker_session& s) {
    s.handshake();
    s.open_channel();
    s.expect<codec::confirm_select>();
    // Never answered.
    s.serve_close();
  });
  connection_options o = scripted_options(b);
  client_options co = scripted_client();
  co.confirm_publish = true;
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  const auto start = steady_clock::now();
  EXPECT_THROW(ch.basic_publish(message("m"), "", "q", {.confirm_timeout = seconds_f(0.3)}),
               amqp_timeout);
  const auto took = steady_clock::now() - start;
  // The cause of the bound is confirm_timeout (0.3 s); read_timeout (10 s) would end it later.
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, milliseconds(5000));
  EXPECT_FALSE(ch.in_confirm_mode());
}

// The channel core's rule for a confirm it cannot place (engine/protocol/channel_core.h): an ack
// for a sequence never published is a protocol error, and the channel closes with 406 instead of
// letting the bogus ack settle nothing (or, later, the wrong publish).
TEST(channel_scripted_test, an_ack_for_a_sequence_never_published_closes_the_channel_with_406) {
  std::atomic<bool> close_sent{false};
  std::atomic<int> close_code{0};
  scripted_broker b([&](broker_session& s) {
    s.handshake();
    const std::uint16_t ch = s.open_channel();
    s.expect<codec::confirm_select>();
    scripted_peer p;
    s.send(p.method(ch, codec::confirm_select_ok{}));
    s.expect<codec::basic_publish>();
    codec::basic_ack ack;
    ack.delivery_tag = 5;  // one publish so far
    s.send(p.method(ch, ack));
    const protocol::test::client_frame close = s.skip_until<codec::channel_close>();
    close_code = close.as<codec::channel_close>()->reply_code;
    close_sent = true;
    s.send(p.channel_close_ok(ch));
    s.serve_close();
  });
  connection c(scripted_options(b), scripted_client());
  c.connect();
  channel& ch = c.channel();
  ch.confirm_select();
  ch.basic_publish(message("m"), "", "q");
  // The publish the channel's end left without an answer is reported, not waited for forever.
  EXPECT_THROW(ch.wait_for_confirms(seconds_f(10)), message_nacked);
  EXPECT_TRUE(close_sent);
  EXPECT_EQ(close_code, 406);
  EXPECT_FALSE(ch.is_open());
  EXPECT_THROW(ch.basic_qos(0, 1, false), recoverable_connection_error);
}

// A basic.get whose call gave up (here its read timed out) must not keep the message it is
// answered with: nobody will see it, so it goes back to the queue (basic.reject, requeue), as
// the channel core decides for a late get-ok.
TEST(channel_scripted_test, a_get_ok_after_its_call_gave_up_is_rejected_with_requeue) {
  std::atomic<bool> gave_up{false};
  std::atomic<bool> rejected{false};
  std::atomic<std::uint64_t> rejected_tag{0};
  std::atomic<bool> requeue{false};
  scripted_broker b([&](broker_session& s) {
    s.handshake();
    const std::uint16_t ch = s.open_channel();
    s.expect<codec::basic_get>();
    if (!test::wait_until([&] { return gave_up.load(); }, std::chrono::seconds(20))) return;
    scripted_peer p;
    codec::basic_get_ok ok;
    ok.delivery_tag = 7;
    ok.exchange = "";
    ok.routing_key = "q";
    s.send(p.method(ch, ok).header(ch, 4).body(ch, "late"));
    s.expect<codec::basic_qos>();
    s.send(p.method(ch, codec::basic_qos_ok{}));
    const protocol::test::client_frame f = s.skip_until<codec::basic_reject>();
    rejected_tag = f.as<codec::basic_reject>()->delivery_tag;
    requeue = f.as<codec::basic_reject>()->requeue;
    rejected = true;
    s.serve_close();
  });
  client_options co = scripted_client();
  // The cause of the give-up: the read timeout (the script answers only after it).
  co.read_timeout = seconds_f(2);
  connection c(scripted_options(b), co);
  c.connect();
  channel& ch = c.channel();
  EXPECT_THROW(ch.basic_get("q"), amqp_timeout);
  gave_up = true;
  // The late get-ok answers nobody (not this qos).
  ch.basic_qos(0, 10, false);
  // The reject was queued while reading the qos-ok; the next write takes it out.
  c.send_heartbeat();
  ASSERT_TRUE(test::wait_until([&] { return rejected.load(); }, std::chrono::seconds(20)));
  EXPECT_EQ(rejected_tag, 7u);
  EXPECT_TRUE(requeue);
  c.close();
}

// client_options::confirm_window bounds the publishes a channel has unanswered in confirm mode
// (the confirm_tracker's window). A publish that finds it full reads acks until there is room,
// within its timeout.
TEST(channel_scripted_test, a_publish_waits_for_room_in_the_confirm_window_within_its_timeout) {
  std::atomic<bool> timed_out{false};
  std::atomic<bool> third{false};
  scripted_broker b([&](broker_session& s) {
    s.handshake();
    const std::uint16_t ch = s.open_channel();
    s.expect<codec::confirm_select>();
    scripted_peer p;
    s.send(p.method(ch, codec::confirm_select_ok{}));
    s.skip_until<codec::basic_publish>();
    s.skip_until<codec::basic_publish>();
    if (!test::wait_until([&] { return timed_out.load(); }, std::chrono::seconds(20))) return;
    codec::basic_ack ack;
    ack.delivery_tag = 1;
    s.send(p.method(ch, ack));
    s.skip_until<codec::basic_publish>();
    third = true;
    ack.delivery_tag = 3;
    ack.multiple = true;
    s.send(p.method(ch, ack));
    s.serve_close();
  });
  client_options co = scripted_client();
  co.confirm_window = 2;
  connection c(scripted_options(b), co);
  c.connect();
  channel& ch = c.channel();
  ch.confirm_select();
  ch.basic_publish(message("1"), "", "q");
  ch.basic_publish(message("2"), "", "q");
  const auto start = steady_clock::now();
  EXPECT_THROW(ch.basic_publish(message("3"), "", "q", {.timeout = seconds_f(0.5)}), amqp_timeout);
  // The cause of the bound is the publish timeout (0.5 s); read_timeout (10 s) would end it later.
  EXPECT_GE(steady_clock::now() - start, milliseconds(450));
  EXPECT_EQ(ch.next_publish_seq_no(), 3u);  // nothing was written
  timed_out = true;
  // The broker acks the first: the window has room again, and the publish goes out.
  ch.basic_publish(message("3"), "", "q", {.timeout = seconds_f(10)});
  ch.wait_for_confirms(seconds_f(10));
  EXPECT_TRUE(third);
  c.close();
}

}  // namespace
}  // namespace warren
