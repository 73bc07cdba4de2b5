#include "tests/engine/client/test_support.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "tests/broker_env.h"

namespace warren::test {

connection_options broker_options() {
  connection_options o;
  o.host = std::string(broker_host) + ":" + std::to_string(amqp_port);
  o.connect_timeout = seconds_f(10);
  return o;
}

std::string unique_name(std::string_view prefix) {
  static std::atomic<unsigned> counter{0};
  std::string name(prefix);
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    name += ".";
    name += info->name();
  }
  name += "." + std::to_string(::getpid()) + "." + std::to_string(++counter);
  return name;
}

std::string run_command(const std::string& command, int* exit_status) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) {
    if (exit_status) *exit_status = -1;
    return out;
  }
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (exit_status) *exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

std::string rabbitmqctl(const std::string& args) {
  int status = 0;
  // Bazel's test environment has a minimal PATH; rabbitmqctl lives in /usr/sbin.
  std::string out = run_command("/usr/sbin/rabbitmqctl " + args + " 2>&1", &status);
  EXPECT_EQ(status, 0) << "rabbitmqctl " << args << ": " << out;
  return out;
}

std::string management_get(std::string_view path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ADD_FAILURE() << "socket() failed";
    return "";
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(management_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    ADD_FAILURE() << "management API not reachable on port " << management_port;
    return "";
  }
  // "Z3Vlc3Q6Z3Vlc3Q=" is base64("guest:guest").
  const std::string request = "GET " + std::string(path) +
                              " HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                              "Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    ADD_FAILURE() << "management API: send failed";
    return "";
  }
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const std::size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 200", 0) != 0 || body == std::string::npos) {
    ADD_FAILURE() << "management API GET " << path << ": " << response.substr(0, 200);
    return "";
  }
  return response.substr(body + 4);
}

bool drain_until(connection& conn, const std::function<bool()>& done,
                 std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    try {
      conn.drain_events(seconds_f(0.1));
    } catch (const amqp_timeout&) {
    }
  }
  return done();
}

void delete_queue_quietly(std::string_view queue) {
  try {
    connection c(broker_options());
    c.connect();
    c.channel().queue_delete(queue);
    c.close();
  } catch (const std::exception&) {
  }
}

}  // namespace warren::test
