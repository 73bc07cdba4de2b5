#include "engine/io/socket.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>

#include "tests/engine/io/test_support.h"

namespace warren::io {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using test::listener;

host_port parsed(std::string_view text) {
  host_port out{"unset", 1};
  io_error err = parse_host_port(text, 5672, out);
  EXPECT_FALSE(err) << text << ": " << err.message;
  return out;
}

TEST(parse_host_port, takes_the_default_port_for_a_bare_host) {
  EXPECT_EQ(parsed("rabbit.example"), (host_port{"rabbit.example", 5672}));
  EXPECT_EQ(parsed("10.0.0.1"), (host_port{"10.0.0.1", 5672}));
}

TEST(parse_host_port, splits_host_and_port) {
  EXPECT_EQ(parsed("rabbit:5671"), (host_port{"rabbit", 5671}));
  EXPECT_EQ(parsed("127.0.0.1:65535"), (host_port{"127.0.0.1", 65535}));
}

TEST(parse_host_port, strips_brackets_of_an_ipv6_literal) {
  EXPECT_EQ(parsed("[::1]:5999"), (host_port{"::1", 5999}));
  EXPECT_EQ(parsed("[fe80::1]"), (host_port{"fe80::1", 5672}));
}

TEST(parse_host_port, reads_an_unbracketed_ipv6_literal_as_host_only) {
  EXPECT_EQ(parsed("::1"), (host_port{"::1", 5672}));
  EXPECT_EQ(parsed("2001:db8::5"), (host_port{"2001:db8::5", 5672}));
}

TEST(parse_host_port, rejects_bad_ports_and_empty_hosts_leaving_output_unchanged) {
  for (std::string_view bad : {"h:0", "h:65536", "h:", "h:56x", ":5672", "", "[::1", "[::1]x",
                               "[::1]:", "[]:5672", "h:-1"}) {
    host_port out{"keep", 7};
    io_error err = parse_host_port(bad, 5672, out);
    EXPECT_EQ(err.code, io_errc::bad_address) << bad;
    EXPECT_NE(err.message.find(std::string(bad)), std::string::npos) << err.message;
    EXPECT_EQ(out, (host_port{"keep", 7})) << bad;
  }
}

TEST(is_ip_literal, tells_addresses_from_names) {
  EXPECT_TRUE(is_ip_literal("127.0.0.1"));
  EXPECT_TRUE(is_ip_literal("::1"));
  EXPECT_TRUE(is_ip_literal("fe80::1:2"));
  EXPECT_FALSE(is_ip_literal("localhost"));
  EXPECT_FALSE(is_ip_literal("[::1]"));
  EXPECT_FALSE(is_ip_literal("1.2.3"));
  EXPECT_FALSE(is_ip_literal(std::string(100, '1')));
}

TEST(format_host_port, brackets_ipv6_only) {
  EXPECT_EQ(format_host_port("::1", 5672), "[::1]:5672");
  EXPECT_EQ(format_host_port("localhost", 1), "localhost:1");
}

TEST(socket_settings, defaults_are_py_amqps) {
  std::vector<socket_option> expected{
      {SOL_SOCKET, SO_KEEPALIVE, 1},         {IPPROTO_TCP, TCP_NODELAY, 1},
      {IPPROTO_TCP, TCP_USER_TIMEOUT, 1000}, {IPPROTO_TCP, TCP_KEEPIDLE, 60},
      {IPPROTO_TCP, TCP_KEEPINTVL, 10},      {IPPROTO_TCP, TCP_KEEPCNT, 9},
  };
  EXPECT_EQ(default_socket_settings(), expected);
  EXPECT_EQ(effective_socket_settings({}), expected);
}

TEST(socket_settings, user_values_replace_defaults_in_place_and_others_are_appended) {
  std::vector<socket_option> user{{IPPROTO_TCP, TCP_KEEPIDLE, 5},
                                  {SOL_SOCKET, SO_RCVBUF, 65536},
                                  {IPPROTO_TCP, TCP_NODELAY, 0}};
  std::vector<socket_option> got = effective_socket_settings(user);
  ASSERT_EQ(got.size(), 7u);
  EXPECT_EQ(got[1], (socket_option{IPPROTO_TCP, TCP_NODELAY, 0}));
  EXPECT_EQ(got[3], (socket_option{IPPROTO_TCP, TCP_KEEPIDLE, 5}));
  EXPECT_EQ(got[6], (socket_option{SOL_SOCKET, SO_RCVBUF, 65536}));
}

TEST(socket_settings, leave_out_tcp_user_timeout_unless_the_user_sets_it) {
  const std::vector<socket_option> without{
      {SOL_SOCKET, SO_KEEPALIVE, 1},   {IPPROTO_TCP, TCP_NODELAY, 1},
      {IPPROTO_TCP, TCP_KEEPIDLE, 60}, {IPPROTO_TCP, TCP_KEEPINTVL, 10},
      {IPPROTO_TCP, TCP_KEEPCNT, 9},
  };
  EXPECT_EQ(effective_socket_settings({}, false), without);
  const std::vector<socket_option> user{{IPPROTO_TCP, TCP_USER_TIMEOUT, 30000}};
  const std::vector<socket_option> got = effective_socket_settings(user, false);
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got.back(), (socket_option{IPPROTO_TCP, TCP_USER_TIMEOUT, 30000}));
}

int get_option(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  EXPECT_EQ(::getsockopt(fd, level, name, &v, &len), 0);
  return v;
}

time_point in(std::chrono::milliseconds ms) {
  return steady_clock::now() + ms;
}

TEST(connect_tcp, connects_non_blocking_with_py_amqp_options_and_user_overrides) {
  listener l;
  ASSERT_TRUE(l.ok());
  io_error err;
  auto settings =
      effective_socket_settings(std::vector<socket_option>{{IPPROTO_TCP, TCP_KEEPIDLE, 30}});
  unique_fd fd = connect_tcp(l.address(), settings, in(5s), err);
  ASSERT_FALSE(err) << err.message;
  ASSERT_TRUE(fd.valid());
  EXPECT_TRUE(::fcntl(fd.get(), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(get_option(fd.get(), SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(get_option(fd.get(), IPPROTO_TCP, TCP_NODELAY), 1);
  EXPECT_EQ(get_option(fd.get(), IPPROTO_TCP, TCP_USER_TIMEOUT), 1000);
  EXPECT_EQ(get_option(fd.get(), IPPROTO_TCP, TCP_KEEPIDLE), 30);
  EXPECT_EQ(get_option(fd.get(), IPPROTO_TCP, TCP_KEEPINTVL), 10);
  EXPECT_EQ(get_option(fd.get(), IPPROTO_TCP, TCP_KEEPCNT), 9);
  EXPECT_TRUE(l.accept().valid());
}

TEST(connect_tcp, connects_to_an_ipv6_loopback_literal) {
  listener l(AF_INET6);
  if (!l.ok()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  io_error err;
  unique_fd fd = connect_tcp({"::1", l.port()}, {}, in(5s), err);
  ASSERT_FALSE(err) << err.message;
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  ASSERT_EQ(::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &len), 0);
  EXPECT_EQ(peer.ss_family, AF_INET6);
}

TEST(connect_tcp, resolves_a_name) {
  listener l;
  io_error err;
  // "localhost" may resolve to ::1 first, where nothing listens: the next address is tried.
  unique_fd fd = connect_tcp({"localhost", l.port()}, {}, in(5s), err);
  ASSERT_FALSE(err) << err.message;
  EXPECT_TRUE(fd.valid());
}

TEST(connect_tcp, reports_refusal_naming_host_and_port) {
  io_error err;
  std::uint16_t port = test::closed_port();
  unique_fd fd = connect_tcp({"127.0.0.1", port}, {}, in(5s), err);
  EXPECT_FALSE(fd.valid());
  EXPECT_EQ(err.code, std::error_code(ECONNREFUSED, std::system_category()));
  EXPECT_EQ(err.message, "connect to 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

TEST(connect_tcp, names_each_address_tried_when_a_name_is_refused) {
  io_error err;
  std::uint16_t port = test::closed_port();
  unique_fd fd = connect_tcp({"localhost", port}, {}, in(5s), err);
  EXPECT_EQ(err.code, std::error_code(ECONNREFUSED, std::system_category()));
  std::string p = std::to_string(port);
  EXPECT_EQ(err.message.rfind("connect to localhost:" + p + ": ", 0), 0u) << err.message;
  EXPECT_NE(err.message.find("127.0.0.1:" + p + " Connection refused"), std::string::npos)
      << err.message;
}

TEST(connect_tcp, times_out_against_a_listener_with_a_full_backlog) {
  // Backlog 0 holds one unaccepted connection; later SYNs are dropped, so the connect hangs.
  listener l(AF_INET, 0);
  io_error err;
  unique_fd first = connect_tcp(l.address(), {}, in(5s), err);
  ASSERT_FALSE(err) << err.message;
  auto start = steady_clock::now();
  unique_fd fd = connect_tcp(l.address(), {}, start + 300ms, err);
  auto waited = steady_clock::now() - start;
  EXPECT_FALSE(fd.valid());
  EXPECT_EQ(err.code, io_errc::timeout);
  EXPECT_EQ(err.message,
            "connect to 127.0.0.1:" + std::to_string(l.port()) + ": connect timeout after 300 ms");
  EXPECT_GE(waited, 300ms);
  EXPECT_LT(waited, 3s);
}

TEST(connect_tcp, reports_a_name_that_does_not_resolve) {
  io_error err;
  unique_fd fd = connect_tcp({"nosuch.invalid", 5672}, {}, in(5s), err);
  EXPECT_FALSE(fd.valid());
  EXPECT_EQ(&err.code.category(), &resolve_category());
  EXPECT_EQ(err.message, "resolve nosuch.invalid: " + err.code.message());
}

TEST(connect_tcp, fails_on_an_option_the_kernel_refuses_and_names_it) {
  listener l;
  io_error err;
  std::vector<socket_option> bad{{IPPROTO_TCP, TCP_KEEPIDLE, -5}};
  unique_fd fd = connect_tcp(l.address(), bad, in(5s), err);
  EXPECT_FALSE(fd.valid());
  EXPECT_EQ(err.code, std::error_code(EINVAL, std::system_category()));
  EXPECT_EQ(err.message,
            "set TCP_KEEPIDLE=-5 on 127.0.0.1:" + std::to_string(l.port()) + ": Invalid argument");
}

TEST(wait_fd, times_out_on_a_quiet_socket_and_wakes_on_data) {
  listener l;
  io_error err;
  unique_fd fd = connect_tcp(l.address(), {}, in(5s), err);
  unique_fd server = l.accept();
  auto start = steady_clock::now();
  EXPECT_EQ(wait_fd(fd.get(), POLLIN, start + 50ms), io_errc::timeout);
  EXPECT_GE(steady_clock::now() - start, 50ms);
  ASSERT_EQ(::send(server.get(), "x", 1, 0), 1);
  EXPECT_FALSE(wait_fd(fd.get(), POLLIN, in(5s)));
  EXPECT_FALSE(wait_fd(fd.get(), POLLOUT, time_point::max()));
}

TEST(poll_timeout_ms, rounds_up_and_maps_the_far_future_to_infinite) {
  EXPECT_EQ(poll_timeout_ms(time_point::max()), -1);
  EXPECT_EQ(poll_timeout_ms(steady_clock::now() - 1s), 0);
  int ms = poll_timeout_ms(steady_clock::now() + 1500us);
  EXPECT_GE(ms, 1);
  EXPECT_LE(ms, 2);
}

TEST(unique_fd, closes_on_reset_and_moves_ownership) {
  int raw = ::socket(AF_INET, SOCK_STREAM, 0);
  unique_fd a(raw);
  unique_fd b(std::move(a));
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(b.get(), raw);
  b.reset();
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
}

}  // namespace
}  // namespace warren::io
