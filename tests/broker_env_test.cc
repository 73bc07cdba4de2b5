#include "tests/broker_env.h"

#include <gtest/gtest-spi.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace warren::test {
namespace {

// A loopback port nobody listens on: bound (so no one else takes it) but never listened on, so a
// connect is refused at once.
class closed_port {
 public:
  closed_port() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~closed_port() {
    if (fd_ >= 0) ::close(fd_);
  }
  closed_port(const closed_port&) = delete;
  closed_port& operator=(const closed_port&) = delete;
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// EXPECT_FATAL_FAILURE's statement may not use locals.
std::uint16_t g_closed_port = 0;

TEST(broker_env, broker_answers_on_amqp_port) {
  EXPECT_TRUE(broker_answers(amqp_port));
}

TEST(broker_env, broker_answers_on_tls_and_management_ports) {
  EXPECT_TRUE(broker_answers(amqps_port));
  EXPECT_TRUE(broker_answers(management_port));
}

TEST(broker_env, closed_port_fails_with_setup_hint) {
  closed_port closed;
  ASSERT_NE(closed.port(), 0);
  auto result = broker_answers(closed.port());
  EXPECT_FALSE(result);
  EXPECT_NE(std::string(result.message())
                .find("broker not reachable on 127.0.0.1:" + std::to_string(closed.port()) +
                      ": run tools/setup.sh"),
            std::string::npos)
      << result.message();
}

TEST(broker_env, unreachable_broker_is_a_fatal_failure_not_a_skip) {
  closed_port closed;
  ASSERT_NE(closed.port(), 0);
  g_closed_port = closed.port();
  EXPECT_FATAL_FAILURE(ASSERT_TRUE(broker_answers(g_closed_port)), "run tools/setup.sh");
}

TEST(broker_env, certificates_from_setup_exist) {
  for (const char* path : {ca_pem, server_pem, client_pem, client_key, other_ca_pem}) {
    EXPECT_EQ(::access(path, R_OK), 0) << path << " missing: run tools/setup.sh";
  }
}

class broker_env_fixture : public broker_test {};

TEST_F(broker_env_fixture, fixture_runs_body_when_broker_answers) {
  SUCCEED();
}

}  // namespace
}  // namespace warren::test
