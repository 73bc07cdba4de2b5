#include "engine/io/server_socket.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <string>

namespace warren::io {
namespace {

using namespace std::chrono_literals;

unique_fd listen_loopback(io_error& err) {
  return listen_tcp({"127.0.0.1", 0}, 8, err);
}

// Connects to the listener and accepts the other end (both non-blocking).
struct pair_of_ends {
  unique_fd client, server;
};
pair_of_ends connect_pair(int listener) {
  io_error err;
  pair_of_ends p;
  p.client = connect_tcp({"127.0.0.1", local_port(listener)}, {},
                         std::chrono::steady_clock::now() + 10s, err);
  EXPECT_FALSE(err) << err.message;
  EXPECT_FALSE(wait_fd(listener, POLLIN, std::chrono::steady_clock::now() + 10s));
  std::error_code ec;
  p.server = accept_connection(listener, ec);
  EXPECT_FALSE(ec) << ec.message();
  return p;
}

TEST(server_socket, port_zero_binds_a_free_port_that_local_port_reports) {
  io_error err;
  unique_fd l = listen_loopback(err);
  ASSERT_TRUE(l.valid()) << err.message;
  EXPECT_FALSE(err);
  EXPECT_NE(local_port(l.get()), 0);
  EXPECT_EQ(local_port(-1), 0);
}

TEST(server_socket, accept_with_nothing_waiting_returns_no_fd_and_no_error) {
  io_error err;
  unique_fd l = listen_loopback(err);
  std::error_code ec;
  EXPECT_FALSE(accept_connection(l.get(), ec).valid());
  EXPECT_FALSE(ec);
}

TEST(server_socket, reads_and_writes_move_bytes_and_report_would_block_and_eof) {
  io_error err;
  unique_fd l = listen_loopback(err);
  pair_of_ends p = connect_pair(l.get());
  ASSERT_TRUE(p.server.valid());
  char buf[16];
  std::error_code ec;
  EXPECT_EQ(read_some(p.server.get(), buf, ec), -1);
  EXPECT_EQ(ec, std::errc::operation_would_block);
  const std::string hello = "hello";
  EXPECT_EQ(write_some(p.client.get(), hello, ec), 5);
  ASSERT_FALSE(wait_fd(p.server.get(), POLLIN, std::chrono::steady_clock::now() + 10s));
  EXPECT_EQ(read_some(p.server.get(), buf, ec), 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
  shutdown_write(p.client.get());
  ASSERT_FALSE(wait_fd(p.server.get(), POLLIN, std::chrono::steady_clock::now() + 10s));
  EXPECT_EQ(read_some(p.server.get(), buf, ec), 0);
  EXPECT_FALSE(ec);
}

TEST(server_socket, writing_to_a_peer_that_is_gone_is_an_error_not_a_signal) {
  io_error err;
  unique_fd l = listen_loopback(err);
  pair_of_ends p = connect_pair(l.get());
  p.client.reset();
  std::error_code ec;
  const std::string data(65536, 'x');
  // The first write may land in the socket buffer before the reset arrives; a later one fails.
  for (int i = 0; i < 100 && !ec; ++i) {
    write_some(p.server.get(), data, ec);
    if (!ec) wait_fd(p.server.get(), POLLOUT, std::chrono::steady_clock::now() + 100ms);
  }
  EXPECT_TRUE(ec == std::errc::broken_pipe || ec == std::errc::connection_reset) << ec.message();
}

TEST(server_socket, a_port_in_use_or_an_unknown_host_fails_naming_the_step) {
  io_error err;
  unique_fd l = listen_loopback(err);
  const std::uint16_t port = local_port(l.get());
  io_error again;
  EXPECT_FALSE(listen_tcp({"127.0.0.1", port}, 8, again).valid());
  EXPECT_EQ(again.code, std::errc::address_in_use);
  EXPECT_EQ(again.message, "bind 127.0.0.1:" + std::to_string(port) + ": Address already in use");
  io_error unknown;
  EXPECT_FALSE(listen_tcp({"nosuch.invalid", 0}, 8, unknown).valid());
  EXPECT_EQ(unknown.code.category(), resolve_category());
  EXPECT_TRUE(unknown.message.starts_with("resolve nosuch.invalid: ")) << unknown.message;
}

}  // namespace
}  // namespace warren::io
