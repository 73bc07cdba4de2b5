// The blocking channel against a scripted broker (tests/engine/client/scripted_broker.h): what
// RabbitMQ cannot be made to do on demand.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <chrono>
#include <string>

#include "engine/client/connection.h"
#include "tests/engine/client/scripted_broker.h"

namespace warren {
namespace {

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

}  // namespace
}  // namespace warren
