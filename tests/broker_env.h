// Where the integration-test broker lives (set up by tools/setup.sh), and a check that it is up.
//
// Integration tests never skip when the broker is missing: a skipped test would hide a broken
// machine behind a green run. They fail, loudly, with the command that fixes it.
//
// Thread rules: everything here may be called from any thread; broker_answers() blocks for at most
// `timeout`.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace warren::test {

inline constexpr std::string_view broker_host = "127.0.0.1";
inline constexpr std::uint16_t amqp_port = 5672;
inline constexpr std::uint16_t amqps_port = 5671;
inline constexpr std::uint16_t management_port = 15672;

// Users and vhosts that tools/setup.sh creates.
inline constexpr std::string_view guest_user = "guest";
inline constexpr std::string_view guest_password = "guest";
// CN of client.pem; the broker maps it to this user for SASL EXTERNAL.
inline constexpr std::string_view client_cert_user = "warren-client";
inline constexpr std::string_view test_vhost = "warren-test";

// PEM files generated once by tools/setup.sh. server.pem names localhost and 127.0.0.1.
// other_ca.pem is an unrelated CA: a client trusting only it must reject the broker.
inline constexpr const char* ca_pem = "/var/lib/warren/certs/ca.pem";
inline constexpr const char* server_pem = "/var/lib/warren/certs/server.pem";
inline constexpr const char* client_pem = "/var/lib/warren/certs/client.pem";
inline constexpr const char* client_key = "/var/lib/warren/certs/client.key";
inline constexpr const char* other_ca_pem = "/var/lib/warren/certs/other_ca.pem";

// Success if a TCP connection to 127.0.0.1:`port` completes within `timeout`; otherwise a failure
// whose message says "broker not reachable on 127.0.0.1:<port>: run tools/setup.sh".
inline ::testing::AssertionResult broker_answers(
    std::uint16_t port = amqp_port,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  bool up = false;
  int error = 0;
  if (fd >= 0) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      up = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
        socklen_t len = sizeof error;
        up = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
      } else {
        error = ETIMEDOUT;
      }
    } else {
      error = errno;
    }
    ::close(fd);
  } else {
    error = errno;
  }
  if (up) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "broker not reachable on " << broker_host << ":" << port
                                       << ": run tools/setup.sh (" << std::strerror(error) << ")";
}

// For fixtures: a fatal failure in SetUp() keeps the test body from running, and counts as failed.
class broker_test : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(broker_answers()); }
};

}  // namespace warren::test

// In a TEST body (or any void function): fail the test and return unless the broker answers.
#define WARREN_REQUIRE_BROKER() ASSERT_TRUE(::warren::test::broker_answers())
