// TLS connections to the broker's 5671 listener: verification, host names, SASL EXTERNAL.
#include <gtest/gtest.h>

#include <string>

#include "engine/client/connection.h"
#include "tests/broker_env.h"
#include "tests/engine/client/test_support.h"

namespace warren {
namespace {

using test::broker_options;
using test::unique_name;

class tls_test : public test::broker_test {
 protected:
  void SetUp() override {
    test::broker_test::SetUp();
    ASSERT_TRUE(test::broker_answers(test::amqps_port));
  }
  static connection_options tls_options(io::tls_options tls) {
    connection_options o = broker_options();
    o.host = std::string(test::broker_host) + ":" + std::to_string(test::amqps_port);
    o.ssl = std::move(tls);
    return o;
  }
  // The text of the error connect() throws, or "" (and a test failure) when it succeeds.
  static std::string connect_error(connection_options o) {
    connection c(std::move(o));
    try {
      c.connect();
    } catch (const recoverable_connection_error& e) {
      EXPECT_FALSE(c.connected());
      return e.what();
    }
    ADD_FAILURE() << "connect() succeeded";
    return "";
  }
};

TEST_F(tls_test, verified_connection_with_the_test_ca_works) {
  connection c(tls_options({.ca_file = test::ca_pem, .server_name = "localhost"}));
  c.connect();
  EXPECT_TRUE(c.connected());
  channel& ch = c.channel();
  const std::string q = ch.queue_declare("", {.exclusive = true}).queue;
  const std::string body(200000, 's');  // several TLS records
  ch.basic_publish(message(body), "", q);
  std::optional<message> got = ch.basic_get(q, true);
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->body() == body);
  EXPECT_TRUE(c.is_alive());
  c.close();
}

TEST_F(tls_test, an_unrelated_ca_fails_certificate_verification) {
  const std::string what =
      connect_error(tls_options({.ca_file = test::other_ca_pem, .server_name = "localhost"}));
  EXPECT_NE(what.find("certificate verify failed"), std::string::npos) << what;
}

TEST_F(tls_test, a_wrong_host_name_fails_the_hostname_check) {
  const std::string what =
      connect_error(tls_options({.ca_file = test::ca_pem, .server_name = "wronghost"}));
  EXPECT_NE(what.find("hostname mismatch"), std::string::npos) << what;
  EXPECT_NE(what.find("wronghost"), std::string::npos) << what;
}

TEST_F(tls_test, external_login_with_the_client_certificate_is_the_certificate_user) {
  connection_options o = tls_options({.ca_file = test::ca_pem,
                                      .cert_file = test::client_pem,
                                      .key_file = test::client_key,
                                      .server_name = "localhost"});
  o.login_method = "EXTERNAL";
  const std::string name = unique_name("external");
  o.client_properties.set("connection_name", codec::field_value::long_string(name));
  connection c(o);
  c.connect();
  EXPECT_TRUE(c.connected());
  // Ask the broker who it thinks we are.
  std::string listing;
  for (int i = 0; i < 50 && listing.find(name) == std::string::npos; ++i) {
    listing = test::rabbitmqctl("list_connections -q user client_properties");
  }
  bool found = false;
  std::size_t line_start = 0;
  while (line_start < listing.size()) {
    std::size_t end = listing.find('\n', line_start);
    if (end == std::string::npos) end = listing.size();
    const std::string line = listing.substr(line_start, end - line_start);
    if (line.find(name) != std::string::npos) {
      found = true;
      EXPECT_EQ(line.rfind(std::string(test::client_cert_user) + "\t", 0), 0u) << line;
    }
    line_start = end + 1;
  }
  EXPECT_TRUE(found) << listing;
}

TEST_F(tls_test, default_mechanisms_with_a_client_certificate_use_external) {
  // No login_method: EXTERNAL is tried first when a client certificate is configured, and
  // the (wrong) password is never needed.
  connection_options o = tls_options({.ca_file = test::ca_pem,
                                      .cert_file = test::client_pem,
                                      .key_file = test::client_key,
                                      .server_name = "localhost"});
  o.password = "not-the-password";
  connection c(o);
  c.connect();
  EXPECT_TRUE(c.connected());
  EXPECT_EQ(c.chosen_mechanism(), "EXTERNAL");
}

TEST_F(tls_test, amqps_uri_with_tls_keys_connects_as_the_certificate_user) {
  connection c(std::string("amqps://127.0.0.1:5671?cacertfile=") + test::ca_pem +
               "&certfile=" + test::client_pem + "&keyfile=" + test::client_key +
               "&server_name_indication=localhost&auth_mechanism=external");
  c.connect();
  EXPECT_TRUE(c.connected());
  EXPECT_FALSE(c.channel().queue_declare("", {.exclusive = true}).queue.empty());
}

}  // namespace
}  // namespace warren
