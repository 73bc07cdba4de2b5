#include "engine/io/stream.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "tests/engine/io/test_support.h"

namespace warren::io {
namespace {

using namespace std::chrono_literals;

// A connected pair: our end as a stream, the peer's end as a plain fd.
struct pair {
  stream s;
  unique_fd peer;
};

pair make_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  io_error err;
  pair p{stream::open(unique_fd(fds[0]), nullptr, err), unique_fd(fds[1])};
  EXPECT_FALSE(err) << err.message;
  return p;
}

iovec buf(std::string_view s) {
  return {const_cast<char*>(s.data()), s.size()};
}

time_point in(std::chrono::milliseconds d) {
  return std::chrono::steady_clock::now() + d;
}

TEST(stream, open_makes_the_socket_non_blocking) {
  pair p = make_pair();
  ASSERT_TRUE(p.s.valid());
  EXPECT_NE(::fcntl(p.s.fd(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_FALSE(p.s.is_tls());
  EXPECT_FALSE(p.s.handshaking());
  EXPECT_EQ(p.s.handshake().status, stream_status::ok) << "plain TCP has no handshake";
}

TEST(stream, a_read_on_an_empty_socket_would_block) {
  pair p = make_pair();
  char b[16];
  EXPECT_EQ(p.s.read(b, sizeof b).status, stream_status::would_block);
}

TEST(stream, a_short_read_says_the_socket_is_drained) {
  pair p = make_pair();
  ASSERT_EQ(::write(p.peer.get(), "hello", 5), 5);
  char b[16];
  stream_result r = p.s.read(b, sizeof b);
  ASSERT_EQ(r.status, stream_status::ok);
  EXPECT_EQ(std::string(b, r.bytes), "hello");
  EXPECT_TRUE(r.drained);
  ASSERT_EQ(::write(p.peer.get(), "0123456789", 10), 10);
  r = p.s.read(b, 4);
  EXPECT_EQ(r.bytes, 4u);
  EXPECT_FALSE(r.drained) << "a full read may leave more behind";
}

TEST(stream, metrics_count_every_read_and_write_call_and_the_octets_it_moved) {
  pair p = make_pair();
  metrics::connection_metrics counts(1, "");
  p.s.set_metrics(&counts);
  char b[16];
  EXPECT_EQ(p.s.read(b, sizeof b).status, stream_status::would_block);  // a call, 0 octets
  ASSERT_EQ(::write(p.peer.get(), "hello", 5), 5);
  ASSERT_EQ(p.s.read(b, sizeof b).bytes, 5u);
  iovec two[] = {buf("ab"), buf("cde")};
  ASSERT_EQ(p.s.write(two, 2).bytes, 5u);  // one sendmsg for both segments
  const metrics::transport_counts t = counts.snapshot().transport;
  EXPECT_EQ(t.socket_reads, 2u);
  EXPECT_EQ(t.bytes_received, 5u);
  EXPECT_EQ(t.socket_writes, 1u);
  EXPECT_EQ(t.bytes_sent, 5u);
}

TEST(stream, the_peer_closing_is_eof_named_for_people) {
  pair p = make_pair();
  p.peer.reset();
  char b[4];
  const stream_result r = p.s.read(b, sizeof b);
  EXPECT_EQ(r.status, stream_status::eof);
  EXPECT_EQ(r.error.code, io_errc::eof);
  EXPECT_EQ(r.error.message, "connection closed by peer");
}

TEST(stream, write_sends_several_segments_in_order_in_one_call) {
  pair p = make_pair();
  iovec v[3] = {buf("one "), buf("two "), buf("three")};
  const stream_result r = p.s.write(v, 3);
  ASSERT_EQ(r.status, stream_status::ok);
  EXPECT_EQ(r.bytes, 13u);
  char b[32];
  ASSERT_EQ(::read(p.peer.get(), b, sizeof b), 13);
  EXPECT_EQ(std::string(b, 13), "one two three");
}

TEST(stream, a_full_socket_takes_part_then_would_block) {
  pair p = make_pair();
  const int small = 4096;
  ::setsockopt(p.s.fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  const std::string big(1 << 20, 'x');
  iovec v = buf(big);
  const stream_result first = p.s.write(&v, 1);
  ASSERT_EQ(first.status, stream_status::ok);
  EXPECT_GT(first.bytes, 0u);
  EXPECT_LT(first.bytes, big.size()) << "the peer reads nothing: the socket fills";
  const stream_result second = p.s.write(&v, 1);
  EXPECT_EQ(second.status, stream_status::would_block);
}

TEST(stream, writing_to_a_closed_peer_is_an_error_not_a_signal) {
  pair p = make_pair();
  p.peer.reset();
  iovec v = buf("x");
  const stream_result r = p.s.write(&v, 1);
  EXPECT_EQ(r.status, stream_status::error);
  EXPECT_EQ(r.error.message, "send: Broken pipe");
}

TEST(stream, receive_low_water_is_applied_to_the_socket) {
  test::listener l;
  io_error err;
  unique_fd fd = connect_tcp(l.address(), {}, in(5000ms), err);
  ASSERT_TRUE(fd.valid()) << err.message;
  stream s = stream::open(std::move(fd), nullptr, err);
  s.set_receive_low_water(4096);
  int v = 0;
  socklen_t len = sizeof v;
  ASSERT_EQ(::getsockopt(s.fd(), SOL_SOCKET, SO_RCVLOWAT, &v, &len), 0);
  EXPECT_EQ(v, 4096);
}

// TLS --------------------------------------------------------------------------------------------

std::unique_ptr<tls_session> client_session(const std::string& ca) {
  tls_options o;
  o.ca_file = ca;
  io_error err;
  auto ctx = tls_context::create(o, err);
  EXPECT_FALSE(err) << err.message;
  auto s = tls_session::create(ctx, "localhost", err);
  EXPECT_FALSE(err) << err.message;
  return s;
}

stream tls_stream(std::uint16_t port, const std::string& ca) {
  io_error err;
  unique_fd fd = connect_tcp({"localhost", port}, {}, in(5000ms), err);
  EXPECT_TRUE(fd.valid()) << err.message;
  stream s = stream::open(std::move(fd), client_session(ca), err);
  EXPECT_FALSE(err) << err.message;
  return s;
}

// Steps `s` (handshake or flush) until it is not would_block, waiting for the socket in between.
template <class Step>
stream_result drive(stream& s, Step step) {
  const time_point deadline = in(10000ms);
  for (;;) {
    stream_result r = step();
    if (r.status != stream_status::would_block) return r;
    if (wait_fd(s.fd(), s.wants_write() ? POLLOUT : POLLIN, deadline)) return r;
  }
}

TEST(stream_tls, carries_plaintext_both_ways_after_the_handshake) {
  test::tls_server server({}, [](SSL* ssl) {
    std::string got = test::ssl_read_exactly(ssl, 5);
    std::size_t wrote;
    SSL_write_ex(ssl, got.data(), got.size(), &wrote);
  });
  stream s = tls_stream(server.port(), test::certs().ca);
  ASSERT_TRUE(s.is_tls());
  ASSERT_TRUE(s.handshaking());
  ASSERT_EQ(drive(s, [&] { return s.handshake(); }).status, stream_status::ok);
  EXPECT_FALSE(s.handshaking());
  iovec v[2] = {buf("hel"), buf("lo")};
  const stream_result w = s.write(v, 2);
  ASSERT_EQ(w.status, stream_status::ok);
  EXPECT_EQ(w.bytes, 5u) << "TLS takes every octet";
  ASSERT_EQ(drive(s, [&] { return s.flush(); }).status, stream_status::ok);
  std::string got;
  char b[16];
  while (got.size() < 5) {
    stream_result r = drive(s, [&] { return s.read(b, sizeof b); });
    ASSERT_EQ(r.status, stream_status::ok) << r.error.message;
    got.append(b, r.bytes);
  }
  EXPECT_EQ(got, "hello");
  // The server sends close_notify and closes.
  const stream_result end = drive(s, [&] { return s.read(b, sizeof b); });
  EXPECT_EQ(end.status, stream_status::eof);
  EXPECT_EQ(end.error.message, "TLS closed by peer");
  server.join();
  EXPECT_TRUE(server.handshake_ok);
}

TEST(stream_tls, a_handshake_with_the_wrong_ca_fails_with_the_sessions_reason) {
  test::tls_server server({}, nullptr);
  stream s = tls_stream(server.port(), test::certs().other_ca);
  const stream_result r = drive(s, [&] { return s.handshake(); });
  EXPECT_EQ(r.status, stream_status::error);
  EXPECT_EQ(r.error.code, io_errc::tls_verify);
  server.join();
  EXPECT_FALSE(server.handshake_ok);
}

}  // namespace
}  // namespace warren::io
