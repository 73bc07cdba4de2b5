// The transport against the RabbitMQ of tools/setup.sh: AMQP on 127.0.0.1:5672, TLS on 5671,
// certificates in /var/lib/warren/certs. These tests fail, never skip, when the broker is down.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "engine/io/transport.h"

namespace warren::io {
namespace {

using namespace std::chrono_literals;

const std::string cert_dir = "/var/lib/warren/certs/";

transport_options tls_with_ca(const std::string& ca_file) {
  transport_options o;
  o.connect_timeout = 5s;
  o.tls.emplace();
  o.tls->ca_file = cert_dir + ca_file;
  o.tls->handshake_timeout = 5s;
  return o;
}

// Sends the protocol header and checks that the broker answers with a method frame on
// channel 0 carrying connection.start (class 10, method 10).
void expect_connection_start(transport& t) {
  iovec header{const_cast<char*>("AMQP\0\0\x09\x01"), 8};
  io_error err = t.write_all(&header, 1, 5s);
  ASSERT_FALSE(err) << err.message;
  std::string frame;
  char buf[4096];
  while (frame.size() < 11) {
    std::size_t got = t.read_some(buf, sizeof buf, 5s, err);
    ASSERT_FALSE(err) << err.message;
    frame.append(buf, got);
  }
  auto u8 = [&](std::size_t i) { return static_cast<std::uint8_t>(frame[i]); };
  EXPECT_EQ(u8(0), 1) << "frame type: method";
  EXPECT_EQ(u8(1) << 8 | u8(2), 0) << "channel 0";
  EXPECT_EQ(u8(7) << 8 | u8(8), 10) << "class connection";
  EXPECT_EQ(u8(9) << 8 | u8(10), 10) << "method start";
}

TEST(transport_broker, plain_tcp_gets_connection_start) {
  transport t;
  transport_options o;
  o.connect_timeout = 5s;
  io_error err = t.connect({"127.0.0.1", 5672}, o);
  ASSERT_FALSE(err) << err.message << " (is the broker running? tools/broker.sh start)";
  expect_connection_start(t);
}

TEST(transport_broker, tls_handshake_with_the_right_ca_gets_connection_start) {
  transport t;
  io_error err = t.connect({"127.0.0.1", 5671}, tls_with_ca("ca.pem"));
  ASSERT_FALSE(err) << err.message << " (is the broker running? tools/broker.sh start)";
  ASSERT_NE(t.tls(), nullptr);
  expect_connection_start(t);
  EXPECT_GT(t.bytes_received(), t.tls()->protocol().size());
}

TEST(transport_broker, tls_handshake_with_a_client_certificate_by_name) {
  transport_options o = tls_with_ca("ca.pem");
  o.tls->cert_file = cert_dir + "client.pem";
  o.tls->key_file = cert_dir + "client.key";
  transport t;
  io_error err = t.connect({"localhost", 5671}, o);
  ASSERT_FALSE(err) << err.message;
  expect_connection_start(t);
}

TEST(transport_broker, tls_handshake_with_the_wrong_ca_fails) {
  transport t;
  io_error err = t.connect({"127.0.0.1", 5671}, tls_with_ca("other_ca.pem"));
  EXPECT_EQ(err.code, io_errc::tls_verify) << err.message;
  EXPECT_EQ(err.message.rfind("TLS handshake with 127.0.0.1:5671: certificate verify failed: ", 0),
            0u)
      << err.message;
  EXPECT_NE(err.message.find("(wrong CA?)"), std::string::npos) << err.message;
  EXPECT_FALSE(t.is_open());
}

TEST(transport_broker, tls_to_the_plain_port_points_at_the_port) {
  transport t;
  io_error err = t.connect({"127.0.0.1", 5672}, tls_with_ca("ca.pem"));
  ASSERT_TRUE(err);
  EXPECT_NE(err.message.find("is this the TLS port?"), std::string::npos) << err.message;
}

}  // namespace
}  // namespace warren::io
