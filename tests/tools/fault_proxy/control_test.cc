// The fault proxy binary's command protocol, on a proxy in front of a socket of the test.
#include "tools/fault_proxy/control.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace warren::tools {
namespace {

using test::fault_proxy;

// A listening socket on 127.0.0.1 (the "broker"), and helpers around one proxied connection.
class control_test : public ::testing::Test {
 protected:
  void SetUp() override {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ASSERT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(listen_fd_, 8), 0);
    ASSERT_EQ(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len), 0);
    target_port_ = ntohs(a.sin_port);
    proxy_ = std::make_unique<fault_proxy>("127.0.0.1", target_port_);
  }
  void TearDown() override {
    proxy_.reset();
    for (int fd : {client_, server_, listen_fd_}) {
      if (fd >= 0) ::close(fd);
    }
  }
  void open_connection() {
    client_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(proxy_->port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(client_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    pollfd p{listen_fd_, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    server_ = ::accept(listen_fd_, nullptr, nullptr);
    ASSERT_GE(server_, 0);
  }
  // Sends `text` from the client; what the server received within `ms` (nothing: "").
  std::string pass(const std::string& text, int ms) {
    EXPECT_EQ(::send(client_, text.data(), text.size(), MSG_NOSIGNAL), ssize_t(text.size()));
    pollfd p{server_, POLLIN, 0};
    if (::poll(&p, 1, ms) != 1) return "";
    char buf[256];
    const ssize_t n = ::recv(server_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, std::size_t(n)) : "";
  }

  int listen_fd_ = -1, client_ = -1, server_ = -1;
  std::uint16_t target_port_ = 0;
  std::unique_ptr<fault_proxy> proxy_;
};

TEST_F(control_test, freeze_and_thaw_stop_and_resume_forwarding) {
  open_connection();
  EXPECT_EQ(pass("one", 10000), "one");
  EXPECT_EQ(apply_command(*proxy_, "freeze").text, "ok");
  // freeze applies before its reply: nothing may arrive (300 ms is only how long we look).
  EXPECT_EQ(pass("two", 300), "");
  EXPECT_EQ(apply_command(*proxy_, "  thaw  ").text, "ok");
  pollfd p{server_, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  char buf[8];
  EXPECT_EQ(::recv(server_, buf, sizeof buf, 0), 3);
}

TEST_F(control_test, stats_reports_the_counters) {
  open_connection();
  EXPECT_EQ(pass("12345", 10000), "12345");
  EXPECT_EQ(apply_command(*proxy_, "stats").text,
            "ok accepted=1 open=1 cut=0 to_target=5 to_client=0");
}

TEST_F(control_test, drop_reset_refuse_target_and_quit_are_applied) {
  open_connection();
  EXPECT_EQ(apply_command(*proxy_, "drop to_target 2 reset").text, "ok");
  EXPECT_EQ(pass("abcdef", 10000), "ab");
  EXPECT_EQ(apply_command(*proxy_, "clear_drop").text, "ok");
  EXPECT_EQ(apply_command(*proxy_, "reset").text, "ok");
  EXPECT_EQ(apply_command(*proxy_, "refuse on").text, "ok");
  EXPECT_EQ(apply_command(*proxy_, "refuse off").text, "ok");
  EXPECT_EQ(apply_command(*proxy_, "target 127.0.0.1:" + std::to_string(target_port_)).text, "ok");
  const control_reply q = apply_command(*proxy_, "quit");
  EXPECT_EQ(q.text, "ok");
  EXPECT_TRUE(q.quit);
  EXPECT_EQ(proxy_->cut(), 1u);
}

TEST_F(control_test, malformed_commands_are_errors_and_change_nothing) {
  for (const char* bad :
       {"", "frieze", "freeze now", "refuse maybe", "drop to_target x reset",
        "drop sideways 5 reset", "drop to_client 5 explode", "drop to_client 5", "target nowhere",
        "target 127.0.0.1:0", "target 127.0.0.1:70000", "target broker.example:5672",
        "drop to_target 99999999999999999999 reset"}) {
    const control_reply r = apply_command(*proxy_, bad);
    EXPECT_EQ(r.text.rfind("error: ", 0), 0u) << bad << " -> " << r.text;
    EXPECT_FALSE(r.quit);
  }
  open_connection();
  EXPECT_EQ(pass("still", 10000), "still");
}

}  // namespace
}  // namespace warren::tools
