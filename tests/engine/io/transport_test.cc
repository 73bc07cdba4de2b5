// The blocking transport against loopback peers made in the test: plain listeners, and a TLS
// server on OpenSSL with certificates generated at start (test_support.h).
#include "engine/io/transport.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "tests/engine/io/test_support.h"

namespace warren::io {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using test::certs;
using test::listener;

std::string target(const host_port& p) {
  return format_host_port(p.host, p.port);
}

transport connected(const host_port& peer, const transport_options& options = {}) {
  transport t;
  io_error err = t.connect(peer, options);
  EXPECT_FALSE(err) << err.message;
  return t;
}

iovec buf(std::string_view s) {
  return {const_cast<char*>(s.data()), s.size()};
}

// Reads exactly n bytes (or fails the test).
std::string read_n(transport& t, std::size_t n) {
  std::string out(n, '\0');
  std::size_t have = 0;
  while (have < n) {
    io_error err;
    std::size_t got = t.read_some(out.data() + have, n - have, 5s, err);
    if (err) {
      ADD_FAILURE() << err.message;
      break;
    }
    have += got;
  }
  out.resize(have);
  return out;
}

std::string recv_n(int fd, std::size_t n) {
  std::string out(n, '\0');
  std::size_t have = 0;
  while (have < n) {
    ssize_t got = ::recv(fd, out.data() + have, n - have, 0);
    if (got <= 0) break;
    have += static_cast<std::size_t>(got);
  }
  out.resize(have);
  return out;
}

// Buffers of many sizes, empty ones included, and the concatenation they must arrive as.
struct scattered {
  std::vector<std::string> parts;
  std::vector<iovec> iov;
  std::string whole;
  explicit scattered(std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      std::size_t len = (i * 7919) % 3001;  // 0..3000, uneven
      parts.emplace_back(len, static_cast<char>('a' + i % 26));
      whole += parts.back();
    }
    for (const std::string& p : parts) iov.push_back(buf(p));
  }
};

TEST(transport, connects_and_counts_the_bytes_both_ways) {
  listener l;
  transport t = connected(l.address());
  unique_fd server = l.accept();
  iovec hello = buf("hello");
  ASSERT_FALSE(t.write_all(&hello, 1, 5s));
  EXPECT_EQ(recv_n(server.get(), 5), "hello");
  ASSERT_EQ(::send(server.get(), "world!", 6, 0), 6);
  EXPECT_EQ(read_n(t, 6), "world!");
  EXPECT_EQ(t.bytes_sent(), 5u);
  EXPECT_EQ(t.bytes_received(), 6u);
  EXPECT_EQ(t.tls(), nullptr);
  EXPECT_GE(t.fd(), 0);
}

TEST(transport, metrics_count_every_read_and_write_call_and_the_octets_it_moved) {
  listener l;
  transport t = connected(l.address());
  unique_fd server = l.accept();
  metrics::connection_metrics counts(1, "");
  t.set_metrics(&counts);
  iovec parts[] = {buf("hel"), buf("lo")};
  ASSERT_FALSE(t.write_all(parts, 2, 5s));
  EXPECT_EQ(recv_n(server.get(), 5), "hello");
  ASSERT_EQ(::send(server.get(), "world!", 6, 0), 6);
  EXPECT_EQ(read_n(t, 6), "world!");
  const metrics::transport_counts c = counts.snapshot().transport;
  EXPECT_EQ(c.socket_writes, 1u) << "one sendmsg for both buffers";
  EXPECT_EQ(c.bytes_sent, 5u);
  EXPECT_GE(c.socket_reads, 1u);  // a read may find the bytes in parts (each call counts)
  EXPECT_EQ(c.bytes_received, 6u);
}

TEST(transport, writes_many_buffers_in_order_through_partial_writes) {
  listener l;
  transport_options o;
  o.socket_settings = {{SOL_SOCKET, SO_SNDBUF, 4096}};  // forces short writes
  transport t = connected(l.address(), o);
  unique_fd server = l.accept();
  scattered data(1000);
  std::string received;
  std::thread reader([&] { received = recv_n(server.get(), data.whole.size()); });
  io_error err = t.write_all(data.iov.data(), data.iov.size(), 20s);
  reader.join();
  ASSERT_FALSE(err) << err.message;
  EXPECT_EQ(received.size(), data.whole.size());
  EXPECT_TRUE(received == data.whole);
  EXPECT_EQ(t.bytes_sent(), data.whole.size());
}

TEST(transport, read_times_out_and_stays_usable) {
  listener l;
  transport t = connected(l.address());
  unique_fd server = l.accept();
  char b[8];
  io_error err;
  auto start = steady_clock::now();
  EXPECT_EQ(t.read_some(b, sizeof b, 200ms, err), 0u);
  EXPECT_GE(steady_clock::now() - start, 200ms);
  EXPECT_EQ(err.code, io_errc::timeout);
  EXPECT_EQ(err.message, "read from " + target(l.address()) + ": timeout after 200 ms");
  ASSERT_EQ(::send(server.get(), "x", 1, 0), 1);
  EXPECT_EQ(t.read_some(b, sizeof b, 5s, err), 1u);
  EXPECT_FALSE(err);
}

TEST(transport, applies_the_default_read_timeout_from_options) {
  listener l;
  transport_options o;
  o.read_timeout = 100ms;
  transport t = connected(l.address(), o);
  unique_fd server = l.accept();
  char b[8];
  io_error err;
  EXPECT_EQ(t.read_some(b, sizeof b, err), 0u);
  EXPECT_EQ(err.code, io_errc::timeout);
  EXPECT_EQ(err.message, "read from " + target(l.address()) + ": timeout after 100 ms");
}

TEST(transport, reports_eof_when_the_peer_closes_mid_read) {
  listener l;
  transport t = connected(l.address());
  unique_fd server = l.accept();
  ASSERT_EQ(::send(server.get(), "abc", 3, 0), 3);
  server.reset();
  EXPECT_EQ(read_n(t, 3), "abc");
  char b[8];
  io_error err;
  EXPECT_EQ(t.read_some(b, sizeof b, 5s, err), 0u);
  EXPECT_EQ(err.code, io_errc::eof);
  EXPECT_EQ(err.message, "read from " + target(l.address()) + ": connection closed by peer");
}

TEST(transport, write_times_out_when_the_peer_does_not_read) {
  listener l;
  transport_options o;
  o.socket_settings = {{SOL_SOCKET, SO_SNDBUF, 4096}};
  transport t = connected(l.address(), o);
  unique_fd server = l.accept();
  std::string big(16 << 20, 'x');
  iovec v = buf(big);
  io_error err = t.write_all(&v, 1, 200ms);
  EXPECT_EQ(err.code, io_errc::timeout);
  EXPECT_EQ(err.message, "write to " + target(l.address()) + ": timeout after 200 ms");
  EXPECT_GT(t.bytes_sent(), 0u);
  EXPECT_LT(t.bytes_sent(), big.size());
}

TEST(transport, read_while_writing_keeps_what_the_peer_sent_during_a_stalled_write) {
  listener l;
  transport_options o;
  o.socket_settings = {{SOL_SOCKET, SO_SNDBUF, 4096}};
  o.read_while_writing = true;
  transport t = connected(l.address(), o);
  unique_fd server = l.accept();
  // The peer speaks, then stops reading (as RabbitMQ sends connection.blocked and then blocks).
  ASSERT_EQ(::send(server.get(), "blocked", 7, 0), 7);
  std::string big(16 << 20, 'x');
  iovec v = buf(big);
  io_error err = t.write_all(&v, 1, 300ms);
  EXPECT_EQ(err.code, io_errc::timeout);
  // The stalled write read the peer's bytes; read_some returns them without the socket.
  EXPECT_TRUE(t.has_buffered_input());
  EXPECT_EQ(read_n(t, 7), "blocked");
  EXPECT_FALSE(t.has_buffered_input());
}

TEST(transport, without_read_while_writing_a_stalled_write_leaves_input_in_the_socket) {
  listener l;
  transport_options o;
  o.socket_settings = {{SOL_SOCKET, SO_SNDBUF, 4096}};
  transport t = connected(l.address(), o);
  unique_fd server = l.accept();
  ASSERT_EQ(::send(server.get(), "blocked", 7, 0), 7);
  std::string big(16 << 20, 'x');
  iovec v = buf(big);
  EXPECT_EQ(t.write_all(&v, 1, 300ms).code, io_errc::timeout);
  EXPECT_FALSE(t.has_buffered_input());
  EXPECT_EQ(read_n(t, 7), "blocked");
}

TEST(transport, reports_a_reset_peer_on_write_without_sigpipe) {
  // With the default disposition a SIGPIPE would end the test process.
  auto previous = std::signal(SIGPIPE, SIG_DFL);
  listener l;
  transport t = connected(l.address());
  unique_fd server = l.accept();
  linger hard{1, 0};  // close with RST
  ::setsockopt(server.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  server.reset();
  std::string chunk(4096, 'x');
  iovec v = buf(chunk);
  io_error err;
  for (int i = 0; i < 100 && !err; ++i) err = t.write_all(&v, 1, 5s);
  ASSERT_TRUE(err);
  EXPECT_TRUE(err.code == std::error_code(EPIPE, std::system_category()) ||
              err.code == std::error_code(ECONNRESET, std::system_category()))
      << err.message;
  EXPECT_EQ(err.message.rfind("write to " + target(l.address()) + ": ", 0), 0u);
  std::signal(SIGPIPE, previous);
}

TEST(transport, waits_for_readability) {
  listener l;
  transport t = connected(l.address());
  unique_fd server = l.accept();
  io_error err;
  EXPECT_FALSE(t.wait_readable(50ms, err));
  EXPECT_FALSE(err);
  ASSERT_EQ(::send(server.get(), "x", 1, 0), 1);
  EXPECT_TRUE(t.wait_readable(5s, err));
  EXPECT_FALSE(err);
}

TEST(transport, connects_over_ipv6_loopback) {
  listener l(AF_INET6);
  if (!l.ok()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  transport t = connected({"::1", l.port()});
  unique_fd server = l.accept();
  ASSERT_EQ(::send(server.get(), "v6", 2, 0), 2);
  EXPECT_EQ(read_n(t, 2), "v6");
}

TEST(transport, reports_refused_and_stays_closed) {
  transport t;
  host_port peer{"127.0.0.1", test::closed_port()};
  io_error err = t.connect(peer, {});
  EXPECT_EQ(err.code, std::error_code(ECONNREFUSED, std::system_category()));
  EXPECT_EQ(err.message, "connect to " + target(peer) + ": Connection refused");
  EXPECT_FALSE(t.is_open());
}

TEST(transport, times_out_connecting_after_connect_timeout) {
  listener l(AF_INET, 0);
  transport first = connected(l.address());  // fills the backlog
  transport t;
  transport_options o;
  o.connect_timeout = 200ms;
  io_error err = t.connect(l.address(), o);
  EXPECT_EQ(err.code, io_errc::timeout);
  EXPECT_EQ(err.message, "connect to " + target(l.address()) + ": connect timeout after 200 ms");
}

TEST(transport, refuses_io_after_close_and_keeps_its_counters) {
  listener l;
  transport t = connected(l.address());
  unique_fd server = l.accept();
  iovec v = buf("abc");
  ASSERT_FALSE(t.write_all(&v, 1, 5s));
  t.close();
  t.close();
  EXPECT_FALSE(t.is_open());
  EXPECT_EQ(t.fd(), -1);
  EXPECT_EQ(t.bytes_sent(), 3u);
  EXPECT_EQ(t.write_all(&v, 1, 5s).code, io_errc::not_connected);
  char b[4];
  io_error err;
  EXPECT_EQ(t.read_some(b, sizeof b, 5s, err), 0u);
  EXPECT_EQ(err.code, io_errc::not_connected);
  EXPECT_FALSE(t.wait_readable(0ms, err));
  EXPECT_EQ(err.code, io_errc::not_connected);
}

TEST(transport, moves_the_connection) {
  listener l;
  transport a = connected(l.address());
  unique_fd server = l.accept();
  transport b = std::move(a);
  EXPECT_TRUE(b.is_open());
  ASSERT_EQ(::send(server.get(), "m", 1, 0), 1);
  EXPECT_EQ(read_n(b, 1), "m");
}

// --- TLS -------------------------------------------------------------------------------

transport_options tls_trusting(const std::string& ca) {
  transport_options o;
  o.tls.emplace();
  o.tls->ca_file = ca;
  return o;
}

// A server session that echoes `n` bytes back.
std::function<void(SSL*)> echo(std::size_t n) {
  return [n](SSL* ssl) {
    std::string got = test::ssl_read_exactly(ssl, n);
    std::size_t wrote;
    SSL_write_ex(ssl, got.data(), got.size(), &wrote);
  };
}

TEST(transport_tls, passes_with_the_right_ca_and_carries_data) {
  test::tls_server server({}, echo(5));
  host_port peer{"localhost", server.port()};
  transport t = connected(peer, tls_trusting(certs().ca));
  ASSERT_TRUE(t.is_open());
  ASSERT_NE(t.tls(), nullptr);
  EXPECT_EQ(t.tls()->protocol(), "TLSv1.3");
  iovec v[2] = {buf("hel"), buf("lo")};
  ASSERT_FALSE(t.write_all(v, 2, 5s));
  EXPECT_EQ(read_n(t, 5), "hello");
  server.join();
  EXPECT_TRUE(server.handshake_ok);
  EXPECT_EQ(server.sni, "localhost");
  // Handshake and record overhead are on the wire too.
  EXPECT_GT(t.bytes_sent(), 200u);
  EXPECT_GT(t.bytes_received(), 500u);
}

TEST(transport_tls, fails_with_the_wrong_ca_and_says_so) {
  test::tls_server server({}, nullptr);
  host_port peer{"localhost", server.port()};
  transport t;
  io_error err = t.connect(peer, tls_trusting(certs().other_ca));
  EXPECT_EQ(err.code, io_errc::tls_verify);
  EXPECT_EQ(err.message, "TLS handshake with " + target(peer) +
                             ": certificate verify failed: unable to get local issuer "
                             "certificate (wrong CA?)");
  EXPECT_FALSE(t.is_open());
  server.join();
  EXPECT_FALSE(server.handshake_ok);
}

TEST(transport_tls, fails_when_the_certificate_is_for_another_name) {
  test::tls_server server({}, nullptr);
  host_port peer{"127.0.0.1", server.port()};
  transport_options o = tls_trusting(certs().ca);
  o.tls->server_name = "foo";
  transport t;
  io_error err = t.connect(peer, o);
  EXPECT_EQ(err.code, io_errc::tls_hostname);
  EXPECT_EQ(err.message, "TLS handshake with " + target(peer) +
                             ": hostname mismatch: certificate is not valid for 'foo'");
}

TEST(transport_tls, verifies_an_ip_literal_against_the_certificate) {
  test::tls_server server({}, echo(1));
  transport t = connected({"127.0.0.1", server.port()}, tls_trusting(certs().ca));
  iovec v = buf("!");
  ASSERT_FALSE(t.write_all(&v, 1, 5s));
  EXPECT_EQ(read_n(t, 1), "!");
  server.join();
  EXPECT_EQ(server.sni, "");  // no SNI for an address
}

TEST(transport_tls, presents_the_client_certificate_the_server_requires) {
  test::tls_server server({.require_client_cert = true}, echo(2));
  transport_options o = tls_trusting(certs().ca);
  o.tls->cert_file = certs().client_cert;
  o.tls->key_file = certs().client_key;
  transport t = connected({"localhost", server.port()}, o);
  iovec v = buf("ok");
  ASSERT_FALSE(t.write_all(&v, 1, 5s));
  EXPECT_EQ(read_n(t, 2), "ok");
  server.join();
  EXPECT_EQ(server.client_cn, "warren-client");
}

TEST(transport_tls, reports_a_missing_client_certificate_on_first_read) {
  test::tls_server server({.require_client_cert = true}, nullptr);
  host_port peer{"localhost", server.port()};
  transport t = connected(peer, tls_trusting(certs().ca));
  char b[8];
  io_error err;
  EXPECT_EQ(t.read_some(b, sizeof b, 5s, err), 0u);
  EXPECT_EQ(err.code, io_errc::tls_handshake);
  EXPECT_EQ(err.message, "read from " + target(peer) +
                             ": tlsv13 alert certificate required (the server requires a client "
                             "certificate: set cert_file and key_file)");
  server.join();
  EXPECT_FALSE(server.handshake_ok);
}

TEST(transport_tls, sends_the_configured_sni_name) {
  test::tls_server server({}, nullptr);
  transport_options o = tls_trusting(certs().ca);
  o.tls->server_name = "rabbit.internal";
  o.tls->check_hostname = false;
  transport t = connected({"localhost", server.port()}, o);
  server.join();
  EXPECT_EQ(server.sni, "rabbit.internal");
  EXPECT_EQ(t.tls()->server_name(), "rabbit.internal");
}

TEST(transport_tls, enforces_min_version) {
  test::tls_server server({.max_version = TLS1_2_VERSION}, nullptr);
  transport_options o = tls_trusting(certs().ca);
  o.tls->min_version = tls_version::tls1_3;
  host_port peer{"localhost", server.port()};
  transport t;
  io_error err = t.connect(peer, o);
  EXPECT_EQ(err.code, io_errc::tls_handshake);
  EXPECT_EQ(err.message.rfind("TLS handshake with " + target(peer) + ": ", 0), 0u);
  EXPECT_NE(err.message.find("min_version is TLS 1.3"), std::string::npos) << err.message;
  server.join();
  EXPECT_FALSE(server.handshake_ok);
}

TEST(transport_tls, times_out_a_handshake_the_server_never_answers) {
  listener l;  // accepts (in the kernel) but never speaks
  transport_options o = tls_trusting(certs().ca);
  o.tls->handshake_timeout = 200ms;
  transport t;
  auto start = steady_clock::now();
  io_error err = t.connect({"localhost", l.port()}, o);
  EXPECT_GE(steady_clock::now() - start, 200ms);
  EXPECT_EQ(err.code, io_errc::timeout);
  EXPECT_EQ(err.message,
            "TLS handshake with localhost:" + std::to_string(l.port()) + ": timeout after 200 ms");
  EXPECT_FALSE(t.is_open());
}

TEST(transport_tls, explains_a_server_that_hangs_up_during_the_handshake) {
  listener l;
  // Reads the ClientHello first, so that the close is a FIN and not a reset.
  std::thread hangup([&] {
    unique_fd s = l.accept();
    char b[4096];
    (void)::recv(s.get(), b, sizeof b, 0);
  });
  transport t;
  io_error err = t.connect({"localhost", l.port()}, tls_trusting(certs().ca));
  hangup.join();
  EXPECT_EQ(err.code, io_errc::eof);
  EXPECT_EQ(err.message, "TLS handshake with localhost:" + std::to_string(l.port()) +
                             ": connection closed by peer during the handshake (is this the TLS "
                             "port? was the client certificate rejected?)");
}

TEST(transport_tls, reports_configuration_errors_before_connecting) {
  transport t;
  io_error err = t.connect({"127.0.0.1", test::closed_port()}, tls_trusting("/nonexistent.pem"));
  EXPECT_EQ(err.code, io_errc::tls_config);
  EXPECT_EQ(err.message, "cannot load CA file /nonexistent.pem: No such file or directory");
}

TEST(transport_tls, carries_a_large_scattered_write_both_ways) {
  scattered data(700);  // about 1 MB in buffers of 0..3000 bytes
  test::tls_server server({}, echo(data.whole.size()));
  transport t = connected({"localhost", server.port()}, tls_trusting(certs().ca));
  // The server reads everything before it echoes, so writing first cannot deadlock.
  io_error err = t.write_all(data.iov.data(), data.iov.size(), 20s);
  ASSERT_FALSE(err) << err.message;
  std::string echoed = read_n(t, data.whole.size());
  EXPECT_EQ(echoed.size(), data.whole.size());
  EXPECT_TRUE(echoed == data.whole);
  // Small buffers were packed into full records: far fewer than one record per buffer.
  EXPECT_LT(t.bytes_sent() - data.whole.size(), data.iov.size() * 22 / 4);
}

TEST(transport_tls, shares_one_context_between_connections_and_sends_close_notify) {
  io_error err;
  tls_options options;
  options.ca_file = certs().ca;
  auto context = tls_context::create(options, err);
  ASSERT_FALSE(err) << err.message;
  transport_options o;
  o.shared_tls = context;
  for (int i = 0; i < 2; ++i) {
    bool close_notify = false;
    test::tls_server server({}, [&](SSL* ssl) {
      char b[1];
      std::size_t got;
      close_notify =
          SSL_read_ex(ssl, b, 1, &got) == 0 && SSL_get_error(ssl, 0) == SSL_ERROR_ZERO_RETURN;
    });
    transport t = connected({"localhost", server.port()}, o);
    t.close();
    server.join();
    EXPECT_TRUE(close_notify) << i;
  }
}

}  // namespace
}  // namespace warren::io
